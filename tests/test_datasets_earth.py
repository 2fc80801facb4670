"""Preparers of iSAID, ISPRS Potsdam, WorldFloods, FloodNet, UAVid, SUIM and CUB-200 on miniatures.

Each test writes the dataset's synthetic raw copy (original archive layout and label encoding), runs
``prepare_dataset`` with a small tile size, and compares every prepared pixel with what the test
derives *independently* from the raw files (its own copies of the published colour tables, its
own tiling and padding), so a wrong colour, id, band, tile index or offset fails.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mopeft.data.datasets.common import PrepareError, PrepareOptions
from mopeft.data.prepared.write import prepare_dataset
from mopeft.data.registry import dataset_module

T = 64  # test tile size (the real default stays 1024)

MESS_CLASSES = {"isaid": 16, "isprs_potsdam": 6, "worldfloods": 3, "floodnet": 10, "uavid": 8, "suim": 8,
                "cub_200": 201}  # fmt: skip
TILED = {"isaid", "isprs_potsdam", "worldfloods", "floodnet", "uavid"}

# ------------------------------------------------ independent copies of the published colour tables
ISAID = {(0, 0, 0): 0, (0, 0, 63): 1, (0, 63, 63): 2, (0, 63, 0): 3, (0, 63, 127): 4, (0, 63, 191): 5,
         (0, 63, 255): 6, (0, 127, 63): 7, (0, 127, 127): 8, (0, 0, 127): 9, (0, 0, 191): 10, (0, 0, 255): 11,
         (0, 191, 127): 12, (0, 127, 191): 13, (0, 127, 255): 14, (0, 100, 155): 15}  # fmt: skip
POTSDAM = {(255, 255, 255): 0, (0, 0, 255): 1, (0, 255, 255): 2, (0, 255, 0): 3, (255, 255, 0): 4,
           (255, 0, 0): 5}  # fmt: skip
UAVID = {(0, 0, 0): 0, (128, 0, 0): 1, (128, 64, 128): 2, (0, 128, 0): 3, (128, 128, 0): 4, (64, 0, 128): 5,
         (192, 0, 192): 6, (64, 64, 0): 7}  # fmt: skip
SUIM = {(0, 0, 0): 0, (0, 0, 255): 1, (0, 255, 0): 2, (0, 255, 255): 3, (255, 0, 0): 4, (255, 0, 255): 5,
        (255, 255, 0): 6, (255, 255, 255): 7}  # fmt: skip
S2_MEAN_STD = {"B2": (3758.07467509, 2794.09579088), "B4": (3418.90147615, 2811.78109878),
               "B8": (3981.96268494, 2500.47885249)}  # fmt: skip


def colour_lookup(rgb: np.ndarray, table: dict) -> np.ndarray:
    """Pixel-by-pixel reference mapping (slow but obviously right); unknown -> 255."""
    out = np.full(rgb.shape[:2], 255, dtype=np.uint8)
    for y in range(rgb.shape[0]):
        for x in range(rgb.shape[1]):
            out[y, x] = table.get(tuple(int(v) for v in rgb[y, x, :3]), 255)
    return out


def decode(data: bytes, mode: str | None = None) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert(mode) if mode else im)


def read_tif(data_or_path) -> np.ndarray:
    import tifffile

    return tifffile.imread(io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path)


# ------------------------------------------------- expected (stem -> image, label) per split, from raw
Expected = dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]


def expected_isaid(raw: Path) -> Expected:
    out: Expected = {}
    train_parts = [f"train/part{i}.zip" for i in (1, 2, 3)]
    for split, images, masks in (("test", ["val/part1.zip"], "val/images.zip"),
                                 ("train", train_parts, "train/train_masks.zip")):
        imgs = {}
        for name in images:
            with zipfile.ZipFile(raw / name) as zf:
                imgs.update({Path(n).stem: zf.read(n) for n in zf.namelist() if n.endswith(".png")})
        with zipfile.ZipFile(raw / masks) as zf:
            out[split] = {
                Path(n).name.split("_")[0]: (decode(imgs[Path(n).name.split("_")[0]], "RGB"),
                                             colour_lookup(decode(zf.read(n), "RGB"), ISAID))
                for n in zf.namelist()
            }
    return out


def expected_potsdam(raw: Path, keep_7_10: bool = False) -> Expected:
    test_ids = {"2_13", "2_14", "3_13", "3_14", "4_13", "4_14", "4_15", "5_13", "5_14", "5_15", "6_13",
                "6_14", "6_15", "7_13"}  # fmt: skip
    with zipfile.ZipFile(raw / "Potsdam.zip") as outer:
        irrg = zipfile.ZipFile(io.BytesIO(outer.read("Potsdam/3_Ortho_IRRG.zip")))
        labels = zipfile.ZipFile(io.BytesIO(outer.read("Potsdam/5_Labels_all.zip")))
    out: Expected = {"test": {}, "train": {}}
    for n in labels.namelist():
        tid = n[len("top_potsdam_") : -len("_label.tif")]
        binary = np.where(decode(labels.read(n), "RGB") > 128, 255, 0)
        image = decode(irrg.read(f"3_Ortho_IRRG/top_potsdam_{tid}_IRRG.tif"), "RGB")
        split = "test" if tid in test_ids else "train"
        if tid != "7_10" or keep_7_10:  # 7_10's labels are known to be wrong: not trained on
            out[split][f"top_potsdam_{tid}"] = (image, colour_lookup(binary, POTSDAM))
    return out


def s2_to_irrg(s2: np.ndarray) -> np.ndarray:
    """MESS: band / (mean + std) in float32, clip [0, 1], x255, truncate; channels B8, B4, B2."""
    chans = []
    for idx, band in ((7, "B8"), (3, "B4"), (1, "B2")):
        scale = np.float32(S2_MEAN_STD[band][0]) + np.float32(S2_MEAN_STD[band][1])
        chans.append((np.clip(s2[idx].astype(np.float32) / scale, 0, 1) * 255).astype(np.uint8))
    return np.stack(chans, axis=-1)


def gt_to_label(gt: np.ndarray) -> np.ndarray:
    return np.array([255, 0, 1, 2], dtype=np.uint8)[gt]


def expected_worldfloods(raw: Path) -> Expected:
    out: Expected = {"test": {}, "train": {}}
    for p in sorted((raw / "test" / "S2").glob("*.tif")):
        out["test"][p.stem] = (s2_to_irrg(read_tif(p)), gt_to_label(read_tif(raw / "test" / "gt" / p.name)))
    with zipfile.ZipFile(raw / "worldfloods_v1_0_sample.zip") as zf:
        for n in zf.namelist():
            if n.startswith("worldfloods_v1_0_sample/train/S2/"):
                s2, gt = read_tif(zf.read(n)), read_tif(zf.read(n.replace("/S2/", "/gt/")))
                out["train"][Path(n).stem] = (s2_to_irrg(s2), gt_to_label(gt))
    return out


def expected_floodnet(raw: Path) -> Expected:
    root = raw / "FloodNet-Supervised_v1.0"
    out: Expected = {}
    for split in ("test", "train"):
        out[split] = {
            p.stem: (np.asarray(Image.open(p).convert("RGB")),
                     np.asarray(Image.open(root / split / f"{split}-label-img" / f"{p.stem}_lab.png")))
            for p in (root / split / f"{split}-org-img").glob("*.jpg")
        }  # fmt: skip
    return out


def expected_uavid(raw: Path) -> Expected:
    out: Expected = {"test": {}, "train": {}}
    with zipfile.ZipFile(raw / "uavid_v1.5_official_release_image.zip") as zf:
        for n in zf.namelist():
            parts = n.split("/")
            if parts[1] in ("uavid_val", "uavid_train") and parts[3] == "Images":
                label = colour_lookup(decode(zf.read(n.replace("/Images/", "/Labels/")), "RGB"), UAVID)
                split = "test" if parts[1] == "uavid_val" else "train"
                out[split][f"{parts[2]}_{Path(n).stem}"] = (decode(zf.read(n), "RGB"), label)
    return out


def upscale(label: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest upscaling by a whole factor: every mask pixel becomes a block of the image's size."""
    fy, fx = hw[0] // label.shape[0], hw[1] // label.shape[1]
    assert (label.shape[0] * fy, label.shape[1] * fx) == hw, "the miniature uses whole factors"
    return np.repeat(np.repeat(label, fy, axis=0), fx, axis=1)


