"""predictions.jsonl reading, the CLI, and the local evaluate modules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meit.eval import MODULES, module_path, read_predictions
from meit.eval.text import java_available


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_malformed_line_names_file_and_line(tmp_path):
    p = _write(tmp_path / "p.jsonl", ['{"id": 1, "prediction": "a", "reference": "b"}', "", '{"id": 2, "predic'])
    with pytest.raises(ValueError, match=r"p\.jsonl:3: malformed JSON"):
        read_predictions(p)


@pytest.mark.parametrize(
    "line, message",
    [
        ('["a"]', "expected a JSON object"),
        ('{"id": 1, "prediction": "x"}', "missing 'reference'"),
        ('{"prediction": "x", "reference": "y"}', "missing 'id'"),
    ],
)
def test_bad_records(tmp_path, line, message):
    p = _write(tmp_path / "p.jsonl", ['{"id": 0, "prediction": "a", "reference": "b"}', line])
    with pytest.raises(ValueError, match=f"p.jsonl:2: {message}"):
        read_predictions(p)


def test_duplicate_ids_and_missing_predictions(tmp_path):
    p = _write(tmp_path / "p.jsonl", ['{"id": 0, "reference": "b"}', '{"id": 1, "prediction": null, "reference": "c"}'])
    recs = read_predictions(p)
    assert [r["prediction"] for r in recs] == ["", ""] and [r["id"] for r in recs] == ["0", "1"]
    dup = _write(tmp_path / "d.jsonl", ['{"id": 0, "reference": "b"}', '{"id": 0, "reference": "c"}'])
    with pytest.raises(ValueError, match="duplicate id '0'"):
        read_predictions(dup)


def test_module_paths_exist():
    for name in MODULES:
        assert (Path(module_path(name)) / f"{name}.py").is_file()
    with pytest.raises(ValueError, match="unknown evaluate module"):
        module_path("spice")


def test_clinical_labels_module_loads_offline(monkeypatch):
    import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = evaluate.load(module_path("clinical_labels"))
    out = metric.compute(
        predictions=["Sinus rhythm. Normal ECG", "Atrial fibrillation"],
        references=["Sinus rhythm. Normal ECG", "Sinus rhythm"],
    )
    assert out["n"] == 2 and 0 < out["label_macro_f1"] < 1


@pytest.mark.skipif(not java_available(), reason="needs java")
def test_combined_modules_offline(monkeypatch):
    import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    combo = evaluate.combine(
        [evaluate.load(module_path("bleu")), evaluate.load(module_path("cider_d")), evaluate.load(module_path("rouge"))]
    )
    out = combo.compute(
        predictions=["sinus rhythm normal ecg", "atrial fibrillation"],
        references=["sinus rhythm normal ecg", "sinus rhythm"],
    )
    assert {"bleu_4", "cider_d", "rouge_l"} <= set(out)
    assert 0 < out["bleu_1"] <= 1


@pytest.mark.skipif(not java_available(), reason="needs java")
def test_cli_writes_metrics_and_markdown(tmp_path, capsys):
    from meit.evaluate import main

    lines = [
        json.dumps({"id": i, "prediction": p, "reference": r, "labels_true": ["SR"]})
        for i, (p, r) in enumerate(
            [("Sinus rhythm", "Sinus rhythm"), ("", "Sinus rhythm. Normal ECG"), ("Sinus bradycardia", "Sinus rhythm")]
        )
    ]
    pred = _write(tmp_path / "predictions.jsonl", lines)
    md = tmp_path / "table.md"
    with pytest.warns(UserWarning, match="empty"):
        rc = main([str(pred), "--metrics", "bleu", "rouge", "labels", "--n-bootstrap", "50", "--markdown", str(md)])
    assert rc == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n"] == 3 and metrics["n_empty"] == 1 and "bleu_4" in metrics["ci95"]
    assert metrics["labels"]["statement"]["per_label"]["SR"]["support"] == 3
    assert "| bleu_1 |" in md.read_text()
    bad = _write(tmp_path / "bad.jsonl", ["{"])
    assert main([str(bad)]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "field, message",
    [
        ('"labels_true": "NORM"', r"'labels_true' must be a list of label strings .*got the string 'NORM'"),
        ('"labels_true": 5', r"'labels_true' must be a list of label strings .*got number"),
        ('"labels_true": ["NORM", 3]', r"'labels_true' .*got a list holding a number"),
        ('"prediction": 5', r"'prediction' must be a string, got number"),
        ('"prediction": ["a"]', r"'prediction' must be a string, got list"),
        ('"reference": {"a": 1}', r"'reference' must be a string, got object"),
        ('"id": [1]', r"'id' must be a string or an integer, got list"),
        ('"label_probs": ["NORM"]', r"'label_probs' must be an object of label -> probability, got a list"),
        ('"label_probs": {"NORM": "high"}', r"'label_probs' .*non-numeric probability"),
    ],
)
def test_mistyped_fields_name_file_and_line(tmp_path, field, message):
    row = {"id": 1, "prediction": "sinus rhythm", "reference": "sinus rhythm", **json.loads("{" + field + "}")}
    p = _write(tmp_path / "p.jsonl", ['{"id": 0, "prediction": "a", "reference": "b"}', json.dumps(row)])
    with pytest.raises(ValueError, match=r"p\.jsonl:2: " + message):
        read_predictions(p)


def test_labels_true_list_is_kept(tmp_path):
    p = _write(tmp_path / "p.jsonl", ['{"id": 0, "prediction": "a", "reference": "b", "labels_true": ["NORM"]}'])
    assert read_predictions(p)[0]["labels_true"] == ["NORM"]


def test_non_utf8_bytes_name_file_and_line(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_bytes(b'{"id": 0, "prediction": "a", "reference": "b"}\n{"id": 1, "prediction": "ver\xe4ndert", '
                  b'"reference": "b"}\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:2: not valid UTF-8 \(byte 0xe4 at byte 29 of the line\)"):
        read_predictions(p)
    p.write_bytes(b'\xef\xbb\xbf{"id": 0, "prediction": "a", "reference": "b"}\n')  # a UTF-8 byte-order mark is fine
    assert read_predictions(p)[0]["id"] == "0"


def test_evaluate_cli_reports_a_mistyped_row_without_traceback(tmp_path, capsys):
    from meit.evaluate import main

    p = _write(tmp_path / "p.jsonl", ['{"id": 0, "prediction": "a", "reference": "b", "labels_true": "NORM"}'])
    assert main([str(p), "--metrics", "bleu", "--n-bootstrap", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {p}:1: 'labels_true' must be a list") and "Traceback" not in err


def test_pathological_lengths_are_truncated_and_counted(tmp_path):
    from meit.eval import evaluate_records
    from meit.eval.core import MAX_TEXT_CHARS

    long = "sinus rhythm with premature ventricular complexes " * 100_000  # 5 MB
    records = [{"id": "0", "prediction": long, "reference": "sinus rhythm"},
               {"id": "1", "prediction": "normal ecg", "reference": "normal ecg " * 2_000},
               {"id": "2", "prediction": "normal ecg", "reference": "normal ecg"}]
    with pytest.warns(UserWarning, match=r"2 of 3 records .* longer than 10,000 characters; truncated"):
        out = evaluate_records(records, metrics=["bleu", "rouge", "cider"], n_bootstrap=0)
    assert out["n_truncated"] == 2 and out["n"] == 3
    bounded = [dict(r, prediction=r["prediction"][:MAX_TEXT_CHARS], reference=r["reference"][:MAX_TEXT_CHARS])
               for r in records]
    same = evaluate_records(bounded, metrics=["bleu", "rouge", "cider"], n_bootstrap=0)
    assert same["n_truncated"] == 0 and {k: out[k] for k in ("bleu_4", "rouge_l", "cider_d")} == {
        k: same[k] for k in ("bleu_4", "rouge_l", "cider_d")}
    assert len(records[0]["prediction"]) > MAX_TEXT_CHARS  # the caller's records are not changed


@pytest.mark.slow
@pytest.mark.skipif(not java_available(), reason="needs java")
def test_a_5mb_prediction_does_not_crash_meteor(tmp_path):
    from meit.evaluate import main

    long = "sinus rhythm with premature ventricular complexes " * 100_000
    p = _write(tmp_path / "p.jsonl", [json.dumps({"id": 0, "prediction": long, "reference": "sinus rhythm"}),
                                      json.dumps({"id": 1, "prediction": "normal ecg", "reference": "normal ecg"})])
    with pytest.warns(UserWarning, match="truncated"):
        assert main([str(p), "--metrics", "meteor", "--n-bootstrap", "0"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_truncated"] == 1 and 0 < metrics["meteor"] < 1
