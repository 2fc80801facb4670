"""Peak GPU memory, FLOPs, bytes moved and roofline time of one training / evaluation step, from a
shape-only run of the real code at the real size.

How: the model is built and the step run under ``FakeTensorMode`` (shapes, dtypes, autograd's
saved tensors; no arithmetic, no memory), with CUDA's bf16 autocast and attention kernel emulated
(:mod:`mopeft.measure.cuda_emulation`) and every kernel counted (:mod:`mopeft.measure.trace`).
The step is exactly the training loop's: device-side input preparation (normalise, pad, flip),
encoder, decoder, the loss at the configured resolution, backward, and the fused Adam step over
optimizer state that already exists (the steady state of every step after the first).

Why in pieces: a step is an encoder part that depends on the method (not on K) and a decoder+loss
part (the "head") that depends on K (the class count) and on what the method trains in the
decoder. The study has ~14 distinct K and ~20 method variants; tracing each pair whole would take
~20 min of CPU, the pieces ~3 min. The pieces compose exactly for FLOPs, bytes and time; for
memory the peak is the largest of: the encoder's forward peak, the live bytes when the embedding
exists plus the head's own peak above its start, the encoder's backward peak (the head's saved
tensors are gone by then) and the optimizer step's. ``tests/test_resource_model.py`` checks the
composition against whole-step traces.

Frozen encoders (baseline, decoder_ft) with the embedding cache run only the head per step; the
encoder runs once per (image, flip) under ``no_grad``, one image at a time (:class:`EncodePiece`).
"""

from __future__ import annotations

import functools
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn import Embedding
from torch.overrides import TorchFunctionMode

from mopeft.data.loading.preprocess import flip_content, postprocess, to_model_input
from mopeft.measure.cuda_emulation import cuda_autocast
from mopeft.measure.gpus import GPU
from mopeft.measure.trace import CUDA_BLOCK, StepCounter
from mopeft.methods.build import build_model
from mopeft.peft.attention import attention_backend
from mopeft.train.encoder_cache import encoder_is_frozen
from mopeft.train.losses import presence_loss, presence_targets, segmentation_loss
from mopeft.train.optim import make_optimizer

log = logging.getLogger(__name__)

# Per-kernel launch cost of eager PyTorch on a GPU (CPU-side dispatch + launch), an assumption
# (docs/performance.md): what a step of thousands of small kernels pays on top of its roofline.
LAUNCH_S = 5e-6


@dataclass(frozen=True)
class StepSpec:
    """What decides a step's cost. ``options``: the method's options as sorted (key, value) pairs."""

    method: str
    num_classes: int
    options: tuple = ()
    arch: str = "vit_b"
    image_size: int = 1024
    batch_size: int = 4
    precision: str = "bf16"  # "bf16": CUDA autocast emulated; "fp32": as on the CPU
    attention: str = "sdpa"
    loss_resolution: str = "full"
    presence_head: bool = False

    def with_k(self, k: int) -> StepSpec:
        return StepSpec(**{**self.__dict__, "num_classes": k})


@dataclass
class Piece:
    """One traced part of a step: per-kernel FLOPs and bytes, and its live-memory curve."""

    flops: list[int] = field(default_factory=list)
    bytes: list[int] = field(default_factory=list)
    start_live: int = 0
    peak: int = 0
    end_live: int = 0

    @property
    def total_flops(self) -> int:
        return sum(self.flops)

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes)

    @property
    def kernels(self) -> int:
        return sum(1 for f, b in zip(self.flops, self.bytes, strict=True) if f or b)

    @property
    def rise(self) -> int:
        """Peak above the live bytes at the piece's start."""
        return self.peak - self.start_live

    def roofline_s(self, gpu: GPU, precision: str = "bf16", launch_s: float = LAUNCH_S) -> float:
        """Σ over kernels of max(FLOPs / peak rate, bytes / bandwidth), plus a launch cost each."""
        rate = gpu.peak(precision if precision != "fp32" else "tf32") * 1e12
        bw = gpu.hbm_tbps * 1e12
        return sum(max(f / rate, b / bw) for f, b in zip(self.flops, self.bytes, strict=True)) + (
            launch_s * self.kernels
        )


def _pieces(counter: StepCounter) -> dict[str, Piece]:
    out: dict[str, Piece] = {}
    for name, phase in counter.phases.items():
        out[name] = Piece(start_live=phase.start_live, peak=phase.peak, end_live=phase.end_live)
    for op in counter.ops:
        piece = out.setdefault(op.phase, Piece())
        piece.flops.append(op.flops)
        piece.bytes.append(op.bytes)
    return out


