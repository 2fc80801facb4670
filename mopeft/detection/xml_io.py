"""Read and write FAIR-1M annotation XML (PASCAL-VOC-like, oriented quadrilaterals).

Format (FAIR-1M's annotation XML): ``annotation/source/filename``, ``size/{width,height,depth}`` and
``objects/object`` elements with ``possibleresult/name`` (exact class string) and ``points/point``
x5, text ``"x,y"``, the 5th repeating the 1st. We keep the first 4 points. FAIR-1M itself has no
``difficult`` flag; an optional ``<difficult>1</difficult>`` per object is read and written so that
tile-cut objects could be marked without changing the format for everything else.
Every parse error names the file, because one bad XML among ~16k must be findable.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mopeft.detection import canonical_class
from mopeft.errors import InputError
from mopeft.io import atomic_path


class AnnotationError(InputError):
    """Malformed FAIR-1M XML; the message names the file."""


@dataclass
class Obj:
    name: str  # exact FAIR-1M class string
    poly: np.ndarray  # (4,2) float, pixel coordinates
    difficult: bool = False


@dataclass
class Annotation:
    filename: str
    width: int
    height: int
    depth: int = 3
    objects: list[Obj] = field(default_factory=list)


def _text(elem: ET.Element, path: str, where: Path) -> str:
    node = elem.find(path)
    if node is None or node.text is None or not node.text.strip():
        raise AnnotationError(f"{where}: missing <{path}>")
    return node.text.strip()


def parse_point(text: str, where: Path) -> tuple[float, float]:
    """``"x,y"`` as two finite floats: ``nan`` / ``inf`` parse as floats but would silently poison
    every IoU with this box, so they are an error naming the file."""
    parts = text.split(",")
    if len(parts) != 2:
        raise AnnotationError(f"{where}: point {text!r} is not 'x,y'")
    try:
        x, y = float(parts[0]), float(parts[1])
    except ValueError:
        raise AnnotationError(f"{where}: point {text!r} is not numeric") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise AnnotationError(f"{where}: point {text!r} is not finite")
    return x, y


def list_xml(folder: str | Path) -> list[Path]:
    """The annotation files of ``folder``: ``*.xml`` in any case (``.XML`` from Windows tools),
    without dot-files (macOS ``._x.xml``); two files for one image id (``a.xml``, ``a.XML``) are an
    error naming both."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".xml" and not p.name.startswith("."))
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen:
            raise AnnotationError(f"{folder}: {seen[f.stem].name} and {f.name} annotate the same image")
        seen[f.stem] = f
    return files


def read_xml(path: str | Path, strict_classes: bool = True) -> Annotation:
    """Parse one FAIR-1M XML; unknown class names are an error unless ``strict_classes`` is False."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise AnnotationError(f"{path}: file not found") from None
    except ET.ParseError as exc:
        raise AnnotationError(f"{path}: malformed XML ({exc})") from None
    if root.tag != "annotation":
        raise AnnotationError(f"{path}: root element is <{root.tag}>, expected <annotation>")
    try:
        width = int(float(_text(root, "size/width", path)))
        height = int(float(_text(root, "size/height", path)))
        depth_node = root.find("size/depth")
        depth = int(float(depth_node.text)) if depth_node is not None and depth_node.text else 3
    except (ValueError, OverflowError):  # OverflowError: int(float("inf"))
        raise AnnotationError(f"{path}: <size> is not numeric") from None
    filename_node = root.find("source/filename")
    filename = (filename_node.text or "").strip() if filename_node is not None else ""
    objects: list[Obj] = []
    for i, obj in enumerate(root.findall("objects/object")):
        raw_name = _text(obj, "possibleresult/name", path)
        name = canonical_class(raw_name)
        if name is None:
            if strict_classes:
                raise AnnotationError(f"{path}: object {i}: unknown class {raw_name!r}")
            name = raw_name
        pts = [parse_point(p.text or "", path) for p in obj.findall("points/point")]
        if len(pts) < 4:
            raise AnnotationError(f"{path}: object {i} ({raw_name}) has {len(pts)} points, expected 5 (or 4)")
        diff = obj.find("difficult")
        difficult = diff is not None and (diff.text or "0").strip() not in ("0", "")
        objects.append(Obj(name, np.asarray(pts[:4], dtype=np.float64), difficult))
    return Annotation(filename or path.with_suffix(".tif").name, width, height, depth, objects)


def _fmt(v: float) -> str:
    return f"{float(v):.6f}"


def to_xml_string(ann: Annotation) -> str:
    """Serialise in the FAIR-1M layout (points closed with the first point repeated)."""
    root = ET.Element("annotation")
    src = ET.SubElement(root, "source")
    ET.SubElement(src, "filename").text = ann.filename
    ET.SubElement(src, "origin").text = "GF2/GF3"
    research = ET.SubElement(root, "research")
    ET.SubElement(research, "version").text = "1.0"
    ET.SubElement(research, "pluginname").text = "FAIR1M"
    ET.SubElement(research, "pluginclass").text = "object detection"
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(ann.width)
    ET.SubElement(size, "height").text = str(ann.height)
    ET.SubElement(size, "depth").text = str(ann.depth)
    objs = ET.SubElement(root, "objects")
    for o in ann.objects:
        obj = ET.SubElement(objs, "object")
        ET.SubElement(obj, "coordinate").text = "pixel"
        ET.SubElement(obj, "type").text = "rectangle"
        ET.SubElement(obj, "description").text = "None"
        ET.SubElement(ET.SubElement(obj, "possibleresult"), "name").text = o.name
        points = ET.SubElement(obj, "points")
        poly = np.asarray(o.poly, dtype=np.float64).reshape(4, 2)
        for x, y in [*poly, poly[0]]:
            ET.SubElement(points, "point").text = f"{_fmt(x)},{_fmt(y)}"
        if o.difficult:
            ET.SubElement(obj, "difficult").text = "1"
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_xml(path: str | Path, ann: Annotation) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(to_xml_string(ann), encoding="utf-8")
