"""Splicing of ECG slots, prompt and report token ids into padded model inputs (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


@dataclass(frozen=True)
class SplicedBatch:
    """Padded model inputs, all (B, L).

    Attributes:
        input_ids: token ids; ECG slots hold `ecg_token_id`, padding holds `pad_token_id`.
        labels: report ids (+ EOS) where the loss applies, `IGNORE_INDEX` elsewhere (ECG slots, prompt, padding).
        attention_mask: 1 on ECG slots, prompt and report, 0 on padding.
        ecg_mask: True on the ECG slots (input_prefix fusion replaces their embeddings).
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor
    ecg_mask: torch.Tensor


def splice(
    prompts: Sequence[Sequence[int]],
    reports: Sequence[Sequence[int]] | None,
    *,
    pad_token_id: int,
    eos_token_id: int | None,
    max_length: int | None = None,
    padding_side: str = "right",
    n_ecg_tokens: int = 0,
    ecg_token_id: int | None = None,
) -> SplicedBatch:
    """Builds `[ECG slots][prompt][report][EOS]` sequences, padded to the longest one.

    Truncation to `max_length` shortens the report first (EOS is appended only when there is room after the whole
    report), then the prompt from the left; ECG slots are never dropped. With `reports=None` the sequences are
    prompts only (generation inputs, usually with `padding_side="left"`); their labels are all `IGNORE_INDEX`.

    Args:
        prompts: tokenised prompts, one per sample.
        reports: tokenised reports (without EOS), one per sample, or None.
        pad_token_id: id written on padding positions.
        eos_token_id: id appended after each report (None: no EOS).
        max_length: maximum sequence length including ECG slots (None: no truncation).
        padding_side: "right" (training) or "left" (generation).
        n_ecg_tokens: number of ECG slots at the start of each sequence (after left padding).
        ecg_token_id: id written on ECG slots (default `pad_token_id`).

    Returns:
        The padded batch.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"unknown padding_side: {padding_side}; choose from left, right")
    if reports is not None and len(reports) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(reports)} reports")
    if max_length is not None and max_length <= n_ecg_tokens:
        raise ValueError(f"max_length {max_length} leaves no room after {n_ecg_tokens} ECG tokens")
    slot_id = pad_token_id if ecg_token_id is None else ecg_token_id
    rows = [
        _splice_one(list(p), None if reports is None else list(reports[i]), eos_token_id, max_length, n_ecg_tokens)
        for i, p in enumerate(prompts)
    ]
    width = max(len(ids) for ids, _ in rows)
    out = {k: [] for k in ("input_ids", "labels", "attention_mask", "ecg_mask")}
    for ids, n_label in rows:
        n_pad = width - len(ids)
        ids = [slot_id] * n_ecg_tokens + ids[n_ecg_tokens:]
        labels = [IGNORE_INDEX] * (len(ids) - n_label) + ids[len(ids) - n_label :]
        ecg = [True] * n_ecg_tokens + [False] * (len(ids) - n_ecg_tokens)
        fields = {"input_ids": (ids, pad_token_id), "labels": (labels, IGNORE_INDEX)}
        fields |= {"attention_mask": ([1] * len(ids), 0), "ecg_mask": (ecg, False)}
        for key, (values, fill) in fields.items():
            out[key].append(values + [fill] * n_pad if padding_side == "right" else [fill] * n_pad + values)
    return SplicedBatch(
        input_ids=torch.tensor(out["input_ids"], dtype=torch.long),
        labels=torch.tensor(out["labels"], dtype=torch.long),
        attention_mask=torch.tensor(out["attention_mask"], dtype=torch.long),
        ecg_mask=torch.tensor(out["ecg_mask"], dtype=torch.bool),
    )


def _splice_one(
    prompt: list[int], report: list[int] | None, eos: int | None, max_length: int | None, n_ecg: int
) -> tuple[list[int], int]:
    """One unpadded sequence (ECG slots as 0s) and the number of labelled tokens at its end."""
    target = [] if report is None else report + ([] if eos is None else [eos])
    if max_length is not None:
        room = max_length - n_ecg - len(prompt)
        if room < 0:
            prompt, room = prompt[-room:], 0
        if len(target) > room:
            target = (report or [])[:room]
    return [0] * n_ecg + prompt + target, len(target)


def prepend_ecg_slots(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor | None,
    n_ecg_tokens: int,
    ecg_token_id: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Prepends `n_ecg_tokens` ECG slots to already padded text inputs.

    The slots go in front of any left padding, which is equivalent to placing them right before the text as long as
    position ids are derived from the attention mask (as the fusion models do).

    Returns:
        input_ids, attention_mask, labels (None if `labels` is None) and the (B, n + L) boolean ECG mask.
    """
    b = input_ids.shape[0]
    ones = torch.ones(b, n_ecg_tokens, dtype=torch.bool, device=input_ids.device)
    ids = torch.cat([torch.full_like(ones, ecg_token_id, dtype=input_ids.dtype), input_ids], dim=1)
    mask = torch.cat([ones.to(attention_mask.dtype), attention_mask], dim=1)
    if labels is not None:
        labels = torch.cat([torch.full_like(ones, IGNORE_INDEX, dtype=labels.dtype), labels], dim=1)
    ecg_mask = torch.cat([ones, torch.zeros_like(input_ids, dtype=torch.bool)], dim=1)
    return ids, mask, labels, ecg_mask
