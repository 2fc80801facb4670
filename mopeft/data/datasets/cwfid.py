"""CWFID (MESS ``cwfid_sem_seg_test``): crop/weed field images, 3 classes, official split.

Annotations are RGB: black = ground, green (0,255,0) = crop, red (255,0,0) = weed (verified
against the YAML polygons). MESS maps red -> 1 "crop seedling" and green -> 2 "weed", i.e. with the
names swapped; mIoU of a closed-set fine-tuned model is invariant to that permutation, so we keep
MESS's class names and order but give each colour its TRUE class (green -> 1 "crop seedling", red ->
2 "weed"). Any other colour is an error. The official split lists id 28 in both train and test; it
is removed from train to avoid leakage.

Source: a git clone pinned to commit ``COMMIT`` (checked by ``mopeft prepare``; ``meta.json``
records the commit).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from mopeft.data.datasets.common import (
    PrepareError,
    PrepareOptions,
    copy_or_convert,
    load_image,
    map_colours,
    save_label,
)
from mopeft.data.spec import DatasetSpec, Source
from mopeft.data.synthetic.miniature import encode, mark_miniature

CLONE = "cwfid"
REPO = "https://github.com/cwfid/dataset.git"
COMMIT = "36290d0912a032f0bd1a5678ed55457ddafde217"  # pinned: the branch tip (2015-04-20)

TEST_IDS = (1, 3, 4, 9, 10, 13, 15, 21, 22, 26, 28, 29, 30, 32, 35, 39, 44, 47, 48, 54, 60)
TRAIN_IDS = (
    2,
    5,
    6,
    7,
    8,
    11,
    12,
    14,
    16,
    17,
    18,
    19,
    20,
    23,
    24,
    25,
    27,
    28,
    31,
    33,
    34,
    36,
    37,
    38,
    40,
    41,
    42,
    43,
    45,
    46,
    49,
    50,
    51,
    52,
    53,
    55,
    56,
    57,
    58,
    59,
)
COLOURS = {(0, 0, 0): 0, (0, 255, 0): 1, (255, 0, 0): 2}

SPEC = DatasetSpec(
    key="cwfid",
    name="CWFID",
    domain="Agriculture and Biology",
    classes=("ground", "crop seedling", "weed"),
    sources=(Source(CLONE, "git", url=REPO, git_ref=COMMIT),),
    expected_test=21,
    expected_train=len(set(TRAIN_IDS) - set(TEST_IDS)),  # 40 listed, 28 removed: 39
    image_format="png",  # the PNGs are copied as they are
    image_hw=(966, 1296),  # all 60 images are 1296x966
    mess_key="cwfid_sem_seg_test",
    sensor="Visible Spectrum",
    segment_size="Small",
    num_classes_label="3 (Few)",
    class_similarity="High",
    vocabulary="Generic",
    task_description="Crops",
    citation="Haug and Ostermann, A Crop/Weed Field Image Dataset, ECCV Workshops 2014",
    notes=(
        "The thesis's Tables 4.1/4.2 spell the dataset 'CEFID'.",
        "MESS labels red (weed) as 'crop seedling' and green (crop) as 'weed'; here green -> 1, red -> 2.",
        "Id 28 is in both official lists; it is removed from train.",
    ),
)


def _check_split_file(clone: Path) -> None:
    """The ids are fixed (MESS hard-codes the same lists); refuse a clone whose YAML disagrees."""
    path = clone / "train_test_split.yaml"
    if not path.exists():
        return
    try:
        split = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PrepareError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(split, dict) or sorted(split.get("test", [])) != sorted(TEST_IDS):
        raise PrepareError(f"{path}: test ids differ from the official CWFID split")


def prepare(raw_dir: Path, out_dir: Path, options: PrepareOptions) -> dict:
    clone = raw_dir / CLONE
    if not (clone / "images").is_dir():
        raise PrepareError(f"{clone}: no images/ folder (clone {REPO} there)")
    _check_split_file(clone)
    splits = {"train": [i for i in TRAIN_IDS if i not in TEST_IDS], "test": list(TEST_IDS)}
    for split, ids in splits.items():
        (out_dir / split / "images").mkdir(parents=True, exist_ok=True)
        for i in ids:
            img = clone / "images" / f"{i:03d}_image.png"
            ann = clone / "annotations" / f"{i:03d}_annotation.png"
            if options.miniature and not img.exists():
                continue  # the miniature holds a few of the 60 ids
            image = load_image(img)
            label = map_colours(load_image(ann, "RGB"), COLOURS, ann)
            if label.shape != image.shape[:2]:
                raise PrepareError(f"{ann}: size {label.shape} differs from image {image.shape[:2]}")
            copy_or_convert(img, image, out_dir / split / "images" / f"{i:03d}.png")
            save_label(out_dir / split / "labels" / f"{i:03d}.png", label, SPEC.num_classes)
    return {
        "split_protocol": "official train_test_split.yaml; id 28 removed from train",
        "colour_mapping": "green (crop) -> 1 'crop seedling', red (weed) -> 2 'weed'",
    }


# ------------------------------------------------------------------------------------- miniature
def write_miniature(raw_dir: Path, seed: int = 0) -> None:
    """A fake clone with images/, annotations/ (RGB + YAML), masks/ and train_test_split.yaml."""
    rng = np.random.default_rng(seed)
    clone = raw_dir / CLONE
    for sub in ("images", "annotations", "masks"):
        (clone / sub).mkdir(parents=True, exist_ok=True)
    h, w = 48, 64  # 1296x966 scaled down
    colours = list(COLOURS)
    for i in (1, 3, 10, 2, 5, 28):  # 3 test ids, 2 train ids, 28 (in both lists)
        ann = np.zeros((h, w, 3), dtype=np.uint8)
        for _ in range(4):
            y, x = int(rng.integers(0, h - 12)), int(rng.integers(0, w - 12))
            ann[y : y + 12, x : x + 12] = colours[int(rng.integers(1, 3))]
        if i == 3:
            ann[:6, :6] = (0, 255, 0)  # known pixel: green = crop -> 1
            ann[:6, 6:12] = (255, 0, 0)  # red = weed -> 2
        veg = ann.any(axis=2)
        image = np.where(veg[..., None], [40, 160, 40], [120, 90, 60]) + rng.integers(0, 30, (h, w, 3))
        (clone / "images" / f"{i:03d}_image.png").write_bytes(
            encode(np.clip(image, 0, 255).astype(np.uint8), "PNG")
        )
        (clone / "annotations" / f"{i:03d}_annotation.png").write_bytes(encode(ann, "PNG"))
        (clone / "annotations" / f"{i:03d}_annotation.yaml").write_text(
            "filename: synthetic\nannotation: []\n"
        )
        (clone / "masks" / f"{i:03d}_mask.png").write_bytes(encode((veg * 255).astype(np.uint8), "PNG"))
    split = {"train": list(TRAIN_IDS), "test": list(TEST_IDS)}
    (clone / "train_test_split.yaml").write_text(yaml.safe_dump(split, default_flow_style=True))
    mark_miniature(raw_dir)
