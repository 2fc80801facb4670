"""Take a dataset's test split from a tree that MESS has already prepared (``$DETECTRON2_DATASETS``).

Users who ran MESS's ``prepare_datasets`` scripts already hold every test split in MESS's own layout
(``<root>/<folder>/<image dir>`` and ``<root>/<folder>/annotations_detectron2/test``, each dataset
with its own folder names and file suffixes, read by MESS's ``register_*.py``). This module reads
such a tree, checks it against the registry (folder present, images and labels paired by stem, test
count, label values within the dataset's classes or 255) and writes it as the prepared test split,
so evaluation runs unchanged on exactly the labels and input pixels MESS scores. The training split
still comes from the raw download through the dataset's normal preparer; k-fold datasets (no
labelled train split) need no raw download at all.

MESS's labels are used as they are: this project's preparers reproduce them, apart from the
deviations listed in docs/datasets.md, which therefore do not apply to an imported test split.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mopeft.data.datasets.common import (
    PrepareOptions,
    ensure_layout,
    map_ids,
    put_image,
    save_label,
)
from mopeft.data.errors import PrepareError
from mopeft.data.images import check_label_values, load_image
from mopeft.data.prepared.write import MINIATURE_MARKER, split_roots, verify_sources, write_prepared
from mopeft.data.registry import dataset_module
from mopeft.data.sources.checksums import file_digest
from mopeft.data.spec import DatasetSpec
from mopeft.errors import InputError, MissingInput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MessLayout:
    """Where MESS's ``register_<name>.py`` finds one dataset's test split under the root.

    ``labels`` may contain ``{task}`` (PAXRay-4: one label folder per binary task, one shared image
    folder). A file's stem is its name less ``image_suffix`` / ``label_suffix`` (matched
    case-insensitively; files with another suffix are not MESS's and are skipped, as MESS does).
    ``pairing``: ``"exact"``, every image has a label and vice versa; ``"labelled"``, MESS's
    ``load_sem_seg`` keeps the stems present in both, because the folder also holds other files
    (CWFID's image folder holds the train images; FoodSeg103's are the release's folders). ``tiled``:
    MESS tiles the test images, so each must be ``tile_size``² (``--tile-size``, default 1024 as MESS).
    ``label_map``: MESS id -> this project's id, only where MESS's ids mean other classes than the
    train split's (CWFID: MESS maps red = weed to 1 "crop seedling" and green = crop to 2 "weed";
    docs/datasets.md), so that a model trained on the train split is scored on the same classes.
    """

    folder: str
    images: str
    labels: str
    image_suffix: str = ".jpg"
    label_suffix: str = ".png"
    pairing: Literal["exact", "labelled"] = "exact"
    tiled: bool = False
    label_map: tuple[tuple[int, int], ...] = ()


# Keyed by the registry's dataset keys; every MESS dataset of the registry (SPEC.mess_key) has one
# entry (tests/test_mess_tree.py). Taken from MESS's mess/datasets/register_*.py (the test split the
# registry's mess_key names) and prepare_datasets/prepare_*.py (the names they write).
_D2 = "annotations_detectron2"
MESS_LAYOUTS: dict[str, MessLayout] = {
    "bdd100k": MessLayout("bdd100k", "images/10k/val", f"{_D2}/val"),
    "dark_zurich": MessLayout(
        "Dark_Zurich", "rgb_anon/val/night/GOPR0356", f"{_D2}/val", "_rgb_anon.png", "_gt_labelIds.png"
    ),
    "mhp_v1": MessLayout("LV-MHP-v1", "images_detectron2/test", f"{_D2}/test"),
    "foodseg103": MessLayout("FoodSeg103", "Images/img_dir/test", "Images/ann_dir/test", pairing="labelled"),
    "atlantis": MessLayout("atlantis", "images_detectron2/test", f"{_D2}/test"),
    "dram": MessLayout("DRAM_processed", "images_detectron2/test", f"{_D2}/test"),
    "isaid": MessLayout("isaid", "images_detectron2/val", f"{_D2}/val", ".png", tiled=True),
    "isprs_potsdam": MessLayout(
        "ISPRS_Potsdam", "images_detectron2/test/irrg", f"{_D2}/test", ".png", tiled=True
    ),
    "worldfloods": MessLayout(
        "WorldFloods", "images_detectron2/test/irrg", f"{_D2}/test", ".png", tiled=True
    ),
    "floodnet": MessLayout("FloodNet-Supervised_v1.0", "images_detectron2/test", f"{_D2}/test", tiled=True),
    "uavid": MessLayout("uavid_v1.5", "images_detectron2/val", f"{_D2}/val", ".png", tiled=True),
    "kvasir_instrument": MessLayout("kvasir-instrument", "images_detectron2/test", f"{_D2}/test", ".png"),
    "chase_db1": MessLayout("CHASEDB1", "images_detectron2/test", f"{_D2}/test"),
    "cryonuseg": MessLayout("CryoNuSeg", "images_detectron2", _D2, ".png"),
    "paxray4": MessLayout("paxray_dataset", "images_detectron2/test", f"{_D2}/test/{{task}}", ".png"),
    "corrosion_cs": MessLayout(
        "Corrosion Condition State Classification", "original/Test/images", "original/Test/masks", ".jpeg"
    ),
    "deepcrack": MessLayout("DeepCrack", "test_img", f"{_D2}/test"),
    "pst900": MessLayout("PST900_RGBT_Dataset", "test/thermal", "test/labels", ".png"),
    "zerowaste_f": MessLayout(
        "zerowaste-f",
        "splits_final_deblurred/test/data",
        "splits_final_deblurred/test/sem_seg",
        ".PNG",
        ".PNG",
    ),
    "suim": MessLayout("SUIM", "TEST/images", f"{_D2}/test"),
    "cub_200": MessLayout("CUB_200_2011", "images_detectron2/test", f"{_D2}/test"),
    "cwfid": MessLayout(
        "cwfid",
        "images",
        f"{_D2}/test",
        "_image.png",
        "_annotation.png",
        pairing="labelled",
        label_map=((1, 2), (2, 1)),
    ),
}

# Preparer meta.json entries that describe the raw test split the import replaces.
_TEST_ONLY_EXTRAS = ("test_duplicates_dropped",)
_TEST_COUNT_EXTRAS = ("tiles", "images")  # {"train": n, "test": n}: the test entry is recounted


@dataclass
class _Task:
    """The pairs of one task (the dataset itself, or one PAXRay-4 task) read from the MESS tree."""

    name: str  # "" unless the dataset has tasks
    pairs: list[tuple[str, Path, Path]]  # (stem, image, label), sorted by stem
    images_only: int  # stems with an image but no label ("labelled" pairing: left out, as MESS does)
    labels_only: int  # stems with a label but no image (likewise)


def layout_for(spec: DatasetSpec) -> MessLayout:
    """The MESS layout of a registered dataset, or an InputError saying it is not in MESS."""
    if not spec.mess_key or spec.key not in MESS_LAYOUTS:
        raise InputError(
            f"--from-mess: {spec.name} ({spec.key}) is not a MESS dataset, so no MESS tree holds it; "
            f"prepare it from its raw download (`mopeft prepare --dataset {spec.key} --raw DIR`)"
        )
    return MESS_LAYOUTS[spec.key]


def _files(folder: Path, suffix: str) -> dict[str, Path]:
    """Stem -> file of the visible files of ``folder`` ending in ``suffix`` (case-insensitive)."""
    n = len(suffix)
    return {
        p.name[:-n]: p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(suffix.lower())
    }


def _task_pairs(spec: DatasetSpec, layout: MessLayout, base: Path, task: str) -> _Task:
    image_dir = base / layout.images
    label_dir = base / layout.labels.format(task=task)
    for folder in (image_dir, label_dir):
        if not folder.is_dir():
            raise MissingInput(
                f"{folder}: missing; MESS's {spec.mess_key} reads its test split there "
                f"(run MESS's prepare_datasets for it, or prepare from the raw download without --from-mess)"
            )
    images, labels = _files(image_dir, layout.image_suffix), _files(label_dir, layout.label_suffix)
    if not labels:
        raise InputError(f"{label_dir}: no *{layout.label_suffix} labels; is the MESS preparation complete?")
    common = sorted(set(images) & set(labels))
    only_i, only_l = sorted(set(images) - set(labels)), sorted(set(labels) - set(images))
    if layout.pairing == "exact" and (only_i or only_l):
        raise InputError(
            f"{base}: MESS images and labels do not pair by stem: images without labels {only_i[:3]} "
            f"(in {layout.images}), labels without images {only_l[:3]} "
            f"(in {layout.labels.format(task=task)}); the MESS tree is incomplete, re-run MESS's "
            "preparation for it"
        )
    if layout.pairing == "labelled" and only_l:
        log.warning("%s: %d MESS labels without an image are left out, as MESS does", label_dir, len(only_l))
    pairs = [(s, images[s], labels[s]) for s in common]
    return _Task(task, pairs, len(only_i), len(only_l))


def read_mess_tree(spec: DatasetSpec, mess_root: str | Path, options: PrepareOptions) -> list[_Task]:
    """Locate and pair the dataset's MESS test split, checking its count against the registry."""
    layout = layout_for(spec)
    root = Path(mess_root)
    if not root.is_dir():
        raise MissingInput(f"--from-mess {root}: not a folder (give the MESS root, $DETECTRON2_DATASETS)")
    base = root / layout.folder
    if not base.is_dir():
        raise MissingInput(
            f"{base}: missing; MESS prepares {spec.name} ({spec.mess_key}) into '{layout.folder}' under "
            "its root (run MESS's prepare_datasets for it, or prepare from the raw download without "
            "--from-mess)"
        )
    tasks = [_task_pairs(spec, layout, base, t) for t in (spec.tasks or ("",))]
    if spec.expected_test is not None and spec.expected_test_is_exact and not options.miniature:
        for t in tasks:
            if len(t.pairs) != spec.expected_test:
                where = base / layout.labels.format(task=t.name)
                raise InputError(
                    f"{where}: {len(t.pairs)} MESS test pairs, but {spec.mess_key} has {spec.expected_test}; "
                    "the MESS tree is incomplete or from another release"
                )
    return tasks


