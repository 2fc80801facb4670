"""SAM's modeling classes, imported without running ``segment_anything/__init__.py``.

The package's ``__init__`` imports its predictor and automatic mask generator, which pull in
torchvision and, through ``torchvision.ops``, ``torch._dynamo``: about 1.5 s per process. The
pipeline starts hundreds of short ``mopeft`` processes and needs only ``segment_anything.modeling``
(plain torch), so we register a bare parent package for the import and then remove it again. A
later ``import segment_anything`` runs the real ``__init__``, which finds ``.modeling`` already
imported and reuses the very same classes.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def _import_modeling() -> types.ModuleType:
    if "segment_anything.modeling" in sys.modules or "segment_anything" in sys.modules:
        return importlib.import_module("segment_anything.modeling")
    spec = importlib.util.find_spec("segment_anything")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("segment-anything is not installed (pip install segment-anything==1.0)")
    stub = types.ModuleType("segment_anything")
    stub.__path__ = list(spec.submodule_search_locations)
    sys.modules["segment_anything"] = stub
    try:
        return importlib.import_module("segment_anything.modeling")
    finally:
        del sys.modules["segment_anything"]


_modeling = _import_modeling()
_image_encoder = sys.modules["segment_anything.modeling.image_encoder"]

ImageEncoderViT = _modeling.ImageEncoderViT
MaskDecoder = _modeling.MaskDecoder
PromptEncoder = _modeling.PromptEncoder
TwoWayTransformer = _modeling.TwoWayTransformer
Block = _image_encoder.Block
get_rel_pos = _image_encoder.get_rel_pos
window_partition = _image_encoder.window_partition
window_unpartition = _image_encoder.window_unpartition

__all__ = [
    "Block",
    "ImageEncoderViT",
    "MaskDecoder",
    "PromptEncoder",
    "TwoWayTransformer",
    "get_rel_pos",
    "window_partition",
    "window_unpartition",
]
