"""Every decoder layer's ECG prefix keys/values in a few batched matmuls instead of 2 x n_layers small calls.

Prefix-KV runs the same ECG tokens through each layer's `k_proj` and `v_proj` (with their LoRA). Done one module
at a time that is 2 x n_layers small matmuls for the frozen weights, as many again for LoRA A and for LoRA B, and
as many gradient sums into the tokens in backward. Here the frozen k/v weights of all layers are stacked into one
matmul, the LoRA A of all projections joins it (or, with LoRA dropout active, one batched matmul over the dropped
inputs), and the LoRA B of all projections is one batched matmul. The result equals the per-module path (the same
formula `base(x) + lora_B(lora_A(dropout(x))) * scaling`, the dropout modules called in the same order, so the
same random masks are drawn); only the summation order inside the matmuls differs.

Only the plain case is fused: Llama-family projections that are `nn.Linear` or peft LoRA `Linear` layers with one
active vanilla adapter (no DoRA or other variant, no LoRA bias, not merged), the same rank everywhere, weights in
the input's dtype and no hooks on the modules (hooks, e.g. DeepSpeed ZeRO-3's parameter gathering, must see the
module run). Anything else returns None and the caller keeps the per-module path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LinearParts:
    """A k/v projection taken apart: frozen weight and bias, and its LoRA (None without one)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    lora_a: torch.Tensor | None = None
    lora_b: torch.Tensor | None = None
    dropout: nn.Module | None = None
    scaling: float = 1.0


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _peft_lora_linear() -> type | None:
    try:
        from peft.tuners.lora.layer import Linear
    except ImportError:  # peft not installed: no LoRA layer can be present
        return None
    return Linear


def linear_parts(module: nn.Module, dtype: torch.dtype) -> LinearParts | None:
    """`module` as `LinearParts`, or None where the fused formula might not be what its forward computes."""
    if _has_hooks(module):
        return None
    if type(module) is nn.Linear:
        return LinearParts(module.weight, module.bias) if module.weight.dtype == dtype else None
    lora_linear = _peft_lora_linear()
    if lora_linear is None or type(module) is not lora_linear or module.merged or module.disable_adapters:
        return None
    base = module.base_layer
    if type(base) is not nn.Linear or _has_hooks(base) or base.weight.dtype != dtype:
        return None
    adapters = [name for name in module.active_adapters if name in module.lora_A.keys()]
    if not adapters:
        return LinearParts(base.weight, base.bias)
    if len(adapters) > 1:
        return None
    name = adapters[0]
    lora_a, lora_b = module.lora_A[name], module.lora_B[name]
    variant = name in getattr(module, "lora_variant", {}) or bool(getattr(module, "use_dora", {}).get(name))
    plain = all(type(m) is nn.Linear and m.bias is None and not _has_hooks(m) for m in (lora_a, lora_b))
    if variant or not plain or lora_a.weight.dtype != dtype or lora_b.weight.dtype != dtype:
        return None
    return LinearParts(base.weight, base.bias, lora_a.weight, lora_b.weight, module.lora_dropout[name],
                       float(module.scaling[name]))


def _stacked_bias(parts: list[LinearParts]) -> torch.Tensor | None:
    if all(p.bias is None for p in parts):
        return None
    return torch.cat([p.bias if p.bias is not None else p.weight.new_zeros(p.weight.shape[0]) for p in parts])


def _dropout_active(parts: list[LinearParts]) -> bool:
    return any(isinstance(p.dropout, nn.Dropout) and p.dropout.training and p.dropout.p > 0 for p in parts)


def fused_projections(parts: list[LinearParts], x: torch.Tensor) -> torch.Tensor | None:
    """`module(x)` of every projection in `parts` (all with the same output width), stacked: (J, *x.shape[:-1], out).

    Returns None when the projections differ in output width or LoRA rank, or only some carry LoRA.
    """
    out_dim = parts[0].weight.shape[0]
    ranks = {None if p.lora_a is None else p.lora_a.shape[0] for p in parts}
    if any(p.weight.shape[0] != out_dim for p in parts) or len(ranks) != 1:
        return None
    n_proj, lead = len(parts), x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    weight, bias = torch.cat([p.weight for p in parts]), _stacked_bias(parts)
    rank = ranks.pop()
    if rank is None:
        base = F.linear(flat, weight, bias).view(-1, n_proj, out_dim).transpose(0, 1)
        return base.reshape(n_proj, *lead, out_dim)
    lora_b = torch.stack([p.lora_b * p.scaling for p in parts]).transpose(1, 2)  # (J, rank, out), scaling folded in
    if _dropout_active(parts):
        # Each projection drops its own copy of x: the dropout modules run in the per-module order (same masks).
        hidden = torch.stack([F.linear(p.dropout(flat), p.lora_a) for p in parts])
        base = F.linear(flat, weight, bias)
    else:
        # LoRA A of all projections joins the frozen weights in one matmul over the shared input.
        both = F.linear(flat, torch.cat([weight, *(p.lora_a for p in parts)]),
                        None if bias is None else torch.cat([bias, bias.new_zeros(n_proj * rank)]))
        base, hidden = both[:, : n_proj * out_dim], both[:, n_proj * out_dim :].view(-1, n_proj, rank).transpose(0, 1)
    out = torch.baddbmm(base.view(-1, n_proj, out_dim).transpose(0, 1), hidden, lora_b)
    return out.view(n_proj, *lead, out_dim)


def fused_prefix_kv(attentions: list[nn.Module], x: torch.Tensor,
                    head_dim: int) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Keys and values of `x` (B, n, hidden) through every Llama-style attention's `k_proj`/`v_proj`, fused.

    Args:
        attentions: the decoder layers' self-attention modules, in layer order.
        x: (B, n, hidden) ECG tokens.
        head_dim: per-head width.

    Returns:
        Per layer, keys and values (B, n_kv_heads, n, head_dim), equal to calling the modules one by one; or None
        where the modules are not all of the plain kind fused here (see the module docstring).
    """
    modules = [m for attn in attentions for m in (attn.k_proj, attn.v_proj)]  # the per-module path's order
    parts = [linear_parts(m, x.dtype) for m in modules]
    if not parts or any(p is None for p in parts):
        return None
    stacked = fused_projections(parts, x)
    if stacked is None:
        return None
    shape = (x.shape[0], x.shape[1], -1, head_dim)
    heads = [t.view(shape).transpose(1, 2) for t in stacked.unbind(0)]
    return list(zip(heads[0::2], heads[1::2]))
