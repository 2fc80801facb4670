"""BDD100K semantic segmentation (MESS ``bdd100k_sem_seg_val``).

MESS evaluates on the official 10K val split (1000 images) and reads the palette indices of
``labels/sem_seg/colormaps/val``; those indices are the same trainIds 0-18 / 255 as the
single-channel ``masks/`` PNGs, so we read ``masks/`` directly (no palette trick needed) and let
:func:`save_label` refuse any value outside 0..18 / 255. The 7000 labelled train images are the
train split.

The labels zip has been re-issued (331 MB, then 419 MB): both published md5s are accepted. Its
train masks are not exactly the 10K images' train set (masks without an image, reported in the
bdd100k issue tracker), so train pairs are the intersection of the two and ``meta.json`` lists what
was dropped (``train_dropped``); the test split stays exact: a val mask without its image is an error.
Checksums: the publisher gives md5s only (no sha256); the sha256 of the files used is recorded in
``meta.json`` ``sources``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mopeft.data.datasets.common import (
    CITYSCAPES_CLASSES,
    PrepareError,
    PrepareOptions,
    copy_or_convert,
    extract,
    load_image,
    save_label,
    scratch_dir,
    visible,
)
from mopeft.data.spec import DatasetSpec, Source
from mopeft.data.synthetic.miniature import encode, mark_miniature, random_block_label, write_zip

IMAGES_ZIP = "bdd100k_images_10k.zip"
LABELS_ZIP = "bdd100k_sem_seg_labels_trainval.zip"
_WHERE = "Log in at https://bdd-data.berkeley.edu/ (free registration, BDD licence, non-commercial)"

SPEC = DatasetSpec(
    key="bdd100k",
    name="BDD100K",
    domain="General",
    classes=CITYSCAPES_CLASSES,
    sources=(
        Source(
            IMAGES_ZIP,
            "manual",
            url="https://bdd-data.berkeley.edu/",
            md5="08f26aecceda982568063d3d5873378e",
            instructions=f"{_WHERE}, download '10K Images' ({IMAGES_ZIP}, 1.1 GB) into data/raw/bdd100k/.",
        ),
        Source(
            LABELS_ZIP,
            "manual",
            url="https://bdd-data.berkeley.edu/",
            md5="098c0c17ca58364c47c5882b3eb7058d",  # first release, 331 MB
            also_md5=("9a2968dde3345eeb689cffb1e26f9c78",),  # re-issued release, 419 MB (current docs)
            instructions=f"{_WHERE}, download 'Semantic Segmentation' ({LABELS_ZIP}, 419 MB; older "
            "copies are 331 MB, both are accepted) into data/raw/bdd100k/.",
        ),
    ),
    expected_test=1000,
    # 10K set: 7000 train / 1000 val / 2000 test images of 1280x720 (BDD100K docs); JPEGs copied as is.
    expected_train=7000,
    image_format="jpeg",
    image_hw=(720, 1280),
    mess_key="bdd100k_sem_seg_val",
    sensor="Visible Spectrum",
    segment_size="Medium",
    num_classes_label="19 (Medium)",
    class_similarity="Low",
    vocabulary="Generic",
    task_description="Driving",
    citation="Yu et al., BDD100K: A Diverse Driving Dataset for Heterogeneous Multitask Learning, CVPR 2020",
    notes=(
        "Table 4.2 of the thesis prints 100 images; MESS evaluates the 1000 official val images.",
        "No background class (MESS background_class=255); 255 = unknown/ignore.",
    ),
)

_SPLITS = {"train": "train", "test": "val"}  # our split -> BDD split
log = logging.getLogger(__name__)


def _pairs(
    img_dir: Path, mask_dir: Path, split: str, images_zip: Path
) -> tuple[list[tuple[Path, Path]], dict[str, list[str]]]:
    """(image, mask) pairs by stem; train keeps the intersection and reports the rest, test is exact."""
    masks = {p.stem: p for p in visible(mask_dir, "*.png")}
    images = {p.stem: p for p in visible(img_dir, "*.jpg")} if img_dir.is_dir() else {}
    if split == "test":
        if missing := sorted(set(masks) - set(images)):
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise PrepareError(f"{images_zip}: missing image for {missing[0]}.png ({missing[0]}.jpg){more}")
        return [(images[s], masks[s]) for s in sorted(masks)], {}
    dropped = {
        "masks_without_image": sorted(f"{s}.png" for s in set(masks) - set(images)),
        "images_without_mask": sorted(f"{s}.jpg" for s in set(images) - set(masks)),
    }
    if dropped["masks_without_image"] or dropped["images_without_mask"]:
        log.warning(
            "bdd100k train: dropped %d masks without image and %d images without mask (listed in meta.json)",
            len(dropped["masks_without_image"]),
            len(dropped["images_without_mask"]),
        )
    return [(images[s], masks[s]) for s in sorted(set(masks) & set(images))], dropped


def prepare(raw_dir: Path, out_dir: Path, options: PrepareOptions) -> dict:
    """Official val -> test, official train -> train; images copied as JPEG, masks checked."""
    dropped: dict[str, list[str]] = {}
    with scratch_dir(out_dir, SPEC.key) as scratch:
        extract(raw_dir / IMAGES_ZIP, scratch)
        extract(raw_dir / LABELS_ZIP, scratch)
        root = scratch / "bdd100k"
        for split, bdd_split in _SPLITS.items():
            img_dir = root / "images" / "10k" / bdd_split
            mask_dir = root / "labels" / "sem_seg" / "masks" / bdd_split
            if not mask_dir.is_dir():
                raise PrepareError(f"{raw_dir / LABELS_ZIP}: no bdd100k/labels/sem_seg/masks/{bdd_split}/")
            (out_dir / split / "images").mkdir(parents=True, exist_ok=True)
            pairs, lost = _pairs(img_dir, mask_dir, split, raw_dir / IMAGES_ZIP)
            dropped |= lost
            for img_path, mask_path in pairs:
                image = load_image(img_path)  # decodes fully: truncated files fail here
                label = load_image(mask_path)
                if label.ndim != 2:
                    raise PrepareError(f"{mask_path.name}: mask must be single-channel, got {label.shape}")
                if label.shape != image.shape[:2]:
                    raise PrepareError(
                        f"{mask_path.name}: size {label.shape} differs from image {image.shape[:2]}"
                    )
                copy_or_convert(img_path, image, out_dir / split / "images" / img_path.name)
                save_label(out_dir / split / "labels" / mask_path.name, label, SPEC.num_classes)
    return {
        "split_protocol": "official: train = 10k/train with a mask (7000), test = 10k/val (1000)",
        "train_dropped": dropped,
    }


# ------------------------------------------------------------------------------------- miniature
def write_miniature(raw_dir: Path, seed: int = 0) -> None:
    """Two zips as BDD ships them: 10k images (train/val/test) and sem_seg masks + colormaps; the
    train split has one mask without an image and one image without a mask."""
    rng = np.random.default_rng(seed)
    h, w = 72, 128  # 1280x720 scaled down
    palette = [int(v) for v in rng.integers(0, 256, size=256 * 3)]
    images, labels = {}, {}
    for k, (bdd_split, n) in enumerate((("train", 3), ("val", 2), ("test", 1))):
        for i in range(n):
            stem = f"{0x7D2F7975 + 16 * k + i:08x}-e0c1c5a7"  # BDD-style names; val #0 = 7d2f7985-...
            label = random_block_label(rng, h, w, [*range(19), 255])
            if bdd_split == "val" and i == 0:
                label[:8, :8] = 13  # known pixel: car
                label[:8, 8:16] = 255
            image = (label[..., None] * np.array([7, 13, 29]) % 256).astype(np.uint8)
            image = np.clip(image + rng.integers(0, 20, image.shape), 0, 255).astype(np.uint8)
            images[f"bdd100k/images/10k/{bdd_split}/{stem}.jpg"] = encode(image, "JPEG", quality=90)
            if bdd_split == "test":
                continue  # test labels are withheld
            labels[f"bdd100k/labels/sem_seg/masks/{bdd_split}/{stem}.png"] = encode(label, "PNG")
            labels[f"bdd100k/labels/sem_seg/colormaps/{bdd_split}/{stem}.png"] = encode(
                label, "PNG", palette=palette
            )
    # The real train split's quirk: a mask whose image is not in the 10K set (and vice versa).
    orphan = random_block_label(rng, h, w, [*range(19), 255])
    labels["bdd100k/labels/sem_seg/masks/train/0a0a0b1a-7c39d841.png"] = encode(orphan, "PNG")
    images["bdd100k/images/10k/train/0a0eaeaf-9ad0c6dd.jpg"] = encode(
        (orphan[..., None] * np.array([7, 13, 29]) % 256).astype(np.uint8), "JPEG", quality=90
    )
    write_zip(raw_dir / IMAGES_ZIP, images)
    write_zip(raw_dir / LABELS_ZIP, labels)
    mark_miniature(raw_dir)
