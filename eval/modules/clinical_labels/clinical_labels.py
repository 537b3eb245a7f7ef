"""Local `evaluate` module: Clinical SCP label scores (macro-F1, Hamming loss, AUC) from report text.

Load offline with ``evaluate.load(meit.eval.module_path("clinical_labels"))``. Scores are computed by
``meit.eval.evaluate_records`` (no bootstrap here), so they equal ``python -m meit.evaluate``.
"""

from meit.eval import evaluate_module


class ClinicalLabels(evaluate_module.RecordsMetric):
    """Clinical SCP label scores (macro-F1, Hamming loss, AUC) from report text."""

    group = "labels"
