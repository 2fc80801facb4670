"""The facts a resource model reads from each registered DatasetSpec: split sizes, image format, size.

`mopeft plan` costs every training and evaluation job from these numbers without any data present,
so they are checked here twice: every spec declares them consistently, and the declared format and
tile size are what the preparer really writes. For the latter each dataset's miniature is written in
its raw layout and prepared with the default options (1024² tiles), and the prepared images' content
(PIL's format, not the file suffix) is compared with the spec.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from mopeft.data.datasets.common import MESS_TILE, PrepareOptions
from mopeft.data.folder.spec import folder_spec
from mopeft.data.prepared.write import prepare_dataset
from mopeft.data.registry import DATASETS, all_specs, dataset_module, get_spec
from mopeft.data.spec import IMAGE_FORMATS, DatasetSpec

# Written down independently of the modules: the datasets whose preparers cut 1024² tiles (padded).
TILED = {"isaid", "isprs_potsdam", "worldfloods", "floodnet", "uavid"}
PIL_FORMAT = {"jpeg": "JPEG", "png": "PNG"}
# Preparers that convert odd sources (grey, CMYK) to PNG: there the declared format is the dominant
# one, not every item's (the CUB-200 miniature holds a grey JPEG, as the release does).
CONVERTS_ODD_SOURCES = {"cub_200"}


def test_the_registry_declares_sizes_for_every_dataset() -> None:
    specs = all_specs()
    assert [s.key for s in specs] == list(DATASETS) and len(specs) == 23
    assert {s.image_format for s in specs} == set(IMAGE_FORMATS)  # both formats occur


@pytest.mark.parametrize("key", list(DATASETS))
def test_spec_sizes_are_consistent(key: str) -> None:
    spec = get_spec(key)
    assert spec.image_format in IMAGE_FORMATS
    assert isinstance(spec.expected_test, int) and spec.expected_test > 0
    if spec.train_split == "official":
        assert isinstance(spec.expected_train, int) and spec.expected_train > 0
    else:  # k-fold: the training items of a fold follow from expected_test and k
        assert spec.train_split == "none" and spec.expected_train is None
    hw = spec.image_hw
    assert isinstance(hw, tuple) and len(hw) == 2 and all(isinstance(v, int) and v > 0 for v in hw)
    largest = spec.largest_image_hw
    assert largest == (spec.max_image_hw or hw)
    assert largest[0] >= hw[0] and largest[1] >= hw[1]
    if spec.max_image_hw is not None:  # only declared where it differs
        assert spec.max_image_hw != hw
    if key in TILED:
        assert hw == (MESS_TILE, MESS_TILE) and spec.max_image_hw is None  # edge tiles are padded


def tiles(height: int, width: int) -> int:
    """MESS's rule, written out again: ceil(H / 1024) * ceil(W / 1024) padded tiles."""
    return -(-height // 1024) * -(-width // 1024)


def test_tiled_counts_follow_the_published_split_sizes() -> None:
    """Recomputed here from the published image counts and sizes with MESS's tile rule."""
    assert get_spec("isprs_potsdam").expected_train == (24 - 1) * tiles(6000, 6000) == 828
    assert get_spec("uavid").expected_train == 200 * tiles(2160, 3840) == 200 * tiles(2160, 4096) == 2400
    assert get_spec("uavid").expected_test == 70 * tiles(2160, 3840)
    # FloodNet: 4000x3000 -> 12 tiles, 4592x3072 -> 15; the 448 test images give 5571 = 383*12 + 65*15.
    assert 383 * tiles(3000, 4000) + 65 * tiles(3072, 4592) == get_spec("floodnet").expected_test
    assert get_spec("floodnet").expected_train == round(1445 * 5571 / 448)
    assert get_spec("isaid").expected_train == round(1411 * 4055 / 458)
    assert get_spec("paxray4").expected_train == 598 + 74  # per task
    assert get_spec("cwfid").expected_train == 39  # 40 listed, id 28 removed (it is also a test id)
    fair = get_spec("fair1m")  # v1.0: every 5th of the >15,000 train images is test, ~1 tile each
    images = fair.expected_train + fair.expected_test
    assert images > 15_000 and fair.expected_test == images // 5


def test_folder_and_plain_specs_keep_the_defaults() -> None:
    spec = folder_spec("own", {"images": "imgs", "masks": "masks", "classes": ["ground", "thing"]})
    assert spec.expected_train is None and spec.image_format == "jpeg"
    assert spec.image_hw is None and spec.max_image_hw is None and spec.largest_image_hw is None
    with pytest.raises(ValueError, match="image_format"):
        DatasetSpec("toy", "toy", "x", ("a", "b"), (), expected_test=1, image_format="tiff")  # type: ignore[arg-type]


def _prepared_images(out: Path) -> list[Path]:
    """Every prepared train/test image (PAXRay-4 keeps one layout per task below ``out``)."""
    return sorted(
        p
        for p in out.rglob("*")
        if p.is_file() and p.parent.name == "images" and p.parent.parent.name in ("train", "test")
    )


@pytest.mark.parametrize("key", list(DATASETS))
def test_prepared_images_are_what_the_spec_declares(key: str, tmp_path: Path) -> None:
    spec = get_spec(key)
    raw = tmp_path / "raw" / key
    dataset_module(key).write_miniature(raw, seed=0)
    out = prepare_dataset(key, raw, tmp_path / "prepared", PrepareOptions())  # default tile size
    images = _prepared_images(out)
    assert images, f"{key}: the miniature prepared no images"
    found: dict[Path, tuple[str, tuple[int, int]]] = {}
    for path in images:
        with Image.open(path) as im:
            found[path] = (im.format, (im.height, im.width))
    formats = Counter(fmt for fmt, _ in found.values())
    assert set(formats) <= set(PIL_FORMAT.values()), formats
    expected = PIL_FORMAT[spec.image_format]
    if key in CONVERTS_ODD_SOURCES:
        assert formats.most_common(1)[0][0] == expected, formats
    else:
        wrong = [p.relative_to(out) for p, (fmt, _) in found.items() if fmt != expected]
        assert not wrong, f"{key}: declared {spec.image_format}, but {wrong[:3]} are not"
    sizes = {hw for _, hw in found.values()}
    if key in TILED:
        assert sizes == {spec.image_hw}, sizes  # every tile, edge tiles included, at the spec's size
    largest = spec.largest_image_hw
    assert all(h <= largest[0] and w <= largest[1] for h, w in sizes)  # miniatures are small
