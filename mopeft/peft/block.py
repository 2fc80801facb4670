"""PEFTBlock: a frozen ``segment_anything`` Block re-run with optional LoRA, prefix, adapter and gates.

Why a wrapper that re-implements Block/Attention.forward (docs/methods.md) rather than patching qkv:
 * gates must see the UN-partitioned tokens norm1(x) (one value per image, independent of windows);
 * LoRA deltas are added out of place to q and v of the fused qkv;
 * prefix keys need the decomposed rel-pos bias zero-padded on their columns, which SAM's
   ``add_decomposed_rel_pos`` cannot do (it assumes N_k = H*W); SDPA takes the padded bias as attn_mask;
 * every method runs the same attention kernel (mopeft.peft.attention), so Table 4.5 compares methods,
   not attention implementations.
One class serves every method; each part is optional (baseline, decoder_ft and full_ft use none).

Prefix gate (MoPEFT):
 * ``"scale"`` (default: the study's §3.3.2 and UniPELT's code): P_K and P_V multiplied by G_P. At
   G_P = 0 the L zero keys still take softmax mass (docs/methods.md), so the prefix is never fully off.
 * ``"logit"`` (``mopeft_logit``): add log G_P to the prefix columns' attention logits. G_P -> 0
   removes the prefix exactly, G_P = 1 is the ungated prefix.
"""

from __future__ import annotations

import torch
from torch import nn

from mopeft.errors import InputError
from mopeft.model.sam_modeling import Block, get_rel_pos, window_partition, window_unpartition
from mopeft.peft import attention as attention_ops
from mopeft.peft.adapter import Adapter
from mopeft.peft.gates import TokenMeanGate, gate_values
from mopeft.peft.lora import LoRAQV
from mopeft.peft.prefix import DeepPrompt

PREFIX_GATES = ("logit", "scale")
GATE_NAMES = ("lora_q", "lora_v", "prefix", "adapter")


def rel_pos_bias(q: torch.Tensor, block: Block, hw: tuple[int, int]) -> torch.Tensor:
    """Decomposed rel-pos bias (B', nH, N, N) for q (B', nH, N, d), as SAM computes it (unscaled q).

    Materialised: a reference for tests. The blocks themselves never build it (see attention.py).
    """
    rel_h, rel_w = block_rel_terms(q, block, hw)
    bq, nh, n, _ = q.shape
    return (rel_h[..., :, None] + rel_w[..., None, :]).reshape(bq, nh, n, n)


def block_rel_terms(q: torch.Tensor, block: Block, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The block's rel-pos tables resized to the token grid ``hw``, applied to q."""
    h, w = hw
    rh = get_rel_pos(h, h, block.attn.rel_pos_h)
    rw = get_rel_pos(w, w, block.attn.rel_pos_w)
    return attention_ops.rel_pos_terms(q, rh, rw, hw)


class PEFTBlock(nn.Module):
    def __init__(
        self,
        block: Block,
        lora: LoRAQV | None = None,
        prefix: DeepPrompt | None = None,
        adapter: Adapter | None = None,
        gated: bool = False,
        prefix_gate: str = "scale",
    ) -> None:
        super().__init__()
        if prefix_gate not in PREFIX_GATES:
            raise InputError(f"prefix_gate must be one of {PREFIX_GATES}, got {prefix_gate!r}")
        self.block = block
        self.lora = lora
        self.prefix = prefix
        self.adapter = adapter
        self.prefix_gate = prefix_gate
        dim = block.norm1.normalized_shape[0]
        names = []
        if gated:
            names += ["lora_q", "lora_v"] if lora is not None else []
            names += ["prefix"] if prefix is not None else []
            names += ["adapter"] if adapter is not None else []
        self.gates = nn.ModuleDict({name: TokenMeanGate(dim) for name in names})
        self.last_gates: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blk, attn = self.block, self.block.attn
        b, height, width, c = x.shape
        h = blk.norm1(x)
        names = [name for name in ("lora_q", "lora_v", "prefix") if name in self.gates]
        gates = dict(zip(names, gate_values([self.gates[n] for n in names], h), strict=True)) if names else {}

        ws = blk.window_size
        if ws > 0:
            hw_tokens, pad_hw = window_partition(h, ws)
        else:
            hw_tokens = h
        bw, gh, gw, _ = hw_tokens.shape
        n_win = bw // b
        n = gh * gw
        nh = attn.num_heads
        tokens = hw_tokens.reshape(bw, n, c)

        q, k, v = attn.qkv(tokens).chunk(3, dim=-1)
        if self.lora is not None:
            scale_q = scale_v = None  # alpha / r
            if "lora_q" in gates:
                # Window partition is batch-major, so image i owns windows i*n_win ... (i+1)*n_win-1.
                scale_q = gates["lora_q"].repeat_interleave(n_win)[:, None, None].to(q.dtype)
                scale_v = gates["lora_v"].repeat_interleave(n_win)[:, None, None].to(v.dtype)
            dq, dv = self.lora(tokens, scale_q, scale_v)
            q, v = q + dq, v + dv

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(t.shape[0], -1, nh, c // nh).transpose(1, 2)

        q, k, v = heads(q), heads(k), heads(v)
        rel = block_rel_terms(q, blk, (gh, gw)) if attn.use_rel_pos else None

        prefix_bias = None
        if self.prefix is not None:
            p_k, p_v = self.prefix_kv(q.dtype)  # (1, nH, L, d) each
            p_k, p_v = p_k.expand(bw, -1, -1, -1), p_v.expand(bw, -1, -1, -1)
            if "prefix" in gates:
                g = gates["prefix"].repeat_interleave(n_win)  # (B',) one value per window's image
                if self.prefix_gate == "scale":
                    g = g.to(q.dtype)[:, None, None, None]
                    p_k, p_v = g * p_k, g * p_v
                else:
                    # In q's dtype: CUDA autocast runs log in fp32, which would promote the whole
                    # attn_mask (and its memory) to fp32 while q/k/v are bf16.
                    prefix_bias = torch.log(g.clamp_min(torch.finfo(g.dtype).tiny)).to(q.dtype)
            k = torch.cat([p_k, k], dim=2)
            v = torch.cat([p_v, v], dim=2)

        out = attention_ops.attention(q, k, v, rel, (gh, gw), prefix_bias)
        out = attn.proj(out.transpose(1, 2).reshape(bw, gh, gw, c))
        if ws > 0:
            out = window_unpartition(out, ws, pad_hw, (height, width))
        x = x + out
        z = x + blk.mlp(blk.norm2(x))
        if self.adapter is not None:
            branch = self.adapter(z)
            if "adapter" in self.gates:
                gates["adapter"] = self.gates["adapter"](z)
                branch = gates["adapter"][:, None, None, None].to(branch.dtype) * branch
            z = z + branch
        self.last_gates = {name: g.detach() for name, g in gates.items()}
        return z

    def prefix_kv(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix keys/values (1, nH, L, d) from the frozen k/v projections of norm1(P)."""
        blk, attn = self.block, self.block.attn
        p = blk.norm1(self.prefix())
        c = p.shape[-1]
        _, p_k, p_v = attn.qkv(p).chunk(3, dim=-1)
        nh = attn.num_heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(1, -1, nh, c // nh).transpose(1, 2).to(dtype)

        return heads(p_k), heads(p_v)
