"""PAXRay-4 chest X-ray anatomy (MESS ``paxray_sem_seg_test_{lungs,bones,mediastinum,diaphragm}``).

``paxray_dataset.zip`` holds ``images/*.png``, ``labels/*.npy`` (a 166 x H x W boolean stack; the
structures overlap, so it cannot be one multi-class mask) and ``paxray.json`` listing
``train``/``val``/``test`` entries ``{"image": "images/...png", "target": "labels/...npy"}``. MESS
evaluates four independent binary datasets from stack channels 0 (lung_overall), 10
(mediastinum_overall), 24 (bones) and 163 (diaphragm) and averages their mIoUs. We write the same
four binary tasks, ``<task>/{train,test}``, with train = the json's train + val lists.

The label stacks are ~40 MB each once decompressed, so members are read straight from the zip
instead of extracting the whole archive.

Checksums: the publisher gives none for ``paxray_dataset.zip``, so nothing is pinned here; the
sha256 of the file actually used is recorded in ``meta.json`` (``sources``) when it is prepared.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from mopeft.data.datasets.common import PrepareError, PrepareOptions, save_image, save_label
from mopeft.data.spec import DatasetSpec, Source
from mopeft.data.synthetic.miniature import blob_label, encode, image_for, mark_miniature, write_zip

ZIP = "paxray_dataset.zip"
GDRIVE_ID = "19HPPhKf9TDv4sO3UV-nI3Jhi4nCv_Zyc"
NUM_CHANNELS = 166
TASK_CHANNELS = {"lungs": 0, "bones": 24, "mediastinum": 10, "diaphragm": 163}
TASK_CLASSES = {
    "lungs": ("others", "lung"),
    "bones": ("others", "bones"),
    "mediastinum": ("others", "mediastinum"),
    "diaphragm": ("others", "diaphragm"),
}

SPEC = DatasetSpec(
    key="paxray4",
    name="PAXRay-4",
    domain="Medical Imaging",
    classes=("others", "structure"),
    sources=(
        Source(ZIP, "gdrive", url=f"https://drive.google.com/file/d/{GDRIVE_ID}/view", gdrive_id=GDRIVE_ID),
    ),
    expected_test=180,
    expected_train=598 + 74,  # per task: paxray.json train + val
    image_format="png",  # the X-rays are written as RGB PNG
    image_hw=(512, 512),
    mess_key="paxray_sem_seg_test_{lungs,bones,mediastinum,diaphragm}",
    channels="RGB",
    train_split="official",
    tasks=("lungs", "bones", "mediastinum", "diaphragm"),
    sensor="Electromagnetic",
    segment_size="Large",
    num_classes_label="4x2 (Binary)",
    class_similarity="Low",
    vocabulary="Domain Specific",
    task_description="X-Ray",
    citation="Seibold et al., Detailed Annotations of Chest X-Rays via CT Projection for Report "
    "Understanding, BMVC 2022",
    notes=(
        "Four independent binary tasks; the dataset score is the mean of the four mIoUs (as MESS).",
        "Class 1 per task (MESS names): lungs -> 'lung', bones -> 'bones', mediastinum -> 'mediastinum', "
        "diaphragm -> 'diaphragm'; class 0 is 'others' everywhere (see meta.json task_classes).",
        "Label channels: lung_overall 0, mediastinum_overall 10, bones 24, diaphragm 163.",
        "Train = paxray.json train (598) + val (74); test = paxray.json test (180).",
    ),
)

_SPLITS = {"train": ("train", "val"), "test": ("test",)}


def _link_or_copy(src: Path, dst: Path) -> None:
    """The four tasks share their images; hard links avoid storing each X-ray four times."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _read_member(zf: zipfile.ZipFile, name: str, archive: Path) -> bytes:
    try:
        return zf.read(name)
    except KeyError:
        raise PrepareError(f"{archive}: member {name!r} listed in paxray.json is missing") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise PrepareError(f"{archive}: cannot read {name!r} ({exc})") from None


