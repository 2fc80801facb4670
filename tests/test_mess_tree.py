"""``mopeft prepare --from-mess ROOT``: the test split from a tree MESS has already prepared.

The MESS trees here are written the way MESS's ``prepare_datasets/prepare_*.py`` lay them out (the
folder names and file suffixes below are copied from MESS's ``register_*.py``, independently of the
module's own table) from the normal preparer's test split of each dataset's miniature. Importing such
a tree must give back exactly the normal preparation: same names, label arrays and image pixels,
same classes, counts and pixel counts in meta.json, and the train split untouched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mopeft.cli import main
from mopeft.data.datasets.common import PrepareOptions
from mopeft.data.prepared.mess_tree import MESS_LAYOUTS, prepare_from_mess
from mopeft.data.prepared.write import MINIATURE_MARKER, prepare_dataset
from mopeft.data.registry import all_specs, dataset_module, get_spec
from mopeft.errors import InputError, MissingInput
from mopeft.io import read_json

TILE = 64

# MESS's own layout of every MESS dataset: (folder under the root, image path, label path), as in
# mess/datasets/register_<name>.py (image_dirname / sem_seg_dirname, image_ext / gt_ext). "{task}":
# PAXRay-4's per-task label folders; images are written as MESS writes them (see _write_image).
MESS_PATHS = {
    "bdd100k": ("bdd100k", "images/10k/val/{stem}.jpg", "annotations_detectron2/val/{stem}.png"),
    "dark_zurich": (
        "Dark_Zurich",
        "rgb_anon/val/night/GOPR0356/{stem}_rgb_anon.png",
        "annotations_detectron2/val/{stem}_gt_labelIds.png",
    ),
    "mhp_v1": ("LV-MHP-v1", "images_detectron2/test/{stem}.jpg", "annotations_detectron2/test/{stem}.png"),
    "foodseg103": ("FoodSeg103", "Images/img_dir/test/{stem}.jpg", "Images/ann_dir/test/{stem}.png"),
    "atlantis": ("atlantis", "images_detectron2/test/{stem}.jpg", "annotations_detectron2/test/{stem}.png"),
    "dram": ("DRAM_processed", "images_detectron2/test/{stem}.jpg", "annotations_detectron2/test/{stem}.png"),
    "isaid": ("isaid", "images_detectron2/val/{stem}.png", "annotations_detectron2/val/{stem}.png"),
    "isprs_potsdam": (
        "ISPRS_Potsdam",
        "images_detectron2/test/irrg/{stem}.png",
        "annotations_detectron2/test/{stem}.png",
    ),
    "worldfloods": (
        "WorldFloods",
        "images_detectron2/test/irrg/{stem}.png",
        "annotations_detectron2/test/{stem}.png",
    ),
    "floodnet": (
        "FloodNet-Supervised_v1.0",
        "images_detectron2/test/{stem}.jpg",
        "annotations_detectron2/test/{stem}.png",
    ),
    "uavid": ("uavid_v1.5", "images_detectron2/val/{stem}.png", "annotations_detectron2/val/{stem}.png"),
    "kvasir_instrument": (
        "kvasir-instrument",
        "images_detectron2/test/{stem}.png",
        "annotations_detectron2/test/{stem}.png",
    ),
    "chase_db1": ("CHASEDB1", "images_detectron2/test/{stem}.jpg", "annotations_detectron2/test/{stem}.png"),
    "cryonuseg": ("CryoNuSeg", "images_detectron2/{stem}.png", "annotations_detectron2/{stem}.png"),
    "paxray4": (
        "paxray_dataset",
        "images_detectron2/test/{stem}.png",
        "annotations_detectron2/test/{task}/{stem}.png",
    ),
    "corrosion_cs": (
        "Corrosion Condition State Classification",
        "original/Test/images/{stem}.jpeg",
        "original/Test/masks/{stem}.png",
    ),
    "deepcrack": ("DeepCrack", "test_img/{stem}.jpg", "annotations_detectron2/test/{stem}.png"),
    "pst900": ("PST900_RGBT_Dataset", "test/thermal/{stem}.png", "test/labels/{stem}.png"),
    "zerowaste_f": (
        "zerowaste-f",
        "splits_final_deblurred/test/data/{stem}.PNG",
        "splits_final_deblurred/test/sem_seg/{stem}.PNG",
    ),
    "suim": ("SUIM", "TEST/images/{stem}.jpg", "annotations_detectron2/test/{stem}.png"),
    "cub_200": (
        "CUB_200_2011",
        "images_detectron2/test/{stem}.jpg",
        "annotations_detectron2/test/{stem}.png",
    ),
    "cwfid": ("cwfid", "images/{stem}_image.png", "annotations_detectron2/test/{stem}_annotation.png"),
}
KFOLD = {"dark_zurich", "dram", "cryonuseg"}  # no labelled train split: no raw download needed


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _label(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def _write_image(src: Path, dst: Path, key: str) -> None:
    """As MESS leaves the image: PST900's thermal input is the release's grey PNG; Kvasir-Instrument's
    JPEGs are decoded and saved as PNG; the others are files of the same format (copied)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if key == "pst900":
        Image.fromarray(_pixels(src)[..., 0], mode="L").save(dst)
    elif key == "kvasir_instrument":
        Image.fromarray(_pixels(src)).save(dst)
    else:
        assert src.suffix.lower() in (".jpg", ".png") and (src.suffix == ".jpg") == (".jp" in dst.suffix)
        shutil.copyfile(src, dst)