def expected_suim(raw: Path) -> Expected:
    out: Expected = {}
    for split, archive, top in (("test", "TEST.zip", "TEST"), ("train", "train_val.zip", "train_val")):
        out[split] = {}
        with zipfile.ZipFile(raw / archive) as zf:
            for n in (n for n in zf.namelist() if n.endswith(".bmp")):
                image = decode(zf.read(f"{top}/images/{Path(n).stem}.jpg"), "RGB")
                label = colour_lookup(np.where(decode(zf.read(n), "RGB") > 127, 255, 0), SUIM)
                if label.shape != image.shape[:2] and split == "train":  # resized to its image
                    label = upscale(label, image.shape[:2])
                out[split][Path(n).stem] = (image, label)
    return out


def expected_cub(raw: Path) -> Expected:
    with tarfile.open(raw / "CUB_200_2011.tgz") as ti, tarfile.open(raw / "segmentations.tgz") as ts:
        def table(name: str) -> dict[str, str]:
            text = ti.extractfile(f"CUB_200_2011/{name}").read().decode()
            return dict(line.split() for line in text.splitlines() if line)

        images, split = table("images.txt"), table("train_test_split.txt")
        out: Expected = {"test": {}, "train": {}}
        for i, rel in images.items():
            cls = int(rel[:3])
            image = decode(ti.extractfile(f"CUB_200_2011/images/{rel}").read(), "RGB")
            soft = decode(ts.extractfile(f"segmentations/{rel[:-4]}.png").read(), "L")
            label = (soft > 128).astype(np.uint8) * cls
            out["train" if split[i] == "1" else "test"][Path(rel).stem] = (image, label)
    return out


