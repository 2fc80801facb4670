"""SUIM (MESS key ``suim_sem_seg_test``): underwater imagery, 8 classes coded as RGB bits.

Mask colours use channels in {0, 255}: R, G, B each encode one bit, so after thresholding every
channel at 127 (the train masks carry non-pure colours from compression) the class id is simply
4*R + 2*G + B — every pixel maps, nothing is unknown. Test = MESS's TEST.zip (110 images); train =
the ``train_val`` release (1525 images). Images are copied unchanged (JPEG bytes) when they are RGB.

Checksums: the publisher gives none for ``TEST.zip`` or ``train_val.zip``, so nothing is pinned
here; the sha256 of the file actually used is recorded in ``meta.json`` (``sources``) when it is
prepared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mopeft.data.datasets.common import (
    PrepareError,
    PrepareOptions,
    extract,
    files_with_suffix,
    image_size,
    load_image,
    put_image,
    save_label,
    scratch_dir,
    visible,
)
from mopeft.data.spec import DatasetSpec, Source
from mopeft.data.synthetic.miniature import encode, mark_miniature, random_block_ids, write_zip

ASPECT_TOLERANCE = 0.02  # a train mask this close to its image's aspect ratio is resized, else dropped

CLASSES = (
    "background (waterbody)", "human diver", "aquatic plants and sea-grass", "wrecks and ruins",
    "robots (auvs/rovs/instruments)", "reefs and invertebrates", "fish and vertebrates",
    "sea-floor and rocks",
)  # fmt: skip
# SUIM's published colour code: (R, G, B) -> id; equals 4*(R>127) + 2*(G>127) + (B>127).
COLOURS: dict[tuple[int, int, int], int] = {
    (0, 0, 0): 0, (0, 0, 255): 1, (0, 255, 0): 2, (0, 255, 255): 3, (255, 0, 0): 4, (255, 0, 255): 5,
    (255, 255, 0): 6, (255, 255, 255): 7,
}  # fmt: skip

# our split -> (archive, top folder inside it)
ARCHIVES = {"test": ("TEST.zip", "TEST"), "train": ("train_val.zip", "train_val")}

SPEC = DatasetSpec(
    key="suim",
    name="SUIM",
    domain="Agriculture and Biology",
    classes=CLASSES,
    sources=(
        Source(
            "TEST.zip",
            "gdrive",
            url="https://drive.google.com/file/d/1diN3tNe2nR1eV3Px4gqlp6wp3XuLBwDy",
            gdrive_id="1diN3tNe2nR1eV3Px4gqlp6wp3XuLBwDy",
            instructions="SUIM test set (110 images); dataset page "
            "https://irvlab.cs.umn.edu/resources/suim-dataset",
        ),
        Source(
            "train_val.zip",
            "gdrive",
            url="https://drive.google.com/file/d/1YWjUODQWwQ3_vKSytqVdF4recqBOEe72",
            gdrive_id="1YWjUODQWwQ3_vKSytqVdF4recqBOEe72",
            instructions="SUIM train_val set (1525 images); also in the Drive folder "
            "10KMK0rNB43V2g30NcA1RYipL535DuZ-h",
        ),
    ),
    expected_test=110,
    # train_val holds 1525 pairs (SUIM paper); the few whose mask aspect ratio differs from the image's
    # are dropped (see prepare), so this is an upper bound.
    expected_train=1525,
    image_format="jpeg",  # the JPEGs are copied as they are
    # 640x480 is the most common size; the largest images are 1906x1080.
    image_hw=(480, 640),
    max_image_hw=(1080, 1906),
    mess_key="suim_sem_seg_test",
    channels="RGB",
    train_split="official",
    sensor="Visible Spectrum",
    segment_size="Medium",
    num_classes_label="8 (Few)",
    class_similarity="Low",
    vocabulary="Generic",
    task_description="Underwater",
    citation="Islam et al., Semantic Segmentation of Underwater Imagery: Dataset and Benchmark, IROS 2020",
    notes=("Masks thresholded per channel at 127 before the lookup (train masks are not pure colours).",),
)


def mask_to_ids(mask: np.ndarray, where: Path) -> np.ndarray:
    if mask.ndim != 3 or mask.shape[2] < 3:
        raise PrepareError(f"{where}: SUIM mask must be RGB, got shape {mask.shape}")
    bits = (mask[..., :3] > 127).astype(np.uint8)
    return 4 * bits[..., 0] + 2 * bits[..., 1] + bits[..., 2]


def fit_train_mask(label: np.ndarray, hw: tuple[int, int]) -> np.ndarray | None:
    """A train mask whose size differs from its image: nearest-resized to the image when both have
    the same aspect ratio (within ``ASPECT_TOLERANCE``: a mask saved at another scale), else None
    (the pair is dropped: a crop or a rotation cannot be undone)."""
    mh, mw = label.shape
    ih, iw = hw
    if abs((mh / mw) / (ih / iw) - 1) > ASPECT_TOLERANCE:
        return None
    return np.asarray(Image.fromarray(label).resize((iw, ih), Image.Resampling.NEAREST))


def prepare(raw_dir: Path, out_dir: Path, options: PrepareOptions) -> dict:
    """One label per mask (*.bmp); its image is the same stem in images/."""
    counts: dict[str, int] = {}
    mismatched: dict[str, list[dict]] = {"resized": [], "dropped": []}
    with scratch_dir(out_dir, SPEC.key) as scratch:
        for split, (archive, top) in ARCHIVES.items():
            root = extract(raw_dir / archive, scratch / split)
            tops = [p for p in (root / top, *visible(root, f"*/{top}")) if (p / "masks").is_dir()]
            if not tops:
                raise PrepareError(f"{raw_dir / archive}: no {top}/masks/ folder inside")
            base = tops[0]
            if not (base / "images").is_dir():
                raise PrepareError(f"{raw_dir / archive}: no {top}/images/ folder inside")
            suffixes = (".jpg", ".jpeg", ".png")
            images = {p.stem: p for p in files_with_suffix(base / "images", *suffixes)}
            masks = files_with_suffix(base / "masks", ".bmp")
            if not masks:
                raise PrepareError(f"{raw_dir / archive}: no masks/*.bmp")
            n = 0
            for mask_path in masks:
                if mask_path.stem not in images:
                    raise PrepareError(f"{mask_path}: no image with stem {mask_path.stem!r} in {top}/images")
                label = mask_to_ids(load_image(mask_path, "RGB"), mask_path)
                src = images[mask_path.stem]
                hw = image_size(src)
                if label.shape != hw:
                    if split == "test":  # MESS's test split is used exactly as released
                        raise PrepareError(f"{mask_path}: size {label.shape} differs from its image {hw}")
                    fitted = fit_train_mask(label, hw)
                    record = {"mask": mask_path.name, "mask_hw": list(label.shape), "image_hw": list(hw)}
                    mismatched["resized" if fitted is not None else "dropped"].append(record)
                    if fitted is None:
                        continue
                    label = fitted
                # RGB JPEGs are copied unchanged; anything else becomes an RGB PNG
                put_image(src, out_dir / split / "images", src.stem, copy_suffixes=(".jpg", ".jpeg"))
                save_label(out_dir / split / "labels" / f"{mask_path.stem}.png", label, len(CLASSES))
                n += 1
            counts[split] = n
    return {
        "split_protocol": "test = TEST.zip (MESS); train = train_val.zip",
        "images": counts,
        "train_size_mismatch": mismatched,
    }


def write_miniature(raw_dir: Path, seed: int = 0) -> None:
    """TEST.zip and train_val.zip with images/*.jpg and masks/*.bmp; train masks carry impure colours
    and one train mask is half the size of its image."""
    rng = np.random.default_rng(seed)
    raw_dir = Path(raw_dir)
    palette = np.array(list(COLOURS), dtype=np.uint8)
    for split, (archive, top) in ARCHIVES.items():
        members = {}
        for j in range(2 if split == "test" else 3):
            h, w = int(rng.integers(40, 80)), int(rng.integers(40, 90))
            ids = random_block_ids(rng, h, w, len(palette))
            mask = palette[ids].astype(np.int64)
            if split == "train":  # compression-like noise around pure values
                mask = np.where(
                    mask > 127, mask - rng.integers(0, 60, mask.shape), mask + rng.integers(0, 60, mask.shape)
                )
            image_ids = ids
            if split == "train" and j == 1:  # the release's quirk: mask at half its image's size
                image_ids = np.kron(ids, np.ones((2, 2), dtype=ids.dtype))
            shape = (*image_ids.shape, 3)
            image = (palette[image_ids] // 2 + rng.integers(0, 80, size=shape)).astype(np.uint8)
            stem = f"d_r_{100 + j}_" if split == "test" else f"f_r_{1000 + j}_"
            members[f"{top}/images/{stem}.jpg"] = encode(image, "JPEG", quality=95)
            members[f"{top}/masks/{stem}.bmp"] = encode(mask.astype(np.uint8), "BMP")
        write_zip(raw_dir / archive, members)
    mark_miniature(raw_dir)
