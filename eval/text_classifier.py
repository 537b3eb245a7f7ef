"""How much of PTB-XL's coding the report text carries: a supervised text classifier, cross-fitted by fold.

The rule labeller (``meit.eval.labels``) is read against PTB-XL's ``scp_codes``, which cardiologists annotated
from the signal as well as the text. Where both disagree, is the labeller missing a phrase, or does the text not
say it? This module estimates the second: for every ``strat_fold``, a classifier trained on the *other* folds'
rows (TF-IDF character and word n-grams of the normalised report, plus the rule labeller's codes; one logistic
regression per code) predicts the held-out fold's codes. Each code's decision threshold for a fold is the one
with the best F1 on the out-of-fold predictions of the other folds' rows, not on the fold it scores.

A code this classifier cannot predict either (AMI, INJAL, ...) is one the report text does not carry; a code
where it beats the rules by a wide margin points at phrasing the tables miss. It is an estimate, not a bound:
a stronger model or more rows could do better (a user with the full 21,799-row PTB-XL gets a firmer estimate).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.sparse import csr_matrix, hstack

from .labels import normalise

THRESHOLDS = np.round(np.arange(0.1, 0.91, 0.05), 2)
MIN_TRAIN_POSITIVES = 3  # a code with fewer true rows in the training folds is never predicted


def _features(train: list[str], test: list[str], rules_train: np.ndarray, rules_test: np.ndarray):
    # sklearn is imported here, not at module level, for start-up time: only --text-classifier needs it
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_union

    vec = make_union(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True),
        TfidfVectorizer(analyzer="word", ngram_range=(1, 3), min_df=2, sublinear_tf=True),
    )
    x_train, x_test = vec.fit_transform(train), vec.transform(test)
    return hstack([x_train, csr_matrix(rules_train)]).tocsr(), hstack([x_test, csr_matrix(rules_test)]).tocsr()


def _best_threshold(truth: np.ndarray, prob: np.ndarray) -> float:
    f1 = [2 * (truth & (prob >= t)).sum() / max(truth.sum() + (prob >= t).sum(), 1) for t in THRESHOLDS]
    return float(THRESHOLDS[int(np.argmax(f1))])


def out_of_fold_probabilities(
    reports: Sequence[str],
    truth: np.ndarray,
    folds: Sequence[int],
    rules: np.ndarray,
    progress: Callable[[str], None] | None = None,
) -> np.ndarray:
    """P(code | report) for every row from a model trained on the rows of the other folds.

    Args:
        reports: Normalised report texts.
        truth: ``(n_rows, n_codes)`` 0/1 matrix of the true codes.
        folds: The fold of each row.
        rules: ``(n_rows, n_codes)`` 0/1 matrix of the rule labeller's codes (features beside the n-grams).
        progress: Called with one line per fold, if given.

    Returns:
        ``(n_rows, n_codes)`` probabilities; 0 for a code with under ``MIN_TRAIN_POSITIVES`` training rows, 1 for
        one true in every training row.
    """
    # for start-up time, as in _features
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.utils.parallel import Parallel, delayed

    folds_arr = np.asarray(folds)
    distinct = sorted(set(folds_arr.tolist()))
    prob = np.zeros(truth.shape, dtype=float)
    for k, fold in enumerate(distinct):
        test = folds_arr == fold
        train = ~test
        x_train, x_test = _features(
            [reports[i] for i in np.flatnonzero(train)], [reports[i] for i in np.flatnonzero(test)],
            rules[train], rules[test],
        )
        positives = truth[train].sum(0)
        prob[np.ix_(test, positives == train.sum())] = 1.0  # true in every training row: nothing to learn
        fit = [j for j in range(truth.shape[1]) if MIN_TRAIN_POSITIVES <= positives[j] < train.sum()]
        template = LogisticRegression(C=10.0, solver="liblinear", max_iter=2000, random_state=0)
        # processes, not threads: liblinear corrupts memory when fitted from several threads at once
        models = Parallel(n_jobs=-1, max_nbytes=None)(
            delayed(clone(template).fit)(x_train, truth[train, j]) for j in fit
        )
        for j, model in zip(fit, models, strict=True):
            prob[test, j] = model.predict_proba(x_test)[:, 1]
        if progress:
            progress(f"text classifier: fold {fold} done ({k + 1} of {len(distinct)})")
    return prob


def cross_fitted_codes(
    reports: Sequence[str],
    truth: list[set[str]],
    rule_codes: list[set[str]],
    folds: Sequence[int],
    progress: Callable[[str], None] | None = None,
) -> list[set[str]]:
    """Codes the cross-fitted text classifier gives each row (see the module docstring).

    Args:
        reports: The reports as the database holds them.
        truth: The true codes of each row.
        rule_codes: ``extract_labels(report)`` of each row (features beside the n-grams; the caller has them).
        folds: The ``strat_fold`` of each row; at least two distinct folds.
        progress: Called with one line per fold, if given.

    Raises:
        ValueError: when the rows come from fewer than two folds (nothing to train on).
    """
    distinct = sorted(set(folds))
    if len(distinct) < 2:
        raise ValueError(f"the text classifier is cross-fitted by fold and needs two folds or more, got {distinct}")
    codes = sorted(set().union(*truth))
    index = {c: j for j, c in enumerate(codes)}
    y = np.zeros((len(truth), len(codes)), dtype=int)
    r = np.zeros_like(y)
    for i, (true, ruled) in enumerate(zip(truth, rule_codes, strict=True)):
        y[i, [index[c] for c in true]] = 1
        r[i, [index[c] for c in ruled if c in index]] = 1
    prob = out_of_fold_probabilities([normalise(t) for t in reports], y, folds, r, progress)
    folds_arr = np.asarray(folds)
    pred = np.zeros_like(y, dtype=bool)
    for fold in distinct:
        held, rest = folds_arr == fold, folds_arr != fold
        for j in range(len(codes)):
            pred[held, j] = prob[held, j] >= _best_threshold(y[rest, j].astype(bool), prob[rest, j])
    return [{codes[j] for j in np.flatnonzero(row)} for row in pred]


__all__ = ["out_of_fold_probabilities", "cross_fitted_codes"]