EXPECTED = {
    "isaid": expected_isaid, "isprs_potsdam": expected_potsdam, "worldfloods": expected_worldfloods,
    "floodnet": expected_floodnet, "uavid": expected_uavid, "suim": expected_suim, "cub_200": expected_cub,
}  # fmt: skip


# ------------------------------------------------------------------------------------------ helpers
def make(key: str, tmp_path: Path, **mini) -> tuple[Path, Path]:
    raw = tmp_path / "raw" / key
    dataset_module(key).write_miniature(raw, seed=0, **mini)
    return raw, tmp_path / "prepared"


def pad_crop(arr: np.ndarray, r: int, c: int, fill: int) -> np.ndarray:
    out = np.full((T, T, *arr.shape[2:]), fill, dtype=np.uint8)
    crop = arr[r * T : (r + 1) * T, c * T : (c + 1) * T]
    out[: crop.shape[0], : crop.shape[1]] = crop
    return out


def load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def find_image(folder: Path, stem: str) -> Path:
    hits = [p for p in folder.glob(f"{stem}.*") if p.suffix in (".png", ".jpg")]
    assert len(hits) == 1, f"{folder}/{stem}.*: {hits}"
    return hits[0]


# -------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_prepare_matches_raw(key: str, tmp_path: Path) -> None:
    raw, out_root = make(key, tmp_path)
    expected = EXPECTED[key](raw)
    out = prepare_dataset(key, raw, out_root, PrepareOptions(tile_size=T))

    meta = json.loads((out / "meta.json").read_text())
    spec = dataset_module(key).SPEC
    assert meta["num_classes"] == len(meta["classes"]) == spec.num_classes == MESS_CLASSES[key]
    assert meta["synthetic"] is True and meta["tile_size"] == T and meta["train_split"] == "official"
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "test", "train"]

    lossy = key == "floodnet"  # MESS re-encodes FloodNet image tiles as JPEG
    for split in ("train", "test"):
        want_stems: list[str] = []
        assert expected[split], f"{key}: miniature has no {split} images"
        for stem, (image, label) in expected[split].items():
            assert image.shape[:2] == label.shape
            if key in TILED:
                rows, cols = math.ceil(label.shape[0] / T), math.ceil(label.shape[1] / T)
                assert label.shape[0] % T and label.shape[1] % T, "miniature must exercise edge padding"
                windows = [(f"{stem}_{r * cols + c}", r, c) for r in range(rows) for c in range(cols)]
            else:
                windows = [(stem, -1, -1)]
            for name, r, c in windows:
                want_stems.append(name)
                got_img = load(find_image(out / split / "images", name))
                got_lbl = load(out / split / "labels" / f"{name}.png")
                want_img = pad_crop(image, r, c, 0) if r >= 0 else image
                want_lbl = pad_crop(label, r, c, 255) if r >= 0 else label
                assert got_lbl.dtype == np.uint8 and got_lbl.ndim == 2
                np.testing.assert_array_equal(got_lbl, want_lbl, err_msg=f"{key}/{split}/{name} label")
                assert got_img.shape == want_img.shape
                if lossy:
                    assert np.abs(got_img.astype(int) - want_img).mean() < 6, f"{key}/{split}/{name}"
                else:
                    np.testing.assert_array_equal(got_img, want_img, err_msg=f"{key}/{split}/{name} image")
        got_stems = sorted(p.stem for p in (out / split / "labels").glob("*.png"))
        assert got_stems == sorted(want_stems)
        assert meta["counts"][split] == len(want_stems)
        values = set(np.unique(np.concatenate([load(p).ravel() for p in (out / split / "labels").iterdir()])))
        assert values <= set(range(spec.num_classes)) | {255}


