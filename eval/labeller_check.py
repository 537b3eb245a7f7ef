"""How well the report labeller reads real reports: ``extract_labels(report)`` against PTB-XL's ``scp_codes``.

``python -m meit.evaluate labeller --ptbxl-database PATH/ptbxl_database.csv [--folds 1 2 ...] [--json]`` scores every
row (or the rows of the given ``strat_fold`` values):
micro/macro F1 over the SCP statements, per-code precision/recall/support, superclass scores, and the
same split by report language (German, English, Swedish). Every code a row lists counts as true,
whatever its likelihood (the pipeline's ``labels_true`` convention; see docs/METRICS.md).
"""

from __future__ import annotations

import ast
import csv
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from meit.data.scp import SUPERCLASSES, superclasses

from .label_metrics import LabelStats, label_space
from .labels import extract_labels, normalise
from .text_classifier import cross_fitted_codes

MIN_SUPPORT = 20
_SWEDISH = re.compile(r"sinusrytm|foermaks|vaenster|hoeger|skaenkel|normalt ekg|avvikande|misstaenkt|\bej\b|\boch\b")
_GERMAN = re.compile(
    r"rhythmus|lagetyp|linkstyp|rechtstyp|\bekg\b|schenkelblock|infarkt|vorhof|\bund\b|abnorm\b|sinusbradykardie"
    r"|sinustachykardie"
)


def report_language(text: str) -> str:
    """``"sv"``, ``"de"`` or ``"en"`` from the report's wording (PTB-XL reports are in one of the three)."""
    t = normalise(text)
    if _SWEDISH.search(t):
        return "sv"
    return "de" if _GERMAN.search(t) else "en"


class PtbxlRow(NamedTuple):
    """One row of a ptbxl_database.csv as the check reads it."""

    ecg_id: str
    report: str
    codes: set[str]
    fold: int | None  # strat_fold; None when the file has no such column


def _fold(path: Path, lineno: int, value: str) -> int:
    try:
        return int(float(value))
    except ValueError:
        raise ValueError(f"{path}:{lineno}: strat_fold is not a number ({value!r})") from None


def read_ptbxl_rows(
    path: str | Path, min_likelihood: float = 0.0, folds: Sequence[int] | None = None
) -> list[PtbxlRow]:
    """Every row of a ptbxl_database.csv (or the rows of the given folds) with its true codes.

    Args:
        path: The CSV (columns ``ecg_id``, ``report``, ``scp_codes``; ``strat_fold`` when ``folds`` is given).
        min_likelihood: A code is true when its likelihood is at least this, or 0 (PTB-XL's "unquantified",
            given to rhythm and form statements). 0: every listed code (the ``labels_true`` convention).
        folds: Only the rows whose ``strat_fold`` is one of these (e.g. ``[1, 2, 3, 4]`` for one half of the
            dev rows); None: every row.

    Raises:
        ValueError: naming the file and row when a column is missing or ``scp_codes`` is not a dict literal;
            naming the folds when ``strat_fold`` is missing or a requested fold has no rows.
    """
    path = Path(path)
    wanted = None if folds is None else {int(x) for x in folds}
    rows = []
    seen: set[int] = set()
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"ecg_id", "report", "scp_codes"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        has_folds = "strat_fold" in (reader.fieldnames or [])
        if wanted is not None and not has_folds:
            raise ValueError(f"{path}: --folds needs a strat_fold column, and the file has none")
        for lineno, row in enumerate(reader, start=2):
            fold = _fold(path, lineno, row["strat_fold"]) if has_folds else None
            if wanted is not None:
                if fold not in wanted:
                    continue
                seen.add(fold)
            try:
                codes = ast.literal_eval(row["scp_codes"])
            except (ValueError, SyntaxError) as e:
                raise ValueError(f"{path}:{lineno}: scp_codes is not a dict literal ({e})") from e
            if not isinstance(codes, dict):
                raise ValueError(f"{path}:{lineno}: scp_codes is not a dict")
            true = {str(c).strip() for c, v in codes.items() if float(v) == 0 or float(v) >= min_likelihood}
            rows.append(PtbxlRow(row["ecg_id"], row["report"], true, fold))
    if wanted is not None and wanted - seen:
        raise ValueError(f"{path}: no rows of strat_fold {sorted(wanted - seen)}")
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def _scores(truth: list[set[str]], pred: list[set[str]]) -> dict:
    stats = LabelStats(truth, pred, [None] * len(truth), label_space(truth))
    tp, t, p = (stats.t & stats.p).sum(0), stats.t.sum(0), stats.p.sum(0)
    micro = 2 * tp.sum() / max(t.sum() + p.sum(), 1)
    frequent = t >= MIN_SUPPORT
    f1 = np.where(t + p > 0, 2 * tp / np.maximum(t + p, 1), np.nan)
    macro = float(np.nanmean(f1[frequent])) if frequent.any() else float("nan")
    sup = LabelStats([set(superclasses(x)) for x in truth], [set(superclasses(x)) for x in pred],
                     [None] * len(truth), list(SUPERCLASSES))
    stp, st, sp = (sup.t & sup.p).sum(0), sup.t.sum(0), sup.p.sum(0)
    sup_f1 = {c: float(2 * stp[j] / (st[j] + sp[j])) for j, c in enumerate(SUPERCLASSES) if st[j] + sp[j] > 0}
    return {
        "n": len(truth),
        "micro_f1": float(micro),
        f"macro_f1_support_ge_{MIN_SUPPORT}": macro,
        "n_codes_support_ge_20": int(frequent.sum()),
        "superclass_macro_f1": float(np.mean(list(sup_f1.values()))) if sup_f1 else float("nan"),
        "superclass_f1": sup_f1,
        "per_code": stats.per_label(),
    }


