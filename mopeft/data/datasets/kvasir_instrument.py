"""Kvasir-Instrument (MESS ``kvasir_instrument_sem_seg_test``).

Simula ships one zip holding two tarballs (``images.tar.gz`` with ``images/<id>.jpg`` and
``masks.tar.gz`` with ``masks/<id>.png``) and the official split lists ``train.txt`` (472 ids) and
``test.txt`` (118 ids). MESS reads channel 0 of each mask and computes ``uint8(mask / 255)``: only
255 becomes "tool", anything lower (anti-aliased edges) "others". We do exactly that, for both
splits.

Checksums: the publisher gives none for ``kvasir-instrument.zip``, so nothing is pinned here; the
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
    find_dir,
    find_file,
    floor_div_255,
    load_image,
    put_image,
    save_label,
    scratch_dir,
)
from mopeft.data.spec import DatasetSpec, Source
from mopeft.data.synthetic.miniature import (
    blob_label,
    encode,
    image_for,
    mark_miniature,
    tar_gz_bytes,
    write_zip,
)

ZIP = "kvasir-instrument.zip"

SPEC = DatasetSpec(
    key="kvasir_instrument",
    name="Kvasir-Instr.",
    domain="Medical Imaging",
    classes=("others", "tool"),
    sources=(Source(ZIP, "http", url="https://datasets.simula.no/downloads/kvasir-instrument.zip"),),
    expected_test=118,
    expected_train=472,  # train.txt
    image_format="jpeg",  # the JPEGs are copied as they are (MESS re-saves them as PNG)
    # 720x576 to 1280x1024 (Kvasir-Instrument paper), a few 1920x1072; 768x576 is the most common.
    image_hw=(576, 768),
    max_image_hw=(1072, 1920),
    mess_key="kvasir_instrument_sem_seg_test",
    channels="RGB",
    train_split="official",
    sensor="Visible Spectrum",
    segment_size="Medium",
    num_classes_label="2 (Binary)",
    class_similarity="Low",
    vocabulary="Generic",
    task_description="Endoscopy",
    citation="Jha et al., Kvasir-Instrument: Diagnostic and therapeutic tool segmentation dataset in "
    "gastrointestinal endoscopy, MMM 2021",
    notes=(
        "Official class names: others, surgical instrument (MESS benchmark names: others, tool).",
        "Licence: non-commercial research use.",
    ),
)


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise PrepareError(f"{path}: split list missing from {ZIP}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def prepare(raw_dir: Path, out_dir: Path, options: PrepareOptions) -> dict:
    """Official ``train.txt`` -> train, ``test.txt`` -> test; masks channel 0 floored /255."""
    archive = raw_dir / ZIP
    with scratch_dir(out_dir, SPEC.key) as scratch:
        extract(archive, scratch / "zip")
        ds = find_file(scratch / "zip", "images.tar.gz", archive).parent
        for tgz in ("images.tar.gz", "masks.tar.gz"):
            extract(ds / tgz, ds)
        img_dir, mask_dir = find_dir(ds, "images", archive), find_dir(ds, "masks", archive)
        for split in ("train", "test"):
            ids = _read_ids(ds / f"{split}.txt")
            for id_ in ids:
                hw = put_image(img_dir / f"{id_}.jpg", out_dir / split / "images", id_)
                mask_path = mask_dir / f"{id_}.png"
                channel0 = load_image(mask_path, "RGB")[..., 0]  # MESS: mask[:, :, 0]
                check_same_size(channel0, hw, mask_path)
                save_label(out_dir / split / "labels" / f"{id_}.png", floor_div_255(channel0, mask_path), 2)
    return {"split_protocol": "official train.txt / test.txt", "mask_rule": "channel 0 == 255 -> tool"}


# ------------------------------------------------------------------------------------- miniature
MINI_IDS = {
    "train": ["ckcu8ty6z00003b5yzfaezbs5", "ckcu9bfjl00023b5yoo9wgg7r", "ckcua2pog00043b5ye7hzjaq2"],
    "test": ["ckcud1qxh00083b5yd2yv1ejz", "ckcudcyw200093b5yuz1n2ufj"],
}


def write_miniature(raw_dir: Path, seed: int = 0) -> None:
    """``kvasir-instrument.zip`` with the two tarballs and split lists, as Simula ships it.

    Masks are 3-channel 0/255 PNGs. Planted in every mask: top-left 4x4 = 255 (-> tool) and
    bottom-right 4x4 = 254 (an anti-aliased edge value, -> others under MESS's floor rule).
    """
    rng = np.random.default_rng(seed)
    images, masks = {}, {}
    for ids in MINI_IDS.values():
        for id_ in ids:
            h, w = int(rng.integers(40, 56)), int(rng.integers(48, 64))
            lab = blob_label(rng, h, w, [0, 1])
            lab[:4, :4] = 1
            mask = np.repeat((lab * 255).astype(np.uint8)[..., None], 3, axis=2)
            mask[-4:, -4:] = 254
            images[f"images/{id_}.jpg"] = encode(image_for(rng, lab), "JPEG", quality=92)
            masks[f"masks/{id_}.png"] = encode(mask, "PNG")
    write_zip(
        raw_dir / ZIP,
        {
            "kvasir-instrument/images.tar.gz": tar_gz_bytes(images),
            "kvasir-instrument/masks.tar.gz": tar_gz_bytes(masks),
            "kvasir-instrument/train.txt": ("\n".join(MINI_IDS["train"]) + "\n").encode(),
            "kvasir-instrument/test.txt": ("\n".join(MINI_IDS["test"]) + "\n").encode(),
        },
    )
    mark_miniature(raw_dir)
