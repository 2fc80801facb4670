"""ISPRS Potsdam (MESS key ``isprs_potsdam_sem_seg_test_irrg``): 6000² true orthophotos, 5 cm.

The benchmark uses the IRRG false-colour product (NIR-R-G), MESS's 14 test tiles and the standard 24
training tiles, each cut into 1024² tiles (36 per orthophoto). Labels are RGB colour codes that
MESS binarises per channel (>128) before the lookup, because some label files carry graded values;
colours outside the palette after binarisation (black boundary pixels) become 255.

Training tile 7_10 has known annotation errors and is left out of train by default, as other
benchmarks on Potsdam do (``EXCLUDED_TRAIN_TILES``; ``meta.json`` lists what was left out). To keep
it, prepare with ``PrepareOptions(extra={"keep_excluded_tiles": True})``. The test tiles are MESS's.

Checksums: the publisher gives none for ``Potsdam.zip``, so nothing is pinned here; the sha256 of
the file actually used is recorded in ``meta.json`` (``sources``) when it is prepared.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from mopeft.data.datasets.common import (
    IGNORE,
    MESS_TILE,
    PrepareError,
    PrepareOptions,
    extract,
    load_image,
    map_colours,
    num_tiles,
    save_image,
    save_label,
    scratch_dir,
    tile,
    visible,
)
from mopeft.data.spec import DatasetSpec, Source
from mopeft.data.synthetic.miniature import encode, mark_miniature, random_block_ids, write_zip, zip_bytes

CLASSES = ("road", "building", "grass", "tree", "car", "others")
COLOURS: dict[tuple[int, int, int], int] = {
    (255, 255, 255): 0, (0, 0, 255): 1, (0, 255, 255): 2, (0, 255, 0): 3, (255, 255, 0): 4, (255, 0, 0): 5,
}  # fmt: skip

TEST_TILES = (
    "2_13", "2_14", "3_13", "3_14", "4_13", "4_14", "4_15", "5_13", "5_14", "5_15", "6_13", "6_14", "6_15",
    "7_13",
)  # fmt: skip
TRAIN_TILES = (
    "2_10", "2_11", "2_12", "3_10", "3_11", "3_12", "4_10", "4_11", "4_12", "5_10", "5_11", "5_12", "6_7",
    "6_8", "6_9", "6_10", "6_11", "6_12", "7_7", "7_8", "7_9", "7_10", "7_11", "7_12",
)  # fmt: skip

# Left out of train unless options.extra["keep_excluded_tiles"] is true: 7_10's labels are known to
# be wrong in places.
EXCLUDED_TRAIN_TILES = ("7_10",)

ORTHO_HW = (6000, 6000)  # every Potsdam orthophoto (ISPRS benchmark description)

ARCHIVE = "Potsdam.zip"
# channel variant -> (inner archive, file-name tag); IRRG is the benchmark's choice.
VARIANTS = {"IRRG": ("3_Ortho_IRRG.zip", "IRRG"), "RGB": ("2_Ortho_RGB.zip", "RGB")}
LABELS_ZIP = "5_Labels_all.zip"

SPEC = DatasetSpec(
    key="isprs_potsdam",
    name="ISPRS Potsdam",
    domain="Earth Monitoring",
    classes=CLASSES,
    sources=(
        Source(
            ARCHIVE,
            "manual",
            url="https://www.isprs.org/education/benchmarks/UrbanSemLab/default.aspx",
            instructions=(
                "Request the ISPRS 2D semantic labelling 'Potsdam' data from the ISPRS benchmark page "
                "(mirrors listed by mmsegmentation: Google Drive folder 1w3EJuyUGet6_qmLwGAWZ9vw5ogeG0zLz, "
                "Baidu pwd mseg, OpenDataLab) and put the archive at data/raw/isprs_potsdam/Potsdam.zip. "
                "It must contain Potsdam/2_Ortho_RGB.zip, Potsdam/3_Ortho_IRRG.zip and "
                "Potsdam/5_Labels_all.zip (full labels, not _noBoundary)."
            ),
        ),
    ),
    expected_test=504,
    # The 24 standard train orthophotos less the excluded 7_10, each 6000x6000 -> 36 tiles of 1024²:
    # 23 * 36 = 828 (864 with keep_excluded_tiles).
    expected_train=(len(TRAIN_TILES) - len(EXCLUDED_TRAIN_TILES)) * num_tiles(*ORTHO_HW),
    image_format="png",  # tiles written by save_image
    image_hw=(MESS_TILE, MESS_TILE),
    mess_key="isprs_potsdam_sem_seg_test_irrg",
    channels="IRRG",
    train_split="official",
    sensor="Multispectral",
    segment_size="Small",
    num_classes_label="6 (Few)",
    class_similarity="Low",
    vocabulary="Generic",
    task_description="Land Use",
    citation="Rottensteiner et al., ISPRS test project on urban classification and 3D building "
    "reconstruction, 2013",
    notes=(
        "Thesis Table 4.2 spells the dataset 'ISPRS Postdam'.",
        "Unknown colours after binarisation (black boundary pixels) -> 255; MESS would map them to road.",
        "Train tile 7_10 (known label errors) is left out unless extra keep_excluded_tiles is set.",
    ),
)


def _extract_inner(outer: Path, wanted: tuple[str, ...], dest: Path) -> dict[str, Path]:
    """Pull only the inner archives we need out of the multi-GB Potsdam.zip."""
    found: dict[str, Path] = {}
    try:
        with zipfile.ZipFile(outer) as zf:
            for member in zf.namelist():
                name = member.rsplit("/", 1)[-1]
                if name in wanted and name not in found:
                    target = dest / name
                    with zf.open(member) as src, open(target, "wb") as dst:
                        while block := src.read(1 << 20):
                            dst.write(block)
                    found[name] = target
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise PrepareError(f"{outer}: cannot read archive ({exc})") from None
    missing = [w for w in wanted if w not in found]
    if missing:
        raise PrepareError(f"{outer}: archive lacks {missing} (expected Potsdam/<name> inside)")
    return found


def _index(root: Path, tag: str) -> dict[str, Path]:
    """tile id ('2_13') -> path of top_potsdam_<id>_<tag>.tif."""
    out = {}
    for p in visible(root, f"**/top_potsdam_*_{tag}.tif"):
        out[p.name[len("top_potsdam_") : -len(f"_{tag}.tif")]] = p
    return out


def prepare(raw_dir: Path, out_dir: Path, options: PrepareOptions) -> dict:
    """Tile the IRRG orthophotos and binarised colour labels of the MESS test / standard train lists."""
    variant = str(options.extra.get("channel_variant", "IRRG")).upper()
    if variant not in VARIANTS:
        raise PrepareError(f"isprs_potsdam: unknown channel_variant {variant!r}; use one of {list(VARIANTS)}")
    image_zip, tag = VARIANTS[variant]
    excluded = () if options.extra.get("keep_excluded_tiles") else EXCLUDED_TRAIN_TILES
    k = SPEC.num_classes
    counts: dict[str, int] = {}
    unknown = 0
    with scratch_dir(out_dir, SPEC.key) as scratch:
        inner = _extract_inner(raw_dir / ARCHIVE, (image_zip, LABELS_ZIP), scratch)
        extract(inner[image_zip], scratch / "images")
        extract(inner[LABELS_ZIP], scratch / "labels")
        images, labels = _index(scratch / "images", tag), _index(scratch / "labels", "label")
        train = [t for t in TRAIN_TILES if t not in excluded]
        for split, ids in (("test", TEST_TILES), ("train", train)):
            n = 0
            for tid in ids:
                if tid not in images or tid not in labels:
                    if options.miniature:
                        continue
                    which = image_zip if tid not in images else LABELS_ZIP
                    raise PrepareError(f"{raw_dir / ARCHIVE}: {which} lacks tile top_potsdam_{tid}")
                image = load_image(images[tid], "RGB")
                raw = load_image(labels[tid], "RGB")
                if raw.shape[:2] != image.shape[:2]:
                    raise PrepareError(f"{labels[tid]}: size {raw.shape[:2]} differs from {image.shape[:2]}")
                binary = (raw > 128).astype(np.uint8) * np.uint8(255)  # uint8 throughout
                label = map_colours(binary, COLOURS, labels[tid], unknown="ignore")
                unknown += int((label == IGNORE).sum())
                for i, img_t, lbl_t in tile(image, label, options.tile_size):
                    stem = f"top_potsdam_{tid}_{i}"
                    save_image(out_dir / split / "images" / f"{stem}.png", img_t)
                    save_label(out_dir / split / "labels" / f"{stem}.png", lbl_t, k)
                    n += 1
            counts[split] = n
    return {
        "channel_variant": variant,
        "channels": variant,
        "split_protocol": "test = MESS 14 tiles; train = standard 24 tiles (mmseg) less the excluded; "
        "1024² MESS tiling",
        "excluded_train_tiles": list(excluded),
        "unknown_colour_pixels": unknown,
        "tiles": counts,
    }


# --------------------------------------------------------------------------------------- miniature
def write_miniature(raw_dir: Path, seed: int = 0) -> None:
    """Potsdam.zip with inner RGB/IRRG/label zips; 2 test + 2 train orthophotos of ~100 px, plus
    the excluded train tile 7_10.

    Labels use the 6 colours in 8x8 blocks, some graded (200 instead of 255, binarised by the
    preparer) and one black boundary line (unknown -> 255).
    """
    rng = np.random.default_rng(seed)
    raw_dir = Path(raw_dir)
    palette = np.array(list(COLOURS), dtype=np.uint8)
    rgb, irrg, lab = {}, {}, {}
    for tid in (*TEST_TILES[:2], *TRAIN_TILES[:2], *EXCLUDED_TRAIN_TILES):
        h, w = int(rng.integers(70, 100)), int(rng.integers(70, 120))
        ids = random_block_ids(rng, h, w, len(palette))
        label = palette[ids].copy()
        label[label == 255] = np.where(rng.random(int((label == 255).sum())) < 0.3, 200, 255)
        label[h // 2, :] = 0  # noBoundary-style black line
        base = palette[ids].astype(np.int64) // 2
        rgb[f"2_Ortho_RGB/top_potsdam_{tid}_RGB.tif"] = encode(
            (base + rng.integers(0, 100, size=(h, w, 3))).astype(np.uint8), "TIFF"
        )
        irrg[f"3_Ortho_IRRG/top_potsdam_{tid}_IRRG.tif"] = encode(
            (base + rng.integers(0, 100, size=(h, w, 3))).astype(np.uint8), "TIFF"
        )
        lab[f"top_potsdam_{tid}_label.tif"] = encode(label, "TIFF")
    write_zip(
        raw_dir / ARCHIVE,
        {
            "Potsdam/2_Ortho_RGB.zip": zip_bytes(rgb),
            "Potsdam/3_Ortho_IRRG.zip": zip_bytes(irrg),
            "Potsdam/5_Labels_all.zip": zip_bytes(lab),
        },
    )
    mark_miniature(raw_dir)
