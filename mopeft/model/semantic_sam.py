"""SAM turned into a K-class semantic segmenter with prompt-free decoding.

Design (why): SAM's decoder predicts masks from output tokens; giving every class its own token
and sharing ONE hypernetwork MLP (initialised from SAM's hypernetwork 0) keeps the per-class cost at
``D`` parameters (the token; 256 for ViT-B), so K up to 255 stays cheap, whereas SAMed-style
per-class hypernetworks would cost ~140k parameters per class. The IoU prediction head is EXCLUDED
from the model (it would be dead weight); SAM's IoU *token* is kept as an extra context token in the
two-way transformer, as in pre-training.
"""

from __future__ import annotations

import torch
from torch import nn

from mopeft.errors import InputError
from mopeft.model.sam_modeling import ImageEncoderViT, MaskDecoder, PromptEncoder


class SemanticMaskDecoder(nn.Module):
    """SAM's two-way transformer + upscaling, K class tokens, one shared hypernetwork.

    Parameters per extra class: exactly ``transformer_dim`` (one class-token row).
    """

    def __init__(self, decoder: MaskDecoder, num_classes: int, init_noise: float = 0.02) -> None:
        super().__init__()
        if not 1 <= num_classes <= 255:
            raise InputError(f"num_classes must be in 1..255, got {num_classes}")
        dim = decoder.transformer_dim
        self.num_classes = num_classes
        self.transformer = decoder.transformer
        self.output_upscaling = decoder.output_upscaling
        self.iou_token = decoder.iou_token
        self.hypernetwork = decoder.output_hypernetworks_mlps[0]
        self.class_tokens = nn.Embedding(num_classes, dim)
        with torch.no_grad():
            # Start every class from SAM's first mask token; small noise breaks the symmetry between classes.
            base = decoder.mask_tokens.weight[0]
            self.class_tokens.weight.copy_(base.expand(num_classes, dim))
            self.class_tokens.weight.add_(torch.randn_like(self.class_tokens.weight) * init_noise)

    def forward(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, dense: torch.Tensor
    ) -> torch.Tensor:
        return self.forward_with_tokens(image_embeddings, image_pe, dense)[0]

    def forward_with_tokens(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B,K,h,w) and the class tokens' transformer outputs (B,K,D) (for the class MLP)."""
        b, c, h, w = image_embeddings.shape
        tokens = torch.cat([self.iou_token.weight, self.class_tokens.weight], dim=0)
        tokens = tokens.unsqueeze(0).expand(b, -1, -1)
        src = image_embeddings + dense
        hs, src = self.transformer(src, image_pe.expand(b, -1, -1, -1), tokens)
        class_out = hs[:, 1 : 1 + self.num_classes]
        up = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper = self.hypernetwork(class_out)  # shared MLP over the K tokens: (B, K, c/8)
        bu, cu, hu, wu = up.shape
        return (hyper @ up.reshape(bu, cu, hu * wu)).reshape(bu, -1, hu, wu), class_out


class SemanticSAM(nn.Module):
    """Image encoder + frozen prompt encoder fed with no prompts + semantic mask decoder.

    Carries the metadata (arch, image size, classes, method and its options, pixel statistics) that
    training and evaluation need to rebuild the same model from a trainable-tensors checkpoint.
    """

    def __init__(
        self,
        image_encoder: ImageEncoderViT,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        num_classes: int,
        arch: str,
        image_size: int,
        pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53),
        pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375),
    ) -> None:
        super().__init__()
        self.image_encoder: nn.Module = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = SemanticMaskDecoder(mask_decoder, num_classes)
        self.arch = arch
        self.image_size = image_size
        self.num_classes = num_classes
        self.method = "baseline"
        self.method_options: dict = {}
        # Optional class MLP on the class tokens (FAIR-1M detection track, Appendix A); set by
        # mopeft.methods.checkpoint when the model config asks for it, trained with every method.
        self.presence_head: nn.Module | None = None
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)
        for p in self.prompt_encoder.parameters():
            p.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B,3,S,S), normalised and padded -> class logits (B,K,S/4,S/4)."""
        return self.forward_with_tokens(images)[0]

    def forward_with_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (B,K,S/4,S/4) and class-token outputs (B,K,D)."""
        return self.decode_with_tokens(self.encode(images))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings (B, C, S/16, S/16): the part a frozen-encoder method can cache."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (self.image_size,) * 2:
            raise ValueError(
                f"expected images of shape (B,3,{self.image_size},{self.image_size}), "
                f"got {tuple(images.shape)}"
            )
        return self.image_encoder(images)

    def decode_with_tokens(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (B,K,S/4,S/4) and class-token outputs (B,K,D) from image embeddings."""
        b = emb.shape[0]
        sparse, dense = self.prompt_encoder(points=None, boxes=None, masks=None)
        assert sparse.shape[1] == 0  # no prompts: the class tokens are the only queries
        return self.mask_decoder.forward_with_tokens(
            emb, self.prompt_encoder.get_dense_pe(), dense.expand(b, -1, -1, -1)
        )