@pytest.mark.parametrize("key", sorted(TILED))
def test_edge_tiles_are_padded(key: str, tmp_path: Path) -> None:
    """Bottom-right tile of every image: label 255 / image 0 outside the original extent."""
    raw, out_root = make(key, tmp_path)
    expected = EXPECTED[key](raw)
    out = prepare_dataset(key, raw, out_root, PrepareOptions(tile_size=T))
    for stem, (image, _) in expected["test"].items():
        h, w = image.shape[:2]
        rows, cols = math.ceil(h / T), math.ceil(w / T)
        name = f"{stem}_{rows * cols - 1}"
        lbl = load(out / "test" / "labels" / f"{name}.png")
        img = load(find_image(out / "test" / "images", name)).astype(int)
        hh, ww = h - (rows - 1) * T, w - (cols - 1) * T
        assert (lbl[hh:] == 255).all() and (lbl[:, ww:] == 255).all()
        if key == "floodnet":  # JPEG ringing near the edge: check well inside the padding
            assert img[hh + 8 :].mean() < 3 and img[:, ww + 8 :].mean() < 3
        else:
            assert (img[hh:] == 0).all() and (img[:, ww:] == 0).all()


def test_isaid_known_colours(tmp_path: Path) -> None:
    """Harbor (0,100,155) -> 15, small vehicle (0,0,127) -> 9, stray colour at (0,0) -> 255."""
    raw, out_root = make("isaid", tmp_path)
    with zipfile.ZipFile(raw / "val" / "images.zip") as zf:
        name = sorted(zf.namelist())[0]
        mask = decode(zf.read(name), "RGB").copy()
    stem = Path(name).name.split("_")[0]
    mask[70:72, 66:68] = (0, 100, 155)  # tile row 1, col 1; offsets (6..7, 2..3)
    mask[5, 3] = (0, 0, 127)
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")
    with zipfile.ZipFile(raw / "val" / "images.zip", "w") as zf:
        zf.writestr(name, buf.getvalue())
    out = prepare_dataset("isaid", raw, out_root, PrepareOptions(tile_size=T))
    cols = math.ceil(mask.shape[1] / T)
    assert load(out / "test" / "labels" / f"{stem}_{cols + 1}.png")[6, 2] == 15
    assert load(out / "test" / "labels" / f"{stem}_0.png")[5, 3] == 9
    assert load(out / "test" / "labels" / f"{stem}_0.png")[0, 0] == 255
    assert json.loads((out / "meta.json").read_text())["unknown_colour_pixels"] >= 1