# ----------------------------------------------------------------------------- fake models
@functools.lru_cache(maxsize=64)  # fake models hold no memory; a plan needs ~20
def _fake_model(spec: StepSpec) -> tuple[FakeTensorMode, torch.nn.Module, torch.optim.Optimizer]:
    """The method's model and its optimizer with steady-state (existing) Adam state, as fakes."""
    mode = FakeTensorMode()
    with mode:
        model = build_model(spec.arch, spec.num_classes, spec.method, dict(spec.options), spec.image_size)
        if spec.presence_head:
            from mopeft.model.presence import ClassPresenceMLP

            model.presence_head = ClassPresenceMLP(model.mask_decoder.class_tokens.embedding_dim)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = make_optimizer(params, 1e-4, 1e-4, "cuda")
        for p in params:  # what Adam's first step creates (fused: the step count lives on the device)
            opt.state[p] = {
                "step": torch.zeros((), dtype=torch.float32),
                "exp_avg": torch.zeros_like(p),
                "exp_avg_sq": torch.zeros_like(p),
            }
    return mode, model, opt


class ScalarDraws(TorchFunctionMode):
    """One-element CPU draws (``torch.rand(1)``, ``torch.randn(1)``) made real, from a fixed seed.

    Why: such a draw only feeds Python control flow (peft's LoHa/LoKr module dropout,
    ``torch.rand(1) > module_dropout``), which needs a value a fake tensor does not have. Drawn here it
    becomes a constant the fake mode can compare and read, so the traced step takes a branch a real
    step takes (with peft's default module_dropout 0: every adapter runs, as in every real step), and
    the plan stays deterministic. Larger draws (dropout masks) stay fake: their values decide nothing.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.rng = random.Random(seed)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in (torch.rand, torch.randn) and str(kwargs.get("device") or "cpu") == "cpu":
            size = kwargs.get("size", args[0] if len(args) == 1 and not isinstance(args[0], int) else args)
            if isinstance(size, (tuple, list, torch.Size)) and size and all(n == 1 for n in size):
                draw = self.rng.random() if func is torch.rand else self.rng.gauss(0.0, 1.0)
                dtype = kwargs.get("dtype") or torch.get_default_dtype()
                return torch.tensor(draw, dtype=dtype).reshape(tuple(size))
        return func(*args, **kwargs)


def _set_classes(model: torch.nn.Module, k: int) -> None:
    """Give the fake model K class tokens (the only K-sized parameter), trainable as before."""
    dec = model.mask_decoder
    if dec.class_tokens.num_embeddings != k:
        trainable = dec.class_tokens.weight.requires_grad
        dec.class_tokens = Embedding(k, dec.class_tokens.embedding_dim)
        dec.class_tokens.weight.requires_grad_(trainable)
        dec.num_classes = model.num_classes = k


def _resident(model: torch.nn.Module, opt: torch.optim.Optimizer | None) -> list[torch.Tensor]:
    tensors = [*model.parameters(), *model.buffers()]
    if opt is not None:
        tensors += [t for st in opt.state.values() for t in st.values() if torch.is_tensor(t)]
    return tensors


def _autocast(spec: StepSpec):
    if spec.precision == "bf16":
        return cuda_autocast(torch.bfloat16)
    if spec.precision == "fp32":
        return cuda_autocast(torch.float32, attention_kernel="efficient")
    raise ValueError(f"precision must be bf16 or fp32, got {spec.precision!r}")


def _inputs(spec: StepSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A loader batch as it reaches the device: uint8 images and labels, sizes, every image flipped."""
    b, s = spec.batch_size, spec.image_size
    images = torch.empty(b, 3, s, s, dtype=torch.uint8)
    labels = torch.empty(b, s, s, dtype=torch.uint8)
    sizes = torch.full((b, 2), s, dtype=torch.long)
    return images, labels, sizes


