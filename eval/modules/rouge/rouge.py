"""Local `evaluate` module: ROUGE-1/2 F (rouge-score) and ROUGE-L (pycocoevalcap), mean over records.

Load offline with ``evaluate.load(meit.eval.module_path("rouge"))``. Scores are computed by
``meit.eval.evaluate_records`` (no bootstrap here), so they equal ``python -m meit.evaluate``.
"""

from meit.eval import evaluate_module


class Rouge(evaluate_module.RecordsMetric):
    """ROUGE-1/2 F (rouge-score) and ROUGE-L (pycocoevalcap), mean over records."""

    group = "rouge"