def test_worldfloods_band_order(tmp_path: Path) -> None:
    """A planted pixel: B8 -> channel 0, B4 -> channel 1, B2 (blue, not green) -> channel 2, clipped."""
    import tifffile

    raw, out_root = make("worldfloods", tmp_path)
    path = sorted((raw / "test" / "S2").glob("*.tif"))[0]
    s2 = tifffile.imread(path)
    s2[:, 66, 70] = 0
    s2[7, 66, 70] = 4000  # B8
    s2[3, 66, 70] = 1234  # B4
    s2[2, 66, 70] = 9999  # B3 (must not appear)
    s2[1, 66, 70] = 65535  # B2 -> clipped to 255
    tifffile.imwrite(path, s2, photometric="minisblack", planarconfig="separate")
    gt_path = raw / "test" / "gt" / path.name
    gt = tifffile.imread(gt_path)
    gt[66, 70], gt[0, 0] = 2, 0  # water -> 1, invalid -> 255
    tifffile.imwrite(gt_path, gt, photometric="minisblack")
    out = prepare_dataset("worldfloods", raw, out_root, PrepareOptions(tile_size=T))
    cols = math.ceil(s2.shape[2] / T)
    px = load(out / "test" / "images" / f"{path.stem}_{cols + 1}.png")[2, 6]
    assert px.tolist() == [int(4000 / 6482.44153743 * 255), int(1234 / 6230.68257493 * 255), 255]
    assert load(out / "test" / "labels" / f"{path.stem}_{cols + 1}.png")[2, 6] == 1
    assert load(out / "test" / "labels" / f"{path.stem}_0.png")[0, 0] == 255
    meta = json.loads((out / "meta.json").read_text())
    assert meta["channel_variant"] == "IRRG" and meta["bands"] == ["B8", "B4", "B2"]


def test_worldfloods_bad_gt_value(tmp_path: Path) -> None:
    import tifffile

    raw, out_root = make("worldfloods", tmp_path)
    gt_path = sorted((raw / "test" / "gt").glob("*.tif"))[0]
    gt = tifffile.imread(gt_path)
    gt[3, 3] = 7
    tifffile.imwrite(gt_path, gt, photometric="minisblack")
    with pytest.raises(PrepareError, match=gt_path.name):
        prepare_dataset("worldfloods", raw, out_root, PrepareOptions(tile_size=T))


def test_potsdam_uses_irrg_and_binarises(tmp_path: Path) -> None:
    raw, out_root = make("isprs_potsdam", tmp_path)
    out = prepare_dataset("isprs_potsdam", raw, out_root, PrepareOptions(tile_size=T))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["channels"] == meta["channel_variant"] == "IRRG"
    assert meta["unknown_colour_pixels"] > 0  # the black boundary line -> 255
    assert {p.stem.rsplit("_", 1)[0] for p in (out / "test" / "labels").iterdir()} == {
        "top_potsdam_2_13", "top_potsdam_2_14"}  # fmt: skip


def test_potsdam_real_mode_requires_all_tiles(tmp_path: Path) -> None:
    raw, _ = make("isprs_potsdam", tmp_path)
    module = dataset_module("isprs_potsdam")
    (tmp_path / "o").mkdir()
    with pytest.raises(PrepareError, match="lacks tile top_potsdam_"):
        module.prepare(raw, tmp_path / "o", PrepareOptions(tile_size=T, miniature=False))


def test_uavid_unknown_colour_is_an_error(tmp_path: Path) -> None:
    raw, out_root = make("uavid", tmp_path, stray_colour=True)
    with pytest.raises(PrepareError, match=r"Labels/000000\.png: unknown label colour"):
        prepare_dataset("uavid", raw, out_root, PrepareOptions(tile_size=T))
    assert not (out_root / "uavid").exists()


def test_cub_species_id_and_grayscale(tmp_path: Path) -> None:
    raw, out_root = make("cub_200", tmp_path)
    out = prepare_dataset("cub_200", raw, out_root, PrepareOptions())
    ids = {p.stem: set(np.unique(load(p)).tolist()) for p in (out / "test" / "labels").iterdir()}
    assert ids["Black-footed_Albatross_0001_100001"] == {0, 1}
    assert ids["Common_Yellowthroat_0005_100005"] == {0, 200}
    spec = dataset_module("cub_200").SPEC
    assert spec.classes[1] == "Black-footed Albatross" and spec.classes[200] == "Common Yellowthroat"
    # the grayscale JPEG (image 4, train) became an RGB PNG; RGB JPEGs are copied byte for byte
    assert [p.suffix for p in sorted((out / "train" / "images").iterdir())] == [".jpg", ".png"]
    assert all(load(p).ndim == 3 for p in (out / "train" / "images").iterdir())


