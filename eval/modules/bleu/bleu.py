"""Local `evaluate` module: BLEU-1..4, corpus-level, COCO protocol (PTBTokenizer + pycocoevalcap Bleu(4)).

Load offline with ``evaluate.load(meit.eval.module_path("bleu"))``. Scores are computed by
``meit.eval.evaluate_records`` (no bootstrap here), so they equal ``python -m meit.evaluate``.
"""

from meit.eval import evaluate_module


class Bleu(evaluate_module.RecordsMetric):
    """BLEU-1..4, corpus-level, COCO protocol (PTBTokenizer + pycocoevalcap Bleu(4))."""

    group = "bleu"
