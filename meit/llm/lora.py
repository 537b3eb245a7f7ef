"""LoRA, the one adapter config of both language-model kinds: `model.lora` (the frozen text backbone) and
`model.vision_llm.lora` (LLaMA 3.2 Vision) are both a `LoRAConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers import PreTrainedModel

from meit.fusion.backbone import lora_target_modules


@dataclass
class LoRAConfig:
    """Low-rank adapters on a frozen model (MEIT: r 64, alpha 128, dropout 0.1)."""

    r: int = 64
    """Rank (MEIT and LLaMA 3.2 Vision's recipe: 64)."""
    alpha: int = 128
    """Scaling numerator (the adapters are scaled by alpha / r; MEIT: 128)."""
    dropout: float = 0.1
    """Dropout on the adapter input (MEIT: 0.1; LLaMA 3.2 Vision's recipe: 0.05)."""
    targets: list[str] | None = None
    """What gets adapters. A text backbone: module names (default per model family; Llama/Mistral: the q, k, v, o,
    gate, up and down projections). LLaMA 3.2 Vision: towers whose linear layers get adapters, of
    `language_model`, `multi_modal_projector`, `vision_model` (default all three, as the paper)."""


def freeze(model: nn.Module) -> None:
    """Freezes every parameter of `model` (LoRA adapters added later are trainable)."""
    for p in model.parameters():
        p.requires_grad_(False)


def apply_lora(model: PreTrainedModel, cfg: LoRAConfig) -> PreTrainedModel:
    """Injects trainable LoRA adapters into a frozen causal LM, in place (the model keeps its class).

    Args:
        model: a frozen Hugging Face causal LM.
        cfg: rank, alpha, dropout and target module names (default: the family's attention and MLP projections);
            `r <= 0` adds none.

    Returns:
        The same model; only the `lora_` parameters require gradients.
    """
    from peft import LoraConfig, inject_adapter_in_model

    if cfg.r <= 0:
        return model
    targets = list(cfg.targets) if cfg.targets else lora_target_modules(model)
    config = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets)
    model = inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    return model