# ----------------------------------------------------------------------------- train pieces
@dataclass
class TrainCost:
    """One steady-state training step: pieces, resident bytes and the composed peak."""

    spec: StepSpec
    pieces: dict[str, Piece]
    resident: dict[str, int]
    frozen_encoder: bool
    # What trains outside the encoder (decoder, class tokens, presence head): with frozen_encoder,
    # all a head trace depends on besides K, so methods that agree here share their head traces.
    head_trainable: tuple[str, ...] = ()

    def at_k(self, head: Piece, k: int) -> TrainCost:
        """The same step at another class count, given :func:`trace_head` at that K."""
        pieces = dict(self.pieces)
        pieces["head"] = head
        return TrainCost(
            self.spec.with_k(k), pieces, self.resident, self.frozen_encoder, self.head_trainable
        )

    def piece_names(self, cached: bool) -> list[str]:
        if self.frozen_encoder and cached:
            return ["input", "head", "optimizer"]
        if self.frozen_encoder:
            return ["input", "encode_batch", "head", "optimizer"]
        return ["input", "encoder_fwd", "head", "encoder_bwd", "optimizer"]

    def peak(self, cached: bool = True) -> int:
        p = self.pieces
        head_peak = p["head_start"].start_live + p["head"].rise
        peaks = [p["input"].peak, head_peak, p["optimizer"].peak]
        if not self.frozen_encoder:
            peaks += [p["encoder_fwd"].peak, p["encoder_bwd"].peak]
        elif not cached:
            peaks.append(p["head_start"].start_live + p["encode_one"].rise)
        return max(peaks)

    def flops(self, cached: bool = True) -> int:
        return sum(self._piece(n).total_flops for n in self.piece_names(cached))

    def bytes(self, cached: bool = True) -> int:
        return sum(self._piece(n).total_bytes for n in self.piece_names(cached))

    def roofline_s(self, gpu: GPU, cached: bool = True) -> float:
        return sum(self._piece(n).roofline_s(gpu, self.spec.precision) for n in self.piece_names(cached))

    def _piece(self, name: str) -> Piece:
        if name == "encode_batch":  # without the cache: one image at a time, B times
            one = self.pieces["encode_one"]
            return Piece(one.flops * self.spec.batch_size, one.bytes * self.spec.batch_size)
        return self.pieces[name]


def _head(model: torch.nn.Module, spec: StepSpec, emb: torch.Tensor, y: torch.Tensor) -> tuple:
    """Decoder, loss and backward exactly as the training loop runs them (its locals stay alive
    through backward: logits, tokens and the loss are referenced until the next step)."""
    with _autocast(spec):
        logits, tokens = model.decode_with_tokens(emb)
    loss = segmentation_loss(logits, y, resolution=spec.loss_resolution)
    if model.presence_head is not None:
        presence = model.presence_head(tokens.float())
        loss = loss + presence_loss(presence, presence_targets(y, model.num_classes))
    loss.backward()
    return logits, tokens, loss


def trace_train(spec: StepSpec, round_to: int = CUDA_BLOCK) -> TrainCost:
    """Trace one whole training step of ``spec`` (see the module doc for what it contains)."""
    mode, model, opt = _fake_model(_base(spec))
    with mode, ScalarDraws(), attention_backend(spec.attention):
        _set_classes(model, spec.num_classes)
        frozen = encoder_is_frozen(model)
        counter = StepCounter(round_to=round_to)
        images, labels, sizes = _inputs(spec)
        counter.track([*_resident(model, opt), images, labels, sizes])
        resident = _resident_breakdown(model, opt, round_to)
        flip = torch.ones(spec.batch_size, dtype=torch.bool)
        with counter:
            opt.zero_grad(set_to_none=True)
            counter.mark("input")
            x = to_model_input(images, sizes, flip)
            y = flip_content(labels, sizes, flip)
            if frozen:
                counter.mark("encode_one")
                with torch.no_grad(), _autocast(spec):
                    one = model.encode(x[:1])
                counter.mark("head_start")
                emb = torch.empty((spec.batch_size, *one.shape[1:]), dtype=one.dtype)  # the cache's stack
                del one
            else:
                counter.mark("encoder_fwd")
                with _autocast(spec):
                    emb = model.encode(x)
                emb.register_hook(lambda g: counter.mark("encoder_bwd"))
                counter.mark("head_start")
            counter.mark("head")
            outputs = _head(model, spec, emb, y)
            counter.mark("optimizer")
            opt.step()
            counter.mark("end")
            del outputs, emb, x, y
    pieces = _pieces(counter)
    if not frozen:
        pieces.setdefault("encoder_bwd", Piece())
    trainable = (n for n, p in model.named_parameters() if p.requires_grad)
    head_trainable = tuple(sorted(n for n in trainable if not n.startswith("image_encoder.")))
    return TrainCost(spec, pieces, resident, frozen, head_trainable)


def trace_head(spec: StepSpec, frozen: bool, live_before: int = 0, round_to: int = CUDA_BLOCK) -> Piece:
    """The decoder + loss + their backward alone at ``spec.num_classes``, from an embedding that
    needs a gradient unless the encoder is ``frozen``: what :meth:`TrainCost.at_k` swaps in."""
    mode, model, opt = _fake_model(_base(spec))
    with mode, ScalarDraws(), attention_backend(spec.attention):
        _set_classes(model, spec.num_classes)
        counter = StepCounter(round_to=round_to)
        _, labels, sizes = _inputs(spec)
        grid = spec.image_size // 16
        dim = model.mask_decoder.class_tokens.embedding_dim
        emb = torch.empty(spec.batch_size, dim, grid, grid, requires_grad=not frozen)
        y = flip_content(labels, sizes, torch.ones(spec.batch_size, dtype=torch.bool))
        counter.track([*_resident(model, opt), emb, y])
        with counter:
            opt.zero_grad(set_to_none=True)
            counter.mark("head")
            outputs = _head(model, spec, emb, y)
            counter.mark("end")
            del outputs
    return _pieces(counter)["head"]


