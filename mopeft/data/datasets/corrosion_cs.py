"""Corrosion Condition State (MESS ``corrosion_cs_sem_seg_test``).

Figshare file 31729733 is a zip (saved without extension under its file id) with
``Corrosion Condition State Classification/original/{Train,Test}/{images/*.jpeg, masks/*.png}``;
masks hold class ids 0-3 (background, fair, poor, severe corrosion) and MESS uses them as they are.
Other folders of the archive are ignored, as in MESS. Ids outside 0-3 are mapped to 255 through
an explicit table rather than passed on.

Checksums: the publisher gives none for figshare file 31729733, so nothing is pinned here; the
sha256 of the file actually used is recorded in ``meta.json`` (``sources``) when it is prepared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mopeft.data.datasets.common import (
    PrepareOptions,
    check_same_size,
    extract,
    files_with_suffix,
    find_dir,
    load_image,
    map_ids,
    pair_by_stem,
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

ZIP = "31729733"
ROOT = "Corrosion Condition State Classification"
ID_TABLE = {0: 0, 1: 1, 2: 2, 3: 3}  # raw id -> class id; anything else -> 255

SPEC = DatasetSpec(
    key="corrosion_cs",
    name="CorrosionCS",
    domain="Engineering",
    classes=(
        "others",
        "steel with fair corrosion",
        "steel with poor corrosion",
        "steel with severe corrosion",
    ),
    sources=(Source(ZIP, "http", url="https://figshare.com/ndownloader/files/31729733"),),
    expected_test=44,
    expected_train=396,  # original/Train
    image_format="jpeg",  # the .jpeg files are copied as they are (as .jpg)
    image_hw=(512, 512),
    mess_key="corrosion_cs_sem_seg_test",
    channels="RGB",
    train_split="official",
    sensor="Visible Spectrum",
    segment_size="Medium",
    num_classes_label="4 (Few)",
    class_similarity="High",
    vocabulary="Task Specific",
    task_description="Corrosion",
    citation="Bianchi & Hebdon, Corrosion Condition State Semantic Segmentation Dataset, "
    "University Libraries, Virginia Tech 2021",
    notes=(
        "Official class names: others, fair corrosion, poor corrosion, severe corrosion.",
        "Only original/{Train,Test} is used (396 train, 44 test). Licence CC0.",
    ),
)


def prepare(raw_dir: Path, out_dir: Path, options: PrepareOptions) -> dict:
    """``original/Train`` -> train, ``original/Test`` -> test; ids 0-3 kept, others -> 255."""
    archive = raw_dir / ZIP
    n_unknown = 0
    with scratch_dir(out_dir, SPEC.key) as scratch:
        extract(archive, scratch)
        for split, folder in (("train", "Train"), ("test", "Test")):
            base = find_dir(scratch, f"{ROOT}/original/{folder}", archive)
            images = files_with_suffix(base / "images", ".jpeg", ".jpg")
            masks = files_with_suffix(base / "masks", ".png")
            for img_path, mask_path in pair_by_stem(images, masks, base):
                hw = put_image(img_path, out_dir / split / "images", img_path.stem)
                raw = single_channel(load_image(mask_path), mask_path)
                check_same_size(raw, hw, mask_path)
                label = map_ids(raw, ID_TABLE)
                n_unknown += int(((label == 255) & (raw != 255)).sum())
                save_label(out_dir / split / "labels" / f"{img_path.stem}.png", label, SPEC.num_classes)
    return {"split_protocol": "official original/Train, original/Test", "unknown_id_pixels": n_unknown}


# ------------------------------------------------------------------------------------- miniature
def write_miniature(raw_dir: Path, seed: int = 0) -> None:
    """The figshare zip (named ``31729733``) with ``original/{Train,Test}``.

    Planted in every mask: top-left 4x4 = 3 (severe), bottom-right 4x4 = 7 (not a class -> 255).
    """
    rng = np.random.default_rng(seed)
    members = {}
    for folder, count in (("Train", 3), ("Test", 2)):
        for i in range(count):
            stem = f"{folder.lower()}_{i:02d}"
            lab = blob_label(rng, 40, 48, [0, 1, 2, 3])
            lab[:4, :4] = 3
            raw = lab.copy()
            raw[-4:, -4:] = 7
            base = f"{ROOT}/original/{folder}"
            members[f"{base}/images/{stem}.jpeg"] = encode(image_for(rng, lab), "JPEG", quality=92)
            members[f"{base}/masks/{stem}.png"] = encode(raw, "PNG")
    write_zip(raw_dir / ZIP, macos_junk(members))  # zipped on a Mac: __MACOSX/ copies
    mark_miniature(raw_dir)