def _check_values(label: np.ndarray, spec: DatasetSpec, where: Path) -> None:
    """The project's label-value check (:func:`check_label_values`), naming what it means here."""
    try:
        check_label_values(label, spec.num_classes, where)
    except PrepareError as exc:
        raise InputError(
            f"{exc}: not classes of {spec.key}; the tree is not MESS's {spec.mess_key}"
        ) from None


def _read_label(path: Path) -> np.ndarray:
    """A MESS label as MESS's evaluator reads it: palette indices for ``P``, the grey value else
    (an id mask stored as RGB with equal channels is accepted)."""
    array = load_image(path)
    if array.ndim == 3 and (array[..., :3] == array[..., :1]).all():
        array = array[..., 0]
    if array.ndim != 2:
        raise InputError(f"{path}: MESS label must be single-channel, got shape {array.shape}")
    if array.dtype != np.uint8:
        if array.min() < 0 or array.max() > 255:
            raise InputError(f"{path}: MESS label values {array.min()}..{array.max()} exceed 0..255")
        array = array.astype(np.uint8)
    return array


def _write_test(spec: DatasetSpec, tasks: list[_Task], layout: MessLayout, out: Path, tile: int) -> str:
    """Write each task's pairs into ``out[/task]/test``; return a digest of every file read."""
    digest = hashlib.sha256()
    for t in tasks:
        split = (out / t.name if t.name else out) / "test"
        for sub in ("images", "labels"):
            (split / sub).mkdir(parents=True, exist_ok=True)
        for stem, image, label in t.pairs:
            hw = put_image(image, split / "images", stem)  # 8-bit RGB copied; others PIL RGB -> PNG
            if layout.tiled and hw != (tile, tile):
                raise InputError(
                    f"{image}: MESS tile of {hw[1]}x{hw[0]}, not {tile}x{tile}; MESS tiles at 1024, so "
                    "use --tile-size 1024 (the default) with --from-mess"
                )
            array = _read_label(label)
            _check_values(array, spec, label)
            if layout.label_map:
                array = map_ids(array, {i: i for i in range(spec.num_classes)} | dict(layout.label_map))
            save_label(split / "labels" / f"{stem}.png", array, spec.num_classes)
            for f in (image, label):
                digest.update(f"{f.parent.name}/{f.name} {file_digest(f, 'sha256')}\n".encode())
    return digest.hexdigest()


