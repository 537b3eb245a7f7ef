"""Local `evaluate` module: METEOR 1.5, corpus-level (one Java process), COCO protocol.

Load offline with ``evaluate.load(meit.eval.module_path("meteor"))``. Scores are computed by
``meit.eval.evaluate_records`` (no bootstrap here), so they equal ``python -m meit.evaluate``.
"""

from meit.eval import evaluate_module


class Meteor(evaluate_module.RecordsMetric):
    """METEOR 1.5, corpus-level (one Java process), COCO protocol."""

    group = "meteor"
