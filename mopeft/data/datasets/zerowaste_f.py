"""ZeroWaste-f (MESS ``zerowaste_sem_seg_test``).

``zerowaste-f-final.zip`` (zenodo record 6412647) holds ``splits_final_deblurred/{train,val,test}/
{data,sem_seg}/*.PNG`` (upper-case extension) with label ids 0-4 and a COCO ``labels.json`` per
split. MESS registers ``test/data`` + ``test/sem_seg`` directly (929 images). Train = train (3002)
+ val (572), since the study does no model selection on val (``options.extra["train_includes_val"]
= False`` keeps val out). Ids outside 0-4 are mapped to 255 by an explicit table.

Checksums: the publisher gives none for ``zerowaste-f-final.zip`` that could be looked up here, so
nothing is pinned here; the sha256 of the file actually used is recorded in ``meta.json``
(``sources``) when it is prepared.
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

ZIP = "zerowaste-f-final.zip"
ROOT = "splits_final_deblurred"
ID_TABLE = {i: i for i in range(5)}

SPEC = DatasetSpec(
    key="zerowaste_f",
    name="ZeroWaste-f",
    domain="Agriculture and Biology",
    classes=("background or trash", "rigid plastic", "cardboard", "metal", "soft plastic"),
    sources=(Source(ZIP, "http", url="https://zenodo.org/record/6412647/files/zerowaste-f-final.zip"),),
    expected_test=929,
    expected_train=3002 + 572,  # train + val (ZeroWaste paper); 3002 with train_includes_val = False
    image_format="png",  # the PNGs are copied as they are
    image_hw=(1080, 1920),  # 1920x1080 video frames
    mess_key="zerowaste_sem_seg_test",
    channels="RGB",
    train_split="official",
    sensor="Electromagnetic",
    segment_size="Small",
    num_classes_label="5 (Few)",
    class_similarity="Low",
    vocabulary="Generic",
    task_description="Thermal",
    citation="Bashkirova et al., ZeroWaste Dataset: Towards Deformable Object Segmentation in Cluttered "
    "Scenes, CVPR 2022",
    notes=(
        "The thesis swapped PST900's and ZeroWaste-f's rows: Table 4.2 prints 288 images / 'Thermal' for "
        "ZeroWaste-f (PST900's values); MESS evaluates 929 RGB test images of waste on a conveyor belt.",
        "Table 4.1 prints sensor 'Electromagnetic'; ZeroWaste-f images are RGB (visible spectrum) in MESS.",
        "The thesis lists ZeroWaste-f under 'Agriculture and Bio' (as main_results.csv does); MESS files it "
        "under Engineering.",
        "Licence CC BY-NC 4.0.",
    ),
)


def prepare(raw_dir: Path, out_dir: Path, options: PrepareOptions) -> dict:
    """test -> test; train (+ val unless disabled) -> train; ids 0-4 kept, others -> 255."""
    archive = raw_dir / ZIP
    with_val = bool(options.extra.get("train_includes_val", True))
    sources = {"train": ["train", "val"] if with_val else ["train"], "test": ["test"]}
    with scratch_dir(out_dir, SPEC.key) as scratch:
        extract(archive, scratch)
        for split, zw_splits in sources.items():
            for zw_split in zw_splits:
                base = find_dir(scratch, f"{ROOT}/{zw_split}", archive)
                images = files_with_suffix(base / "data", ".png")
                masks = files_with_suffix(base / "sem_seg", ".png")
                for img_path, mask_path in pair_by_stem(images, masks, base):
                    stem = img_path.stem
                    if (out_dir / split / "labels" / f"{stem}.png").exists():
                        stem = f"{zw_split}_{stem}"  # same file name in train and val: keep both
                    hw = put_image(img_path, out_dir / split / "images", stem)
                    raw = single_channel(load_image(mask_path), mask_path)
                    check_same_size(raw, hw, mask_path)
                    save_label(out_dir / split / "labels" / f"{stem}.png", map_ids(raw, ID_TABLE), 5)
    return {"split_protocol": "official; train = " + " + ".join(sources["train"]), "split_sources": sources}


# ------------------------------------------------------------------------------------- miniature
def write_miniature(raw_dir: Path, seed: int = 0) -> None:
    """``zerowaste-f-final.zip`` with train (3), val (1), test (2) in the deblurred layout.

    Planted in every mask: top-left 4x4 = 2 (cardboard), bottom-right 4x4 = 9 (not a class -> 255).
    """
    rng = np.random.default_rng(seed)
    members = {}
    for split, count in (("train", 3), ("val", 1), ("test", 2)):
        for i in range(count):
            stem = f"0{i}_frame_{split}_{100 + 13 * i:06d}"
            lab = blob_label(rng, 36, 48, [0, 1, 2, 3, 4])
            lab[:4, :4] = 2
            raw = lab.copy()
            raw[-4:, -4:] = 9
            base = f"{ROOT}/{split}"
            members[f"{base}/data/{stem}.PNG"] = encode(image_for(rng, lab), "PNG")
            members[f"{base}/sem_seg/{stem}.PNG"] = encode(raw, "PNG")
        members[f"{ROOT}/{split}/labels.json"] = b'{"images": [], "annotations": [], "categories": []}'
    write_zip(raw_dir / ZIP, macos_junk(members))  # zipped on a Mac: __MACOSX/ copies
    mark_miniature(raw_dir)