def _write_mess_tree(key: str, prepared: Path, root: Path, miniature: bool = True) -> Path:
    """``prepared``'s test split written into ``root`` in MESS's layout; returns the dataset folder."""
    folder, image_path, label_path = MESS_PATHS[key]
    base = root / folder
    spec = get_spec(key)
    for task in spec.tasks or ("",):
        split = (prepared / task if task else prepared) / "test"
        for label in sorted((split / "labels").glob("*.png")):
            (image,) = (split / "images").glob(f"{label.stem}.*")
            _write_image(image, base / image_path.format(stem=label.stem), key)
            dst = base / label_path.format(stem=label.stem, task=task)
            dst.parent.mkdir(parents=True, exist_ok=True)
            array = _label(label)
            if key == "cwfid":  # MESS's colour table: red (weed) -> 1, green (crop) -> 2; ours the reverse
                array = np.array([0, 2, 1, *range(3, 256)], dtype=np.uint8)[array]
            Image.fromarray(array).save(dst)  # MESS: Image.fromarray(mask).save(...)
    if key == "cwfid":  # MESS's image folder is the release's, train images included
        for image in sorted((prepared / "train" / "images").glob("*.png")):
            _write_image(image, base / image_path.format(stem=image.stem), key)
    if miniature:
        (base / MINIATURE_MARKER).write_text("synthetic\n")
    return base


@pytest.fixture(scope="module")
def normal(tmp_path_factory: pytest.TempPathFactory):
    """key -> (raw miniature, the normal preparer's output), made once per dataset."""
    root = tmp_path_factory.mktemp("normal")
    cache: dict[str, tuple[Path, Path]] = {}

    def get(key: str) -> tuple[Path, Path]:
        if key not in cache:
            raw = root / "raw" / key
            dataset_module(key).write_miniature(raw, seed=0)
            cache[key] = raw, prepare_dataset(key, raw, root / "prepared", PrepareOptions(tile_size=TILE))
        return cache[key]

    return get


