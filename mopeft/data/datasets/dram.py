"""DRAM (MESS ``dram_sem_seg_test``): paintings labelled with Pascal VOC ids, 718 test images.

The download is a zip that contains ``DRAM_processed.rar``. Python cannot read RAR, so
:func:`~mopeft.data.datasets.common.extract` hands it to the installed tools in turn (``bsdtar`` from the
conda env, ``unrar``, ``unar``, 7-Zip; :mod:`mopeft.data.sources.rar`) and names what to install when none
works; an inner archive that is really a zip or tar (the miniature: no free tool writes RAR) is
unpacked directly.
VOC ids are mapped with MESS's table (11 VOC classes kept, the other VOC classes and background ->
11 "background"); ids outside VOC -> 255. Train images are unlabelled, so every test image goes to
``test/`` (named ``<parent folder>_<file>`` as in MESS) and training uses k-fold units.

Checksums: the publisher gives none for ``DRAM_processed.zip``, so nothing is pinned here; the
sha256 of the file actually used is recorded in ``meta.json`` (``sources``) when it is prepared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mopeft.data.datasets.common import (
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
from mopeft.data.synthetic.miniature import encode, mark_miniature, random_block_label, write_zip, zip_bytes

ARCHIVE = "DRAM_processed.zip"
INNER = "DRAM_processed.rar"
URL = "https://faculty.runi.ac.il/arik/site/artseg/DRAM_processed.zip"

SPEC = DatasetSpec(
    key="dram",
    name="DRAM",
    domain="General",
    classes=(
        "bird",
        "boat",
        "bottle",
        "cat",
        "chair",
        "cow",
        "dog",
        "horse",
        "person",
        "potted-plant",
        "sheep",
        "background",
    ),
    sources=(
        Source(
            ARCHIVE,
            "http",
            url=URL,
            instructions="The zip contains DRAM_processed.rar: bsdtar (conda-forge libarchive, in "
            "envs/mopeft.yaml), unrar, unar or 7-Zip unpacks it.",
        ),
    ),
    expected_test=718,
    image_format="jpeg",  # the JPEGs are copied as they are
    # Paintings of varying size; no typical size is published: an assumption, not a measurement.
    image_hw=(768, 1024),
    mess_key="dram_sem_seg_test",
    train_split="none",
    sensor="Visible Spectrum",
    segment_size="Medium",
    num_classes_label="12 (Medium)",
    class_similarity="Low",
    vocabulary="Generic",
    task_description="Paintings",
    citation="Cohen et al., Semantic Segmentation in Art Paintings, Computer Graphics Forum 2022",
    notes=("No labelled train split: k-fold over the 718 test images.",),
)

# Pascal VOC id -> MESS id (mess/prepare_datasets/prepare_dram.py)
_KEPT = {3: 0, 4: 1, 5: 2, 8: 3, 9: 4, 10: 5, 12: 6, 13: 7, 15: 8, 16: 9, 17: 10}
VOC_TO_MESS: dict[int, int] = {v: _KEPT.get(v, 11) for v in range(21)} | {255: 255}


def prepare(raw_dir: Path, out_dir: Path, options: PrepareOptions) -> dict:
    ensure_layout(out_dir)
    with scratch_dir(out_dir, SPEC.key) as scratch:
        extract(raw_dir / ARCHIVE, scratch / "outer")
        inner = next(iter(visible(scratch / "outer", f"**/{INNER}")), None)
        if inner is None:
            raise PrepareError(f"{raw_dir / ARCHIVE}: no {INNER} inside")
        extract(inner, scratch / "inner")  # RAR: the installed tools in turn (mopeft.data.sources.rar)
        roots = [p.parent for p in visible(scratch / "inner", "**/test") if (p.parent / "labels").is_dir()]
        if len(roots) != 1:
            raise PrepareError(
                f"{raw_dir / ARCHIVE}: expected one DRAM_processed/{{test,labels}}, found {len(roots)}"
            )
        root = roots[0]
        for img in visible(root / "test", "**/*.jpg"):
            rel = img.relative_to(root / "test")
            mask_path = (root / "labels" / rel).with_suffix(".png")
            stem = f"{img.parent.name}_{img.stem}"
            image = load_image(img)
            voc = load_image(mask_path)  # palette PNGs decode to their indices = VOC ids
            if voc.ndim != 2 or voc.shape != image.shape[:2]:
                raise PrepareError(f"{mask_path}: expected single-channel {image.shape[:2]}, got {voc.shape}")
            if (out_dir / "test" / "images" / f"{stem}.jpg").exists():
                raise PrepareError(f"{img}: output name {stem} is not unique")
            copy_or_convert(img, image, out_dir / "test" / "images" / f"{stem}.jpg")
            save_label(
                out_dir / "test" / "labels" / f"{stem}.png", map_ids(voc, VOC_TO_MESS), SPEC.num_classes
            )
    return {"split_protocol": "kfold over test"}


# ------------------------------------------------------------------------------------- miniature
def _voc_palette() -> list[int]:
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def write_miniature(raw_dir: Path, seed: int = 0) -> None:
    """DRAM_processed.zip holding DRAM_processed.rar. The inner file is a ZIP under the .rar name
    (RAR cannot be written with free tools); the preparer detects it by content."""
    rng = np.random.default_rng(seed)
    palette = _voc_palette()
    h, w, block = 40, 56, 8
    tests = [
        ("Impressionism", "monet_1"),
        ("Impressionism", "renoir_4"),
        ("Realism", "monet_1"),
        ("Baroque", "x_7"),
    ]
    members = {}
    for movement, stem in tests:
        voc = random_block_label(rng, h, w, [0, 1, 3, 8, 12, 15, 20, 255], block)
        if (movement, stem) == ("Realism", "monet_1"):
            voc[:block, :block] = 12  # known pixel: VOC dog -> 6
            voc[:block, block : 2 * block] = 7  # VOC car -> 11 background
        image = np.clip(voc[..., None] % 64 * np.array([3, 2, 4]) + rng.integers(0, 50, (h, w, 3)), 0, 255)
        members[f"DRAM_processed/test/{movement}/{stem}.jpg"] = encode(image.astype(np.uint8), "JPEG")
        members[f"DRAM_processed/labels/{movement}/{stem}.png"] = encode(voc, "PNG", palette=palette)
    unlabeled = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    members["DRAM_processed/train/Impressionism/degas_2.jpg"] = encode(unlabeled, "JPEG")
    write_zip(raw_dir / ARCHIVE, {INNER: zip_bytes(members)})
    mark_miniature(raw_dir)
