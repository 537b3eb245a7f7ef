"""Zero-shot transfer: target datasets, the table, and the whole `--config` experiment on a tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from meit.config import DataConfig
from meit.zeroshot import markdown, run_config_file, target_config

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "zeroshot.yaml"


def test_target_config_keeps_the_runs_signal_shape():
    run = DataConfig(dataset="synthetic", synthetic_format="mimic", sampling_rate=100, n_samples=1000, batch_size=7)
    target = target_config(run, {"dataset": "synthetic", "synthetic_format": "ptbxl", "synthetic_seed": 1})
    assert (target.dataset, target.synthetic_format, target.synthetic_seed) == ("synthetic", "ptbxl", 1)
    assert (target.sampling_rate, target.n_samples, target.batch_size) == (100, 1000, 7)
    real = target_config(run, {"dataset": "ptbxl", "root": "/data/ptbxl"})
    assert real.dataset == "ptbxl" and real.root == "/data/ptbxl" and real.sampling_rate == 100
    with pytest.raises(ValueError, match="needs a root"):
        target_config(run, {"dataset": "mimic"})
    with pytest.raises(ValueError, match="unknown target key"):
        target_config(run, {"dataset": "ptbxl", "root": "x", "folds": 3})
    with pytest.raises(ValueError, match="choose from mimic, ptbxl, synthetic"):
        target_config(run, {"dataset": "chapman", "root": "x"})


def test_markdown_is_meits_zero_shot_table():
    metrics = {"bleu_4": 0.1, "meteor": 0.2, "rouge_l": 0.3, "cider_d": 0.4, "bertscore_f1": 0.5,
               "label_macro_f1": 0.6, "ci95": {"bleu_4": [0.05, 0.15]}}
    summary = {"run": "r", "bertscore_model": "m", "results": [
        {"train": "synthetic-mimic", "test": "synthetic-mimic", "setting": "in-domain", "n": 5, "metrics": metrics},
        {"train": "synthetic-mimic", "test": "synthetic-ptbxl", "setting": "zero-shot", "n": 6, "metrics": metrics}]}
    text = markdown(summary)
    assert ("| trained on | tested on | setting | n | BLEU-4 | METEOR | ROUGE-L | CIDEr-D | BERTScore | "
            "label macro-F1 |") in text
    assert ("| synthetic-mimic | synthetic-ptbxl | zero-shot | 6 | 0.100 [0.050, 0.150] | 0.200 | 0.300 | 0.400 | "
            "0.500 | 0.600 |") in text


def test_config_file_is_validated(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"run_dir": "x", "targets": [{"dataset": "synthetic"}], "epochs": 3}))
    with pytest.raises(ValueError, match="unknown key"):
        run_config_file(bad)
    bad.write_text(yaml.safe_dump({"run_dir": "x"}))
    with pytest.raises(ValueError, match="needs `run_dir` and `targets`"):
        run_config_file(bad)


def test_shipped_config_trains_on_mimic_style_and_targets_ptbxl_style():
    spec = yaml.safe_load(CONFIG.read_text())
    assert spec["fit"]["data"]["synthetic_format"] == "mimic"
    assert spec["targets"] == [{"dataset": "synthetic", "synthetic_format": "ptbxl", "synthetic_n": 1500,
                                "synthetic_seed": 1}]
    assert spec.get("in_domain", True)


@pytest.mark.slow
def test_zeroshot_experiment_from_a_config(tmp_path, monkeypatch):
    """Trains a tiny mimic-style run from a config, tests it in-domain and on the ptbxl-style site; reruns reuse it."""
    from meit.zeroshot import main

    monkeypatch.setenv("MEIT_CACHE_DIR", str(tmp_path / "cache"))
    embedded = {"pretrain_steps": 5, "hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 2,
                "intermediate_size": 64, "vocab_size": 300}
    fit = {"data": {"dataset": "synthetic", "synthetic_format": "mimic", "synthetic_n": 60, "batch_size": 4,
                    "eval_batch_size": 8},
           "model": {"backbone": {"embedded": embedded}, "lora": {"r": 2, "alpha": 4}},
           "trainer": {"max_steps": 2, "enable_progress_bar": False, "logger": False},
           "test": {"skip": True, "max_new_tokens": 6}}
    spec = {"run_dir": str(tmp_path / "run"), "fit": fit, "limit": 4, "n_bootstrap": 20,
            "targets": [{"dataset": "synthetic", "synthetic_format": "ptbxl", "synthetic_n": 40, "synthetic_seed": 1}]}
    config = tmp_path / "zeroshot.yaml"
    config.write_text(yaml.safe_dump(spec))
    summary = main(["--config", str(config)])

    saved = json.loads((tmp_path / "run" / "zeroshot" / "metrics.json").read_text())
    assert [(r["train"], r["test"], r["setting"]) for r in saved["results"]] == [
        ("synthetic-mimic", "synthetic-mimic", "in-domain"), ("synthetic-mimic", "synthetic-ptbxl", "zero-shot")]
    in_domain, zero_shot = saved["results"]
    assert in_domain["labels_from"] == "reference text" and zero_shot["labels_from"] == "dataset"
    assert in_domain["n"] == zero_shot["n"] == 4 and "experiment_seconds" in saved
    out = tmp_path / "run" / "zeroshot"
    lines = (out / "predictions" / "zero-shot-synthetic-ptbxl.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 4 and all("labels_true" in r for r in rows)
    mimic_rows = (out / "predictions" / "in-domain-synthetic-mimic.jsonl").read_text()
    assert "labels_true" not in mimic_rows  # MIMIC stores no labels: meit.eval extracts them from the reference
    assert "| synthetic-mimic | synthetic-ptbxl | zero-shot | 4 |" in (out / "zeroshot.md").read_text()
    assert summary["results"][1]["metrics"]["n"] == 4

    weights = (tmp_path / "run" / "weights.safetensors").stat().st_mtime_ns
    main(["--config", str(config)])  # a finished run is reused, not trained again
    assert (tmp_path / "run" / "weights.safetensors").stat().st_mtime_ns == weights
