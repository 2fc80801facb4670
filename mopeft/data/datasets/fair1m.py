"""FAIR-1M v1.0 (optionally v2.0's labelled validation) for the detection track of Appendix A.

FAIR-1M has oriented boxes, not masks. So the semantic pipeline can train on it unchanged, every
tile gets a label PNG with the boxes rasterised (0 = background, 1..37 = class id in the frozen
order of :mod:`mopeft.detection`); detection GT for ``mopeft score-detections`` is written beside
it as ``{train,test}/annotations/<stem>.xml`` in FAIR-1M's own XML format, in tile coordinates.

Decisions (all recorded in meta.json):

* **Split.** v1.0 has no labelled validation/test split (the test server is closed), so the test
  split is carved from train deterministically: all train images (part1 + part2) sorted by numeric
  id, every ``test_every``-th one (``i % k == k - 1``, default k = 5 -> 20 %) is test. If the v2.0
  ``validation/`` archives are present, they are the test split and all of train is train.
* **Tiling.** ``options.tile_size`` (default 1024). Test: non-overlapping row-major tiles, each test
  pixel exactly once, so every GT object is counted once. Train: windows of stride
  ``tile_size - train_overlap`` (default overlap 200/1024 of the tile, the usual 1024/824 crop), the
  last window shifted back to the image edge. Edge tiles are cropped, not padded (the model's preprocessing
  resizes and pads anyway), so no padding pixels are created.
* **Objects cut by a tile.** An object is kept in a tile if >= ``keep_fraction`` (default 50 %) of
  its polygon area lies inside the tile; a kept, cut object's GT box is the minimum-area rectangle
  of its visible part. Pixels of objects below the threshold are labelled 255 (ignore) in that
  tile: the model is neither taught that slivers are background nor that they are objects the GT
  will not contain.
* **Rasterisation.** A pixel belongs to a polygon if its centre is inside the polygon's convex
  hull; objects are painted largest first, so where boxes overlap the smaller object wins (a car on
  a bridge stays a car).

Checksums: md5s of the Google-Drive mirrors (as torchgeo ships them) are checked; there is no
published sha256, so the sha256 of each file used is recorded in ``meta.json`` (``sources``).
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mopeft.data.datasets.common import PrepareError, PrepareOptions, save_image, save_label
from mopeft.data.spec import DatasetSpec, Source
from mopeft.data.synthetic.miniature import encode, mark_miniature, write_zip
from mopeft.detection import CLASSES, SPEC_CLASSES
from mopeft.detection.rotated import area, clip_to_window, convex_hull, min_area_rect
from mopeft.detection.xml_io import Annotation, AnnotationError, Obj, read_xml, to_xml_string

log = logging.getLogger(__name__)

CLASS_ID = {c: i for i, c in enumerate(SPEC_CLASSES)}
IGNORE = 255
_OFFICIAL = (
    "Official site: https://www.gaofen-challenge.com/benchmark (FAIR1M-1.0, free registration). "
    "Keep the original archive names and folders: data/raw/fair1m/train/part1/{images.zip,labelXml.zip}, "
    "data/raw/fair1m/train/part2/{images.zip,labelXmls.zip}; optional FAIR1M-2.0 "
    "data/raw/fair1m/validation/{images.zip,labelXmls.zip}."
)


def _gdrive(filename: str, gid: str, md5: str, required: bool = True) -> Source:
    return Source(
        filename,
        "gdrive",
        url=f"https://drive.google.com/file/d/{gid}",
        md5=md5,
        gdrive_id=gid,
        instructions=_OFFICIAL,
        required=required,
    )


TRAIN_SOURCES = (
    ("train/part1/images.zip", "train/part1/labelXml.zip"),
    ("train/part2/images.zip", "train/part2/labelXmls.zip"),
)
VALIDATION_SOURCES = ("validation/images.zip", "validation/labelXmls.zip")

# Sizes for the resource model (SPEC.expected_*): FAIR1M-1.0 train images, and the default test_every.
V1_TRAIN_IMAGES = 16_488
DEFAULT_TEST_EVERY = 5

SPEC = DatasetSpec(
    key="fair1m",
    name="FAIR-1M",
    domain="Earth Monitoring",
    classes=SPEC_CLASSES,
    presence_head=True,
    sources=(
        # Google-Drive mirrors and md5s as shipped by torchgeo's FAIR1M dataset.
        _gdrive(
            "train/part1/images.zip", "1LWT_ybL-s88Lzg9A9wHpj0h2rJHrqrVf", "a460fe6b1b5b276bf856ce9ac72d6568"
        ),
        _gdrive(
            "train/part1/labelXml.zip",
            "1CnOuS8oX6T9JMqQnfFsbmf7U38G6Vc8u",
            "80f833ff355f91445c92a0c0c1fa7414",
        ),
        _gdrive(
            "train/part2/images.zip", "1cx4MRfpmh68SnGAYetNlDy68w0NgKucJ", "ad237e61dba304fcef23cd14aa6c4280"
        ),
        _gdrive(
            "train/part2/labelXmls.zip",
            "1RFVjadTHA_bsB7BJwSZoQbiyM7KIDEUI",
            "5c5948e68cd0f991a0d73f10956a3b05",
        ),
        _gdrive(
            "validation/images.zip",
            "1lSSHOD02B6_sUmr2b-R1iqhgWRQRw-S9",
            "dce782be65405aa381821b5f4d9eac94",
            required=False,
        ),
        _gdrive(
            "validation/labelXmls.zip",
            "1sTTna1C5n3Senpfo-73PdiNilnja1AV4",
            "700b516a21edc9eae66ca315b72a09a1",
            required=False,
        ),
    ),
    # Estimates for the default protocol (v1.0, test_every 5, 1024 tiles), so a count mismatch is a
    # warning: FAIR1M-1.0 train (part1 + part2) holds about 16,488 images (user reports; the paper
    # says "more than 15,000"), every 5th is test. Images are 1000-10000 px (paper); a 1000x1000 image
    # is one window (windows(): a side <= the tile is one window), so items ~ images; larger scenes
    # add tiles, so these counts are lower bounds.
    expected_test=V1_TRAIN_IMAGES // DEFAULT_TEST_EVERY,
    expected_train=V1_TRAIN_IMAGES - V1_TRAIN_IMAGES // DEFAULT_TEST_EVERY,
    image_format="png",  # tiles written by save_image
    image_hw=(1000, 1000),
    max_image_hw=(1024, 1024),  # tiles are crops (not padded) of at most tile_size
    expected_test_is_exact=False,
    sensor="Visible Spectrum",
    segment_size="Small",
    num_classes_label="37 (Large)",
    class_similarity="High",
    vocabulary="Domain-specific",
    task_description="Fine-grained oriented object detection (remote sensing)",
    citation="Sun et al., FAIR1M: A benchmark dataset for fine-grained object recognition in high-resolution "
    "remote sensing imagery, ISPRS J. P&RS 184 (2022)",
    notes=(
        "Detection track (thesis Appendix A): scored by mopeft score-detections (DOTA VOC AP@0.5), not mIoU.",
        "v1.0 has no labelled val/test: test = every k-th train image by id (extra test_every, default 5).",
        "Labels are rasterised oriented boxes; GT boxes per tile in {train,test}/annotations/*.xml.",
    ),
)


# ------------------------------------------------------------------------------------- raw reading
@dataclass(frozen=True)
class Member:
    archive: Path
    name: str

    def read(self) -> bytes:
        try:
            with zipfile.ZipFile(self.archive) as zf:
                return zf.read(self.name)
        except (zipfile.BadZipFile, OSError, KeyError) as exc:
            raise PrepareError(f"{self.archive}: cannot read {self.name} ({exc})") from None

    def __str__(self) -> str:
        return f"{self.archive}:{self.name}"


def _members(archive: Path, suffixes: tuple[str, ...]) -> dict[str, Member]:
    """stem -> member for the files of ``archive`` with one of ``suffixes`` (folders inside ignored)."""
    if not archive.exists():
        raise PrepareError(f"{archive}: missing. {_OFFICIAL}")
    try:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise PrepareError(f"{archive}: not a readable zip ({exc})") from None
    out: dict[str, Member] = {}
    for name in names:
        base = name.rsplit("/", 1)[-1]
        if name.endswith("/") or base.startswith(".") or "__MACOSX" in name:
            continue
        stem, dot, ext = base.rpartition(".")
        if not dot or f".{ext.lower()}" not in suffixes:
            continue
        if stem in out:
            raise PrepareError(f"{archive}: {base} occurs twice ({out[stem].name}, {name})")
        out[stem] = Member(archive, name)
    return out


def _pairs(raw_dir: Path, sources: tuple[tuple[str, str], ...]) -> dict[str, tuple[Member, Member]]:
    """stem -> (image member, xml member) over several (images.zip, labels.zip) parts."""
    pairs: dict[str, tuple[Member, Member]] = {}
    for img_zip, xml_zip in sources:
        images = _members(raw_dir / img_zip, (".tif", ".tiff", ".png", ".jpg"))
        xmls = _members(raw_dir / xml_zip, (".xml",))
        if missing := sorted(set(images) - set(xmls))[:5]:
            raise PrepareError(f"{raw_dir / xml_zip}: no XML for image(s) {missing}")
        if missing := sorted(set(xmls) - set(images))[:5]:
            raise PrepareError(f"{raw_dir / img_zip}: no image for XML(s) {missing}")
        for stem in images:
            if stem in pairs:
                other = pairs[stem][0].archive
                raise PrepareError(f"{raw_dir / img_zip}: image id {stem} also occurs in {other}")
            pairs[stem] = (images[stem], xmls[stem])
    return pairs


def _id_key(stem: str) -> tuple[int, int, str]:
    """Numeric ids sort numerically ("2" < "10"); anything else after them, by name."""
    return (0, int(stem), stem) if re.fullmatch(r"\d+", stem) else (1, 0, stem)


def split_stems(stems: list[str], test_every: int) -> tuple[list[str], list[str]]:
    """Deterministic v1.0 split: sorted by id, the k-th, 2k-th, ... image (i % k == k-1) is test."""
    if test_every < 2:
        raise PrepareError(f"fair1m: test_every must be >= 2, got {test_every}")
    ordered = sorted(stems, key=_id_key)
    test = [s for i, s in enumerate(ordered) if i % test_every == test_every - 1]
    train = [s for i, s in enumerate(ordered) if i % test_every != test_every - 1]
    return train, test


def _decode(member: Member) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(member.read())) as im:
            im.load()
            arr = np.asarray(im.convert("RGB")).copy()
    except (OSError, SyntaxError, ValueError) as exc:
        raise PrepareError(f"{member}: cannot decode image ({exc})") from None
    return arr


def _annotation(member: Member, scratch: Path) -> Annotation:
    path = scratch / f"{member.name.rsplit('/', 1)[-1]}"
    path.write_bytes(member.read())
    try:
        return read_xml(path)
    except AnnotationError as exc:
        raise PrepareError(str(exc).replace(str(path), str(member))) from None
    finally:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------- geometry
def windows(length: int, size: int, stride: int) -> list[int]:
    """Start offsets along one axis. stride == size: non-overlapping, last window cropped at the
    edge; stride < size: overlapping, last window shifted back so it ends at the edge."""
    if length <= size:
        return [0]
    if stride >= size:
        return list(range(0, length, size))
    starts = list(range(0, length - size, stride))
    return [*starts, length - size]


def rasterise(
    polys: list[np.ndarray], values: list[int], height: int, width: int, fill: int = 0
) -> np.ndarray:
    """Paint convex polygons (pixel centres inside the hull) in the given order; later wins."""
    out = np.full((height, width), fill, dtype=np.uint8)
    for poly, value in zip(polys, values, strict=True):
        hull = convex_hull(poly)
        if len(hull) < 3:
            continue
        x0, y0 = max(int(np.floor(hull[:, 0].min())), 0), max(int(np.floor(hull[:, 1].min())), 0)
        x1, y1 = min(int(np.ceil(hull[:, 0].max())), width), min(int(np.ceil(hull[:, 1].max())), height)
        if x1 <= x0 or y1 <= y0:
            continue
        cx = np.arange(x0, x1) + 0.5
        cy = np.arange(y0, y1) + 0.5
        inside = np.ones((y1 - y0, x1 - x0), dtype=bool)
        for a, b in zip(hull, np.roll(hull, -1, axis=0), strict=True):  # hull is counter-clockwise
            cross = (b[0] - a[0]) * (cy[:, None] - a[1]) - (b[1] - a[1]) * (cx[None, :] - a[0])
            inside &= cross >= 0
        out[y0:y1, x0:x1][inside] = value
    return out


def tile_objects(
    objects: list[Obj], x0: int, y0: int, w: int, h: int, keep_fraction: float
) -> tuple[list[Obj], list[tuple[np.ndarray, int]]]:
    """Objects of one tile in tile coordinates, and (polygon, label value) paint list for its label."""
    kept: list[Obj] = []
    paint: list[tuple[float, np.ndarray, int]] = []
    shift = np.array([x0, y0], dtype=np.float64)
    for o in objects:
        full = area(o.poly)
        if full <= 0:
            continue
        if (
            o.poly[:, 0].max() <= x0
            or o.poly[:, 0].min() >= x0 + w
            or o.poly[:, 1].max() <= y0
            or o.poly[:, 1].min() >= y0 + h
        ):
            continue
        visible = clip_to_window(convex_hull(o.poly), x0, y0, x0 + w, y0 + h)
        frac = area(visible) / full if len(visible) >= 3 else 0.0
        if frac <= 0:
            continue
        local = o.poly - shift
        if frac >= keep_fraction:
            box = local if frac > 1 - 1e-9 else min_area_rect(visible) - shift
            kept.append(Obj(o.name, box, o.difficult))
            paint.append((full, local, CLASS_ID[o.name]))
        else:
            paint.append((full, local, IGNORE))
    paint.sort(key=lambda t: -t[0])  # largest first: smaller objects are painted over larger ones
    return kept, [(p, v) for _, p, v in paint]


# ------------------------------------------------------------------------------------------ prepare
def _write_split(
    split: str,
    stems: list[str],
    pairs: dict[str, tuple[Member, Member]],
    out_dir: Path,
    scratch: Path,
    size: int,
    stride: int,
    keep_fraction: float,
) -> dict[str, int]:
    stats = {"images": 0, "tiles": 0, "objects": 0, "objects_in_tiles": 0}
    for d in ("images", "labels", "annotations"):
        (out_dir / split / d).mkdir(parents=True, exist_ok=True)
    for stem in stems:
        img_m, xml_m = pairs[stem]
        image = _decode(img_m)
        ann = _annotation(xml_m, scratch)
        height, width = image.shape[:2]
        stats["images"] += 1
        stats["objects"] += len(ann.objects)
        i = 0
        for ty in windows(height, size, stride):
            for tx in windows(width, size, stride):
                th, tw = min(size, height - ty), min(size, width - tx)
                kept, paint = tile_objects(ann.objects, tx, ty, tw, th, keep_fraction)
                label = rasterise([p for p, _ in paint], [v for _, v in paint], th, tw)
                name = f"{stem}_{i}"
                save_image(out_dir / split / "images" / f"{name}.png", image[ty : ty + th, tx : tx + tw])
                save_label(out_dir / split / "labels" / f"{name}.png", label, len(SPEC_CLASSES))
                tile_ann = Annotation(f"{name}.png", tw, th, 3, kept)
                (out_dir / split / "annotations" / f"{name}.xml").write_text(to_xml_string(tile_ann))
                stats["tiles"] += 1
                stats["objects_in_tiles"] += len(kept)
                i += 1
    return stats


def prepare(raw_dir: Path, out_dir: Path, options: PrepareOptions) -> dict:
    """Raw zips -> tiled images, rasterised labels and per-tile XML GT (see the module docstring)."""
    extra = options.extra or {}
    size = int(options.tile_size)
    overlap = int(extra.get("train_overlap", round(size * 200 / 1024)))  # 200 px at 1024
    test_every = int(extra.get("test_every", 5))
    keep_fraction = float(extra.get("keep_fraction", 0.5))
    if size < 16 or not 0 <= overlap < size:
        raise PrepareError(
            f"fair1m: need tile_size >= 16 and 0 <= train_overlap < tile_size, got {size}, {overlap}"
        )
    if not 0 < keep_fraction <= 1:
        raise PrepareError(f"fair1m: keep_fraction must be in (0, 1], got {keep_fraction}")
    train_pairs = _pairs(raw_dir, TRAIN_SOURCES)
    if all((raw_dir / f).exists() for f in VALIDATION_SOURCES):
        test_pairs = _pairs(raw_dir, (VALIDATION_SOURCES,))
        pairs = {**{f"val{k}" if k in train_pairs else k: v for k, v in test_pairs.items()}, **train_pairs}
        test = sorted((f"val{k}" if k in train_pairs else k for k in test_pairs), key=_id_key)
        train = sorted(train_pairs, key=_id_key)
        protocol = "v2.0: train = train/part1 + part2, test = validation/"
    else:
        pairs = train_pairs
        train, test = split_stems(list(train_pairs), test_every)
        protocol = (
            f"v1.0: train/part1 + part2 sorted by numeric id; image i (0-based) is test if "
            f"i % {test_every} == {test_every - 1}, else train"
        )
    scratch = out_dir / ".scratch"
    scratch.mkdir()
    try:
        stride = {"train": size - overlap, "test": size}
        stats = {
            split: _write_split(split, stems, pairs, out_dir, scratch, size, stride[split], keep_fraction)
            for split, stems in (("train", train), ("test", test))
        }
    finally:
        for f in scratch.glob("*"):
            f.unlink()
        scratch.rmdir()
    log.info("fair1m: %s", stats)
    return {
        "split_protocol": protocol,
        "train_overlap": overlap,
        "test_overlap": 0,
        "keep_fraction": keep_fraction,
        "test_every": test_every,
        "detection_classes": list(CLASSES),
        "annotations": "{train,test}/annotations/<stem>.xml (FAIR-1M XML, tile coordinates)",
        "tiling": "crops without padding; test non-overlapping, train last window shifted to the edge",
        "fair1m_stats": stats,
    }


# ---------------------------------------------------------------------------------------- miniature
def _rotated_box(cx: float, cy: float, w: float, h: float, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    corners = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    return corners @ np.array([[c, s], [-s, c]]) + np.array([cx, cy])


MINI_SIZE = (130, 150)  # height, width of every miniature image
MINI_PARTS = (("train/part1", "labelXml", (0, 1)), ("train/part2", "labelXmls", (2, 3, 4, 5, 6)))


def miniature_objects(image_id: int, seed: int = 0) -> list[Obj]:
    """The planted boxes of miniature image ``image_id`` (exposed so tests know the truth).

    Image 0 always holds a Small Car centred at (40, 50) (axis-aligned 20 x 10, so pixel (50, 40) is
    class "Small Car") and a rotated Tennis Court; the rest are random non-overlapping-ish boxes.
    """
    rng = np.random.default_rng(seed * 1000 + image_id)
    h, w = MINI_SIZE
    objs: list[Obj] = []
    if image_id == 0:
        objs.append(Obj("Small Car", _rotated_box(40, 50, 20, 10, 0.0)))
        objs.append(Obj("Tennis Court", _rotated_box(110, 80, 40, 24, np.deg2rad(30))))
        return objs
    for _ in range(int(rng.integers(1, 4))):
        cls = CLASSES[int(rng.integers(0, len(CLASSES)))]
        bw, bh = rng.uniform(12, 40), rng.uniform(8, 24)
        cx, cy = rng.uniform(bw / 2 + 2, w - bw / 2 - 2), rng.uniform(bw / 2 + 2, h - bw / 2 - 2)
        objs.append(Obj(cls, _rotated_box(cx, cy, bw, bh, rng.uniform(0, np.pi))))
    return objs


def write_miniature(raw_dir: Path, seed: int = 0) -> None:
    """v1.0 layout: train/part1/{images.zip,labelXml.zip}, train/part2/{images.zip,labelXmls.zip}.

    Seven 150x130 3-channel TIFFs with numeric names and XMLs in the exact FAIR-1M format (5 points,
    the 5th repeating the 1st). Pixel colours follow the rasterised label so a model can learn it.
    """
    rng = np.random.default_rng(seed)
    h, w = MINI_SIZE
    palette = rng.integers(40, 255, size=(len(SPEC_CLASSES), 3))
    palette[0] = (30, 30, 30)
    for part, xml_folder, ids in MINI_PARTS:
        images, xmls = {}, {}
        for image_id in ids:
            objs = miniature_objects(image_id, seed)
            order = sorted(objs, key=lambda o: -area(o.poly))
            label = rasterise([o.poly for o in order], [CLASS_ID[o.name] for o in order], h, w)
            image = palette[label].astype(np.int64) + rng.integers(-15, 16, size=(h, w, 3))
            images[f"images/{image_id}.tif"] = encode(np.clip(image, 0, 255).astype(np.uint8), "TIFF")
            ann = Annotation(f"{image_id}.tif", w, h, 3, objs)
            xmls[f"{xml_folder}/{image_id}.xml"] = to_xml_string(ann).encode()
        write_zip(raw_dir / part / "images.zip", images)
        write_zip(raw_dir / part / f"{xml_folder}.zip", xmls)
    mark_miniature(raw_dir)
