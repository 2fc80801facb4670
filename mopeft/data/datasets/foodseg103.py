"""FoodSeg103 (MESS ``foodseg103_sem_seg_test``): 103 ingredients + background.

MESS registers ``Images/img_dir/test`` + ``Images/ann_dir/test`` as they are (single-channel ids
0..103, 0 = background), so preparation is a checked copy. The archive is a ZipCrypto zip with a
public password (printed in the MESS and FoodSeg103 code). MESS's count check says 2125 test
images while the dataset documents 2135; the count is therefore a warning, not a failure, and
images are paired by stem (intersection, as MESS's loader falls back to).

Test images: MESS reads ``img_dir/test`` as published. We copy 8-bit RGB JPEGs byte for byte too,
but re-encode any other (a non-RGB JPEG) as RGB; ``test_images="mess"`` (:class:`PrepareOptions`)
copies every test image raw, as MESS uses it (the loader converts to RGB when reading).

Checksums: the publisher gives none for ``FoodSeg103.zip``, so nothing is pinned here; the sha256 of
the file actually used is recorded in ``meta.json`` (``sources``) when it is prepared.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np

from mopeft.data.datasets.common import (
    PrepareError,
    PrepareOptions,
    copy_or_convert,
    extract,
    load_image,
    save_label,
    scratch_dir,
    visible,
)
from mopeft.data.sources.archive import check_zip_sizes
from mopeft.data.spec import DatasetSpec, Source
from mopeft.data.synthetic.miniature import encode, mark_miniature

ARCHIVE = "FoodSeg103.zip"
URL = "https://research.larc.smu.edu.sg/downloads/datarepo/FoodSeg103.zip"
PASSWORD = "LARCdataset9947"

SPEC = DatasetSpec(
    key="foodseg103",
    name="FoodSeg103",
    domain="General",
    classes=(
        "background",
        "candy",
        "egg tart",
        "french fries",
        "chocolate",
        "biscuit",
        "popcorn",
        "pudding",
        "ice cream",
        "cheese butter",
        "cake",
        "wine",
        "milkshake",
        "coffee",
        "juice",
        "milk",
        "tea",
        "almond",
        "red beans",
        "cashew",
        "dried cranberries",
        "soy",
        "walnut",
        "peanut",
        "egg",
        "apple",
        "date",
        "apricot",
        "avocado",
        "banana",
        "strawberry",
        "cherry",
        "blueberry",
        "raspberry",
        "mango",
        "olives",
        "peach",
        "lemon",
        "pear",
        "fig",
        "pineapple",
        "grape",
        "kiwi",
        "melon",
        "orange",
        "watermelon",
        "steak",
        "pork",
        "chicken duck",
        "sausage",
        "fried meat",
        "lamb",
        "sauce",
        "crab",
        "fish",
        "shellfish",
        "shrimp",
        "soup",
        "bread",
        "corn",
        "hamburg",
        "pizza",
        "hanamaki baozi",
        "wonton dumplings",
        "pasta",
        "noodles",
        "rice",
        "pie",
        "tofu",
        "eggplant",
        "potato",
        "garlic",
        "cauliflower",
        "tomato",
        "kelp",
        "seaweed",
        "spring onion",
        "rape",
        "ginger",
        "okra",
        "lettuce",
        "pumpkin",
        "cucumber",
        "white radish",
        "carrot",
        "asparagus",
        "bamboo shoots",
        "broccoli",
        "celery stick",
        "cilantro mint",
        "snow peas",
        "cabbage",
        "bean sprouts",
        "onion",
        "pepper",
        "green beans",
        "French beans",
        "king oyster mushroom",
        "shiitake",
        "enoki mushroom",
        "oyster mushroom",
        "white button mushroom",
        "salad",
        "other ingredients",
    ),
    sources=(Source(ARCHIVE, "http", url=URL),),
    expected_test=2125,
    expected_train=4983,  # Images/img_dir/train (FoodSeg103 paper: 4983 train / 2135 test)
    image_format="jpeg",  # the JPEGs are copied as they are
    # Sizes vary widely: 384x512 is the most common, the largest image of the release is 5616x3744.
    image_hw=(384, 512),
    max_image_hw=(3744, 5616),
    expected_test_is_exact=False,
    mess_key="foodseg103_sem_seg_test",
    sensor="Visible Spectrum",
    segment_size="Medium",
    num_classes_label="104 (Many)",
    class_similarity="High",
    vocabulary="Generic",
    task_description="Ingredients",
    citation="Wu et al., A Large-Scale Benchmark for Food Image Segmentation, ACM MM 2021",
    notes=(
        "MESS count check 2125; the dataset (and Table 4.2 of the thesis) says 2135 test images.",
        f"Archive password {PASSWORD!r} (public in the MESS and FoodSeg103 code).",
    ),
)


def _extract_encrypted(archive: Path, dest: Path) -> None:
    """``unzip -P`` when available (Python's ZipCrypto decoder is pure Python and slow on 1 GB);
    ``unzip`` writes the files itself, so the declared sizes are checked against the extraction
    limits first (:func:`mopeft.data.sources.archive.check_zip_sizes`)."""
    if shutil.which("unzip") and (archive.stat().st_size > 50 << 20):
        check_zip_sizes(archive)
        res = subprocess.run(
            ["unzip", "-q", "-o", "-P", PASSWORD, str(archive), "-d", str(dest)],
            capture_output=True,
            text=True,
        )
        if res.returncode not in (0, 1):  # 1 = warnings only
            raise PrepareError(f"{archive}: unzip failed ({res.stderr.strip()[:200]})")
        return
    extract(archive, dest, password=PASSWORD)


def prepare(raw_dir: Path, out_dir: Path, options: PrepareOptions) -> dict:
    with scratch_dir(out_dir, SPEC.key) as scratch:
        _extract_encrypted(raw_dir / ARCHIVE, scratch)
        roots = [p.parent.parent for p in visible(scratch, "**/img_dir") if p.parent.name == "Images"]
        if len(roots) != 1:
            raise PrepareError(
                f"{raw_dir / ARCHIVE}: expected one FoodSeg103/Images/img_dir, found {len(roots)}"
            )
        images_root = roots[0] / "Images"
        unpaired: dict[str, int] = {}
        for split in ("train", "test"):
            imgs = {p.stem: p for p in visible(images_root / "img_dir" / split, "*.jpg")}
            anns = {p.stem: p for p in visible(images_root / "ann_dir" / split, "*.png")}
            if not imgs:
                raise PrepareError(f"{raw_dir / ARCHIVE}: no Images/img_dir/{split}/*.jpg")
            unpaired[split] = len(set(imgs) ^ set(anns))
            (out_dir / split / "images").mkdir(parents=True, exist_ok=True)
            for stem in sorted(set(imgs) & set(anns)):
                image = load_image(imgs[stem])
                label = load_image(anns[stem])
                if label.ndim != 2 or label.shape != image.shape[:2]:
                    raise PrepareError(
                        f"{anns[stem]}: expected single-channel {image.shape[:2]}, got {label.shape}"
                    )
                dst = out_dir / split / "images" / f"{stem}.jpg"
                if split == "test" and options.test_images == "mess":
                    shutil.copyfile(imgs[stem], dst)  # MESS: the published file, whatever its mode
                else:
                    copy_or_convert(imgs[stem], image, dst)
                save_label(out_dir / split / "labels" / f"{stem}.png", label, SPEC.num_classes)
    return {
        "split_protocol": "official: Images/{img,ann}_dir/{train,test}",
        "unpaired_files": unpaired,
        "test_images": options.test_images,
    }


# ------------------------------------------------------------------------------------- miniature
def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC = _crc_table()


def _zipcrypto(data: bytes, password: bytes, crc: int, rng: np.random.Generator) -> bytes:
    """Traditional PKWARE encryption (what ``zip -P`` writes); Python's zipfile only decrypts."""
    keys = [0x12345678, 0x23456789, 0x34567890]

    def update(b: int) -> None:
        keys[0] = _CRC[(keys[0] ^ b) & 0xFF] ^ (keys[0] >> 8)
        keys[1] = ((keys[1] + (keys[0] & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        keys[2] = _CRC[(keys[2] ^ (keys[1] >> 24)) & 0xFF] ^ (keys[2] >> 8)

    for b in password:
        update(b)
    out = bytearray()
    for p in bytes(rng.integers(0, 256, 11, dtype=np.uint8)) + bytes([crc >> 24]) + data:
        t = (keys[2] | 2) & 0xFFFF
        out.append(p ^ (((t * (t ^ 1)) >> 8) & 0xFF))
        update(p)
    return bytes(out)


def _write_encrypted_zip(
    path: Path, members: dict[str, bytes], password: str, rng: np.random.Generator
) -> None:
    """A stored (uncompressed) ZipCrypto zip, byte-compatible with ``unzip -P`` and zipfile(pwd=)."""
    body, central = bytearray(), bytearray()
    dos_time, dos_date = 0, (2021 - 1980) << 9 | 1 << 5 | 1
    for name, data in members.items():
        crc = zlib.crc32(data)
        enc = _zipcrypto(data, password.encode(), crc, rng)
        fname = name.encode()
        fields = (20, 1, 0, dos_time, dos_date, crc, len(enc), len(data), len(fname), 0)
        central += struct.pack("<IH", 0x02014B50, 20) + struct.pack("<HHHHHIIIHH", *fields)
        central += struct.pack("<HHHII", 0, 0, 0, 0, len(body)) + fname
        body += struct.pack("<I", 0x04034B50) + struct.pack("<HHHHHIIIHH", *fields) + fname + enc
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(body), 0)
    path.write_bytes(bytes(body + central + eocd))


def write_miniature(raw_dir: Path, seed: int = 0) -> None:
    """Password-protected zip in the FoodSeg103 layout: 3 train + 2 test pairs, lists, category ids."""
    rng = np.random.default_rng(seed)
    raw_dir.mkdir(parents=True, exist_ok=True)
    members: dict[str, bytes] = {}
    root = "FoodSeg103"
    for split, stems in (("train", ["00000000", "00000001", "00000002"]), ("test", ["00000048", "00000049"])):
        for stem in stems:
            h, w = 48, 64
            label = np.zeros((h, w), dtype=np.uint8)  # background
            for _ in range(3):
                y, x = int(rng.integers(0, h - 16)), int(rng.integers(0, w - 16))
                label[y : y + 16, x : x + 16] = rng.integers(1, 104)
            if stem == "00000048":
                label[:8, :8] = 58  # known pixel: bread
            image = np.clip(label[..., None] * np.array([2, 3, 1]) + rng.integers(0, 40, (h, w, 3)), 0, 255)
            members[f"{root}/Images/img_dir/{split}/{stem}.jpg"] = encode(image.astype(np.uint8), "JPEG")
            members[f"{root}/Images/ann_dir/{split}/{stem}.png"] = encode(label, "PNG")
        members[f"{root}/ImageSets/{split}.txt"] = "".join(f"{s}.jpg\n" for s in stems).encode()
    members[f"{root}/category_id.txt"] = "".join(f"{i}\t{c}\n" for i, c in enumerate(SPEC.classes)).encode()
    _write_encrypted_zip(raw_dir / ARCHIVE, members, PASSWORD, rng)
    mark_miniature(raw_dir)
