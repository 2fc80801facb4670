"""Architectures built from ``segment_anything``'s own modeling classes.

Why a registry of specs instead of ``sam_model_registry``: the study needs a configurable image size
(SAMed-style 512 runs, tiny CPU tests) and a ``tiny`` variant that exercises exactly the same code
paths (windowed blocks with padding, global blocks, decomposed rel-pos) at a size tests can afford.

This registry is the one place an architecture is declared: its dimensions, and for the official
SAM backbones the checkpoint's URL and sha256. ``--arch`` choices, ``mopeft weights`` and the
config schema's enums derive from it (tests/test_backbones.py checks the schema and the dimensions
against ``segment_anything.build_sam``). The study itself is ViT-B; ViT-L and ViT-H are here so the
benchmark and its resource plan can run on the larger backbones (docs/performance.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from mopeft.errors import InputError
from mopeft.model.sam_modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer


@dataclass(frozen=True)
class OfficialCheckpoint:
    """Meta's published SAM checkpoint of an architecture: where to fetch it and its sha256.

    The hex in the file name (``sam_vit_b_01ec64.pth``) is not a sha256 prefix; the digest is
    checked before ``torch.load`` (mopeft.model.weights).
    """

    url: str
    sha256: str
    label: str  # what a table's provenance calls these base weights

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_FAIR = "https://dl.fbaipublicfiles.com/segment_anything/"


@dataclass(frozen=True)
class ArchSpec:
    """Hyper-parameters of one SAM variant (encoder + prompt encoder + mask decoder)."""

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int
    default_image_size: int
    patch_size: int = 16
    prompt_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    mask_in_chans: int = 16
    iou_head_hidden_dim: int = 256
    pretrained_image_size: int = 1024
    checkpoint: OfficialCheckpoint | None = None  # None: no official download (tiny ships its own)

    def tokens(self, image_size: int) -> int:
        """Token grid side for an image size (the image must be a multiple of the patch size)."""
        if image_size <= 0 or image_size % self.patch_size:
            raise InputError(f"image size {image_size} is not a positive multiple of {self.patch_size}")
        return image_size // self.patch_size


ARCHS: dict[str, ArchSpec] = {
    "vit_b": ArchSpec(
        name="vit_b",
        embed_dim=768,
        depth=12,
        num_heads=12,
        global_attn_indexes=(2, 5, 8, 11),
        window_size=14,
        default_image_size=1024,
        # Digest published by many independent projects, e.g. the two cited for ViT-L / ViT-H below.
        checkpoint=OfficialCheckpoint(
            _FAIR + "sam_vit_b_01ec64.pth",
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            "SAM ViT-B (official sam_vit_b_01ec64.pth)",
        ),
    ),
    # ViT-L and ViT-H: segment_anything.build_sam's build_sam_vit_l / build_sam_vit_h (window 14, the
    # same prompt encoder and decoder). Their sha256 are the digests that two independent projects
    # verify each download against, and that agree with each other (and on ViT-B's above):
    # computational-cell-analytics/micro-sam, micro_sam/util.py (its pooch registry), and
    # mazurowski-lab/SlicerSegmentWithSAM, SegmentWithSAM/SegmentWithSAM.py (Slicer's checksum).
    "vit_l": ArchSpec(
        name="vit_l",
        embed_dim=1024,
        depth=24,
        num_heads=16,
        global_attn_indexes=(5, 11, 17, 23),
        window_size=14,
        default_image_size=1024,
        checkpoint=OfficialCheckpoint(
            _FAIR + "sam_vit_l_0b3195.pth",
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            "SAM ViT-L (official sam_vit_l_0b3195.pth)",
        ),
    ),
    "vit_h": ArchSpec(
        name="vit_h",
        embed_dim=1280,
        depth=32,
        num_heads=16,
        global_attn_indexes=(7, 15, 23, 31),
        window_size=14,
        default_image_size=1024,
        checkpoint=OfficialCheckpoint(
            _FAIR + "sam_vit_h_4b8939.pth",
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            "SAM ViT-H (official sam_vit_h_4b8939.pth)",
        ),
    ),
    # Same classes, tiny widths: 96 px -> 6x6 tokens, window 4 pads to 8x8 (4 windows), blocks 1 and 3 global.
    "tiny": ArchSpec(
        name="tiny",
        embed_dim=64,
        depth=4,
        num_heads=4,
        global_attn_indexes=(1, 3),
        window_size=4,
        default_image_size=96,
        prompt_dim=32,
        decoder_mlp_dim=64,
        decoder_heads=4,
        mask_in_chans=8,
        iou_head_hidden_dim=32,
        pretrained_image_size=96,
    ),
}


def get_arch(name: str) -> ArchSpec:
    """The spec of ``name`` (a ValueError for an unknown name: callers validate user input first)."""
    try:
        return ARCHS[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(ARCHS)}") from None


def build_sam_parts(
    spec: ArchSpec, image_size: int | None = None
) -> tuple[ImageEncoderViT, PromptEncoder, MaskDecoder]:
    """The three stock SAM modules (decoder with SAM's 4 mask tokens so official weights load strictly)."""
    size = image_size or spec.default_image_size
    grid = spec.tokens(size)
    encoder = ImageEncoderViT(
        img_size=size,
        patch_size=spec.patch_size,
        embed_dim=spec.embed_dim,
        depth=spec.depth,
        num_heads=spec.num_heads,
        mlp_ratio=4,
        out_chans=spec.prompt_dim,
        qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        global_attn_indexes=spec.global_attn_indexes,
        window_size=spec.window_size,
    )
    prompt = PromptEncoder(
        embed_dim=spec.prompt_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(size, size),
        mask_in_chans=spec.mask_in_chans,
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=spec.decoder_depth,
            embedding_dim=spec.prompt_dim,
            mlp_dim=spec.decoder_mlp_dim,
            num_heads=spec.decoder_heads,
        ),
        transformer_dim=spec.prompt_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=spec.iou_head_hidden_dim,
    )
    return encoder, prompt, decoder
