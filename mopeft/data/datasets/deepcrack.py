"""DeepCrack (MESS ``deepcrack_sem_seg_test``).

The data ship inside the authors' git repository as ``DeepCrack/dataset/DeepCrack.zip`` with
``{train,test}_img/*.jpg`` and ``{train,test}_lab/*.png`` (0/255, 544x384). MESS computes
``uint8(mask / 255)``: only 255 is "crack", lower values (JPEG-era edge noise) are background.

Source: a git clone pinned to commit ``COMMIT`` (checked by ``mopeft prepare``; ``meta.json``
records the commit), which fixes ``DeepCrack.zip`` too.
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
    pair_by_stem,
    put_image,
    save_label,
    scratch_dir,
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

REPO = "DeepCrack"  # git clone of https://github.com/yhlleo/DeepCrack.git
COMMIT = "8202a60701068645c883ed68b95fd3f30914d90c"  # pinned: the branch tip (2023-05-08, README update)
INNER_ZIP = Path("dataset") / "DeepCrack.zip"

SPEC = DatasetSpec(
    key="deepcrack",
    name="DeepCrack",
    domain="Engineering",
    classes=("concrete or asphalt", "crack"),
    sources=(
        Source(
            REPO,
            "git",
            url="https://github.com/yhlleo/DeepCrack.git",
            git_ref=COMMIT,
            instructions="git clone https://github.com/yhlleo/DeepCrack.git data/raw/deepcrack/DeepCrack "
            f"&& git -C data/raw/deepcrack/DeepCrack checkout {COMMIT} (the preparer reads "
            "DeepCrack/dataset/DeepCrack.zip).",
        ),
    ),
    expected_test=237,
    expected_train=300,  # train_img
    image_format="jpeg",  # the JPEGs are copied as they are
    image_hw=(384, 544),  # all images are 544x384
    mess_key="deepcrack_sem_seg_test",
    channels="RGB",
    train_split="official",
    sensor="Visible Spectrum",
    segment_size="Small",
    num_classes_label="2 (Binary)",
    class_similarity="Low",
    vocabulary="Generic",
    task_description="Cracks",
    citation="Liu et al., DeepCrack: A deep hierarchical feature learning architecture for crack "
    "segmentation, Neurocomputing 2019",
    notes=(
        "MESS 'adapted' variant names class 0 'concrete or asphalt or others'; the benchmark key uses "
        "'concrete or asphalt'.",
    ),
)


def prepare(raw_dir: Path, out_dir: Path, options: PrepareOptions) -> dict:
    """``train_img/_lab`` -> train (300), ``test_img/_lab`` -> test (237); masks floored /255."""
    archive = raw_dir / REPO / INNER_ZIP
    if not archive.is_file():
        raise PrepareError(f"{archive}: missing; git clone {SPEC.sources[0].url} {raw_dir / REPO}")
    with scratch_dir(out_dir, SPEC.key) as scratch:
        extract(archive, scratch)
        for split in ("train", "test"):
            img_dir = find_dir(scratch, f"{split}_img", archive)
            lab_dir = find_dir(scratch, f"{split}_lab", archive)
            images, masks = files_with_suffix(img_dir, ".jpg"), files_with_suffix(lab_dir, ".png")
            pairs = pair_by_stem(images, masks, img_dir)
            for img_path, mask_path in pairs:
                hw = put_image(img_path, out_dir / split / "images", img_path.stem)
                grey = load_image(mask_path, "L")
                check_same_size(grey, hw, mask_path)
                label = floor_div_255(grey, mask_path)
                save_label(out_dir / split / "labels" / f"{img_path.stem}.png", label, 2)
    return {"split_protocol": "official train_img/test_img", "mask_rule": "value == 255 -> crack"}


# ------------------------------------------------------------------------------------- miniature
def write_miniature(raw_dir: Path, seed: int = 0) -> None:
    """``DeepCrack/dataset/DeepCrack.zip`` (a stand-in for the git clone) with the four folders.

    Planted in every mask: top-left 4x4 = 255 (-> crack), bottom-right 4x4 = 254 (-> background).
    """
    rng = np.random.default_rng(seed)
    members = {}
    for split, count in (("train", 3), ("test", 2)):
        for i in range(count):
            stem = f"{11125 + 7 * i + (0 if split == 'train' else 1000)}-{i + 1}"
            lab = blob_label(rng, 32, 48, [0, 1])
            lab[:4, :4] = 1
            mask = (lab * 255).astype(np.uint8)
            mask[-4:, -4:] = 254
            members[f"{split}_img/{stem}.jpg"] = encode(image_for(rng, lab), "JPEG", quality=92)
            members[f"{split}_lab/{stem}.png"] = encode(mask, "PNG")
    write_zip(raw_dir / REPO / INNER_ZIP, macos_junk(members))  # zipped on a Mac: __MACOSX/ copies
    (raw_dir / REPO / "README.md").write_text("Miniature stand-in for the DeepCrack git clone.\n")
    mark_miniature(raw_dir)
