"""Access to the parts of a Hugging Face causal LM (possibly peft-wrapped) that the fusions need, per family."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn
from transformers.cache_utils import Cache

from meit.fusion.kv_projection import fused_prefix_kv

LLAMA_LIKE = ("llama", "mistral")
GPT2_LIKE = ("gpt2",)
SUPPORTED_MODEL_TYPES = LLAMA_LIKE + GPT2_LIKE

LORA_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
}


def unwrap(llm: nn.Module) -> nn.Module:
    """The Hugging Face `*ForCausalLM` inside a peft `PeftModel` (or `llm` itself)."""
    get_base = getattr(llm, "get_base_model", None)
    return get_base() if callable(get_base) else llm


def model_type(llm: nn.Module) -> str:
    """The config's `model_type`, checked against the supported families.

    Raises:
        ValueError: for a model type outside the Llama, Mistral and GPT-2 families.
    """
    config = getattr(unwrap(llm), "config", None)
    name = getattr(config, "model_type", type(llm).__name__)
    if name not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"unsupported model type for ECG fusion: {name}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return name


def lora_target_modules(model: nn.Module) -> list[str]:
    """LoRA target module names for `model`'s family (MEIT: every attention and MLP projection).

    Args:
        model: a Hugging Face causal LM (Llama, Mistral or GPT-2 family), possibly peft-wrapped.

    Returns:
        Module names for `peft.LoraConfig(target_modules=...)`.
    """
    kind = model_type(model)
    return list(LORA_TARGETS["gpt2" if kind in GPT2_LIKE else "llama"])


def cache_keyword_of(decoder: nn.Module) -> str:
    """The KV-cache keyword of `decoder.forward`: "cache" where the signature names it, else "past_key_values"."""
    params = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@dataclass
class LMHandles:
    """Handles on a causal LM's decoder, embedding, head and per-layer attention, family-independent.

    Attributes:
        kind: "llama" (Llama/Mistral) or "gpt2".
        causal_lm: the `*ForCausalLM` (LoRA layers, if any, live inside it).
        decoder: its body (`LlamaModel`, `GPT2Model`, ...), called with `inputs_embeds`.
        lm_head: the output projection.
        layers: the decoder layers.
        cache_keyword: the decoder's name for the KV cache argument and output ("cache" from transformers 5.2x,
            "past_key_values" before; read from the forward signature, since 5.40 drops the old name).
    """

    kind: str
    causal_lm: nn.Module
    decoder: nn.Module
    lm_head: nn.Module
    layers: nn.ModuleList
    cache_keyword: str = "past_key_values"

    @classmethod
    def of(cls, llm: nn.Module) -> LMHandles:
        """Wraps `llm` (a supported causal LM, possibly peft-wrapped)."""
        name = model_type(llm)
        causal_lm = unwrap(llm)
        decoder = causal_lm.base_model
        layers = decoder.h if name in GPT2_LIKE else decoder.layers
        kind = "gpt2" if name in GPT2_LIKE else "llama"
        return cls(kind, causal_lm, decoder, causal_lm.get_output_embeddings(), layers, cache_keyword_of(decoder))

    @property
    def config(self):
        """The LM's config."""
        return self.causal_lm.config

    @property
    def hidden_size(self) -> int:
        """Width of the residual stream."""
        return self.config.hidden_size

    @property
    def n_heads(self) -> int:
        """Number of query heads."""
        return self.config.num_attention_heads

    @property
    def n_kv_heads(self) -> int:
        """Number of key/value heads (< n_heads with grouped-query attention)."""
        return getattr(self.config, "num_key_value_heads", None) or self.n_heads

    @property
    def head_dim(self) -> int:
        """Per-head width."""
        return getattr(self.config, "head_dim", None) or self.hidden_size // self.n_heads

    def run_decoder(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: Cache | None,
        use_cache: bool,
    ) -> tuple[torch.Tensor, Cache | None]:
        """Runs the decoder body, passing the cache under the keyword the installed transformers expects.

        Returns:
            (B, L, hidden) final hidden states and the cache (None unless `use_cache`).
        """
        out = self.decoder(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            **{self.cache_keyword: cache},
        )
        return out.last_hidden_state, (getattr(out, self.cache_keyword) if use_cache else None)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (B, L, hidden)."""
        return self.decoder.get_input_embeddings()(input_ids)

    def attention(self, layer_idx: int) -> nn.Module:
        """The self-attention module of decoder layer `layer_idx`."""
        layer = self.layers[layer_idx]
        return layer.attn if self.kind == "gpt2" else layer.self_attn

    def project_kv(self, layer_idx: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of `x` (B, n, hidden) through layer `layer_idx`'s own (LoRA-carrying) projections.

        No layer norm and no rotary embedding are applied (MEIT's un-rotated ECG keys).

        Returns:
            keys and values, each (B, n_kv_heads, n, head_dim).
        """
        attn = self.attention(layer_idx)
        if self.kind == "gpt2":
            # c_attn is a fused (q | k | v) projection: run it (so LoRA applies) and keep the k and v thirds.
            _, k, v = attn.c_attn(x).split(self.hidden_size, dim=2)
        else:
            k, v = attn.k_proj(x), attn.v_proj(x)
        shape = (x.shape[0], x.shape[1], -1, self.head_dim)
        return k.view(shape).transpose(1, 2), v.view(shape).transpose(1, 2)

    def project_kv_all(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`project_kv` of `x` for every layer, in layer order; Llama/Mistral in a few batched matmuls.

        The batched path (`meit.fusion.kv_projection`) gives the per-layer result; projections it does not
        cover (GPT-2's fused c_attn, DoRA, quantised or hooked modules) run one layer at a time.
        """
        if self.kind == "llama":
            fused = fused_prefix_kv([self.attention(i) for i in range(len(self.layers))], x, self.head_dim)
            if fused is not None:
                return fused
        return [self.project_kv(i, x) for i in range(len(self.layers))]
