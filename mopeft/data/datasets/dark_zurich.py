"""Dark Zurich (MESS ``dark_zurich_sem_seg_val``): 50 annotated night val images.

Labels are Cityscapes label ids; MESS masks the invalid region (``_gt_invGray.png`` == 255) and maps
the 19 evaluated ids plus 0 ("unlabeled", a real class here) to 0..19. MESS's table has no entry for
the other Cityscapes ids (1-6, 9, 10, 14-16, 18, 29, 30), so its code would crash on them; we map
them to 255 (Cityscapes convention) explicitly. There is no labelled train split: every image goes
to ``test/`` and training uses k-fold units over it.

Checksums: the publisher gives none for ``Dark_Zurich_val_anon.zip``, so nothing is pinned here; the
sha256 of the file actually used is recorded in ``meta.json`` (``sources``) when it is prepared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mopeft.data.datasets.common import (
    CITYSCAPES_CLASSES,
    IGNORE,
    PrepareError,
    PrepareOptions,
    copy_or_convert,
    ensure_layout,
    extract,
    load_image,
    map_ids,
    save_label,
    scratch_dir,
    visible,
)
from mopeft.data.spec import DatasetSpec, Source
from mopeft.data.synthetic.miniature import encode, mark_miniature, random_block_label, write_zip

ARCHIVE = "Dark_Zurich_val_anon.zip"
URL = "https://data.vision.ee.ethz.ch/csakarid/shared/GCMA_UIoU/Dark_Zurich_val_anon.zip"

SPEC = DatasetSpec(
    key="dark_zurich",
    name="Dark Zurich",
    domain="General",
    classes=("unlabeled", *CITYSCAPES_CLASSES),
    sources=(Source(ARCHIVE, "http", url=URL),),
    expected_test=50,
    image_format="png",  # the val PNGs are copied as they are
    image_hw=(1080, 1920),  # 1920x1080 GoPro frames
    mess_key="dark_zurich_sem_seg_val",
    train_split="none",
    sensor="Visible Spectrum",
    segment_size="Medium",
    num_classes_label="20 (Medium)",
    class_similarity="Low",
    vocabulary="Generic",
    task_description="Driving",
    citation="Sakaridis et al., Guided Curriculum Model Adaptation and Uncertainty-Aware "
    "Evaluation for Semantic Nighttime Image Segmentation, ICCV 2019",
    notes=(
        "Cityscapes ids without a MESS class (1-6, 9, 10, 14-16, 18, 29, 30, -1) -> 255 (MESS would crash).",
        "No labelled train split: k-fold over the 50 val images.",
    ),
)

# Cityscapes label id -> MESS class id (mess/prepare_datasets/prepare_dark_zurich.py)
CITYSCAPES_TO_MESS: dict[int, int] = {
    0: 0,
    7: 1,
    8: 2,
    11: 3,
    12: 4,
    13: 5,
    17: 6,
    19: 7,
    20: 8,
    21: 9,
    22: 10,
    23: 11,
    24: 12,
    25: 13,
    26: 14,
    27: 15,
    28: 16,
    31: 17,
    32: 18,
    33: 19,
    255: 255,
}

_IMG_SUFFIX = "_rgb_anon.png"


def prepare(raw_dir: Path, out_dir: Path, options: PrepareOptions) -> dict:
    """All 50 val images -> test/ (stem ``<seq>_frame_<n>``); train/ stays empty."""
    ensure_layout(out_dir)
    with scratch_dir(out_dir, SPEC.key) as scratch:
        extract(raw_dir / ARCHIVE, scratch)
        images = [p for p in visible(scratch, f"**/*{_IMG_SUFFIX}") if "val" in p.parts]
        if not images:
            raise PrepareError(f"{raw_dir / ARCHIVE}: no rgb_anon/val/**/*{_IMG_SUFFIX} images inside")
        for img_path in images:
            stem = img_path.name.removesuffix(_IMG_SUFFIX)
            rel = img_path.relative_to(scratch)
            parts = list(rel.parts)
            parts[parts.index("rgb_anon")] = "gt"
            gt_dir = scratch.joinpath(*parts[:-1])
            ids_path, inv_path = gt_dir / f"{stem}_gt_labelIds.png", gt_dir / f"{stem}_gt_invGray.png"
            image = load_image(img_path)
            ids = load_image(ids_path)
            if ids.ndim != 2 or ids.shape != image.shape[:2]:
                raise PrepareError(
                    f"{ids_path.name}: expected a single-channel {image.shape[:2]} mask, got {ids.shape}"
                )
            label = map_ids(ids, CITYSCAPES_TO_MESS)
            if inv_path.exists():
                label[load_image(inv_path, "L") == 255] = IGNORE
            elif not options.miniature:
                raise PrepareError(f"{inv_path}: missing invalid-region mask")
            copy_or_convert(img_path, image, out_dir / "test" / "images" / f"{stem}.png")
            save_label(out_dir / "test" / "labels" / f"{stem}.png", label, SPEC.num_classes)
    return {"split_protocol": "kfold over test", "unmapped_cityscapes_ids": "ignore (255)"}


# ------------------------------------------------------------------------------------- miniature
def write_miniature(raw_dir: Path, seed: int = 0) -> None:
    """Val zip with rgb_anon/ and gt/ (labelIds incl. unmapped ids, invGray, labelColor)."""
    rng = np.random.default_rng(seed)
    h, w, block = 54, 96, 12  # 1920x1080 scaled down
    ids_pool = [*sorted(CITYSCAPES_TO_MESS), 4, 15]  # 4 and 15 have no MESS class -> 255
    seq = "GOPR0356"
    members = {}
    for i in range(4):
        stem = f"{seq}_frame_{321 + 60 * i:06d}"
        ids = random_block_label(rng, h, w, ids_pool, block)
        inv = np.zeros((h, w), dtype=np.uint8)
        inv[-6:, :] = 255  # invalid strip at the bottom
        if i == 0:
            ids[:12, :12] = 26  # known pixel: Cityscapes car -> MESS 14
            ids[:12, 12:24] = 4  # unmapped Cityscapes id -> 255
        image = np.clip(ids[..., None] * np.array([5, 9, 3]) + rng.integers(0, 30, (h, w, 3)), 0, 255)
        colour = (ids[..., None] * np.array([37, 91, 53]) % 256).astype(np.uint8)
        members[f"rgb_anon/val/night/{seq}/{stem}_rgb_anon.png"] = encode(image.astype(np.uint8), "PNG")
        members[f"gt/val/night/{seq}/{stem}_gt_labelIds.png"] = encode(ids, "PNG")
        members[f"gt/val/night/{seq}/{stem}_gt_invGray.png"] = encode(inv, "PNG")
        members[f"gt/val/night/{seq}/{stem}_gt_labelColor.png"] = encode(colour, "PNG")
    members["LICENSE.txt"] = b"synthetic miniature of Dark Zurich val (not real data)\n"
    write_zip(raw_dir / ARCHIVE, members)
    mark_miniature(raw_dir)