def _base(spec: StepSpec) -> StepSpec:
    """The model cache's key: K does not change what is built (the class tokens are swapped)."""
    return spec.with_k(2)


def _resident_breakdown(model: torch.nn.Module, opt: torch.optim.Optimizer, round_to: int) -> dict[str, int]:
    def size(ts: list[torch.Tensor]) -> int:
        seen = {id(t.untyped_storage()): t.untyped_storage().nbytes() for t in ts}
        return sum(-(-n // round_to) * round_to for n in seen.values())

    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    state = [t for st in opt.state.values() for t in st.values() if torch.is_tensor(t)]
    return {
        "parameters": size(params),
        "buffers": size(list(model.buffers())),
        "optimizer_state": size(state),
        "gradients": size(trainable),  # allocated in backward, freed at the next zero_grad
    }


# ----------------------------------------------------------------------------- evaluation
@dataclass
class EvalCost:
    """One evaluation batch (no grad): the encoder (method-dependent), the head (K-dependent) and
    the mapping of one image's logits back to its original size (K × H × W fp32) and scoring."""

    spec: StepSpec
    pieces: dict[str, Piece]

    def at_k(self, head: EvalCost) -> EvalCost:
        """This encoder with the head and post-processing of ``head`` (another K or image size)."""
        return EvalCost(head.spec, {**head.pieces, "encoder": self.pieces["encoder"]})

    @property
    def peak(self) -> int:
        p = self.pieces
        return max(p["encoder"].peak, p["head_start"].start_live + p["head"].rise, p["post"].peak)

    def roofline_s(self, gpu: GPU, images: int) -> float:
        p = self.pieces
        batches = -(-images // self.spec.batch_size)
        per_batch = p["input"].roofline_s(gpu) + p["encoder"].roofline_s(gpu) + p["head"].roofline_s(gpu)
        return per_batch * batches + p["post"].roofline_s(gpu) * images

    def flops(self, images: int) -> int:
        p = self.pieces
        batches = -(-images // self.spec.batch_size)
        per_batch = sum(p[n].total_flops for n in ("input", "encoder", "head"))
        return per_batch * batches + p["post"].total_flops * images


def trace_eval(
    spec: StepSpec, original_hw: tuple[int, int], round_to: int = CUDA_BLOCK, encoder: bool = True
) -> EvalCost:
    """Trace `mopeft evaluate`'s batch on the trained model, then one image mapped back to its
    original size ``original_hw`` and added to the confusion counts (as ``DeviceConfusion``).
    ``encoder=False`` traces only what depends on K and the image size (the head and the mapping
    back), from an embedding of the encoder's shape: what :meth:`EvalCost.at_k` swaps in."""
    mode, model, _ = _fake_model(_base(spec))
    with mode, ScalarDraws(), attention_backend(spec.attention):
        _set_classes(model, spec.num_classes)
        model.eval()
        try:
            counter = StepCounter(round_to=round_to)
            images, _, sizes = _inputs(spec)
            counter.track([*_resident(model, None), images, sizes])
            with counter, torch.no_grad():
                counter.mark("input")
                x = to_model_input(images, sizes)
                if encoder:
                    counter.mark("encoder")
                    with _autocast(spec):
                        emb = model.encode(x)
                else:  # the encoder's output: fp32 (its neck's LayerNorm2d runs in fp32 under autocast)
                    grid, dim = spec.image_size // 16, model.mask_decoder.class_tokens.embedding_dim
                    emb = torch.empty(spec.batch_size, dim, grid, grid)
                counter.mark("head_start")
                counter.mark("head")
                with _autocast(spec):
                    logits = model.decode_with_tokens(emb)[0]
                counter.mark("post")
                h, w = original_hw
                pred = postprocess(logits[:1].float(), (spec.image_size, spec.image_size), (h, w)).argmax(1)
                gt = torch.empty(h, w, dtype=torch.uint8).long()
                k = spec.num_classes
                idx = torch.where(gt == 255, (k + 1) ** 2, pred[0] * (k + 1) + gt.clamp(max=k))
                torch.zeros((k + 1) ** 2 + 1, dtype=torch.long).scatter_add_(
                    0, idx.flatten(), torch.ones_like(idx.flatten())
                )
                counter.mark("end")
                del logits, pred, gt, idx, emb, x
        finally:
            model.train()
    return EvalCost(spec, _pieces(counter))
