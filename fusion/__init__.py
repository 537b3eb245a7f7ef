"""Ways to fuse an ECG embedding into a causal LM (plain nn.Modules), looked up by name.

Every fusion is an `meit.fusion.base.ECGConditionedLM`: `forward(ecg, input_ids, attention_mask, labels) ->
(loss, n_tokens)` and `generate(ecg, prompt_ids, prompt_attention_mask, ...) -> list[list[int]]`.
"""

from meit.registry import Registry

FUSIONS: Registry = Registry("fusion")
register = FUSIONS.register

BUILTIN_MODULES: list[str] = [
    "meit.fusion.prefix_kv",
    "meit.fusion.input_prefix",
    "meit.fusion.gated_xattn",
]  # each module registers its fusion on import


def build_fusion(name: str, llm, encoder, **kwargs):
    """Builds the fusion registered as `name` around `llm` (causal LM, LoRA already applied) and `encoder`."""
    _import_builtin_fusions()
    return FUSIONS.build(name, llm=llm, encoder=encoder, **kwargs)


def fusion_names() -> list[str]:
    """Names of all registered fusions."""
    _import_builtin_fusions()
    return FUSIONS.names()


def _import_builtin_fusions() -> None:
    # Imported lazily so that `register` is defined before the modules that use it load.
    import importlib

    for module in BUILTIN_MODULES:
        importlib.import_module(module)
