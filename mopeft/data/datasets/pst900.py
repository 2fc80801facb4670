"""PST900 RGB-thermal (MESS ``pst900_sem_seg_test``).

``PST900_RGBT_Dataset.zip`` holds ``PST900_RGBT_Dataset/{train,test}/{rgb,thermal,labels,depth}/
*.png`` with label ids 0-4. The MESS benchmark key feeds the **thermal** image (single channel,
read as 3x grey by detectron2), not the RGB one, so we do the same for both splits; labels are used
as they are (ids outside 0-4 -> 255 through an explicit table).

Checksums: the publisher gives none for ``PST900_RGBT_Dataset.zip``, so nothing is pinned here; the
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
    load_image,
    map_ids,
    pair_by_stem,
    save_image,
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

ZIP = "PST900_RGBT_Dataset.zip"
GDRIVE_ID = "1hZeM-MvdUC_Btyok7mdF00RV-InbAadm"
ROOT = "PST900_RGBT_Dataset"
ID_TABLE = {i: i for i in range(5)}

SPEC = DatasetSpec(
    key="pst900",
    name="PST900",
    domain="Engineering",
    classes=("background", "fire extinguisher", "backpack", "drill", "human"),
    sources=(
        Source(ZIP, "gdrive", url=f"https://drive.google.com/open?id={GDRIVE_ID}", gdrive_id=GDRIVE_ID),
    ),
    expected_test=288,
    expected_train=597,  # train/
    image_format="png",  # the thermal PNGs are written as 3-channel PNG
    image_hw=(720, 1280),  # 1280x720 frames (PST900 paper)
    mess_key="pst900_sem_seg_test",
    channels="thermal",
    train_split="official",
    sensor="Visible Spectrum",
    segment_size="Medium",
    num_classes_label="5 (Few)",
    class_similarity="High",
    vocabulary="Generic",
    task_description="Conveyor",
    citation="Shivakumar et al., PST900: RGB-Thermal Calibration, Dataset and Segmentation Network, "
    "ICRA 2020",
    notes=(
        "The thesis swapped PST900's and ZeroWaste-f's rows: Table 4.2 prints 929 images / 'Conveyor' for "
        "PST900 (ZeroWaste-f's values); MESS evaluates 288 thermal test images of firefighting-relevant "
        "objects.",
        "Table 4.1 prints sensor 'Visible Spectrum'; the MESS benchmark input is the thermal (long-wave "
        "infrared) image, an electromagnetic sensor in MESS's taxonomy.",
        "Input = test/thermal (grey replicated to 3 channels), as MESS's benchmark key; MESS also registers "
        "rgb and inferno pseudo-colour variants, not used here.",
        "Official last class name: rescue randy (MESS benchmark name: human). Licence GPL-3.0.",
    ),
)


def prepare(raw_dir: Path, out_dir: Path, options: PrepareOptions) -> dict:
    """``train`` -> train (597), ``test`` -> test (288); thermal input, labels 0-4."""
    archive = raw_dir / ZIP
    with scratch_dir(out_dir, SPEC.key) as scratch:
        extract(archive, scratch)
        for split in ("train", "test"):
            thermal_dir = find_dir(scratch, f"{ROOT}/{split}/thermal", archive)
            label_dir = find_dir(scratch, f"{ROOT}/{split}/labels", archive)
            pairs = pair_by_stem(
                files_with_suffix(thermal_dir, ".png"), files_with_suffix(label_dir, ".png"), thermal_dir
            )
            for th_path, lab_path in pairs:
                thermal = load_image(th_path)
                if thermal.ndim == 3 and not (thermal[..., :3] == thermal[..., :1]).all():
                    raise PrepareError(f"{th_path}: thermal image has differing colour channels")
                rgb = load_image(th_path, "RGB")  # detectron2 reads it so: grey replicated to 3 channels
                save_image(out_dir / split / "images" / f"{th_path.stem}.png", rgb)
                raw = single_channel(load_image(lab_path), lab_path)
                check_same_size(raw, rgb.shape[:2], lab_path)
                save_label(out_dir / split / "labels" / f"{th_path.stem}.png", map_ids(raw, ID_TABLE), 5)
    return {"split_protocol": "official train/test", "input_variant": "thermal (grey -> 3 channels)"}


# ------------------------------------------------------------------------------------- miniature
def write_miniature(raw_dir: Path, seed: int = 0) -> None:
    """``PST900_RGBT_Dataset.zip`` with rgb/thermal/labels/depth per split (3 train, 2 test).

    Planted: labels top-left 4x4 = 4 (human); thermal top-left 4x4 = 200 while rgb there is
    (10, 20, 30), so the prepared image shows which modality was used.
    """
    rng = np.random.default_rng(seed)
    members = {}
    for split, count in (("train", 3), ("test", 2)):
        for i in range(count):
            stem = f"{32 + 17 * i:d}_{'bag' if i % 2 else 'ext'}_{split}"
            lab = blob_label(rng, 36, 48, [0, 1, 2, 3, 4])
            lab[:4, :4] = 4
            thermal = image_for(rng, lab, channels=1)
            thermal[:4, :4] = 200
            rgb = image_for(rng, (lab + 1) % 5)
            rgb[:4, :4] = (10, 20, 30)
            base = f"{ROOT}/{split}"
            members[f"{base}/rgb/{stem}.png"] = encode(rgb, "PNG")
            members[f"{base}/thermal/{stem}.png"] = encode(thermal, "PNG")
            members[f"{base}/labels/{stem}.png"] = encode(lab, "PNG")
            members[f"{base}/depth/{stem}.png"] = encode((lab * 40).astype(np.uint8), "PNG")
    write_zip(raw_dir / ZIP, macos_junk(members))  # zipped on a Mac: __MACOSX/ copies
    mark_miniature(raw_dir)
