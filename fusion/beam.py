"""Batched beam search over an `ECGConditionedLM` with the KV cache (length-normalised log-probabilities)."""

from __future__ import annotations

import torch

Hypothesis = tuple[float, list[int]]


def beam_search(
    model,
    ecg: torch.Tensor,
    prompt_ids: torch.Tensor,
    prompt_attention_mask: torch.Tensor,
    max_new_tokens: int,
    eos_token_id: int | None,
    num_beams: int,
    ecg_mask: torch.Tensor | None = None,
) -> list[list[int]]:
    """Beam search; each sample's best hypothesis by mean token log-probability (EOS counted, not returned).

    A sample stops collecting hypotheses once `num_beams` of them have ended with EOS; the search stops when every
    sample has, or after `max_new_tokens` steps (unfinished beams then compete as they are).

    Args:
        model: an `ECGConditionedLM`.
        ecg: (B, C, *input_size) ECG batch.
        prompt_ids: (B, L) left-padded prompts.
        prompt_attention_mask: (B, L) their mask.
        max_new_tokens: maximum number of generated tokens.
        eos_token_id: ends a hypothesis (None: every hypothesis runs `max_new_tokens` steps).
        num_beams: beams per sample.
        ecg_mask: (B, L) ECG slots in `prompt_ids` (input_prefix only).

    Returns:
        The best generated ids of each sample.
    """
    b, k = prompt_ids.shape[0], num_beams

    def rep(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.repeat_interleave(k, dim=0)

    inputs = model.prepare(rep(ecg), rep(prompt_ids), rep(prompt_attention_mask), None, rep(ecg_mask), True)
    hidden, cache = model.decode(inputs, use_cache=True)
    mask, pos, context = inputs.attention_mask, inputs.position_ids[:, -1], inputs.context
    scores = torch.full((b, k), float("-inf"), device=prompt_ids.device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    seqs = prompt_ids.new_zeros(b * k, 0)
    finished: list[list[Hypothesis]] = [[] for _ in range(b)]
    for step in range(max_new_tokens):
        logp = torch.log_softmax(model.backbone.lm_head(hidden[:, -1]).float(), dim=-1)
        total = (scores.view(-1, 1) + logp).view(b, -1)
        top, idx = total.topk(min(2 * k, total.shape[1]), dim=1)
        rows, tokens, new_scores = _select(top, idx, logp.shape[1], k, eos_token_id, seqs, step, finished)
        seqs = torch.cat([seqs[rows], tokens[:, None]], dim=1)
        scores = new_scores.view(b, k)
        if all(len(f) >= k for f in finished) or step == max_new_tokens - 1:
            break
        cache.reorder_cache(rows)
        mask, pos = torch.cat([mask[rows], mask.new_ones(b * k, 1)], dim=1), pos[rows] + 1
        context = None if context is None else context[rows]
        step_inputs = inputs.next_step(model.backbone.embed(tokens[:, None]), mask, pos[:, None], cache)
        step_inputs.context = context
        hidden, cache = model.decode(step_inputs, use_cache=True)
    return [_best(finished[i], seqs[i * k : (i + 1) * k], scores[i]) for i in range(b)]


def _select(
    top: torch.Tensor,
    idx: torch.Tensor,
    vocab: int,
    k: int,
    eos: int | None,
    seqs: torch.Tensor,
    step: int,
    finished: list[list[Hypothesis]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keeps the k best non-EOS continuations per sample; EOS continuations among the top k become hypotheses."""
    rows, tokens, scores = [], [], []
    for i, (cand_scores, cand_idx) in enumerate(zip(top.tolist(), idx.tolist())):
        kept: list[tuple[int, int, float]] = []
        for rank, (score, flat) in enumerate(zip(cand_scores, cand_idx)):
            row, token = i * k + flat // vocab, flat % vocab
            if token == eos:
                if rank < k and len(finished[i]) < k and score > float("-inf"):
                    finished[i].append((score / (step + 1), seqs[row].tolist()))
                continue
            kept.append((row, token, score))
            if len(kept) == k:
                break
        while len(kept) < k:  # fewer live candidates than beams: pad with dead copies
            kept.append((kept[0][0] if kept else i * k, eos or 0, float("-inf")))
        for row, token, score in kept:
            rows.append(row)
            tokens.append(token)
            scores.append(score)
    device = top.device
    return torch.tensor(rows, device=device), torch.tensor(tokens, device=device), torch.tensor(scores, device=device)


def _best(finished: list[Hypothesis], alive: torch.Tensor, alive_scores: torch.Tensor) -> list[int]:
    """The hypothesis with the highest mean log-probability, finished or still alive."""
    length = max(alive.shape[1], 1)
    candidates = list(finished) + [
        (score / length, seq) for score, seq in zip(alive_scores.tolist(), alive.tolist()) if score > float("-inf")
    ]
    return max(candidates, key=lambda c: c[0])[1] if candidates else []
