"""iSAID (MESS key ``isaid_sem_seg_val``): DOTA-v1.0 aerial images with semantic colour masks.

MESS evaluates the official *val* split (458 images) cut into 1024² tiles (4055 tiles); the
official train split (1411 images) is tiled the same way so that fine-tuning sees the same scale.
The raw layout mirrors the Google-Drive folders MESS downloads (``part*.zip`` hold
``images/P*.png``; the semantic masks archive holds ``images/P*_instance_color_RGB.png``).
Source images reach ~20000² px, so colours are mapped in row blocks of uint32 codes into a uint8
label (:func:`~mopeft.data.datasets.common.map_colours`), never through an int64 array of the whole mask.

Checksums: the publisher gives none for any of the Drive archives, so nothing is pinned here; the
sha256 of the file actually used is recorded in ``meta.json`` (``sources``) when it is prepared.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from mopeft.data.datasets.common import (
    IGNORE,
    MESS_TILE,
    PrepareError,
    PrepareOptions,
    extract,
    load_image,
    map_colours,
    save_image,
    save_label,
    scratch_dir,
    tile,
    visible,
)
from mopeft.data.spec import DatasetSpec, Source
from mopeft.data.synthetic.miniature import encode, mark_miniature, random_block_ids, write_zip

CLASSES = (
    "others", "boat", "storage tank", "baseball diamond", "tennis court", "basketball court",
    "running track field", "bridge", "truck or bus", "car", "helicopter", "swimming pool",
    "traffic circle", "soccer field", "air plane", "pier",
)  # fmt: skip

# iSAID's semantic mask colour -> class id (order of CLASSES), as MESS's preparation maps it.
COLOURS: dict[tuple[int, int, int], int] = {
    (0, 0, 0): 0, (0, 0, 63): 1, (0, 63, 63): 2, (0, 63, 0): 3, (0, 63, 127): 4, (0, 63, 191): 5,
    (0, 63, 255): 6, (0, 127, 63): 7, (0, 127, 127): 8, (0, 0, 127): 9, (0, 0, 191): 10,
    (0, 0, 255): 11, (0, 191, 127): 12, (0, 127, 191): 13, (0, 127, 255): 14, (0, 100, 155): 15,
}  # fmt: skip

MASK_SUFFIX = "_instance_color_RGB.png"
_VAL_IMAGES = "https://drive.google.com/drive/folders/1RV7Z5MM4nJJJPUs6m9wsxDOJxX6HmQqZ"
_VAL_MASKS = "https://drive.google.com/drive/folders/1jlVr4ClmeBA01IQYx7Aq3Scx2YS1Bmpb"
_TRAIN_IMAGES = "https://drive.google.com/drive/folders/1MvSH7sNaY4p4lhwAU_BG3y7zth6-rtrD"

# Archives per split: (image archives, semantic-mask archive), relative to data/raw/isaid/.
SPLIT_ARCHIVES: dict[str, tuple[tuple[str, ...], str]] = {
    "test": (("val/part1.zip",), "val/images.zip"),
    "train": (("train/part1.zip", "train/part2.zip", "train/part3.zip"), "train/train_masks.zip"),
}

# The val files sit alone in Google-Drive *folders* whose file ids MESS never names (it calls
# gdown.download_folder), so they are manual sources; the train parts are single Drive files.
_FOLDER_HOWTO = "download the Google-Drive folder (e.g. `gdown --folder {url}`) and put its {name} at {dest}"
_TRAIN_PART_IDS = ("1pEmwJtugIWhiwgBqOtplNUtTG2T454zn", "1JBWCHdyZOd9ULX0ng5C9haAt3FMPXa3v",
                   "1BlaGYNNEKGmT6OjZjsJ8HoUYrTTmFcO2")  # fmt: skip

TRAIN_IMAGES, TEST_IMAGES = 1411, 458  # official train / val images (iSAID paper)

SPEC = DatasetSpec(
    key="isaid",
    name="iSAID",
    domain="Earth Monitoring",
    classes=CLASSES,
    sources=(
        Source(
            "val/part1.zip",
            "manual",
            url=_VAL_IMAGES,
            instructions="DOTA-v1.0 val images (MESS mirror): "
            + _FOLDER_HOWTO.format(url=_VAL_IMAGES, name="part1.zip", dest="data/raw/isaid/val/part1.zip"),
        ),
        Source(
            "val/images.zip",
            "manual",
            url=_VAL_MASKS,
            instructions="iSAID val semantic masks (MESS mirror): "
            + _FOLDER_HOWTO.format(url=_VAL_MASKS, name="images.zip", dest="data/raw/isaid/val/images.zip"),
        ),
        *(
            Source(
                f"train/part{i}.zip",
                "gdrive",
                url=f"https://drive.google.com/file/d/{fid}",
                gdrive_id=fid,
                instructions="DOTA-v1.0 train images; the three part ids are listed next to the Drive folder "
                f"{_TRAIN_IMAGES} by franchesoni/crispy-bassoon (their order does not matter: the preparer "
                "merges the parts)",
            )
            for i, fid in enumerate(_TRAIN_PART_IDS, 1)
        ),
        Source(
            "train/train_masks.zip",
            "gdrive",
            url="https://drive.google.com/file/d/1YLjZ1cmA9PH3OfzMF-eq6T-O9FTGvSrx",
            gdrive_id="1YLjZ1cmA9PH3OfzMF-eq6T-O9FTGvSrx",
            instructions="iSAID train semantic masks (Drive mirror used by franchesoni/crispy-bassoon); "
            "official source https://captain-whu.github.io/iSAID/ (train/Semantic_masks/images.zip)",
        ),
    ),
    expected_test=4055,
    # The 1411 official train images are cut like the 458 val images (iSAID paper splits), which give
    # 4055 tiles (8.85 per image; DOTA images range from ~800 px to many thousands), so the train split is
    # estimated at the same rate: 1411 * 4055 / 458 ~ 12493 tiles.
    expected_train=round(TRAIN_IMAGES * 4055 / TEST_IMAGES),
    image_format="png",  # tiles written by save_image
    image_hw=(MESS_TILE, MESS_TILE),  # every tile, edge tiles included, is padded to full size
    mess_key="isaid_sem_seg_val",
    channels="RGB",
    train_split="official",
    sensor="Visible Spectrum",
    segment_size="Small",
    num_classes_label="16 (Medium)",
    class_similarity="Low",
    vocabulary="Generic",
    task_description="Objects",
    citation="Waqas Zamir et al., iSAID: A Large-scale Dataset for Instance Segmentation in Aerial Images, "
    "CVPRW 2019",
    notes=(
        "Test = official val split (458 images -> 4055 tiles of 1024x1024), as MESS.",
        "Unknown mask colours are mapped to 255 (MESS would leave the first channel value).",
    ),
)


@contextlib.contextmanager
def _no_pixel_limit() -> Iterator[None]:
    """DOTA images reach ~20000² px, beyond PIL's decompression-bomb guard: lift it while reading."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _find_pairs(root: Path, split: str) -> list[tuple[str, Path, Path]]:
    images = {p.name: p for p in visible(root, "**/*.png") if not p.name.endswith(MASK_SUFFIX)}
    pairs = []
    for mask in visible(root, f"**/*{MASK_SUFFIX}"):
        stem = mask.name.split("_")[0]
        if f"{stem}.png" not in images:
            raise PrepareError(f"{mask}: no image {stem}.png in the {split} image archives")
        pairs.append((stem, images[f"{stem}.png"], mask))
    if not pairs:
        raise PrepareError(f"{root}: no *{MASK_SUFFIX} masks found for split {split}")
    return pairs


