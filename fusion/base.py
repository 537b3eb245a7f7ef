"""The shared ECG-conditioned LM: report-only loss and batched KV-cache generation over any fusion."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import Cache

from meit.fusion.backbone import LMHandles
from meit.fusion.beam import beam_search
from meit.fusion.projector import Projector
from meit.fusion.splice import IGNORE_INDEX

ECG_INPUTS = ("signal", "zero")


@dataclass
class DecoderInputs:
    """What one decoder call consumes, built by a fusion from ECG + text.

    Attributes:
        inputs_embeds: (B, L, hidden) input embeddings.
        attention_mask: (B, K) padding mask over cached prefix + past + current positions (K >= L).
        position_ids: (B, L) positions of the current tokens.
        past_key_values: a cache (prefix-KV ECG keys/values and/or generated tokens) or None.
        labels: (B, L) labels aligned with `inputs_embeds` (None when not training).
        n_slots: number of ECG input slots prepended to the text (stripped from returned logits).
        context: (B, n, hidden) ECG tokens for cross-attention fusions, kept for every decoding step.
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    past_key_values: Cache | None
    labels: torch.Tensor | None = None
    n_slots: int = 0
    context: torch.Tensor | None = None

    def next_step(
        self,
        embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past_key_values: Cache | None,
    ) -> DecoderInputs:
        """Inputs of the following cached decoding step (same cross-attention context)."""
        return DecoderInputs(embeds, attention_mask, position_ids, past_key_values, context=self.context)


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids counting only attended tokens (0 at each sample's first token, whatever the padding side)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class ECGConditionedLM(nn.Module):
    """A causal LM (frozen, possibly with LoRA) conditioned on an ECG through an encoder, a projector and a fusion.

    Subclasses implement `prepare`, turning ECG + text into `DecoderInputs`; this class owns the loss (computed on
    report positions only) and generation. Apply LoRA (peft) to `llm` before wrapping it.

    Args:
        llm: a Hugging Face causal LM of the Llama, Mistral or GPT-2 family, or a peft model around one.
        encoder: an ECG encoder from `meit.encoders` (`forward` -> (B, n_tokens, out_dim), attribute `out_dim`).
        projector: "meit" (Linear-BN-ReLU-Linear-BN, L2-normalised, head dim tiled over heads), "linear" or "mlp".
        projector_mid_dim: intermediate width of the projector (default: hidden size).
        normalize: L2-normalise projected tokens (default: only for "meit").
        ecg_input: "signal", or "zero" to replace every ECG by zeros (the no-ECG baseline).
    """

    fusion_name = "base"

    def __init__(
        self,
        llm: nn.Module,
        encoder: nn.Module,
        projector: str = "meit",
        projector_mid_dim: int | None = None,
        normalize: bool | None = None,
        ecg_input: str = "signal",
    ) -> None:
        super().__init__()
        if ecg_input not in ECG_INPUTS:
            raise ValueError(f"unknown ecg_input: {ecg_input}; choose from {', '.join(ECG_INPUTS)}")
        self.llm = llm
        self.backbone = LMHandles.of(llm)
        self.encoder = encoder
        self.ecg_input = ecg_input
        b = self.backbone
        self.projector = Projector(projector, encoder.out_dim, b.hidden_size, b.head_dim, projector_mid_dim, normalize)

    def encode_ecg(self, ecg: torch.Tensor) -> torch.Tensor:
        """Encoder + projector: (B, C, *input_size) -> (B, n_tokens, hidden) in the LM's dtype."""
        if self.ecg_input == "zero":
            ecg = torch.zeros_like(ecg)
        tokens = self.projector(self.encoder(ecg))
        return tokens.to(self.backbone.lm_head.weight.dtype)

    def prepare(
        self,
        ecg: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None,
        ecg_mask: torch.Tensor | None,
        use_cache: bool,
    ) -> DecoderInputs:
        """Builds the first decoder call's inputs (implemented by each fusion)."""
        raise NotImplementedError

    def conditioned(self, context: torch.Tensor | None) -> AbstractContextManager:
        """Context in which the decoder sees `context` (cross-attention fusions override it)."""
        return nullcontext()

    def decode(self, inputs: DecoderInputs, use_cache: bool = False) -> tuple[torch.Tensor, Cache | None]:
        """Runs the decoder body (no LM head): (B, L, hidden) final hidden states and the cache."""
        with self.conditioned(inputs.context):
            return self.backbone.run_decoder(
                inputs.inputs_embeds, inputs.attention_mask, inputs.position_ids, inputs.past_key_values, use_cache
            )

    def forward(
        self,
        ecg: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        ecg_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, int]:
        """Mean next-token cross-entropy over the report positions (labels != -100).

        The LM head runs only on the hidden states that predict a labelled token.

        Args:
            ecg: (B, C, *input_size) ECG batch.
            input_ids: (B, L) token ids from `splice` (left or right padded).
            attention_mask: (B, L) 1 on tokens, 0 on padding.
            labels: (B, L) target ids, -100 where no loss applies.
            ecg_mask: (B, L) ECG slots inside `input_ids` (input_prefix only; default: slots are prepended).

        Returns:
            The loss and the number of labelled tokens it averages over.
        """
        inputs = self.prepare(ecg, input_ids, attention_mask, labels, ecg_mask, use_cache=False)
        hidden, _ = self.decode(inputs)
        target = inputs.labels[:, 1:]
        keep = target != IGNORE_INDEX
        logits = self.backbone.lm_head(hidden[:, :-1][keep]).float()
        return F.cross_entropy(logits, target[keep]), int(keep.sum())

    def logits(
        self,
        ecg: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        ecg_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Full (B, L, vocab) logits for every position of `input_ids` (reference path; slow for training)."""
        inputs = self.prepare(ecg, input_ids, attention_mask, None, ecg_mask, use_cache=False)
        hidden, _ = self.decode(inputs)
        return self.backbone.lm_head(hidden[:, inputs.n_slots :]).float()

    @torch.no_grad()
    def generate(
        self,
        ecg: torch.Tensor,
        prompt_ids: torch.Tensor,
        prompt_attention_mask: torch.Tensor,
        max_new_tokens: int,
        eos_token_id: int | None,
        pad_token_id: int,
        num_beams: int = 1,
        ecg_mask: torch.Tensor | None = None,
    ) -> list[list[int]]:
        """Batched greedy (or beam) decoding with the KV cache; the ECG is encoded once per call.

        Args:
            ecg: (B, C, *input_size) ECG batch.
            prompt_ids: (B, L) left-padded prompt ids.
            prompt_attention_mask: (B, L) 1 on tokens, 0 on (left) padding.
            max_new_tokens: maximum number of generated tokens.
            eos_token_id: stops a sequence (not included in the output); None: run to `max_new_tokens`.
            pad_token_id: written after a finished sequence while others continue (never returned).
            num_beams: 1 = greedy; > 1 = beam search (length-normalised log-probabilities).
            ecg_mask: (B, L) ECG slots inside `prompt_ids` (input_prefix only).

        Returns:
            The generated ids of each sample, without the prompt, EOS and padding.
        """
        if prompt_attention_mask.shape[1] and not bool(prompt_attention_mask[:, -1].all()):
            raise ValueError("generate() needs left-padded prompts (the last position of every row must be a token)")
        if num_beams > 1:
            return beam_search(
                self, ecg, prompt_ids, prompt_attention_mask, max_new_tokens, eos_token_id, num_beams, ecg_mask
            )
        inputs = self.prepare(ecg, prompt_ids, prompt_attention_mask, None, ecg_mask, use_cache=True)
        hidden, cache = self.decode(inputs, use_cache=True)
        mask, last_pos = inputs.attention_mask, inputs.position_ids[:, -1]
        done = torch.zeros(prompt_ids.shape[0], dtype=torch.bool, device=prompt_ids.device)
        steps = []
        for _ in range(max_new_tokens):
            token = self.backbone.lm_head(hidden[:, -1]).argmax(-1)
            token = torch.where(done, torch.full_like(token, pad_token_id), token)
            steps.append(token)
            if eos_token_id is not None:
                done = done | (token == eos_token_id)
            if bool(done.all()) or len(steps) == max_new_tokens:
                break
            mask, last_pos = _extend_mask(mask), last_pos + 1
            step = inputs.next_step(self.backbone.embed(token[:, None]), mask, last_pos[:, None], cache)
            hidden, cache = self.decode(step, use_cache=True)
        return _strip(steps, eos_token_id, prompt_ids.shape[0])


def _extend_mask(mask: torch.Tensor) -> torch.Tensor:
    return torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)


def _strip(steps: list[torch.Tensor], eos_token_id: int | None, batch: int) -> list[list[int]]:
    """Per-sample ids up to (not including) the first EOS."""
    if not steps:
        return [[] for _ in range(batch)]
    out = []
    for row in torch.stack(steps, dim=1).tolist():
        if eos_token_id is not None and eos_token_id in row:
            row = row[: row.index(eos_token_id)]
        out.append(row)
    return out
