"""Ways to fuse an ECG embedding into a causal LM (plain nn.Modules), looked up by name.

Every fusion is an `meit.fusion.base.ECGConditionedLM`: `forward(ecg, input_ids, attention_mask, labels) ->
(loss, n_tokens)` and `generate(ecg, prompt_ids, prompt_attention_mask, ...) -> list[list[int]]`.
"""

# Importing the built-in modules registers their fusions; a new fusion module registers with `@register("name")`
# from `meit.fusion.registry` and is added here.
from meit.fusion import gated_xattn, input_prefix, prefix_kv  # noqa: F401
from meit.fusion.registry import FUSIONS, register

__all__ = ["FUSIONS", "build_fusion", "fusion_names", "register"]


def build_fusion(name: str, llm, encoder, **kwargs):
    """Builds the fusion registered as `name` around `llm` (causal LM, LoRA already applied) and `encoder`."""
    return FUSIONS.build(name, llm=llm, encoder=encoder, **kwargs)


def fusion_names() -> list[str]:
    """Names of all registered fusions."""
    return FUSIONS.names()
