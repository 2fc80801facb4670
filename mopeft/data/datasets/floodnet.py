"""FloodNet (MESS key ``floodnet_sem_seg_test``): post-hurricane UAV images, mostly 4000x3000.

Manual download (Google-Drive folder; gdown's 50-files-per-folder limit makes it impractical).
Labels are already single-channel ids 0-9, so there is no remapping — any other value is an error.
MESS tiles to 1024² and writes the image tiles as JPEG (448 test images -> 5571 tiles); train (the
official 1445-image train split) is tiled the same way. The official val split is not used.

Checksums: the source is a folder downloaded by hand; no checksums are published for it, and
``meta.json`` (``sources``) records it only as a directory (no content digest).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mopeft.data.datasets.common import (
    MESS_TILE,
    PrepareError,
    PrepareOptions,
    load_image,
    save_image,
    save_label,
    tile,
    visible,
)
from mopeft.data.spec import DatasetSpec, Source
from mopeft.data.synthetic.miniature import encode, mark_miniature, random_block_ids, write_files

CLASSES = (
    "background", "building-flooded", "building-non-flooded", "road-flooded", "road-non-flooded",
    "water", "tree", "vehicle", "pool", "grass",
)  # fmt: skip

ROOT = "FloodNet-Supervised_v1.0"
# our split -> FloodNet split folder
SPLITS = {"test": "test", "train": "train"}

TRAIN_IMAGES, TEST_IMAGES = 1445, 448  # official train / test images (FloodNet paper)

SPEC = DatasetSpec(
    key="floodnet",
    name="FloodNet",
    domain="Earth Monitoring",
    classes=CLASSES,
    sources=(
        Source(
            ROOT,
            "manual",
            url="https://drive.google.com/drive/folders/1leN9eWVQcvWDVYwNb2GCo5ML_wBEycWD",
            instructions=(
                "Download the Google-Drive folder 'FloodNet-Supervised_v1.0' (FloodNet Track 1, supervised) "
                "and place it as data/raw/floodnet/FloodNet-Supervised_v1.0/ with "
                "{train,val,test}/{<split>-org-img/*.jpg,<split>-label-img/*_lab.png}."
            ),
        ),
    ),
    expected_test=5571,
    # Images are 4000x3000 (12 tiles of 1024²) or 4592x3072 (15 tiles); the 448 test images give 5571
    # tiles (consistent with 383 * 12 + 65 * 15), so the 1445 train images (FloodNet paper) are
    # estimated at the same rate: 1445 * 5571 / 448 ~ 17969 tiles.
    expected_train=round(TRAIN_IMAGES * 5571 / TEST_IMAGES),
    image_format="jpeg",  # image tiles are saved as JPEG, as MESS does (labels stay PNG)
    image_hw=(MESS_TILE, MESS_TILE),
    mess_key="floodnet_sem_seg_test",
    channels="RGB",
    train_split="official",
    sensor="Visible Spectrum",
    segment_size="Medium",
    num_classes_label="10 (Few)",
    class_similarity="Low",
    vocabulary="Task Specific",
    task_description="Floods",
    citation="Rahnemoonfar et al., FloodNet: A High Resolution Aerial Imagery Dataset for Post Flood Scene "
    "Understanding, IEEE Access 2021",
    notes=("Train = official train split (1445 images, tiled); the 450-image val split is not used.",),
)


def _load_ids(path: Path) -> np.ndarray:
    """FloodNet labels are 8-bit L (or palette) PNGs of ids; a colour label means a wrong file."""
    label = load_image(path)  # raises PrepareError naming a missing or corrupt file
    with Image.open(path) as im:
        mode = im.mode
    if label.ndim != 2 or mode not in ("L", "P"):
        raise PrepareError(f"{path}: expected a single-channel id label, got mode {mode}")
    return label


def prepare(raw_dir: Path, out_dir: Path, options: PrepareOptions) -> dict:
    """Tile image (JPEG, as MESS) and id label (PNG) of the test and train splits."""
    root = raw_dir / ROOT
    counts: dict[str, int] = {}
    for split, src in SPLITS.items():
        img_dir, lbl_dir = root / src / f"{src}-org-img", root / src / f"{src}-label-img"
        images = visible(img_dir, "*.jpg")
        if not images:
            raise PrepareError(f"{img_dir}: no *.jpg images")
        n = 0
        for img_path in images:
            lbl_path = lbl_dir / f"{img_path.stem}_lab.png"
            image = load_image(img_path, "RGB")
            label = _load_ids(lbl_path)
            if label.shape != image.shape[:2]:
                raise PrepareError(f"{lbl_path}: size {label.shape} differs from image {image.shape[:2]}")
            for i, img_t, lbl_t in tile(image, label, options.tile_size):
                save_image(out_dir / split / "images" / f"{img_path.stem}_{i}.jpg", img_t)
                save_label(out_dir / split / "labels" / f"{img_path.stem}_{i}.png", lbl_t, len(CLASSES))
                n += 1
        counts[split] = n
    return {
        "split_protocol": "test = official test tiled (MESS, JPEG image tiles); train = official train tiled",
        "tiles": counts,
    }


def write_miniature(raw_dir: Path, seed: int = 0) -> None:
    """FloodNet-Supervised_v1.0/{train,val,test}: JPEG images, L-mode id labels in 8x8 blocks."""
    rng = np.random.default_rng(seed)
    raw_dir = Path(raw_dir)
    base = raw_dir / ROOT
    number = 6000
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        for _ in range(n):
            h, w = int(rng.integers(70, 100)), int(rng.integers(70, 140))
            ids = random_block_ids(rng, h, w, len(CLASSES)).astype(np.uint8)
            image = (ids[..., None] * 20 + rng.integers(0, 40, size=(h, w, 3))).clip(0, 255).astype(np.uint8)
            write_files(
                base / split,
                {
                    f"{split}-org-img/{number}.jpg": encode(image, "JPEG", quality=95),
                    f"{split}-label-img/{number}_lab.png": encode(ids, "PNG"),  # uint8 2-D: mode L
                },
            )
            number += 1
    mark_miniature(raw_dir)
