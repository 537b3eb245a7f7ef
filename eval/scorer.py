"""`Scorer`: `evaluate_records` / `compare_records` with one METEOR process shared by many calls (its JVM starts
once), for the commands that score many prediction sets (robustness sweeps, zero-shot tables, comparisons)."""

from __future__ import annotations

from typing import Any

from .core import compare_records, evaluate_records, resolve_groups
from .text import MeteorProcess


class Scorer:
    """Scores prediction rows (and compares pairs) with shared settings and one METEOR process.

    Args:
        bertscore_model: BERTScore model (None: the offline MiniLM).
        n_bootstrap: bootstrap resamples for the 95 % CIs.
        seed: bootstrap seed.
        metrics: metric groups or keys (None: all); METEOR's process starts only when METEOR is asked for.
    """

    def __init__(self, bertscore_model: str | None = None, n_bootstrap: int = 1000, seed: int = 0,
                 metrics: list[str] | None = None) -> None:
        self.bertscore_model, self.n_bootstrap, self.seed, self.metrics = bertscore_model, n_bootstrap, seed, metrics
        self._meteor: MeteorProcess | None = None

    def _options(self) -> dict[str, Any]:
        if self._meteor is None and "meteor" in resolve_groups(self.metrics):
            self._meteor = MeteorProcess()
        return {"bertscore_model": self.bertscore_model, "n_bootstrap": self.n_bootstrap, "seed": self.seed,
                "metrics": self.metrics, "meteor": self._meteor}

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """All metrics of `rows` with 95 % CIs (`evaluate_records`)."""
        return evaluate_records(rows, **self._options())

    def compare(self, rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]]) -> dict[str, Any]:
        """Paired bootstrap of A against B (`compare_records`)."""
        return compare_records(rows_a, rows_b, **self._options())

    def close(self) -> None:
        """Stops the METEOR process."""
        if self._meteor is not None:
            self._meteor.close()
            self._meteor = None

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
