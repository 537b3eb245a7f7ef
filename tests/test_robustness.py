"""Noise-robustness sweep: conditions, seeded noisy test sets, tables and plots; end to end on a tiny trained run."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from meit.config import DataConfig
from meit.data.cache import SignalCache
from meit.data.dataset import ECGReportDataset
from meit.data.noise import snr_db
from meit.data.sources import open_source
from meit.robustness import (
    Condition,
    conditions,
    level_text,
    markdown,
    plot,
    plot_positions,
    transform_for,
)
from meit.runs.predict import EvalSplit

TINY_FIT = [
    "--data.synthetic_n", "60", "--data.batch_size", "4", "--data.eval_batch_size", "8",
    "--model.backbone.embedded.pretrain_steps", "5", "--model.backbone.embedded.hidden_size", "32",
    "--model.backbone.embedded.num_layers", "1", "--model.backbone.embedded.num_heads", "2",
    "--model.backbone.embedded.num_kv_heads", "2", "--model.backbone.embedded.intermediate_size", "64",
    "--model.backbone.embedded.vocab_size", "300", "--model.lora.r", "2", "--model.lora.alpha", "4",
    "--trainer.max_steps", "2", "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
    "--test.skip", "true", "--test.max_new_tokens", "6",
]


def tiny_run(tmp_path: Path, extra: list[str] | None = None) -> Path:
    """Trains a tiny run (seconds) into tmp_path/run with its caches under tmp_path/cache."""
    from meit.fit import main

    os.environ["MEIT_CACHE_DIR"] = str(tmp_path / "cache")
    return main([*TINY_FIT, *(extra or []), "--run_dir", str(tmp_path / "run")])


def test_conditions_cover_every_pair_and_validate():
    conds = conditions("snr", ["gaussian", "emg"], [math.inf, 12.0, 0.0])
    assert [(c.noise, c.level) for c in conds] == [("gaussian", math.inf), ("gaussian", 12.0), ("gaussian", 0.0),
                                                    ("emg", math.inf), ("emg", 12.0), ("emg", 0.0)]
    assert conds[0].clean and conds[0].name == "clean" and conds[1].name == "gaussian_snr12"
    segment = conditions("meit-segment", [], [1.0, 0.9])
    assert segment[0].clean and not segment[1].clean and segment[1].name == "meit-segment_ratio0.9"
    with pytest.raises(ValueError, match="unknown noise kind: hum"):
        conditions("snr", ["hum"], [6.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        conditions("meit-segment", [], [1.5])
    with pytest.raises(ValueError, match="choose from snr, meit-segment"):
        conditions("bursts", ["gaussian"], [6.0])


@pytest.mark.parametrize("kind", ["gaussian", "baseline", "powerline", "emg", "motion"])
def test_snr_transform_hits_the_target_snr_and_is_seeded(kind):
    t = np.arange(1000) / 100.0
    clean = np.stack([np.sin(2 * np.pi * (1 + k / 10) * t) * (0.5 + k / 12) for k in range(12)]).astype(np.float32)
    transform = transform_for(Condition(kind, 6.0), fs=100.0)
    a = transform(clean, np.random.default_rng(7))
    b = transform(clean, np.random.default_rng(7))
    c = transform(clean, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_allclose(snr_db(clean, a), 6.0, atol=0.05)
    assert transform_for(Condition(kind, math.inf), fs=100.0) is None


def _split(make_ptbxl, tmp_path) -> EvalSplit:
    source = open_source("ptbxl", make_ptbxl(n=20), 100)
    records = [r for r in source.records if r.fold in (9, 10)]
    cache = SignalCache.build(source, records, 1000, tmp_path / "signals", split="x", workers=1, progress=False)
    return EvalSplit("ptbxl", DataConfig(), records, cache, True)


def test_noisy_test_set_depends_on_seed_and_record_not_on_order(make_ptbxl, tmp_path):
    split = _split(make_ptbxl, tmp_path)
    transform = transform_for(Condition("gaussian", 0.0), fs=100.0)
    first = ECGReportDataset(split.cache, split.records, transform, seed=3)
    again = ECGReportDataset(split.cache, split.records, transform, seed=3)
    other = ECGReportDataset(split.cache, split.records, transform, seed=4)
    forward = [first[i]["ecg"].numpy() for i in range(len(first))]
    backward = [again[i]["ecg"].numpy() for i in reversed(range(len(again)))][::-1]
    for x, y in zip(forward, backward):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(forward[0], other[0]["ecg"].numpy())
    clean = ECGReportDataset(split.cache, split.records)[0]["ecg"].numpy()
    np.testing.assert_allclose(snr_db(clean, forward[0]), 0.0, atol=0.05)
    assert first[0]["id"] == split.records[0].record_id and first[0]["labels"] == sorted(split.records[0].labels)


def _summary(protocol: str = "snr") -> dict:
    levels = ["inf", 24.0, 6.0] if protocol == "snr" else [1.0, 0.9, 0.8]
    noises = ["gaussian", "emg"] if protocol == "snr" else ["meit-segment"]
    results = []
    for k, noise in enumerate(noises):
        for j, level in enumerate(levels):
            value = 0.5 - 0.1 * j - 0.05 * k
            metrics = {key: value for key in ("bleu_4", "meteor", "rouge_l", "cider_d", "bertscore_f1",
                                              "label_macro_f1")}
            metrics["ci95"] = {key: [value - 0.02, value + 0.02] for key in metrics}
            results.append({"noise": noise, "level": level, "metrics": metrics})
    return {"run": "runs/x", "protocol": protocol, "split": "test", "dataset": "synthetic-ptbxl", "n": 10,
            "seed": 0, "results": results}


def test_markdown_tables_and_png(tmp_path):
    text = markdown(_summary())
    assert "| noise | inf | 24 | 6 |" in text and "## label_macro_f1" in text
    assert "| gaussian | 0.500 [0.480, 0.520] | 0.400 [0.380, 0.420] | 0.300 [0.280, 0.320] |" in text
    assert "| emg | 0.450 [0.430, 0.470] |" in text
    plot(_summary(), tmp_path / "a.png")
    plot(_summary("meit-segment"), tmp_path / "b.png")
    for name in ("a.png", "b.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "clean ratio" in markdown(_summary("meit-segment"))


def test_plot_positions_put_clean_right_of_the_finite_levels():
    xs, labels = plot_positions(["inf", 24.0, 18.0, 0.0])
    assert xs == [36.0, 24.0, 18.0, 0.0]  # one mean step (12 dB) right of 24 and labels == ["clean", "24", "18", "0"]
    assert level_text("inf") == "inf" and level_text(0.95) == "0.95"


@pytest.mark.slow
def test_robustness_cli_end_to_end_is_seeded(tmp_path):
    from meit.robustness import main

    run = tiny_run(tmp_path)
    args = ["--run", str(run), "--snr-db", "inf", "6", "--noise", "gaussian", "powerline", "--limit", "4",
            "--n-bootstrap", "20"]
    first = main([*args, "--out", str(tmp_path / "a")])
    second = main([*args, "--out", str(tmp_path / "b")])
    segment = main(["--run", str(run), "--protocol", "meit-segment", "--ratio", "1.0", "0.8", "--limit", "4",
                    "--n-bootstrap", "20", "--out", str(tmp_path / "s")])
    strip = lambda s: [{k: v for k, v in r.items() if k != "seconds"} for r in s["results"]]  # noqa: E731
    assert strip(first) == strip(second)
    for name in ("clean.jsonl", "gaussian_snr6.jsonl", "powerline_snr6.jsonl"):
        a, b = (tmp_path / out / "predictions" / name for out in ("a", "b"))
        assert a.read_text() == b.read_text()
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert [(r["noise"], r["level"]) for r in saved["results"]] == [
        ("gaussian", "inf"), ("gaussian", 6.0), ("powerline", "inf"), ("powerline", 6.0)]
    assert saved["n"] == 4 and all("ci95" in r["metrics"] and "bleu_4" in r["metrics"] for r in saved["results"])
    assert (tmp_path / "a" / "robustness.png").stat().st_size > 1000
    assert "## bleu_4" in (tmp_path / "a" / "robustness.md").read_text()
    assert [r["level"] for r in segment["results"]] == [1.0, 0.8] and segment["protocol"] == "meit-segment"


def test_image_runs_get_the_noise_before_rendering(make_ptbxl, tmp_path):
    from meit.config import RunConfig
    from meit.tasks.images import page_renderer

    split = _split(make_ptbxl, tmp_path)
    render = page_renderer(RunConfig().data)
    clean = ECGReportDataset(split.cache, split.records, None, seed=0, render=render)[0]["ecg"]
    noisy_dataset = ECGReportDataset(split.cache, split.records, transform_for(Condition("baseline", 0.0), fs=100.0),
                                     seed=0, render=render)
    noisy, again = noisy_dataset[0]["ecg"], noisy_dataset[0]["ecg"]
    assert clean.ndim == 3 and clean.shape[0] == 3 and 0.0 <= float(clean.min()) <= float(clean.max()) <= 1.0
    assert noisy.shape == clean.shape and not torch.equal(noisy, clean)
    assert torch.equal(noisy, again)