def prepare(raw_dir: Path, out_dir: Path, options: PrepareOptions) -> dict:
    """Map mask colours to ids (unknown -> 255) and cut image and mask into MESS tiles."""
    k = SPEC.num_classes
    stats: dict[str, int] = {}
    unknown = 0
    with scratch_dir(out_dir, SPEC.key) as scratch, _no_pixel_limit():
        for split, (image_zips, mask_zip) in SPLIT_ARCHIVES.items():
            root = scratch / split
            for name in (*image_zips, mask_zip):
                extract(raw_dir / name, root / Path(name).stem)
            n = 0
            for stem, img_path, mask_path in _find_pairs(root, split):
                image = load_image(img_path, "RGB")
                label = map_colours(load_image(mask_path, "RGB"), COLOURS, mask_path, unknown="ignore")
                if label.shape != image.shape[:2]:
                    raise PrepareError(f"{mask_path}: size {label.shape} differs from {image.shape[:2]}")
                unknown += int((label == IGNORE).sum())
                for i, img_t, lbl_t in tile(image, label, options.tile_size):
                    save_image(out_dir / split / "images" / f"{stem}_{i}.png", img_t)
                    save_label(out_dir / split / "labels" / f"{stem}_{i}.png", lbl_t, k)
                    n += 1
            stats[split] = n
    return {
        "split_protocol": "test = official val tiled (MESS); train = official train tiled identically",
        "unknown_colour_pixels": unknown,
        "tiles": stats,
    }


# --------------------------------------------------------------------------------------- miniature
def write_miniature(raw_dir: Path, seed: int = 0) -> None:
    """Tiny DOTA/iSAID lookalike: RGB PNGs, colour masks in 8x8 blocks, one stray colour per mask."""
    rng = np.random.default_rng(seed)
    raw_dir = Path(raw_dir)
    palette = np.array(list(COLOURS), dtype=np.uint8)
    pid = 1
    for split, (image_zips, mask_zip) in SPLIT_ARCHIVES.items():
        masks: dict[str, bytes] = {}
        parts: list[dict[str, bytes]] = [{} for _ in image_zips]
        for j in range(2 if split == "test" else 3):
            h, w = int(rng.integers(70, 110)), int(rng.integers(70, 130))
            ids = random_block_ids(rng, h, w, len(palette))
            mask = palette[ids].copy()
            mask[0, 0] = (10, 20, 30)  # stray colour, must become 255
            image = (palette[ids].astype(np.int64) + rng.integers(0, 60, size=(h, w, 3))).clip(0, 255)
            stem = f"P{pid:04d}"
            pid += 1
            parts[j % len(parts)][f"images/{stem}.png"] = encode(image.astype(np.uint8), "PNG")
            masks[f"images/{stem}{MASK_SUFFIX}"] = encode(mask, "PNG")
        for name, files in zip(image_zips, parts, strict=True):
            write_zip(raw_dir / name, files)
        write_zip(raw_dir / mask_zip, masks)
    mark_miniature(raw_dir)
