"""MEIT evaluation: corpus-level text metrics, BERTScore, clinical label scores, bootstrap CIs.

Public API: :func:`evaluate_records`, :func:`compare_records`, :class:`Scorer` (both, one METEOR process for many
calls), :func:`read_predictions`, :func:`module_path`, :func:`benchmark`, :func:`meit.eval.labels.extract_labels`,
and the metric key lists (`METRIC_KEYS`, `HEADLINE_METRICS`, `PLOT_METRICS`, `METRIC_TITLES`).
Conventions are documented in docs/METRICS.md.
"""

from __future__ import annotations

from pathlib import Path

from .bench import run_benchmark
from .core import (
    HEADLINE_METRICS,
    METRIC_KEYS,
    METRIC_TITLES,
    PLOT_METRICS,
    compare_records,
    evaluate_records,
    format_metric,
    read_predictions,
)
from .scorer import Scorer

MODULES = ("bleu", "meteor", "rouge", "cider_d", "bertscore", "clinical_labels")


def module_path(name: str) -> str:
    """Installed directory of a local ``evaluate`` module, for ``evaluate.load(module_path("cider_d"))``.

    Args:
        name: One of ``bleu``, ``meteor``, ``rouge``, ``cider_d``, ``bertscore``, ``clinical_labels``.

    Returns:
        The module's directory as a string.
    """
    if name not in MODULES:
        raise ValueError(f"unknown evaluate module: {name}; choose from {', '.join(MODULES)}")
    return str(Path(__file__).parent / "modules" / name)


def benchmark(n_pairs: int = 5000, seed: int = 0) -> dict:
    """Timings of the text metrics and BERTScore on synthetic MIMIC-length pairs (see meit.eval.bench)."""
    return run_benchmark(n_pairs=n_pairs, seed=seed)


__all__ = [
    "HEADLINE_METRICS", "METRIC_KEYS", "METRIC_TITLES", "MODULES", "PLOT_METRICS", "Scorer", "benchmark",
    "compare_records", "evaluate_records", "format_metric", "module_path", "read_predictions",
]
