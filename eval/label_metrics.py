"""Clinical label scores: per-label precision/recall/F1, macro-F1, Hamming loss, AUC.

Conventions:

* Label space: the 71 SCP statements (plus any other code seen in ``labels_true``), fixed, so
  Hamming loss is comparable across runs. The superclass view uses NORM/MI/STTC/CD/HYP.
* Macro-F1 averages F1 over the labels with support in the truth *or* the prediction (a label
  nobody mentions is neither right nor wrong); a label predicted but never true scores F1 0.
* Hamming loss: wrong label decisions / (records x labels in the label space).
* AUC: per label with both classes in the truth, macro-averaged. The score is binary presence
  (as PULSE reports it; AUC = (1 + TPR - FPR) / 2) unless a record carries ``label_probs``
  ({code: probability}); then that record's score for a code is its probability (0 if absent).
"""

from __future__ import annotations

import warnings

import numpy as np

from meit.data.scp import SUPERCLASSES, scp_statements, superclasses


class LabelStats:
    """Per-record label matrices over a fixed label space, with bootstrap-able aggregates."""

    def __init__(self, truth: list[set[str]], pred: list[set[str]], probs: list[dict | None], space: list[str]):
        self.space = space
        col = {c: i for i, c in enumerate(space)}
        n, k = len(truth), len(space)
        self.t = np.zeros((n, k), dtype=bool)
        self.p = np.zeros((n, k), dtype=bool)
        for r, (ts, ps) in enumerate(zip(truth, pred)):
            self.t[r, [col[c] for c in ts if c in col]] = True
            self.p[r, [col[c] for c in ps if c in col]] = True
        self.use_probs = any(pr is not None for pr in probs)
        self.s = self.p.astype(float)
        if self.use_probs:
            for r, pr in enumerate(probs):
                if pr is not None:
                    self.s[r] = [float(pr.get(c, 0.0)) for c in space]
        tp, fp, fn = self.t & self.p, ~self.t & self.p, self.t & ~self.p
        self.x = np.concatenate([tp, fp, fn, self.t], axis=1).astype(float)

    def aggregate(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """Macro-F1, Hamming loss and AUC for record weights ``w`` (B, n)."""
        k = len(self.space)
        s = w @ self.x
        tp, fp, fn, pos = s[:, :k], s[:, k : 2 * k], s[:, 2 * k : 3 * k], s[:, 3 * k :]
        total = w.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # resamples where no label has support give NaN
            support = (tp + fp + fn) > 0
            f1 = np.where(support, 2 * tp / (2 * tp + fp + fn), np.nan)
            macro = np.nanmean(np.where(support, f1, np.nan), axis=1) if k else np.full(len(w), np.nan)
            hamming = (fp + fn).sum(axis=1) / (total[:, 0] * k)
            auc = self._auc(w, tp, fp, pos, total)
        return {"label_macro_f1": macro, "label_hamming": hamming, "label_auc": auc}

    def _auc(self, w: np.ndarray, tp: np.ndarray, fp: np.ndarray, pos: np.ndarray, total: np.ndarray) -> np.ndarray:
        neg = total - pos
        valid = (pos > 0) & (neg > 0)
        if not self.use_probs:
            auc = 0.5 * (1 + tp / pos - fp / neg)
        else:
            auc = np.full(pos.shape, np.nan)
            for j in np.flatnonzero(self.t.any(axis=0) & ~self.t.all(axis=0)):
                auc[:, j] = weighted_auc(self.s[:, j], self.t[:, j], w)
        return np.nanmean(np.where(valid, auc, np.nan), axis=1) if valid.any() else np.full(len(w), np.nan)

    def per_label(self) -> dict[str, dict[str, float]]:
        """Precision, recall, F1, true support and predicted count per label with any support."""
        out = {}
        for j, code in enumerate(self.space):
            tp = int((self.t[:, j] & self.p[:, j]).sum())
            n_true, n_pred = int(self.t[:, j].sum()), int(self.p[:, j].sum())
            if n_true == 0 and n_pred == 0:
                continue
            prec = tp / n_pred if n_pred else 0.0
            rec = tp / n_true if n_true else 0.0
            f1 = 2 * tp / (n_true + n_pred)
            out[code] = {"precision": prec, "recall": rec, "f1": f1, "support": n_true, "n_pred": n_pred}
        return out


def weighted_auc(scores: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """ROC AUC (ties count 1/2) of ``scores`` against binary ``y`` under record weights ``w`` (B, n)."""
    order = np.argsort(scores, kind="stable")
    s, yy, ww = scores[order], y[order], w[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    grp = np.repeat(np.arange(len(starts)), ends - starts)
    cum_neg = np.cumsum(ww * ~yy, axis=1)
    below = np.where(starts > 0, cum_neg[:, np.maximum(starts - 1, 0)], 0.0)
    tie = cum_neg[:, ends - 1] - below
    credit = below[:, grp] + 0.5 * tie[:, grp]
    num = (ww * yy * credit).sum(axis=1)
    den = (ww * yy).sum(axis=1) * (ww * ~yy).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def label_space(truth: list[set[str]]) -> list[str]:
    """The 71 SCP codes in file order, then any other code seen in the truth, sorted."""
    codes = list(scp_statements())
    extra = sorted({c for t in truth for c in t} - set(codes))
    return codes + extra


def build_label_stats(truth: list[set[str]], pred: list[set[str]], probs: list[dict | None]) -> dict[str, LabelStats]:
    """Statement-level and superclass-level label statistics."""
    statement = LabelStats(truth, pred, probs, label_space(truth))
    sup_probs: list[dict | None] = []
    for pr in probs:
        if pr is None:
            sup_probs.append(None)
            continue
        agg: dict[str, float] = {}
        for code, v in pr.items():
            for sc in superclasses([code]):
                agg[sc] = max(agg.get(sc, 0.0), float(v))
        sup_probs.append(agg)
    superclass = LabelStats(
        [set(superclasses(t)) for t in truth], [set(superclasses(p)) for p in pred], sup_probs, list(SUPERCLASSES)
    )
    return {"statement": statement, "superclass": superclass}


class ClinicalProtocols:
    """The clinical-efficacy (CE) protocol and the labeller ceiling, bootstrap-able like :class:`LabelStats`.

    * CE: labels of the prediction against labels of the reference *text* (both from the labeller), as
      radiology report generation scores CheXbert labels. ``ce_precision`` / ``ce_recall`` / ``ce_micro_f1``
      are micro-averaged over all label decisions; ``ce_macro_f1`` averages per-label F1 over labels with
      support in the reference labels or the prediction (the ``label_macro_f1`` convention). A ratio with a zero
      denominator (e.g. precision when no label is predicted) is 0, as in the per-label table, never NaN.
    * Ceiling: ``label_ceiling_macro_f1`` is ``label_macro_f1`` with the reference text as the prediction,
      the score a generator that writes the reference would get. Only when every record has ``labels_true``.
    """

    def __init__(self, reference: list[set[str]], pred: list[set[str]], truth: list[set[str]] | None):
        space = label_space(reference + pred)
        self.ce = LabelStats(reference, pred, [None] * len(pred), space)
        self.ceiling = None
        if truth is not None:
            self.ceiling = LabelStats(truth, reference, [None] * len(pred), label_space(truth))

    def aggregate(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """CE scores (and the ceiling) for record weights ``w`` (B, n)."""
        k = len(self.ce.space)
        s = w @ self.ce.x
        tp, fp, fn = s[:, :k].sum(axis=1), s[:, k : 2 * k].sum(axis=1), s[:, 2 * k : 3 * k].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = {
                "ce_micro_f1": np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0),
                "ce_macro_f1": self.ce.aggregate(w)["label_macro_f1"],
                "ce_precision": np.where(tp + fp > 0, tp / (tp + fp), 0.0),  # nothing predicted: 0, as per label
                "ce_recall": np.where(tp + fn > 0, tp / (tp + fn), 0.0),
            }
        if self.ceiling is not None:
            out["label_ceiling_macro_f1"] = self.ceiling.aggregate(w)["label_macro_f1"]
        return out
