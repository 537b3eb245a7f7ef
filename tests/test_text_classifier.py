"""The cross-fitted text classifier of the labeller check (``--text-classifier``): it learns from the other
folds' codes, never from the scored fold's own, and refuses data it cannot cross-fit."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from meit.eval.labeller_check import check_labeller
from meit.eval.labels import extract_labels
from meit.eval.text_classifier import cross_fitted_codes
from meit.evaluate import main

SAMPLE = Path(__file__).parent / "fixtures" / "ptbxl-reports-sample" / "ptbxl_database.csv"


def _rows(n_folds: int = 4, per_fold: int = 20) -> tuple[list[str], list[set[str]], list[int]]:
    # "quux pattern" is coded WPW by these annotators, a phrase no rule table knows; "zork wave" is coded PACE,
    # but only in fold 1, so no model that scores fold 1 has seen it
    reports, truth, folds = [], [], []
    for fold in range(1, n_folds + 1):
        for i in range(per_fold):
            if i % 2:
                reports.append("sinus rhythm. quux pattern."), truth.append({"SR", "WPW"})
            elif fold == 1 and i % 4 == 0:
                reports.append("sinus rhythm. zork wave."), truth.append({"SR", "PACE"})
            else:
                reports.append("sinus rhythm. normal ecg."), truth.append({"SR", "NORM"})
            folds.append(fold)
    return reports, truth, folds


def _rules(reports: list[str]) -> list[set[str]]:
    return [extract_labels(r) for r in reports]


def test_learns_a_phrase_from_the_other_folds():
    reports, truth, folds = _rows()
    assert "WPW" not in extract_labels("sinus rhythm. quux pattern.")
    pred = cross_fitted_codes(reports, truth, _rules(reports), folds)
    seen = [(p, t) for r, p, t in zip(reports, pred, truth, strict=True) if "zork" not in r]
    assert all(("WPW" in p) == ("WPW" in t) for p, t in seen)
    assert all("SR" in p for p in pred)  # a code true in every training row is predicted everywhere


def test_never_learns_from_the_scored_fold():
    reports, truth, folds = _rows()
    pred = cross_fitted_codes(reports, truth, _rules(reports), folds)
    assert not any("PACE" in p for p in pred)  # its only rows are in fold 1, the fold they are scored in


def test_needs_two_folds():
    reports, truth, _ = _rows()
    with pytest.raises(ValueError, match="two folds or more"):
        cross_fitted_codes(reports, truth, _rules(reports), [1] * len(reports))


def test_check_and_cli(tmp_path, capsys):
    path = tmp_path / "ptbxl_database.csv"
    reports, truth, folds = _rows()
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ecg_id", "report", "scp_codes", "strat_fold"])
        for i, (r, t, k) in enumerate(zip(reports, truth, folds, strict=True)):
            w.writerow([i + 1, r, repr({c: 100.0 for c in t}), k])
    result = check_labeller(path, text_classifier=True)
    learned = result["text_classifier"]
    assert learned["per_code"]["WPW"]["recall"] == 1.0 and learned["per_code"]["WPW"]["precision"] >= 0.8
    assert result["per_code"]["WPW"]["f1"] == 0.0
    assert learned["n"] == result["n"] == 80 and "en" in learned["by_language"]
    assert "text_classifier" not in check_labeller(path)
    assert main(["labeller", "--ptbxl-database", str(path), "--text-classifier"]) == 0
    out, err = capsys.readouterr()
    assert "learned  all" in out and "learned_f1" in out and "fold 4 done (4 of 4)" in err
    bare = tmp_path / "bare.csv"
    bare.write_text("ecg_id,report,scp_codes\n1,sinus rhythm,{'SR': 0.0}\n", encoding="utf-8")
    assert main(["labeller", "--ptbxl-database", str(bare), "--text-classifier"]) == 2
    assert f"{bare}: --text-classifier is cross-fitted by strat_fold" in capsys.readouterr().err


def test_on_real_dev_rows():
    # 300 real rows: the classifier reads the text about as well as the rules (docs/METRICS.md, full dev figures)
    result = check_labeller(SAMPLE, folds=[1, 2, 3, 4, 5, 6, 7, 8], text_classifier=True)
    assert abs(result["text_classifier"]["micro_f1"] - result["micro_f1"]) < 0.1
