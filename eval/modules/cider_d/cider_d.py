"""Local `evaluate` module: CIDEr-D (pycocoevalcap Cider), idf from the reference corpus.

Load offline with ``evaluate.load(meit.eval.module_path("cider_d"))``. Scores are computed by
``meit.eval.evaluate_records`` (no bootstrap here), so they equal ``python -m meit.evaluate``.
"""

from meit.eval import evaluate_module


class CiderD(evaluate_module.RecordsMetric):
    """CIDEr-D (pycocoevalcap Cider), idf from the reference corpus."""

    group = "cider"
