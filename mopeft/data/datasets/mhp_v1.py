"""LV-MHP v1 (MESS ``mhp_v1_sem_seg_test``): multi-human parsing, 19 part classes.

Annotations are one PNG per person (``<imgid>_<NN>_<KK>.png``, part ids 0-18); MESS stacks an
image's person masks and takes the pixel-wise max to get one semantic mask. Splits follow MESS:
``test_list.txt`` -> test (980); the first 3000 names of ``train_list.txt`` -> train (the last 1000
are MESS's val and are not used). Some original JPEGs are truncated, so (like MESS) images are read
with PIL's truncated-image tolerance and re-encoded as RGB JPEG.

Checksums: the publisher gives none for ``LV-MHP-v1.zip``, so nothing is pinned here; the sha256 of
the file actually used is recorded in ``meta.json`` (``sources``) when it is prepared.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import ImageFile

from mopeft.data.datasets.common import (
    PrepareError,
    PrepareOptions,
    extract,
    load_image,
    save_image,
    save_label,
    scratch_dir,
    visible,
)
from mopeft.data.spec import DatasetSpec, Source
from mopeft.data.synthetic.miniature import encode, mark_miniature, write_zip

ARCHIVE = "LV-MHP-v1.zip"
GDRIVE_ID = "1hTS8QJBuGdcppFAr_bvW2tsD9hW_ptr5"
TRAIN_FIRST = 3000  # MESS: first 3000 of train_list.txt = train, the remaining 1000 = val

SPEC = DatasetSpec(
    key="mhp_v1",
    name="MHPv1",
    domain="General",
    classes=(
        "others",
        "hat",
        "hair",
        "sunglasses",
        "upper clothes",
        "skirt",
        "pants",
        "dress",
        "belt",
        "left shoe",
        "right shoe",
        "face",
        "left leg",
        "right leg",
        "left arm",
        "right arm",
        "bag",
        "scarf",
        "torso skin",
    ),
    sources=(
        Source(
            ARCHIVE,
            "gdrive",
            gdrive_id=GDRIVE_ID,
            url=f"https://drive.google.com/uc?export=download&confirm=pbef&id={GDRIVE_ID}",
            instructions="If Google Drive refuses (quota), download LV-MHP-v1.zip from "
            "https://lv-mhp.github.io/ and place it in data/raw/mhp_v1/.",
        ),
    ),
    expected_test=980,
    expected_train=TRAIN_FIRST,
    image_format="jpeg",  # re-encoded as RGB JPEG (quality 95)
    # Web photos of varying size; no typical size is published: an assumption, not a measurement.
    image_hw=(600, 800),
    mess_key="mhp_v1_sem_seg_test",
    sensor="Visible Spectrum",
    segment_size="Small",
    num_classes_label="19 (Medium)",
    class_similarity="High",
    vocabulary="Task-spec.",
    task_description="Body Parts",
    citation="Li et al., Multiple-Human Parsing in the Wild, arXiv:1705.07206",
    notes=("Train = first 3000 of train_list.txt (MESS convention); MESS val (last 1000) unused.",),
)


@contextlib.contextmanager
def _tolerate_truncated() -> Iterator[None]:
    """MESS sets ImageFile.LOAD_TRUNCATED_IMAGES for MHP; scope it to this preparer."""
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


def _read_list(path: Path) -> list[str]:
    if not path.exists():
        raise PrepareError(f"{path}: missing split list")
    return [Path(line.strip()).stem for line in path.read_text().splitlines() if line.strip()]


def _merge_person_masks(ann_dir: Path, img_id: str, shape: tuple[int, int]) -> np.ndarray:
    """Pixel-wise max over the person masks of one image (overlaps resolve to the larger id)."""
    paths = visible(ann_dir, f"{img_id}_*.png")  # "_": avoid prefix collisions (1.png vs 10_..)
    if not paths:
        raise PrepareError(f"{ann_dir}: no person masks {img_id}_*.png")
    merged = np.zeros(shape, dtype=np.uint8)
    for p in paths:
        mask = load_image(p)
        if mask.ndim == 3:  # some masks are stored as RGB with equal channels
            mask = mask[..., 0]
        if mask.shape != shape:
            raise PrepareError(f"{p}: size {mask.shape} differs from image {img_id}.jpg {shape}")
        np.maximum(merged, mask, out=merged)
    return merged


def prepare(raw_dir: Path, out_dir: Path, options: PrepareOptions) -> dict:
    with scratch_dir(out_dir, SPEC.key) as scratch:
        extract(raw_dir / ARCHIVE, scratch)
        roots = [p.parent for p in visible(scratch, "**/train_list.txt")]
        if len(roots) != 1:
            raise PrepareError(
                f"{raw_dir / ARCHIVE}: expected one LV-MHP-v1/train_list.txt, found {len(roots)}"
            )
        root = roots[0]
        splits = {
            "train": _read_list(root / "train_list.txt")[:TRAIN_FIRST],
            "test": _read_list(root / "test_list.txt"),
        }
        with _tolerate_truncated():
            for split, ids in splits.items():
                for img_id in ids:
                    image = load_image(root / "images" / f"{img_id}.jpg", "RGB")
                    label = _merge_person_masks(root / "annotations", img_id, image.shape[:2])
                    save_image(out_dir / split / "images" / f"{img_id}.jpg", image)
                    save_label(out_dir / split / "labels" / f"{img_id}.png", label, SPEC.num_classes)
    return {"split_protocol": f"MESS: train = first {TRAIN_FIRST} of train_list.txt, test = test_list.txt"}


# ------------------------------------------------------------------------------------- miniature
def write_miniature(raw_dir: Path, seed: int = 0) -> None:
    """Zip with images/, per-person annotations/ and the two split lists (4 train, 2 test)."""
    rng = np.random.default_rng(seed)
    h, w = 80, 60
    train_ids, test_ids = ["1", "2", "10", "12"], ["3", "21"]
    members = {}
    for img_id in train_ids + test_ids:
        n_persons = 2 if img_id in ("3", "10") else 1
        union = np.zeros((h, w), dtype=np.uint8)
        for person in range(1, n_persons + 1):
            mask = np.zeros((h, w), dtype=np.uint8)
            x0 = int(rng.integers(0, w // 2))
            for part, (y0, y1) in enumerate(((0, 16), (16, 40), (40, 64), (64, 80)), start=1):
                mask[y0:y1, x0 : x0 + 24] = rng.choice([part, part + 4, part + 10])
            if img_id == "3" and person == 1:
                mask[:4, :4] = 11  # known pixel: face
            if img_id == "3" and person == 2:
                mask[:4, :4] = 2  # overlapping person: max(11, 2) = 11 (face)
            np.maximum(union, mask, out=union)
            members[f"LV-MHP-v1/annotations/{img_id}_{n_persons:02d}_{person:02d}.png"] = encode(mask, "PNG")
        image = np.clip(union[..., None] * np.array([11, 5, 13]) + rng.integers(0, 40, (h, w, 3)), 0, 255)
        members[f"LV-MHP-v1/images/{img_id}.jpg"] = encode(image.astype(np.uint8), "JPEG")
    members["LV-MHP-v1/train_list.txt"] = "".join(f"{i}.jpg\n" for i in train_ids).encode()
    members["LV-MHP-v1/test_list.txt"] = "".join(f"{i}.jpg\n" for i in test_ids).encode()
    write_zip(raw_dir / ARCHIVE, members)
    mark_miniature(raw_dir)
