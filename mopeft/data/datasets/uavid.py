"""UAVid v1.5 (MESS key ``uavid_sem_seg_val``): oblique UAV video frames, 3840/4096 x 2160.

MESS evaluates the official val split (7 sequences x 10 frames -> 840 tiles of 1024²); the official
train split (20 x 10) is tiled the same way. Labels are RGB colours; MESS maps them through a PIL
grayscale lookup, we map the RGB triplets directly. In the test split an off-palette colour is an
error naming the file (MESS's lookup would fail on it too); MESS never reads the train split, whose
off-palette pixels become 255 (ignore) and are counted in ``meta.json`` (``unknown_colour_pixels``).

Checksums: the publisher gives none for the release zip, so nothing is pinned here; the sha256 of
the file actually used is recorded in ``meta.json`` (``sources``) when it is prepared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mopeft.data.datasets.common import (
    IGNORE,
    MESS_TILE,
    PrepareError,
    PrepareOptions,
    extract,
    load_image,
    map_colours,
    num_tiles,
    save_image,
    save_label,
    scratch_dir,
    tile,
    visible,
)
from mopeft.data.spec import DatasetSpec, Source
from mopeft.data.synthetic.miniature import encode, mark_miniature, random_block_ids, write_zip

CLASSES = ("others", "building", "road", "tree", "grass", "moving car", "parked car", "humans")
COLOURS: dict[tuple[int, int, int], int] = {
    (0, 0, 0): 0, (128, 0, 0): 1, (128, 64, 128): 2, (0, 128, 0): 3, (128, 128, 0): 4, (64, 0, 128): 5,
    (192, 0, 192): 6, (64, 64, 0): 7,
}  # fmt: skip

ARCHIVE = "uavid_v1.5_official_release_image.zip"
SPLITS = {"test": "uavid_val", "train": "uavid_train"}

TRAIN_FRAMES = 200  # 20 sequences x 10 frames (UAVid paper)
FRAME_HW = (2160, 3840)  # 3840x2160 or 4096x2160: 12 tiles of 1024² either way

SPEC = DatasetSpec(
    key="uavid",
    name="UAVid",
    domain="Earth Monitoring",
    classes=CLASSES,
    sources=(
        Source(
            ARCHIVE,
            "manual",
            url="https://uavid.nl",
            instructions=(
                "Register at https://uavid.nl, download 'Semantic Labelling with Images Only' "
                f"({ARCHIVE}) and place it at data/raw/uavid/{ARCHIVE}."
            ),
        ),
    ),
    expected_test=840,
    # 200 train frames (20 sequences x 10, UAVid paper) of 3840x2160 or 4096x2160 -> 12 tiles each.
    expected_train=TRAIN_FRAMES * num_tiles(*FRAME_HW),
    image_format="png",  # tiles written by save_image
    image_hw=(MESS_TILE, MESS_TILE),
    mess_key="uavid_sem_seg_val",
    channels="RGB",
    train_split="official",
    sensor="Visible Spectrum",
    segment_size="Small",
    num_classes_label="8 (Few)",
    class_similarity="High",
    vocabulary="Task Specific",
    task_description="Objects",
    citation="Lyu et al., UAVid: A semantic segmentation dataset for UAV imagery, ISPRS J. 2020",
    notes=("Test = official val split (70 images -> 840 tiles), as MESS; train = official train (200).",),
)


def _split_dir(root: Path, name: str) -> Path:
    """The archive may or may not wrap everything in uavid_v1.5_official_release_image/."""
    hits = [p for p in (root / name, *visible(root, f"*/{name}")) if p.is_dir()]
    if not hits:
        raise PrepareError(f"{ARCHIVE}: no {name}/ folder inside the archive")
    return hits[0]


def prepare(raw_dir: Path, out_dir: Path, options: PrepareOptions) -> dict:
    """Map label colours to ids and tile frames of val (test) and train; stems seqN_000XXX_<i>."""
    counts: dict[str, int] = {}
    unknown = 0
    with scratch_dir(out_dir, SPEC.key) as scratch:
        extract(raw_dir / ARCHIVE, scratch)
        for split, name in SPLITS.items():
            frames = visible(_split_dir(scratch, name), "*/Images/*.png")
            if not frames:
                raise PrepareError(f"{raw_dir / ARCHIVE}: no {name}/seq*/Images/*.png frames")
            n = 0
            policy = "error" if split == "test" else "ignore"
            for img_path in frames:
                lbl_path = img_path.parent.parent / "Labels" / img_path.name
                stem = f"{img_path.parent.parent.name}_{img_path.stem}"
                image = load_image(img_path, "RGB")
                label = map_colours(load_image(lbl_path, "RGB"), COLOURS, lbl_path, unknown=policy)
                if split == "train":  # no UAVid class is 255: every 255 was an unknown colour
                    unknown += int((label == IGNORE).sum())
                if label.shape != image.shape[:2]:
                    raise PrepareError(f"{lbl_path}: size {label.shape} differs from image {image.shape[:2]}")
                for i, img_t, lbl_t in tile(image, label, options.tile_size):
                    save_image(out_dir / split / "images" / f"{stem}_{i}.png", img_t)
                    save_label(out_dir / split / "labels" / f"{stem}_{i}.png", lbl_t, len(CLASSES))
                    n += 1
            counts[split] = n
    protocol = "test = official val tiled (MESS); train = official train tiled"
    return {"split_protocol": protocol, "tiles": counts, "unknown_colour_pixels": {"train": unknown}}


def write_miniature(raw_dir: Path, seed: int = 0, stray_colour: bool = False) -> None:
    """The release zip with uavid_{train,val,test}/seqN/{Images,Labels}/000XXX.png (test unlabelled).

    Train labels carry two off-palette pixels per sequence (mapped to 255 and counted);
    ``stray_colour`` plants one in the val (= test) split, for testing that it is refused there.
    """
    rng = np.random.default_rng(seed)
    raw_dir = Path(raw_dir)
    palette = np.array(list(COLOURS), dtype=np.uint8)
    top = "uavid_v1.5_official_release_image"
    members = {}
    seq = 1
    for split, n_seq in (("uavid_train", 2), ("uavid_val", 1), ("uavid_test", 1)):
        for _ in range(n_seq):
            for frame in (0, 100):
                h, w = int(rng.integers(70, 100)), int(rng.integers(70, 140))
                ids = random_block_ids(rng, h, w, len(palette))
                image = (palette[ids].astype(np.int64) + rng.integers(0, 60, size=(h, w, 3))).clip(0, 255)
                members[f"{top}/{split}/seq{seq}/Images/{frame:06d}.png"] = encode(
                    image.astype(np.uint8), "PNG"
                )
                if split != "uavid_test":
                    label = palette[ids]
                    if stray_colour and split == "uavid_val":
                        label[1, 1] = (1, 2, 3)
                    if split == "uavid_train" and frame == 0:  # off-palette pixels (train: -> 255)
                        label[2, 3:5] = (1, 2, 3)
                    members[f"{top}/{split}/seq{seq}/Labels/{frame:06d}.png"] = encode(label, "PNG")
            seq += 1
    write_zip(raw_dir / ARCHIVE, members)
    mark_miniature(raw_dir)