def test_specs_table_facts() -> None:
    facts = {
        "isaid": ("iSAID", "Visible Spectrum", "Small", "16 (Medium)", "Low", "Generic", "Objects", 4055),
        "isprs_potsdam": ("ISPRS Potsdam", "Multispectral", "Small", "6 (Few)", "Low", "Generic", "Land Use",
                          504),
        "worldfloods": ("WorldFloods", "Multispectral", "Medium", "3 (Binary)", "Low", "Generic", "Floods",
                        160),
        "floodnet": ("FloodNet", "Visible Spectrum", "Medium", "10 (Few)", "Low", "Task Specific", "Floods",
                     5571),
        "uavid": ("UAVid", "Visible Spectrum", "Small", "8 (Few)", "High", "Task Specific", "Objects", 840),
        "suim": ("SUIM", "Visible Spectrum", "Medium", "8 (Few)", "Low", "Generic", "Underwater", 110),
        "cub_200": ("CUB-200", "Visible Spectrum", "Medium", "201 (Many)", "High", "Domain Specific",
                    "Bird Species", 5794),
    }  # fmt: skip
    for key, row in facts.items():
        s = dataset_module(key).SPEC
        got = (s.name, s.sensor, s.segment_size, s.num_classes_label, s.class_similarity, s.vocabulary,
               s.task_description, s.expected_test)  # fmt: skip
        assert got == row, key
        assert s.key == key and s.sources and s.mess_key and s.expected_test_is_exact
    assert dataset_module("isprs_potsdam").SPEC.channels == "IRRG"
    assert dataset_module("worldfloods").SPEC.channels == "IRRG"
    assert PrepareOptions().tile_size == 1024


def test_suim_train_mask_of_another_size_is_resized_and_recorded(tmp_path: Path) -> None:
    raw, out_root = make("suim", tmp_path)
    sizes = {}
    with zipfile.ZipFile(raw / "train_val.zip") as zf:
        for n in zf.namelist():
            sizes.setdefault(Path(n).stem, {})[Path(n).suffix] = decode(zf.read(n)).shape[:2]
    odd = {k: v for k, v in sizes.items() if v[".bmp"] != v[".jpg"]}
    assert len(odd) == 1, "the miniature carries SUIM's train size mismatch"
    out = prepare_dataset("suim", raw, out_root, PrepareOptions())
    meta = json.loads((out / "meta.json").read_text())
    resized = [
        {"mask": f"{k}.bmp", "mask_hw": list(v[".bmp"]), "image_hw": list(v[".jpg"])} for k, v in odd.items()
    ]
    assert meta["train_size_mismatch"] == {"resized": resized, "dropped": []}
    assert meta["counts"]["train"] == len(sizes)


def test_suim_train_mask_of_another_shape_is_dropped_and_test_stays_strict(tmp_path: Path) -> None:
    from mopeft.data.synthetic.miniature import encode, replace_members

    raw, out_root = make("suim", tmp_path)
    with zipfile.ZipFile(raw / "train_val.zip") as zf:
        name = sorted(n for n in zf.namelist() if n.endswith(".bmp"))[0]
        cropped = decode(zf.read(name), "RGB")[:, :20].copy()  # another aspect ratio: cannot be resized
    replace_members(raw / "train_val.zip", {name: encode(cropped, "BMP")})
    out = prepare_dataset("suim", raw, out_root, PrepareOptions())
    dropped = json.loads((out / "meta.json").read_text())["train_size_mismatch"]["dropped"]
    assert [d["mask"] for d in dropped] == [Path(name).name]
    assert Path(name).stem not in {p.stem for p in (out / "train" / "images").iterdir()}
    with zipfile.ZipFile(raw / "TEST.zip") as zf:
        name = sorted(n for n in zf.namelist() if n.endswith(".bmp"))[0]
        small = decode(zf.read(name), "RGB")[::2, ::2].copy()
    replace_members(raw / "TEST.zip", {name: encode(small, "BMP")})
    with pytest.raises(PrepareError, match=rf"{Path(name).name}: size .* differs from its image"):
        prepare_dataset("suim", raw, tmp_path / "again", PrepareOptions())