def _replace_test(tmp: Path, spec: DatasetSpec) -> set[str]:
    """Delete the test split(s) the normal preparer wrote; return their stems (a cross-check)."""
    stems: set[str] = set()
    for sroot in split_roots(tmp, spec):
        test = sroot / "test"
        if test.exists():
            stems |= {p.stem for p in (test / "labels").glob("*.png")}
            shutil.rmtree(test)
    return stems


def prepare_from_mess(
    key: str,
    raw_dir: str | Path | None,
    mess_root: str | Path,
    out_root: str | Path,
    options: PrepareOptions | None = None,
) -> Path:
    """Prepare ``key`` into ``out_root/key`` with its test split from the MESS tree ``mess_root``.

    The train split comes from ``raw_dir`` through the dataset's normal preparer (its test split is
    prepared too, then replaced); k-fold datasets (no labelled train split) need no ``raw_dir``.
    meta.json records the test split's origin under ``test_source`` and its digest in ``sources``.
    """
    module = dataset_module(key)
    spec: DatasetSpec = module.SPEC
    layout = layout_for(spec)
    options = options or PrepareOptions()
    base = Path(mess_root) / layout.folder
    raw = Path(raw_dir) if raw_dir is not None else None
    needs_raw = spec.train_split != "none"
    if needs_raw and raw is None:
        raise InputError(
            f"--from-mess gives {key}'s test split only; its train split comes from the raw download: "
            f"add --raw DIR (e.g. data/raw/{key})"
        )
    options.miniature = (
        options.miniature
        or (base / MINIATURE_MARKER).exists()
        or (needs_raw and raw is not None and (raw / MINIATURE_MARKER).exists())
    )
    tasks = read_mess_tree(spec, mess_root, options)  # fails before any raw data is touched
    sources = verify_sources(spec, raw, check=not options.miniature) if needs_raw and raw else {}
    source_name = f"MESS/{layout.folder}"

    def fill(tmp: Path) -> dict[str, Any]:
        if needs_raw:
            assert raw is not None
            extra = dict(module.prepare(raw, tmp, options) or {})
            raw_stems = _replace_test(tmp, spec)
        else:
            ensure_layout(tmp, ("train",))
            extra, raw_stems = {"split_protocol": "kfold over test"}, set()
        sources[source_name] = _write_test(spec, tasks, layout, tmp, options.tile_size)
        mess_stems = {s for t in tasks for s, _, _ in t.pairs}
        if needs_raw and raw_stems != mess_stems:
            log.warning(
                "%s: the MESS test split differs from the raw one in %d file names (e.g. %s); MESS's is used",
                key,
                len(raw_stems ^ mess_stems),
                sorted(raw_stems ^ mess_stems)[:3],
            )
        for name in _TEST_ONLY_EXTRAS:
            extra.pop(name, None)
        for name in _TEST_COUNT_EXTRAS:
            if isinstance(extra.get(name), dict) and "test" in extra[name]:
                extra[name] = {**extra[name], "test": sum(len(t.pairs) for t in tasks)}
        if isinstance(extra.get("unpaired_files"), dict):
            extra["unpaired_files"] = {
                **extra["unpaired_files"],
                "test": sum(t.images_only + t.labels_only for t in tasks),
            }
        extra["test_images"] = "mess"
        extra["test_source"] = {
            "kind": "mess",
            "mess_key": spec.mess_key,
            "source": source_name,
            "images": layout.images,
            "labels": layout.labels,
            "label_map": {str(a): b for a, b in layout.label_map},
            "pairs": {t.name or "test": len(t.pairs) for t in tasks},
            "images_without_label": sum(t.images_only for t in tasks),
            "labels_without_image": sum(t.labels_only for t in tasks),
        }
        return extra

    log.info("preparing %s: test split from the MESS tree %s, train split from %s", key, base, raw)
    return write_prepared(spec, out_root, fill, sources, options)