def _files(split: Path) -> dict[str, bytes]:
    return {p.relative_to(split).as_posix(): p.read_bytes() for p in sorted(split.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("key", sorted(MESS_PATHS))
def test_import_gives_the_normal_preparation(key: str, normal, tmp_path: Path) -> None:
    raw, prepared = normal(key)
    _write_mess_tree(key, prepared, tmp_path / "mess")
    out = prepare_from_mess(
        key,
        None if key in KFOLD else raw,
        tmp_path / "mess",
        tmp_path / "out",
        PrepareOptions(tile_size=TILE),
    )
    spec = get_spec(key)
    for task in spec.tasks or ("",):
        want, got = (prepared / task, out / task) if task else (prepared, out)
        labels = sorted(p.name for p in (want / "test" / "labels").iterdir())
        assert labels and labels == sorted(p.name for p in (got / "test" / "labels").iterdir())
        for name in labels:
            np.testing.assert_array_equal(
                _label(got / "test" / "labels" / name), _label(want / "test" / "labels" / name), err_msg=name
            )
            (image,) = (want / "test" / "images").glob(f"{Path(name).stem}.*")
            (mine,) = (got / "test" / "images").glob(f"{Path(name).stem}.*")
            np.testing.assert_array_equal(_pixels(mine), _pixels(image), err_msg=image.name)
        assert _files(got / "train") == _files(want / "train"), "the train split is the raw preparer's"
    meta, ref = read_json(out / "meta.json"), read_json(prepared / "meta.json")
    for field in ("classes", "num_classes", "counts", "pixels", "ignore_index", "train_split", "tasks"):
        assert meta[field] == ref[field], field
    source = meta["test_source"]
    assert source["kind"] == "mess" and source["mess_key"] == spec.mess_key
    assert source["source"] == f"MESS/{MESS_PATHS[key][0]}" and source["source"] in meta["sources"]
    assert len(meta["sources"][source["source"]]) == 64  # a sha256 of the files read
    assert {k: v for k, v in meta["sources"].items() if k != source["source"]} == (
        {} if key in KFOLD else ref["sources"]
    )
    assert meta["test_images"] == "mess"
    text = (out / "meta.json").read_text()
    assert str(tmp_path) not in text, "no machine path in meta.json"


def test_cwfid_ignores_the_train_images_in_messs_shared_image_folder(normal, tmp_path: Path) -> None:
    _, prepared = normal("cwfid")
    _write_mess_tree("cwfid", prepared, tmp_path / "mess")
    raw, _ = normal("cwfid")
    out = prepare_from_mess("cwfid", raw, tmp_path / "mess", tmp_path / "out", PrepareOptions(tile_size=TILE))
    n_train = len(list((prepared / "train" / "images").iterdir()))
    assert read_json(out / "meta.json")["test_source"]["images_without_label"] == n_train > 0


def test_the_mess_test_split_replaces_the_raw_one(normal, tmp_path: Path, caplog) -> None:
    """A pair missing from the MESS tree is missing from the result (FoodSeg103 and CWFID pair
    MESS's way: what has no partner is left out), and the log says the splits differ."""
    raw, prepared = normal("cwfid")
    base = _write_mess_tree("cwfid", prepared, tmp_path / "mess")
    gone = sorted((base / "annotations_detectron2" / "test").iterdir())[0]
    gone.unlink()
    out = prepare_from_mess("cwfid", raw, tmp_path / "mess", tmp_path / "out", PrepareOptions(tile_size=TILE))
    stem = gone.name.removesuffix("_annotation.png")
    assert sorted(p.stem for p in (out / "test" / "images").iterdir()) == sorted(
        p.stem for p in (prepared / "test" / "images").iterdir() if p.stem != stem
    )
    assert (
        read_json(out / "meta.json")["counts"]["test"]
        == read_json(prepared / "meta.json")["counts"]["test"] - 1
    )
    assert "differs from the raw one in 1 file names" in caplog.text


def test_layout_table_covers_exactly_the_registrys_mess_datasets() -> None:
    mess = {s.key for s in all_specs() if s.mess_key}
    assert len(mess) == 22 and set(MESS_LAYOUTS) == mess
    assert len({layout.folder for layout in MESS_LAYOUTS.values()}) == 22, "one MESS folder per dataset"
    assert set(MESS_PATHS) == mess, "the import test covers every MESS dataset"


def test_fair1m_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a MESS dataset"):
        prepare_from_mess("fair1m", tmp_path, tmp_path, tmp_path / "out")


def test_missing_mess_folder_names_the_path_and_the_mess_dataset(tmp_path: Path) -> None:
    (tmp_path / "mess").mkdir()
    with pytest.raises(MissingInput) as err:
        prepare_from_mess("cryonuseg", None, tmp_path / "mess", tmp_path / "out")
    assert str(tmp_path / "mess" / "CryoNuSeg") in str(err.value)
    assert "cryonuseg_sem_seg_test" in str(err.value)
    assert not (tmp_path / "out" / "cryonuseg").exists()


def test_unpaired_images_and_labels_are_refused(normal, tmp_path: Path) -> None:
    _, prepared = normal("chase_db1")
    base = _write_mess_tree("chase_db1", prepared, tmp_path / "mess")
    label = sorted((base / "annotations_detectron2" / "test").glob("*.png"))[0]
    label.unlink()
    with pytest.raises(InputError, match=f"images without labels \\['{label.stem}'\\]"):
        prepare_from_mess("chase_db1", normal("chase_db1")[0], tmp_path / "mess", tmp_path / "out")


def test_a_test_count_other_than_the_registrys_is_refused(normal, tmp_path: Path) -> None:
    _, prepared = normal("cryonuseg")
    _write_mess_tree("cryonuseg", prepared, tmp_path / "mess", miniature=False)  # a "real" tree
    n = len(list((prepared / "test" / "labels").iterdir()))
    with pytest.raises(InputError, match=f"{n} MESS test pairs, but cryonuseg_sem_seg_test has 30"):
        prepare_from_mess("cryonuseg", None, tmp_path / "mess", tmp_path / "out")


def test_label_values_outside_the_classes_are_refused(normal, tmp_path: Path) -> None:
    _, prepared = normal("chase_db1")
    base = _write_mess_tree("chase_db1", prepared, tmp_path / "mess")
    label = sorted((base / "annotations_detectron2" / "test").glob("*.png"))[1]
    array = _label(label).copy()
    array[0, :3] = (7, 9, 255)  # 255 is ignore, so allowed
    Image.fromarray(array).save(label)
    with pytest.raises(InputError, match=r"CHASEDB1/annotations_detectron2/test/.*\[7, 9\]"):
        prepare_from_mess("chase_db1", normal("chase_db1")[0], tmp_path / "mess", tmp_path / "out")
    assert not (tmp_path / "out" / "chase_db1").exists(), "nothing half-written"


def test_a_dataset_with_a_train_split_needs_raw(normal, tmp_path: Path) -> None:
    _, prepared = normal("chase_db1")
    _write_mess_tree("chase_db1", prepared, tmp_path / "mess")
    with pytest.raises(InputError, match="--raw"):
        prepare_from_mess("chase_db1", None, tmp_path / "mess", tmp_path / "out")


def test_tiles_of_another_size_are_refused(normal, tmp_path: Path) -> None:
    raw, prepared = normal("floodnet")
    _write_mess_tree("floodnet", prepared, tmp_path / "mess")
    with pytest.raises(InputError, match=f"not {2 * TILE}x{2 * TILE}.*--tile-size 1024"):
        prepare_from_mess(
            "floodnet", raw, tmp_path / "mess", tmp_path / "out", PrepareOptions(tile_size=2 * TILE)
        )


def test_cli_from_mess(normal, tmp_path: Path, capsys) -> None:
    _, prepared = normal("dark_zurich")
    _write_mess_tree("dark_zurich", prepared, tmp_path / "mess")
    out = tmp_path / "out"
    assert (
        main(
            ["prepare", "--dataset", "dark_zurich", "--from-mess", str(tmp_path / "mess"), "--out", str(out)]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == str(out / "dark_zurich")
    assert (
        json.loads((out / "dark_zurich" / "meta.json").read_text())["counts"]
        == read_json(prepared / "meta.json")["counts"]
    )
    assert (
        main(["prepare", "--dataset", "fair1m", "--from-mess", str(tmp_path / "mess"), "--out", str(out)])
        == 2
    )
    assert "FAIR-1M" in capsys.readouterr().err


def test_ordinary_prepare_jobs_do_not_hash_the_mess_import() -> None:
    """`mopeft prepare` imports the MESS reader by name, so editing it reruns no ordinary prepare job."""
    from mopeft.codedeps import closure
    from mopeft.commands.prepare import MESS_IMPORTER

    assert prepare_from_mess.__module__ == MESS_IMPORTER
    assert not any(p.name == "mess_tree.py" for p in closure(("mopeft.commands.prepare",)))


def test_config_mess_root_passes_from_mess_to_every_mess_dataset_and_hashes_the_importer(tmp_path):
    import copy
    from types import SimpleNamespace

    import yaml

    from mopeft.plan.workflow import Workflow

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "config/demo.yaml").read_text())
    schema = root / "workflow/schemas/config.schema.yaml"
    plain = Workflow(copy.deepcopy(config), schema=schema, root=tmp_path)
    config["data"]["mess_root"] = "mess trees/datasets"
    with_mess = Workflow(config, schema=schema, root=tmp_path)
    seg = SimpleNamespace(dataset="kvasir_instrument")
    det = SimpleNamespace(dataset=config["detection"]["dataset"])
    assert plain.mess_args(seg) == [] and plain.mess_args(det) == []
    assert with_mess.mess_args(seg) == ["--from-mess", "mess trees/datasets"]
    assert with_mess.mess_args(det) == []  # FAIR-1M is not in MESS: prepared from its raw archives
    # The MESS import's code joins the prepare job's hash only where it is used.
    assert with_mess.prepare_code(seg) != plain.prepare_code(seg)
    assert with_mess.prepare_code(det) == plain.prepare_code(det)
