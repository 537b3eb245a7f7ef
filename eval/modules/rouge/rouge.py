"""Local `evaluate` module: ROUGE-1/2 F (rouge-score) and ROUGE-L (pycocoevalcap), mean over records.

Load offline with ``evaluate.load(meit.eval.module_path("rouge"))``. Scores are computed by
``meit.eval.evaluate_records`` (no bootstrap here), so they equal ``python -m meit.evaluate``.
"""

import datasets
import evaluate
from meit.eval import evaluate_records

_DESCRIPTION = "ROUGE-1/2 F (rouge-score) and ROUGE-L (pycocoevalcap), mean over records."
_KWARGS = """
Args:
    predictions: list of generated reports (str).
    references: list of reference reports (str).
Returns:
    dict of metric name -> float.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Rouge(evaluate.Metric):
    """ROUGE-1/2 F (rouge-score) and ROUGE-L (pycocoevalcap), mean over records."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        records = [
            {"id": str(i), "prediction": p, "reference": r} for i, (p, r) in enumerate(zip(predictions, references))
        ]
        out = evaluate_records(records, n_bootstrap=0, metrics=["rouge"])
        return {k: v for k, v in out.items() if k not in ("n_bootstrap", "seed", "labels")}