def _by_language(truth: list[set[str]], pred: list[set[str]], langs: list[str]) -> dict:
    out = {}
    for lang in ("de", "en", "sv"):
        idx = [i for i, x in enumerate(langs) if x == lang]
        if idx:
            res = _scores([truth[i] for i in idx], [pred[i] for i in idx])
            res.pop("per_code")
            out[lang] = res
    return out


def check_labeller(
    path: str | Path,
    min_likelihood: float = 0.0,
    folds: Sequence[int] | None = None,
    text_classifier: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Labeller scores on a ptbxl_database.csv: overall and per report language (see :func:`read_ptbxl_rows`).

    Args:
        path: The ptbxl_database.csv.
        min_likelihood: See :func:`read_ptbxl_rows`.
        folds: Only these ``strat_fold`` values; None: every row.
        text_classifier: Also score a supervised text classifier cross-fitted by ``strat_fold``
            (:mod:`meit.eval.text_classifier`): an estimate of how much of the coding the text carries.
        progress: Called with a line per fold of the text classifier, if given.

    Returns:
        ``n``, ``micro_f1``, ``macro_f1_support_ge_20``, superclass scores, ``per_code`` and ``by_language``;
        ``folds`` (sorted list, or None) says which rows were scored; with ``text_classifier``, the same scores of
        the classifier under ``"text_classifier"``.

    Raises:
        ValueError: as :func:`read_ptbxl_rows`; and for ``text_classifier`` when the file has no ``strat_fold``
            column or the rows come from one fold only.
    """
    rows = read_ptbxl_rows(path, min_likelihood, folds)
    truth = [row.codes for row in rows]
    pred = [extract_labels(row.report) for row in rows]
    langs = [report_language(row.report) for row in rows]
    scored = None if folds is None else sorted({int(x) for x in folds})
    out = {"database": str(path), "min_likelihood": min_likelihood, "folds": scored, **_scores(truth, pred)}
    out["by_language"] = _by_language(truth, pred, langs)
    if text_classifier:
        if rows[0].fold is None:
            raise ValueError(f"{path}: --text-classifier is cross-fitted by strat_fold, and the file has no strat_fold")
        reports, row_folds = [row.report for row in rows], [row.fold for row in rows]
        learned = cross_fitted_codes(reports, truth, pred, row_folds, progress)
        out["text_classifier"] = {**_scores(truth, learned), "by_language": _by_language(truth, learned, langs)}
    return out


def _summary_lines(label: str, result: dict) -> list[str]:
    key = f"macro_f1_support_ge_{MIN_SUPPORT}"
    lines = []
    for name, res in [("all", result), *result["by_language"].items()]:
        lines.append(f"{label:<9}{name:<5}{res['n']:>6}{res['micro_f1']:>10.3f}{res[key]:>11.3f}"
                     f"{res['superclass_macro_f1']:>12.3f}")
    return lines


def format_check(result: dict) -> str:
    """The check as plain text: summary, languages, then per-code rows by support."""
    folds = result.get("folds")
    clf = result.get("text_classifier")
    where = "" if folds is None else ", strat_fold " + " ".join(str(x) for x in folds)
    lines = [f"labeller check on {result['database']} (n = {result['n']}{where}, true codes: likelihood 0 or"
             f" >= {result['min_likelihood']:g})", ""]
    lines.append(f"{'labeller':<9}{'set':<5}{'n':>6}{'micro_f1':>10}{'macro_f1*':>11}{'superclass':>12}")
    lines += _summary_lines("rules", result)
    if clf:
        lines += _summary_lines("learned", clf)
    lines.append(f"* macro-F1 over the {result['n_codes_support_ge_20']} codes with >= {MIN_SUPPORT} true occurrences")
    lines.append("superclass F1: " + ", ".join(f"{c} {v:.3f}" for c, v in result["superclass_f1"].items()))
    if clf:
        lines.append("learned: a text classifier (n-grams + the rules' codes) trained on the other strat_folds' rows,"
                     " an estimate of what the text carries")
    head = f"{'code':<9}{'support':>8}{'n_pred':>8}{'precision':>11}{'recall':>8}{'f1':>7}"
    lines += ["", head + (f"{'learned_f1':>12}" if clf else "")]
    for code, s in sorted(result["per_code"].items(), key=lambda kv: -kv[1]["support"]):
        row = f"{code:<9}{s['support']:>8}{s['n_pred']:>8}{s['precision']:>11.3f}{s['recall']:>8.3f}{s['f1']:>7.3f}"
        if clf:
            row += f"{clf['per_code'][code]['f1']:>12.3f}"  # the same codes: both score the same truth
        lines.append(row)
    return "\n".join(lines) + "\n"