def prepare(raw_dir: Path, out_dir: Path, options: PrepareOptions) -> dict:
    """Split by ``paxray.json``; one binary label per task from the 166-channel stack."""
    archive = raw_dir / ZIP
    if not zipfile.is_zipfile(archive):
        raise PrepareError(f"{archive}: missing or not a zip archive")
    with zipfile.ZipFile(archive) as zf:
        json_names = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "paxray.json"]
        if len(json_names) != 1:
            raise PrepareError(f"{archive}: expected one paxray.json inside, found {len(json_names)}")
        prefix = json_names[0][: -len("paxray.json")]
        try:
            index = json.loads(_read_member(zf, json_names[0], archive))
        except json.JSONDecodeError as exc:
            raise PrepareError(f"{archive}: paxray.json is not valid JSON ({exc})") from None
        first_task = SPEC.tasks[0]
        for split, json_splits in _SPLITS.items():
            for json_split in json_splits:
                if json_split not in index:
                    raise PrepareError(f"{archive}: paxray.json has no '{json_split}' list")
                for entry in index[json_split]:
                    _prepare_one(zf, archive, prefix, entry, out_dir, split, first_task)
    return {
        "split_protocol": "paxray.json: train + val -> train, test -> test",
        "task_classes": {t: list(c) for t, c in TASK_CLASSES.items()},
        "task_channels": TASK_CHANNELS,
        "split_sources": {k: list(v) for k, v in _SPLITS.items()},
    }


def _prepare_one(
    zf: zipfile.ZipFile, archive: Path, prefix: str, entry: dict, out_dir: Path, split: str, first_task: str
) -> None:
    try:
        image_name, target_name = entry["image"], entry["target"]
    except (KeyError, TypeError):
        raise PrepareError(f"{archive}: paxray.json entry {entry!r} lacks image/target") from None
    stem = Path(image_name).stem  # MESS: image path minus 'images/'
    where = f"{archive}:{image_name}"
    try:
        with Image.open(io.BytesIO(_read_member(zf, prefix + image_name, archive))) as im:
            im.load()
            image = np.asarray(im.convert("RGB"))  # as MESS: PIL's RGB conversion of the X-ray
    except (OSError, SyntaxError, ValueError) as exc:
        raise PrepareError(f"{where}: cannot decode image ({exc})") from None
    try:
        stack = np.load(io.BytesIO(_read_member(zf, prefix + target_name, archive)), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise PrepareError(f"{archive}:{target_name}: cannot load label stack ({exc})") from None
    if stack.ndim != 3 or stack.shape[0] != NUM_CHANNELS or stack.shape[1:] != image.shape[:2]:
        raise PrepareError(
            f"{archive}:{target_name}: label stack shape {stack.shape}, expected "
            f"({NUM_CHANNELS}, {image.shape[0]}, {image.shape[1]})"
        )
    first_img = out_dir / first_task / split / "images" / f"{stem}.png"
    if first_img.exists():
        raise PrepareError(f"{where}: image name {stem!r} appears twice in paxray.json")
    save_image(first_img, image)
    for task, channel in TASK_CHANNELS.items():
        if task != first_task:
            _link_or_copy(first_img, out_dir / task / split / "images" / f"{stem}.png")
        label = (stack[channel] > 0).astype(np.uint8)
        save_label(out_dir / task / split / "labels" / f"{stem}.png", label, 2)


# ------------------------------------------------------------------------------------- miniature
def write_miniature(raw_dir: Path, seed: int = 0) -> None:
    """``paxray_dataset.zip``: grey PNGs, 166-channel boolean .npy stacks, paxray.json (3 train,
    1 val, 2 test).

    Planted in every stack: top-left 4x4 true in channels 0 (lungs) and 24 (bones), false in 10
    (mediastinum) and 163 (diaphragm); bottom-right 4x4 the opposite. Channel 1 (lung_right) is
    set everywhere, so reading a wrong channel shows.
    """
    rng = np.random.default_rng(seed)
    members: dict[str, bytes] = {}
    index: dict[str, list[dict[str, str]]] = {"train": [], "val": [], "test": []}
    n = {"train": 3, "val": 1, "test": 2}
    for split, count in n.items():
        for i in range(count):
            name = f"{split}_{i:03d}_{'frontal' if i % 2 == 0 else 'lateral'}"
            h, w = 40, 36
            stack = np.zeros((NUM_CHANNELS, h, w), dtype=bool)
            for ch in (0, 10, 24, 163):
                stack[ch] = blob_label(rng, h, w, [0, 1], n=3).astype(bool)
            stack[1] = True
            for ch, on in ((0, True), (24, True), (10, False), (163, False)):
                stack[ch, :4, :4] = on
                stack[ch, -4:, -4:] = not on
            buf = io.BytesIO()
            np.save(buf, stack)
            image = image_for(rng, stack[0].astype(np.uint8) + stack[24], channels=1)
            members[f"images/{name}.png"] = encode(image, "PNG")
            members[f"labels/{name}.npy"] = buf.getvalue()
            index[split].append({"image": f"images/{name}.png", "target": f"labels/{name}.npy"})
    members["paxray.json"] = json.dumps(index).encode()
    write_zip(raw_dir / ZIP, members)
    mark_miniature(raw_dir)
