"""ATLANTIS (MESS ``atlantis_sem_seg_test``): 56 water-related classes, no background class.

The data lives in the git repository (``atlantis/atlantis/{images,masks}/{train,val,test}/<class
folder>/``). MESS flattens the test class folders into one directory, so an image name occurring in
two class folders is written twice and only one survives (a plausible reason for 1295 images vs the
README's 1296). Which one survives in MESS is the file its unsorted ``glob('*/*.jpg')`` visits
last, i.e. directory order, which depends on the file system (ext4 hash order, not creation or
name order). We keep the last in sorted order, so our choice is deterministic and the same on every
machine, but it equals MESS's only where directory order happens to be sorted; the test *names*
(and so the count) are reproduced everywhere, the image and mask chosen for a duplicated name are
not guaranteed to be. ``meta.json`` reports how many duplicates were dropped. Mask values 1..56 ->
0..55, 0 (unlabelled) -> 255, anything else -> 255. Train = official train + val (3364 + 535), names
prefixed by split and class folder so none clash.

Test images: MESS re-saves each JPEG with ``img.convert('RGB').save(...)`` (PIL's default JPEG
quality 75); by default we copy the published bytes instead, and ``test_images="mess"``
(:class:`PrepareOptions`) reproduces MESS's re-encoding. Train images are always copied.

Source: a git clone pinned to commit ``COMMIT`` (checked by ``mopeft prepare``; ``meta.json``
records the commit).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mopeft.data.datasets.common import (
    PrepareError,
    PrepareOptions,
    copy_or_convert,
    load_image,
    map_ids,
    mess_resave,
    save_label,
    visible,
)
from mopeft.data.spec import DatasetSpec, Source
from mopeft.data.synthetic.miniature import encode, mark_miniature, random_block_ids, write_files

CLONE = "atlantis"
REPO = "https://github.com/smhassanerfani/atlantis.git"
# Pinned commit: the newest commit of the repository's README that could be looked up (it cites the
# 2022 paper); the full history was too large to fetch, so that it is the branch tip is unverified.
COMMIT = "dfd7626f96822b41a3f666b56a4c358924a93de7"

SPEC = DatasetSpec(
    key="atlantis",
    name="ATLANTIS",
    domain="General",
    classes=(
        "bicycle",
        "boat",
        "breakwater",
        "bridge",
        "building",
        "bus",
        "canal",
        "car",
        "cliff",
        "culvert",
        "cypress tree",
        "dam",
        "ditch",
        "fence",
        "fire hydrant",
        "fjord",
        "flood",
        "glaciers",
        "hot spring",
        "lake",
        "levee",
        "lighthouse",
        "mangrove",
        "marsh",
        "motorcycle",
        "offshore platform",
        "parking meter",
        "person",
        "pier",
        "pipeline",
        "pole",
        "puddle",
        "rapids",
        "reservoir",
        "river",
        "river delta",
        "road",
        "sea",
        "ship",
        "shoreline",
        "sidewalk",
        "sky",
        "snow",
        "spillway",
        "swimming pool",
        "terrain",
        "traffic sign",
        "train",
        "truck",
        "umbrella",
        "vegetation",
        "wall",
        "water tower",
        "water well",
        "waterfall",
        "wetland",
    ),
    sources=(Source(CLONE, "git", url=REPO, git_ref=COMMIT),),
    expected_test=1295,
    expected_train=3364 + 535,  # official train + val (ATLANTIS README)
    image_format="jpeg",  # the JPEGs are copied as they are
    # Flickr's "z" size: longest side 640 (the repository's flickr.json lists 640x427, 640x480, ...).
    image_hw=(427, 640),
    max_image_hw=(640, 640),
    expected_test_is_exact=False,
    mess_key="atlantis_sem_seg_test",
    sensor="Visible Spectrum",
    segment_size="Small",
    num_classes_label="56 (Many)",
    class_similarity="Low",
    vocabulary="Generic",
    task_description="Maritime",
    citation="Erfani et al., ATLANTIS: A Benchmark for Semantic Segmentation of Waterbody Images, 2022",
    notes=(
        "MESS count check 1295; the README says 1296 (duplicate file names across class folders).",
        "No background class (MESS background_class=255): raw 0 -> 255.",
    ),
)

LUT = {v: v - 1 for v in range(1, 57)}  # 0 and anything unknown -> 255


def _data_root(raw_dir: Path) -> Path:
    for cand in (raw_dir / CLONE / "atlantis", raw_dir / CLONE):
        if (cand / "images" / "test").is_dir():
            return cand
    raise PrepareError(f"{raw_dir / CLONE}: no atlantis/images/test in the clone of {REPO}")


def _pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    pairs = []
    for img in visible(root / "images" / split, "*/*.jpg"):
        mask = root / "masks" / split / img.parent.name / f"{img.stem}.png"
        if not mask.exists():
            raise PrepareError(f"{mask}: missing mask for {img}")
        pairs.append((img, mask))
    return pairs


def _write(img: Path, mask: Path, out_dir: Path, split: str, stem: str, mess_bytes: bool = False) -> None:
    """One image/label pair; ``mess_bytes``: re-encode the image as MESS does (:func:`mess_resave`)."""
    image = load_image(img)
    raw = load_image(mask)
    if raw.ndim == 3:
        raw = raw[..., 0]
    if raw.shape != image.shape[:2]:
        raise PrepareError(f"{mask}: size {raw.shape} differs from image {image.shape[:2]}")
    if mess_bytes:
        mess_resave(img, out_dir / split / "images" / f"{stem}.jpg")
    else:
        copy_or_convert(img, image, out_dir / split / "images" / f"{stem}.jpg")
    save_label(out_dir / split / "labels" / f"{stem}.png", map_ids(raw, LUT), SPEC.num_classes)


def prepare(raw_dir: Path, out_dir: Path, options: PrepareOptions) -> dict:
    root = _data_root(raw_dir)
    for split in ("train", "test"):
        (out_dir / split / "images").mkdir(parents=True, exist_ok=True)
    # test: MESS flattening; the last duplicate (sorted) wins, as if copied over the first
    latest: dict[str, tuple[Path, Path]] = {}
    for img, mask in _pairs(root, "test"):
        latest[img.stem] = (img, mask)
    n_test = len(_pairs(root, "test"))
    for stem, (img, mask) in sorted(latest.items()):
        _write(img, mask, out_dir, "test", stem, mess_bytes=options.test_images == "mess")
    for split in ("train", "val"):
        for img, mask in _pairs(root, split):
            _write(img, mask, out_dir, "train", f"{split}_{img.parent.name}_{img.stem}")
    return {
        "split_protocol": "official: train = train + val, test = test flattened as MESS does",
        "test_duplicates_dropped": n_test - len(latest),
        "test_images": options.test_images,
    }


# ------------------------------------------------------------------------------------- miniature
def write_miniature(raw_dir: Path, seed: int = 0) -> None:
    """A fake clone: atlantis/atlantis/{images,masks}/{train,val,test}/<class>/; one test name
    occurs in two class folders (the MESS duplicate)."""
    rng = np.random.default_rng(seed)
    root = raw_dir / CLONE / "atlantis"
    files = {
        "train": [("river", "2417891"), ("sea", "3301122"), ("dam", "4417812")],
        "val": [("lake", "5120332")],
        "test": [("river", "1000001"), ("sea", "1000002"), ("sea", "1000003"), ("lake", "1000003")],
    }
    h, w, block = 48, 64, 16
    for split, items in files.items():
        for cls_folder, stem in items:
            mask = random_block_ids(rng, h, w, 57, block).astype(np.uint8)
            if (cls_folder, stem) == ("river", "1000001"):
                mask[:block, :block] = 35  # known pixel: raw 35 -> 34 "river"
                mask[:block, block : 2 * block] = 0  # unlabelled -> 255
            image = np.clip(mask[..., None] * np.array([3, 4, 2]) + rng.integers(0, 30, (h, w, 3)), 0, 255)
            write_files(
                root,
                {
                    f"images/{split}/{cls_folder}/{stem}.jpg": encode(image.astype(np.uint8), "JPEG"),
                    f"masks/{split}/{cls_folder}/{stem}.png": encode(mask, "PNG"),
                },
            )
    (raw_dir / CLONE / "README.md").write_text("synthetic miniature of the ATLANTIS repository\n")
    mark_miniature(raw_dir)
