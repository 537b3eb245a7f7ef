"""LLaVA-style fusion: projected ECG tokens are input embeddings placed before the prompt."""

from __future__ import annotations

from meit.fusion.base import DecoderInputs, ECGConditionedLM, positions_from_mask
from meit.fusion.registry import register
from meit.fusion.splice import prepend_ecg_slots


@register("input_prefix")
class InputPrefixLM(ECGConditionedLM):
    """ECG tokens as input embeddings (positions 0..n-1), the text after them.

    Text-only `input_ids` get the ECG slots prepended; ids spliced with `n_ecg_tokens` come with an `ecg_mask`
    marking the slots, whose embeddings are replaced. The default projector is "mlp" (LLaVA-1.5).
    Other args as `ECGConditionedLM`.
    """

    fusion_name = "input_prefix"

    def __init__(self, llm, encoder, **kwargs) -> None:
        kwargs.setdefault("projector", "mlp")
        super().__init__(llm, encoder, **kwargs)

    def prepare(self, ecg, input_ids, attention_mask, labels, ecg_mask, use_cache) -> DecoderInputs:
        """Embeddings with the ECG tokens written into their slots."""
        tokens = self.encode_ecg(ecg)
        n_slots = 0
        if ecg_mask is None:
            n_slots = tokens.shape[1]
            input_ids, attention_mask, labels, ecg_mask = prepend_ecg_slots(input_ids, attention_mask, labels, n_slots)
        if not bool((ecg_mask.sum(dim=1) == tokens.shape[1]).all()):
            raise ValueError(f"every row of ecg_mask must mark {tokens.shape[1]} ECG slots (the encoder's n_tokens)")
        embeds = self.backbone.embed(input_ids).masked_scatter(ecg_mask[..., None], tokens)
        return DecoderInputs(embeds, attention_mask, positions_from_mask(attention_mask), None, labels, n_slots)
