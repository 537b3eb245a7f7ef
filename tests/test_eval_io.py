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
