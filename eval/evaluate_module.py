"""The base of MEIT's local `evaluate` modules (`eval/modules/<name>/<name>.py`).

Each module is a subclass naming its metric group; scores come from `meit.eval.evaluate_records` (no bootstrap),
so they equal `python -m meit.evaluate`. Modules import this module, not the class: `evaluate.load` takes
the first metric class in a module's namespace, which must be the module's own subclass.
Keep `import datasets` and `import evaluate` on separate lines.
"""

import datasets
import evaluate

from meit.eval.core import evaluate_records

_KWARGS = """
Args:
    predictions: list of generated reports (str).
    references: list of reference reports (str).
Returns:
    dict of metric name -> float.
"""


class RecordsMetric(evaluate.Metric):
    """An `evaluate.Metric` over (prediction, reference) strings scored by `evaluate_records`.

    Subclasses set `group` (a metric group of `evaluate_records`) and a one-line docstring (the description).
    """

    group: str = ""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=self.__doc__ or "",
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        return self.score(predictions, references)

    def score(self, predictions: list[str], references: list[str], bertscore_model: str | None = None) -> dict:
        """Corpus-level scores of this module's group (bookkeeping keys left out)."""
        pairs = enumerate(zip(predictions, references))
        records = [{"id": str(i), "prediction": p, "reference": r} for i, (p, r) in pairs]
        out = evaluate_records(records, bertscore_model=bertscore_model, n_bootstrap=0, metrics=[self.group])
        return {k: v for k, v in out.items() if k not in ("n_bootstrap", "seed", "labels")}
