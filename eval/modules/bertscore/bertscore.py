"""Local `evaluate` module: BERTScore P/R/F1 (bert-score; offline MiniLM by default, `model` argument to change).

Load offline with ``evaluate.load(meit.eval.module_path("bertscore"))``. Scores are computed by
``meit.eval.evaluate_records`` (no bootstrap here), so they equal ``python -m meit.evaluate``.
"""

from meit.eval import evaluate_module


class Bertscore(evaluate_module.RecordsMetric):
    """BERTScore P/R/F1 (bert-score; offline MiniLM by default, `model` argument to change)."""

    group = "bertscore"

    def _compute(self, predictions, references, model: str | None = None):
        return self.score(predictions, references, bertscore_model=model)
