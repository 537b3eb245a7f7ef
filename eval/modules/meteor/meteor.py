"""Local `evaluate` module: METEOR 1.5, corpus-level (one Java process), COCO protocol.

Load offline with ``evaluate.load(meit.eval.module_path("meteor"))``. Scores are computed by
``meit.eval.evaluate_records`` (no bootstrap here), so they equal ``python -m meit.evaluate``.
"""

import datasets
import evaluate
from meit.eval import evaluate_records

_DESCRIPTION = "METEOR 1.5, corpus-level (one Java process), COCO protocol."
_KWARGS = """
Args:
    predictions: list of generated reports (str).
    references: list of reference reports (str).
Returns:
    dict of metric name -> float.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Meteor(evaluate.Metric):
    """METEOR 1.5, corpus-level (one Java process), COCO protocol."""

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
        out = evaluate_records(records, n_bootstrap=0, metrics=["meteor"])
        return {k: v for k, v in out.items() if k not in ("n_bootstrap", "seed", "labels")}
