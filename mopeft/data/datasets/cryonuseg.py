"""CryoNuSeg nuclei (MESS ``cryonuseg_sem_seg_test``).

The Kaggle download (``archive.zip``) holds 30 H&E images ``tissue images/<id>.tif`` and several
annotators' masks; MESS uses ``Annotator 1 (biologist second round of manual marks up)/<same name
again>/mask binary/<id>.png`` (0/255) and computes ``uint8(mask / 255)``. There is no labelled
train split: all 30 images go to ``test/`` and training uses k-fold units over them
(:mod:`mopeft.data.prepared.units`).

Checksums: the publisher gives none for the Kaggle ``archive.zip``, so nothing is pinned here; the
sha256 of the file actually used is recorded in ``meta.json`` (``sources``) when it is prepared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mopeft.data.datasets.common import (
    PrepareError,
    PrepareOptions,
    check_same_size,
    extract,
    files_with_suffix,
    find_dir,
    floor_div_255,
    load_image,
    put_image,
    save_label,
    scratch_dir,
    single_channel,
)
from mopeft.data.spec import DatasetSpec, Source
from mopeft.data.synthetic.miniature import (
    blob_label,
    encode,
    image_for,
    macos_junk,
    mark_miniature,
    write_zip,
)

ZIP = "archive.zip"
KAGGLE = "ipateam/segmentation-of-nuclei-in-cryosectioned-he-images"
ANNOTATOR = "Annotator 1 (biologist second round of manual marks up)"
MASK_DIR = f"{ANNOTATOR}/{ANNOTATOR}/mask binary"

SPEC = DatasetSpec(
    key="cryonuseg",
    name="CryoNuSeg",
    domain="Medical Imaging",
    classes=("others", "nuclei in cells"),
    sources=(
        Source(
            ZIP,
            "kaggle",
            url=f"https://www.kaggle.com/datasets/{KAGGLE}",
            instructions=(
                "Needs a Kaggle account. Either click 'Download' on the dataset page (the browser saves "
                f"archive.zip) or run `kaggle datasets download -d {KAGGLE}` and rename the zip to "
                "archive.zip; place it at data/raw/cryonuseg/archive.zip (do not unzip). "
                "Licence CC BY-NC-SA 4.0."
            ),
        ),
    ),
    expected_test=30,
    image_format="png",  # the TIFFs are converted to PNG
    image_hw=(512, 512),  # all 30 images are 512x512 (CryoNuSeg paper)
    mess_key="cryonuseg_sem_seg_test",
    channels="RGB",
    train_split="none",
    sensor="Microscopic",
    segment_size="Small",
    num_classes_label="2 (Binary)",
    class_similarity="Low",
    vocabulary="Domain Specific",
    task_description="WSI",
    citation="Mahbod et al., CryoNuSeg: A dataset for nuclei instance segmentation of cryosectioned "
    "H&E-stained histological images, Computers in Biology and Medicine 2021",
    notes=(
        "Test-only dataset: no labelled train split; models are trained with k-fold over the 30 test images.",
        "Ground truth = Annotator 1 (biologist, second round) 'mask binary', 255 -> nuclei.",
    ),
)


def prepare(raw_dir: Path, out_dir: Path, options: PrepareOptions) -> dict:
    """All 30 images (TIFF -> PNG) to test/, Annotator-1 binary masks floored /255; train/ empty."""
    archive = raw_dir / ZIP
    with scratch_dir(out_dir, SPEC.key) as scratch:
        extract(archive, scratch)
        img_dir = find_dir(scratch, "tissue images", archive)
        mask_dir = find_dir(scratch, MASK_DIR, archive)
        images = files_with_suffix(img_dir, ".tif", ".tiff")
        if not images:
            raise PrepareError(f"{archive}: no .tif images in 'tissue images'")
        for img_path in images:
            hw = put_image(img_path, out_dir / "test" / "images", img_path.stem)
            mask_path = mask_dir / f"{img_path.stem}.png"
            mask = single_channel(load_image(mask_path), mask_path)
            check_same_size(mask, hw, mask_path)
            label = floor_div_255(mask, mask_path)
            save_label(out_dir / "test" / "labels" / f"{img_path.stem}.png", label, 2)
    for sub in ("images", "labels"):
        (out_dir / "train" / sub).mkdir(parents=True, exist_ok=True)
    return {"split_protocol": "kfold over test", "annotator": ANNOTATOR}


# ------------------------------------------------------------------------------------- miniature
MINI_IDS = ("Human_AdrenalGland_01", "Human_Larynx_02", "Human_Pancreas_03")


def write_miniature(raw_dir: Path, seed: int = 0) -> None:
    """``archive.zip`` as Kaggle serves it: TIFF images, Annotator 1 and 2 'mask binary' folders.

    Planted: Annotator 1 mask top-left 4x4 = 255 (-> nuclei); Annotator 2 mask there = 0 (so using
    the wrong annotator shows).
    """
    rng = np.random.default_rng(seed)
    other = "Annotator 2 (bioinformatician)"
    members = {}
    for id_ in MINI_IDS:
        lab = blob_label(rng, 48, 48, [0, 1], n=6)
        lab[:4, :4] = 1
        alt = blob_label(rng, 48, 48, [0, 1])
        alt[:4, :4] = 0
        members[f"tissue images/{id_}.tif"] = encode(image_for(rng, lab), "TIFF")
        members[f"{MASK_DIR}/{id_}.png"] = encode((lab * 255).astype(np.uint8), "PNG")
        members[f"{other}/{other}/mask binary/{id_}.png"] = encode((alt * 255).astype(np.uint8), "PNG")
    write_zip(raw_dir / ZIP, macos_junk(members))  # zipped on a Mac: __MACOSX/ copies
    mark_miniature(raw_dir)
