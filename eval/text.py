"""Corpus-level text metrics (COCO-caption protocol) as per-record sufficient statistics.

Every metric is split into two parts:

* a per-record statistic matrix ``X`` of shape ``(n, k)`` computed once (this is where the
  Java scorers run: one PTBTokenizer call and one METEOR process per evaluation), and
* an aggregator ``f(S) -> score`` over the column sums ``S = w @ X`` for record weights ``w``.

With ``w = 1`` the aggregator gives the corpus score; with bootstrap resample counts as
``w`` it gives the score of a resample without rerunning any scorer.

* BLEU-1..4: per record the hypothesis length, the (closest) reference length, and the
  clipped n-gram matches and n-gram counts for n = 1..4; corpus BLEU as pycocoevalcap's
  ``BleuScorer.compute_score(option="closest")`` (same ``tiny``/``small`` smoothing constants).
* METEOR 1.5: per record the 23 sufficient statistics that ``meteor-1.5.jar -stdio`` returns
  for ``SCORE`` lines; the corpus score is METEOR's aggregate over summed statistics (what
  pycocoevalcap's ``Meteor.compute_score`` returns), re-implemented here with the jar's
  English defaults and checked against the jar's own ``EVAL`` result.
* ROUGE-L: pycocoevalcap ``Rouge`` per record (beta 1.2), mean over records.
* ROUGE-1/2: rouge-score F-measure per record, mean over records.
* CIDEr-D: pycocoevalcap ``Cider`` per record, with document frequencies from the full
  reference corpus (held fixed under resampling), mean over records.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BLEU_SMALL = 1e-9
BLEU_TINY = 1e-15
# METEOR 1.5 parameters for "-l en" (task "default"): alpha, beta, gamma, delta and the
# module weights of the exact, stem, synonym and paraphrase stages.
METEOR_ALPHA, METEOR_BETA, METEOR_GAMMA, METEOR_DELTA = 0.85, 0.2, 0.6, 0.75
METEOR_WEIGHTS = (1.0, 0.6, 0.8, 0.6)
METEOR_N_STATS = 4 + 4 * len(METEOR_WEIGHTS) + 3

Aggregator = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass
class MetricStats:
    """Per-record statistics ``x`` (n, k) and an aggregator from column sums (B, k) to named scores (B,)."""

    x: np.ndarray
    aggregate: Aggregator
    point: dict[str, float] = field(default_factory=dict)

    def corpus(self) -> dict[str, float]:
        """The corpus-level scores (all records weighted once)."""
        sums = self.x.sum(axis=0, keepdims=True)
        return {k: float(v[0]) for k, v in self.aggregate(sums).items()}


def _pycoco_dir(sub: str) -> Path:
    import pycocoevalcap

    return Path(list(pycocoevalcap.__path__)[0]) / sub


def ptb_tokenize(texts: list[str]) -> list[str]:
    """Tokenize with pycocoevalcap's PTBTokenizer (lower-cased, punctuation removed), one JVM call.

    Args:
        texts: Raw strings; empty strings stay empty.

    Returns:
        The tokenized strings, in input order.
    """
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if not texts:
        return []
    captions = {i: [{"caption": t}] for i, t in enumerate(texts)}
    out = PTBTokenizer().tokenize(captions)
    return [out.get(i, [""])[0] for i in range(len(texts))]


# ---------------------------------------------------------------------------- BLEU


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def bleu_stats(hyps: list[str], refs: list[str], n: int = 4) -> MetricStats:
    """BLEU sufficient statistics per record: [testlen, reflen, guess_1..n, correct_1..n].

    Args:
        hyps: Tokenized hypotheses.
        refs: Tokenized references (one per record).
        n: Maximum n-gram order.

    Returns:
        MetricStats whose aggregator yields ``bleu_1`` .. ``bleu_n``.
    """
    x = np.zeros((len(hyps), 2 + 2 * n))
    for r, (h, ref) in enumerate(zip(hyps, refs)):
        hw, rw = h.split(), ref.split()
        x[r, 0], x[r, 1] = len(hw), len(rw)
        for k in range(1, n + 1):
            hc, rc = _ngrams(hw, k), _ngrams(rw, k)
            x[r, 1 + k] = max(0, len(hw) - k + 1)
            x[r, 1 + n + k] = sum(min(c, rc[g]) for g, c in hc.items())

    def aggregate(s: np.ndarray) -> dict[str, np.ndarray]:
        testlen, reflen = s[:, 0], s[:, 1]
        ratio = (testlen + BLEU_TINY) / (reflen + BLEU_SMALL)
        bp = np.where(ratio < 1, np.exp(1 - 1 / np.maximum(ratio, 1e-300)), 1.0)
        out, prod = {}, np.ones(len(s))
        for k in range(1, n + 1):
            prod = prod * (s[:, 1 + n + k] + BLEU_TINY) / (s[:, 1 + k] + BLEU_SMALL)
            out[f"bleu_{k}"] = prod ** (1.0 / k) * bp
        return out

    return MetricStats(x, aggregate)


# ---------------------------------------------------------------------------- METEOR


class MeteorProcess:
    """One ``meteor-1.5.jar -stdio`` process (the JVM starts once; ~7 s with its paraphrase table).

    Start it early: it loads while the other metrics are computed. Use as a context manager
    or call :meth:`close`.
    """

    def __init__(self) -> None:
        cmd = ["java", "-jar", "-Xmx2G", "meteor-1.5.jar", "-", "-", "-stdio", "-l", "en", "-norm"]
        self._p = subprocess.Popen(
            cmd, cwd=_pycoco_dir("meteor"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self._lock = threading.Lock()

    @staticmethod
    def _clean(text: str) -> str:
        return re.sub(r"\s+", " ", text.replace("|||", "")).strip()

    def _exchange(self, lines: list[str], n_answers: int) -> list[str]:
        assert self._p.stdin is not None and self._p.stdout is not None
        if self._p.poll() is not None:
            raise RuntimeError(f"METEOR process exited with code {self._p.returncode}")
        payload = "".join(line + "\n" for line in lines).encode()

        def write() -> None:
            self._p.stdin.write(payload)
            self._p.stdin.flush()

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        answers = [self._p.stdout.readline().decode().strip() for _ in range(n_answers)]
        writer.join()
        if any(a == "" for a in answers):
            raise RuntimeError("METEOR process returned no answer (crashed?)")
        return answers

    def stats(self, hyps: list[str], refs: list[str]) -> np.ndarray:
        """METEOR sufficient statistics, one row of 23 numbers per (hypothesis, reference) pair."""
        lines = [f"SCORE ||| {self._clean(r)} ||| {self._clean(h)}" for h, r in zip(hyps, refs)]
        with self._lock:
            answers = self._exchange(lines, len(lines))
        x = np.array([[float(v) for v in a.split()] for a in answers]).reshape(len(lines), -1)
        if len(lines) and x.shape[1] != METEOR_N_STATS:
            raise RuntimeError(f"unexpected METEOR statistics width {x.shape[1]}")
        return x

    def eval_stats(self, x: np.ndarray) -> tuple[list[float], float]:
        """The jar's own per-segment and aggregate scores for statistic rows ``x``."""
        rows = [" ".join(f"{v:.1f}" for v in row) for row in x]
        with self._lock:
            answers = self._exchange(["EVAL ||| " + " ||| ".join(rows)], len(rows) + 1)
        return [float(a) for a in answers[:-1]], float(answers[-1])

    def close(self) -> None:
        """Stop the JVM."""
        if self._p.poll() is None:
            assert self._p.stdin is not None
            self._p.stdin.close()
            self._p.kill()
            self._p.wait()

    def __enter__(self) -> MeteorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def meteor_from_stats(s: np.ndarray) -> np.ndarray:
    """METEOR 1.5 score from (summed) statistic rows ``s`` (B, 23), as the jar computes it."""
    s = np.atleast_2d(s)
    n_stages = len(METEOR_WEIGHTS)
    tlen, rlen, tfun, rfun = s[:, 0], s[:, 1], s[:, 2], s[:, 3]
    tm = np.zeros(len(s))
    rm = np.zeros(len(s))
    for i, w in enumerate(METEOR_WEIGHTS):
        tc, rc, tf, rf = (s[:, 4 + 4 * i + j] for j in range(4))
        tm += w * (METEOR_DELTA * tc + (1 - METEOR_DELTA) * tf)
        rm += w * (METEOR_DELTA * rc + (1 - METEOR_DELTA) * rf)
    twl = METEOR_DELTA * (tlen - tfun) + (1 - METEOR_DELTA) * tfun
    rwl = METEOR_DELTA * (rlen - rfun) + (1 - METEOR_DELTA) * rfun
    base = 4 + 4 * n_stages
    chunks, twm, rwm = s[:, base], s[:, base + 1], s[:, base + 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(twl > 0, tm / twl, 0.0)
        r = np.where(rwl > 0, rm / rwl, 0.0)
        fmean = np.where((p > 0) & (r > 0), p * r / (METEOR_ALPHA * p + (1 - METEOR_ALPHA) * r), 0.0)
        exact = (twm == tlen) & (rwm == rlen) & (chunks == 1)
        frag = np.where(exact | (twm + rwm == 0), 0.0, chunks / ((twm + rwm) / 2))
    return fmean * (1 - METEOR_GAMMA * frag**METEOR_BETA)


def meteor_stats(hyps: list[str], refs: list[str], meteor: MeteorProcess) -> MetricStats:
    """METEOR statistics from one process; the point estimate is the jar's own aggregate score."""
    x = meteor.stats(hyps, refs) if hyps else np.zeros((0, METEOR_N_STATS))
    base = 4 + 4 * len(METEOR_WEIGHTS)
    # The jar adds no chunks for a perfectly matched segment when it aggregates statistics.
    perfect = (x[:, base + 1] == x[:, 0]) & (x[:, base + 2] == x[:, 1]) & (x[:, base] == 1)
    x = x.copy()
    x[perfect, base] = 0.0
    stats = MetricStats(x, lambda s: {"meteor": meteor_from_stats(s)})
    if len(x):
        stats.point["meteor"] = meteor.eval_stats(x)[1]  # identical to meteor_from_stats(x.sum(0))
    return stats


# ---------------------------------------------------------------------------- ROUGE / CIDEr


class _UnicodeRougeTokenizer:
    """rouge-score's default tokenization (lower-case, alphanumeric runs), keeping non-ASCII letters (ä, ü, ß)."""

    _word = re.compile(r"[^\W_]+")

    def tokenize(self, text: str) -> list[str]:
        return self._word.findall(text.lower())


def _mean_stats(x: np.ndarray, names: list[str]) -> MetricStats:
    def aggregate(s: np.ndarray) -> dict[str, np.ndarray]:
        return {name: s[:, i] / s[:, -1] for i, name in enumerate(names)}

    return MetricStats(np.column_stack([x, np.ones(len(x))]), aggregate)


def rouge_stats(raw_hyps: list[str], raw_refs: list[str], tok_hyps: list[str], tok_refs: list[str]) -> MetricStats:
    """ROUGE-1/2 F (rouge-score, raw text) and ROUGE-L (pycocoevalcap, PTB-tokenized), per record."""
    from pycocoevalcap.rouge.rouge import Rouge
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rouge1", "rouge2"], tokenizer=_UnicodeRougeTokenizer())
    rl = Rouge()
    x = np.zeros((len(raw_hyps), 3))
    for i, (h, r) in enumerate(zip(raw_hyps, raw_refs)):
        sc = scorer.score(r, h)
        x[i, 0], x[i, 1] = sc["rouge1"].fmeasure, sc["rouge2"].fmeasure
        x[i, 2] = rl.calc_score([tok_hyps[i]], [tok_refs[i]])
    return _mean_stats(x, ["rouge_1", "rouge_2", "rouge_l"])


def cider_stats(tok_hyps: list[str], tok_refs: list[str]) -> MetricStats:
    """CIDEr-D per record (pycocoevalcap ``Cider``, idf from the full reference corpus)."""
    from pycocoevalcap.cider.cider import Cider

    if not tok_hyps:
        return _mean_stats(np.zeros((0, 1)), ["cider_d"])
    gts = {i: [r] for i, r in enumerate(tok_refs)}
    res = {i: [h] for i, h in enumerate(tok_hyps)}
    _, scores = Cider().compute_score(gts, res)
    return _mean_stats(np.asarray(scores, dtype=float).reshape(-1, 1), ["cider_d"])


TEXT_GROUPS = ("bleu", "meteor", "rouge", "cider")


def text_stats(
    hyps: list[str], refs: list[str], groups: tuple[str, ...] = TEXT_GROUPS, meteor: MeteorProcess | None = None
) -> dict[str, MetricStats]:
    """All requested text-metric statistics for one prediction set.

    Args:
        hyps: Raw predictions.
        refs: Raw references.
        groups: Subset of ``("bleu", "meteor", "rouge", "cider")``.
        meteor: A running METEOR process to reuse; one is started (and stopped) otherwise.

    Returns:
        Group name -> MetricStats.
    """
    own = meteor is None and "meteor" in groups
    if own:
        meteor = MeteorProcess()  # the JVM loads while the Python metrics run
    try:
        tokens = ptb_tokenize(list(hyps) + list(refs))
        th, tr = tokens[: len(hyps)], tokens[len(hyps) :]
        out: dict[str, MetricStats] = {}
        if "bleu" in groups:
            out["bleu"] = bleu_stats(th, tr)
        if "rouge" in groups:
            out["rouge"] = rouge_stats(hyps, refs, th, tr)
        if "cider" in groups:
            out["cider"] = cider_stats(th, tr)
        if "meteor" in groups:
            assert meteor is not None
            out["meteor"] = meteor_stats(th, tr, meteor)
        return out
    finally:
        if own and meteor is not None:
            meteor.close()


def java_available() -> bool:
    """Whether a ``java`` executable is on PATH (METEOR and the PTB tokenizer need it)."""
    return any(os.access(os.path.join(d, "java"), os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep))
