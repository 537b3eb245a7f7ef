"""MEIT's prefix-KV fusion: ECG tokens become extra, un-rotated, never-masked keys/values in every layer.

Each layer's ECG keys/values come from that layer's own `k_proj`/`v_proj` (so LoRA on them applies). They are
placed in a `DynamicCache` before the text is run, so Hugging Face's own attention (eager, SDPA, flash; grouped-query
`repeat_kv` included) consumes them unchanged; generation keeps extending the same cache, so the ECG keys/values are
computed once per report. Text positions start at 0 (the prefix has no position) in training and in generation.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from meit.fusion.base import DecoderInputs, ECGConditionedLM, positions_from_mask
from meit.fusion.registry import register


class PrefixLayer(DynamicLayer):
    """A cache layer pre-filled with ECG keys/values.

    With `grow=False` (training) `update` returns prefix + current keys/values without storing them, so a
    gradient-checkpointing recompute of the layer sees exactly the same cache.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, grow: bool) -> None:
        super().__init__()
        self.dtype, self.device = keys.dtype, keys.device
        self.keys, self.values, self.grow = keys, values, grow
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        keys = torch.cat([self.keys, key_states], dim=-2)
        values = torch.cat([self.values, value_states], dim=-2)
        if self.grow:
            self.keys, self.values = keys, values
        return keys, values


class PrefixKVCache(DynamicCache):
    """A `DynamicCache` whose layers start with the ECG prefix keys/values (B, n_kv_heads, n, head_dim)."""

    def __init__(self, prefix: list[tuple[torch.Tensor, torch.Tensor]], grow: bool) -> None:
        Cache.__init__(self, layers=[PrefixLayer(k, v, grow) for k, v in prefix])


@register("prefix_kv")
class PrefixKVLM(ECGConditionedLM):
    """MEIT: ECG prefix keys/values in every decoder layer (see the module docstring). Args as `ECGConditionedLM`."""

    fusion_name = "prefix_kv"

    def __init__(self, llm, encoder, **kwargs) -> None:
        super().__init__(llm, encoder, **kwargs)
        if self.backbone.kind == "llama":
            # The training cache never grows, so Llama/Mistral layers may keep it under gradient checkpointing.
            for layer in self.backbone.layers:
                layer._can_checkpoint_with_cache = True

    def prefix_cache(self, ecg: torch.Tensor, grow: bool) -> PrefixKVCache:
        """Encodes the ECG and builds the per-layer prefix keys/values."""
        tokens = self.encode_ecg(ecg)
        return PrefixKVCache(self.backbone.project_kv_all(tokens), grow)

    def prepare(self, ecg, input_ids, attention_mask, labels, ecg_mask, use_cache) -> DecoderInputs:
        """Text embeddings + a cache holding the ECG prefix; the mask covers prefix + text."""
        if ecg_mask is not None and bool(ecg_mask.any()):
            raise ValueError("prefix_kv takes no ECG slots in input_ids (ecg_mask must be None or all False)")
        self._check_checkpointing()
        cache = self.prefix_cache(ecg, grow=use_cache)
        n_prefix = cache.get_seq_length()
        prefix_mask = attention_mask.new_ones(attention_mask.shape[0], n_prefix)
        return DecoderInputs(
            inputs_embeds=self.backbone.embed(input_ids),
            attention_mask=torch.cat([prefix_mask, attention_mask], dim=1),
            position_ids=positions_from_mask(attention_mask),
            past_key_values=cache,
            labels=labels,
        )

    def _check_checkpointing(self) -> None:
        decoder = self.backbone.decoder
        if self.backbone.kind == "gpt2" and self.training and getattr(decoder, "gradient_checkpointing", False):
            raise ValueError("prefix_kv with GPT-2 does not support gradient checkpointing (GPT2Model drops the cache)")
