"""The fast import of SAM's modeling classes must not load torchvision and must stay compatible."""

import subprocess
import sys

CHECK = """
import sys
import mopeft.model.sam_modeling as fast
assert "torchvision" not in sys.modules, "torchvision was imported"
import segment_anything
from segment_anything.modeling import ImageEncoderViT, MaskDecoder
from segment_anything.modeling.image_encoder import Block
assert fast.ImageEncoderViT is ImageEncoderViT and fast.MaskDecoder is MaskDecoder and fast.Block is Block
assert segment_anything.sam_model_registry["vit_b"] is not None
print("ok")
"""


def test_modeling_import_skips_torchvision_and_shares_classes_with_the_real_package():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
