"""Vectorised bootstrap over records on per-record sufficient statistics.

A resample is a vector of record counts ``w`` (multinomial, sums to n); a metric's value on
it is ``aggregate(w @ X)``. Resamples are generated in chunks so that the (chunk, n) count
matrix stays below ~20 M entries for any test-set size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from .text import MetricStats

_MAX_CELLS = 20_000_000


def resample_counts(n: int, n_bootstrap: int, seed: int) -> Iterator[np.ndarray]:
    """Yield (chunk, n) float matrices of bootstrap record counts, ``n_bootstrap`` rows in total."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_bootstrap, _MAX_CELLS // max(n, 1)))
    done = 0
    while done < n_bootstrap:
        b = min(chunk, n_bootstrap - done)
        idx = rng.integers(0, n, size=(b, n))
        flat = (idx + np.arange(b)[:, None] * n).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n).astype(float)
        done += b


def bootstrap_values(
    stats: dict[str, MetricStats], n: int, n_bootstrap: int, seed: int, extra: Callable | None = None
) -> dict[str, np.ndarray]:
    """Metric values over ``n_bootstrap`` resamples for every statistic group.

    Args:
        stats: Group -> MetricStats over the same n records.
        n: Number of records.
        n_bootstrap: Number of resamples.
        seed: RNG seed (the same seed gives the same resamples, which makes paired tests paired).
        extra: Optional ``f(weights) -> dict[name, (chunk,) array]`` for metrics that are not sums.

    Returns:
        Metric name -> (n_bootstrap,) array.
    """
    out: dict[str, list[np.ndarray]] = {}
    for w in resample_counts(n, n_bootstrap, seed):
        for group in stats.values():
            for name, v in group.aggregate(w @ group.x).items():
                out.setdefault(name, []).append(np.asarray(v, dtype=float))
        if extra is not None:
            for name, v in extra(w).items():
                out.setdefault(name, []).append(np.asarray(v, dtype=float))
    return {k: np.concatenate(v) for k, v in out.items()}


def percentile_ci(values: np.ndarray, level: float = 0.95) -> list[float]:
    """Percentile interval of bootstrap values (NaN resamples ignored)."""
    v = values[np.isfinite(values)]
    if not len(v):
        return [float("nan"), float("nan")]
    a = (1 - level) / 2
    lo, hi = np.quantile(v, [a, 1 - a])
    return [float(lo), float(hi)]


def paired_p_value(diffs: np.ndarray, observed: float) -> float:
    """Two-sided p-value of a paired bootstrap: how often a resampled difference, centred on the
    observed one, is at least as far from zero as the observed difference (null: no difference).
    """
    d = diffs[np.isfinite(diffs)]
    if not len(d) or not np.isfinite(observed):
        return float("nan")
    extreme = np.sum(np.abs(d - observed) >= abs(observed) - 1e-12)
    return float((extreme + 1) / (len(d) + 1))
