"""Flamingo-style fusion: tanh-gated cross-attention from the text to the ECG tokens, every k decoder layers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from meit.fusion.base import DecoderInputs, ECGConditionedLM, positions_from_mask
from meit.fusion.registry import register


class GatedCrossAttention(nn.Module):
    """x + tanh(a) * xattn(LN(x), ecg); x + tanh(b) * FFN(LN(x)). With a = b = 0 the block is the identity.

    Args:
        hidden_size: width of the text hidden states and of the ECG tokens.
        n_heads: attention heads.
        ff_mult: FFN expansion.
        gate_init: initial value of both gates (0: the wrapped LM starts as the text-only LM).
    """

    def __init__(self, hidden_size: int, n_heads: int, ff_mult: int = 4, gate_init: float = 0.0) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(hidden_size)
        self.attn = nn.MultiheadAttention(hidden_size, n_heads, batch_first=True)
        self.ff_norm = nn.LayerNorm(hidden_size)
        self.ff = nn.Sequential(
            nn.Linear(hidden_size, ff_mult * hidden_size), nn.GELU(), nn.Linear(ff_mult * hidden_size, hidden_size)
        )
        self.attn_gate = nn.Parameter(torch.tensor(float(gate_init)))
        self.ff_gate = nn.Parameter(torch.tensor(float(gate_init)))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Text states (B, L, hidden) attending to ECG tokens (B, n, hidden)."""
        dtype = x.dtype
        h = x.to(self.attn_gate.dtype)
        q = self.attn_norm(h)
        h = h + torch.tanh(self.attn_gate) * self.attn(q, context, context, need_weights=False)[0]
        h = h + torch.tanh(self.ff_gate) * self.ff(self.ff_norm(h))
        return h.to(dtype)


@register("gated_xattn")
class GatedXAttnLM(ECGConditionedLM):
    """Gated cross-attention blocks run before every `every`-th decoder layer (forward pre-hooks on the layers).

    Args:
        llm: the causal LM (see `ECGConditionedLM`).
        encoder: the ECG encoder.
        every: a block before decoder layers 0, every, 2 * every, ...
        n_heads: cross-attention heads (default: the LM's).
        gate_init: initial gate value (0 = text-only LM at initialisation).
        **kwargs: projector options of `ECGConditionedLM` (default projector "mlp").
    """

    fusion_name = "gated_xattn"

    def __init__(
        self, llm, encoder, every: int = 1, n_heads: int | None = None, gate_init: float = 0.0, **kwargs
    ) -> None:
        kwargs.setdefault("projector", "mlp")
        super().__init__(llm, encoder, **kwargs)
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        b = self.backbone
        self.layer_ids = list(range(0, len(b.layers), every))
        self.xattn = nn.ModuleList(
            GatedCrossAttention(b.hidden_size, n_heads or b.n_heads, gate_init=gate_init) for _ in self.layer_ids
        )
        self._context: torch.Tensor | None = None
        self._hooks = [
            b.layers[i].register_forward_pre_hook(self._hook(block), with_kwargs=True)
            for i, block in zip(self.layer_ids, self.xattn)
        ]

    def _hook(self, block: GatedCrossAttention):
        def pre_hook(module, args, kwargs):
            if self._context is None:
                return None
            if args:
                return (block(args[0], self._context), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": block(kwargs["hidden_states"], self._context)}

        return pre_hook

    @contextmanager
    def conditioned(self, context: torch.Tensor | None) -> Iterator[None]:
        """Makes the cross-attention blocks attend to `context` while the decoder runs."""
        previous, self._context = self._context, context
        try:
            yield
        finally:
            self._context = previous

    def prepare(self, ecg, input_ids, attention_mask, labels, ecg_mask, use_cache) -> DecoderInputs:
        """Plain text inputs; the ECG tokens travel as the cross-attention context."""
        if ecg_mask is not None and bool(ecg_mask.any()):
            raise ValueError("gated_xattn takes no ECG slots in input_ids (ecg_mask must be None or all False)")
        positions = positions_from_mask(attention_mask)
        embeds = self.backbone.embed(input_ids)
        return DecoderInputs(embeds, attention_mask, positions, None, labels, context=self.encode_ecg(ecg))

    def remove_hooks(self) -> None:
        """Detaches the blocks from the LM's layers (the LM is then text-only again)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