def test_worldfloods_lzw_and_deflate_geotiffs_decode(tmp_path: Path) -> None:
    """The release's GeoTIFFs are compressed; LZW needs imagecodecs (a declared dependency)."""
    import tifffile

    raw, out_root = make("worldfloods", tmp_path)
    compressions = {}
    for p in sorted((raw / "test").rglob("*.tif")):
        with tifffile.TiffFile(p) as tif:
            compressions[f"{p.parent.name}/{p.name}"] = tif.pages[0].compression.name
    assert {"LZW", "ADOBE_DEFLATE"} <= set(compressions.values()), compressions
    out = prepare_dataset("worldfloods", raw, out_root, PrepareOptions(tile_size=T))
    lzw = next(k for k, v in compressions.items() if v == "LZW").split("/")[1][:-4]
    assert (out / "test" / "images" / f"{lzw}_0.png").exists()


def test_uavid_train_unknown_colours_become_ignore_and_are_counted(tmp_path: Path) -> None:
    raw, out_root = make("uavid", tmp_path)
    off_palette = 0
    with zipfile.ZipFile(raw / "uavid_v1.5_official_release_image.zip") as zf:
        for n in zf.namelist():
            if "/uavid_train/" in n and "/Labels/" in n:
                off_palette += int((colour_lookup(decode(zf.read(n), "RGB"), UAVID) == 255).sum())
    assert off_palette > 0, "the miniature carries off-palette train pixels"
    out = prepare_dataset("uavid", raw, out_root, PrepareOptions(tile_size=T))
    assert json.loads((out / "meta.json").read_text())["unknown_colour_pixels"] == {"train": off_palette}
    ignored = sum(int((load(p) == 255).sum()) for p in (out / "train" / "labels").iterdir())
    assert ignored >= off_palette  # plus the edge padding of the tiles


def test_colour_mapping_memory_stays_near_one_byte_per_pixel() -> None:
    """iSAID's masks reach 20000² px: mapping them must not build an int64 array per pixel (8 bytes
    each, several GB); beyond its uint8 result map_colours may only use a bounded working set."""
    import tracemalloc

    from mopeft.data.datasets.common import map_colours

    h, w = 2000, 2000
    rgb = np.array(list(ISAID), dtype=np.uint8)[np.random.default_rng(0).integers(0, 16, (h, w))]
    rgb[0, 0] = (10, 20, 30)  # unknown -> 255
    tracemalloc.start()
    try:
        label = map_colours(rgb, ISAID, "mask.png", unknown="ignore")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert label.dtype == np.uint8 and label[0, 0] == 255
    assert peak < 4 * h * w, f"peak {peak / (h * w):.1f} bytes per pixel"
    np.testing.assert_array_equal(label[:40, :40], colour_lookup(rgb[:40, :40], ISAID))


def test_potsdam_tile_7_10_is_left_out_of_train_unless_kept(tmp_path: Path) -> None:
    raw, out_root = make("isprs_potsdam", tmp_path)
    with zipfile.ZipFile(raw / "Potsdam.zip") as outer:
        labels = zipfile.ZipFile(io.BytesIO(outer.read("Potsdam/5_Labels_all.zip"))).namelist()
    assert "top_potsdam_7_10_label.tif" in labels, "the miniature has tile 7_10"

    def train_tiles(out: Path) -> set[str]:
        return {p.stem.rsplit("_", 1)[0] for p in (out / "train" / "labels").iterdir()}

    out = prepare_dataset("isprs_potsdam", raw, out_root, PrepareOptions(tile_size=T))
    assert "top_potsdam_7_10" not in train_tiles(out)
    assert json.loads((out / "meta.json").read_text())["excluded_train_tiles"] == ["7_10"]
    keep = PrepareOptions(tile_size=T, extra={"keep_excluded_tiles": True})
    kept = prepare_dataset("isprs_potsdam", raw, tmp_path / "kept", keep)
    assert train_tiles(kept) == set(expected_potsdam(raw, keep_7_10=True)["train"])
    assert "top_potsdam_7_10" in train_tiles(kept)
    assert json.loads((kept / "meta.json").read_text())["excluded_train_tiles"] == []
