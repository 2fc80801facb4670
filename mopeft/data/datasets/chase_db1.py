"""CHASE DB1 retinal vessels (MESS ``chase_db1_sem_seg_test``).

The zip is flat: 28 fundus images ``Image_<NN><L|R>.jpg`` with two observers' vessel maps
``Image_<NN><L|R>_1stHO.png`` / ``_2ndHO.png``. MESS sorts the images by name, skips the first 8
(Image_01L ... Image_04R) as "train" and evaluates the remaining 20 against the 1st observer. MESS
converts the mask with ``astype(uint8)`` and no division, which is right only when PIL opens the
PNG as 1-bit; some CHASE PNGs are 8-bit 0/255, which that rule would turn into 255 = ignore. We
therefore threshold explicitly (>= 128 -> vessel, after decoding as 8-bit grey), which gives the
intended {0, 1} for both encodings.

Test images: MESS re-saves each JPEG with ``img.convert('RGB').save(...)`` (PIL's default JPEG
quality 75); by default we copy the published bytes instead, and ``test_images="mess"``
(:class:`PrepareOptions`) reproduces MESS's re-encoding. Train images are always copied (MESS
prepares no train split).

Checksums: the publisher gives none for ``CHASEDB1.zip``, so nothing is pinned here; the sha256 of
the file actually used is recorded in ``meta.json`` (``sources``) when it is prepared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mopeft.data.datasets.common import (
    PrepareError,
    PrepareOptions,
    check_same_size,
    extract,
    load_image,
    mess_resave,
    put_image,
    save_label,
    scratch_dir,
    visible,
)
from mopeft.data.spec import DatasetSpec, Source
from mopeft.data.synthetic.miniature import blob_label, encode, image_for, mark_miniature, write_zip

ZIP = "CHASEDB1.zip"
TRAIN_LEN = 8  # MESS: the first 8 sorted images are "train", the other 20 the test set

SPEC = DatasetSpec(
    key="chase_db1",
    name="CHASE DB1",
    domain="Medical Imaging",
    classes=("others", "blood vessels"),
    sources=(
        Source(ZIP, "http", url="https://staffnet.kingston.ac.uk/~ku15565/CHASE_DB1/assets/CHASEDB1.zip"),
    ),
    expected_test=20,
    expected_train=TRAIN_LEN,
    image_format="jpeg",  # the JPEGs are copied as they are
    image_hw=(960, 999),  # all 28 fundus images are 999x960
    mess_key="chase_db1_sem_seg_test",
    channels="RGB",
    train_split="official",
    sensor="Microscopic",
    segment_size="Small",
    num_classes_label="2 (Binary)",
    class_similarity="Low",
    vocabulary="Domain Specific",
    task_description="Retina scan",
    citation="Fraz et al., An ensemble classification-based approach applied to retinal blood vessel "
    "segmentation, IEEE TBME 2012",
    notes=(
        "CHASE has no official train split; train = the 8 images MESS skips (Image_01L..Image_04R), "
        "test = the other 20 (mmsegmentation uses the opposite split; do not mix).",
        "Ground truth = 1st human observer (_1stHO.png), thresholded at 128 (MESS relies on 1-bit PNGs).",
        "Licence: CC BY 4.0.",
    ),
)


def prepare(raw_dir: Path, out_dir: Path, options: PrepareOptions) -> dict:
    """First 8 sorted images -> train, last 20 -> test; GT = 1stHO thresholded to {0, 1}."""
    archive = raw_dir / ZIP
    with scratch_dir(out_dir, SPEC.key) as scratch:
        extract(archive, scratch)
        images = sorted(visible(scratch, "**/Image_*.jpg"), key=lambda p: p.name)
        folders = {p.parent for p in images}
        if len(folders) != 1:
            raise PrepareError(f"{archive}: expected all Image_*.jpg in one folder, found {len(folders)}")
        if len(images) <= TRAIN_LEN:
            raise PrepareError(f"{archive}: {len(images)} images; the MESS split needs more than {TRAIN_LEN}")
        for i, img_path in enumerate(images):
            split = "train" if i < TRAIN_LEN else "test"
            if split == "test" and options.test_images == "mess":
                hw = load_image(img_path).shape[:2]  # decoded first: a truncated file fails here
                mess_resave(img_path, out_dir / split / "images" / img_path.name)
            else:
                hw = put_image(img_path, out_dir / split / "images", img_path.stem)
            mask_path = img_path.with_name(f"{img_path.stem}_1stHO.png")
            grey = load_image(mask_path, "L")  # 1-bit -> 0/255, 8-bit stays 0/255
            check_same_size(grey, hw, mask_path)
            save_label(out_dir / split / "labels" / f"{img_path.stem}.png", (grey >= 128).astype(np.uint8), 2)
    return {
        "split_protocol": f"MESS: first {TRAIN_LEN} sorted images = train, remaining = test",
        "train_images": [p.stem for p in images[:TRAIN_LEN]],
        "mask_rule": "1stHO >= 128 -> vessel",
        "test_images": options.test_images,
    }


# ------------------------------------------------------------------------------------- miniature
def write_miniature(raw_dir: Path, seed: int = 0) -> None:
    """``CHASEDB1.zip``, flat, all 28 names (Image_01L ... Image_14R) at tiny size.

    All 28 are written so the first-8 rule is exercised. 1stHO masks are 1-bit PNGs except
    Image_05L's, which is an 8-bit 0/255 PNG (the "non-standard" case). Planted: 1stHO top-left
    4x4 = vessel, 2ndHO top-left 4x4 = background (so using the wrong observer shows).
    """
    rng = np.random.default_rng(seed)
    members = {}
    for n in range(1, 15):
        for eye in "LR":
            stem = f"Image_{n:02d}{eye}"
            h, w = 32, 30
            first = blob_label(rng, h, w, [0, 1])
            first[:4, :4] = 1
            second = blob_label(rng, h, w, [0, 1])
            second[:4, :4] = 0
            members[f"{stem}.jpg"] = encode(image_for(rng, first), "JPEG", quality=92)
            mode = None if stem == "Image_05L" else "1"
            members[f"{stem}_1stHO.png"] = encode((first * 255).astype(np.uint8), "PNG", mode)
            members[f"{stem}_2ndHO.png"] = encode((second * 255).astype(np.uint8), "PNG", "1")
    write_zip(raw_dir / ZIP, members)
    mark_miniature(raw_dir)
