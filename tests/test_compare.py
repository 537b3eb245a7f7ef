"""`python -m meit.compare`: the preset parses, and a tiny signal-vs-image comparison writes its table and plot."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from PIL import Image
from test_fit import tiny_setup_args

from meit.compare import build_parser, main, markdown

REPO = Path(__file__).resolve().parents[1]


def tiny_fit_args(cache: Path) -> list[str]:
    """Shared `meit.fit` flags of a tiny comparison: `test_fit.tiny_setup_args`, 64 x 80 pages, 2 steps."""
    return [
        *tiny_setup_args(cache), "--data.image_size", "[64, 80]", "--data.render", '{"dpi": 30}',
        "--trainer.max_steps", "2", "--test.max_new_tokens", "8",
    ]


def test_the_default_preset_compares_signal_and_image_on_one_setup():
    cfg = build_parser().parse_args(["--config", str(REPO / "configs" / "compare.yaml")])
    assert list(cfg.representations)[:2] == ["signal", "image"]
    assert "image" in cfg.representations["image"] and not cfg.representations["signal"]
    assert [str(v) for v in cfg.snr_db][0] == "inf" and len(cfg.snr_db) >= 3
    assert "--data.synthetic_n" not in cfg.fit_args  # the default data (and its caches) of `python -m meit.fit`


def test_tiny_comparison_writes_one_table_and_one_plot(tmp_path):
    out = main([
        "--fit_args", json.dumps(tiny_fit_args(tmp_path / "cache")),
        "--representations", json.dumps({
            "signal": ["--model.encoder_kwargs", '{"widths": [8, 8, 16, 16]}'],
            "image": ["--model.branch", "image", "--model.encoder", "cnn_small",
                      "--model.encoder_kwargs", '{"widths": [8, 8, 16, 16], "n_tokens": 4}']}),
        "--snr_db", "[inf, 6]", "--limit", "5", "--metrics", "[bleu,labels]", "--n_bootstrap", "20",
        "--run_dir", str(tmp_path / "compare"),
    ])
    assert out == tmp_path / "compare"
    for name in ("signal", "image"):
        assert (out / name / "metrics.json").is_file() and (out / name / "predictions.jsonl").is_file()
        assert yaml.safe_load((out / name / "config.yaml").read_text())["seed_everything"] == 0
        for cond in ("clean", "gaussian_snr6"):
            rows = (out / "predictions" / name / f"{cond}.jsonl").read_text().splitlines()
            assert len(rows) == 5
    assert yaml.safe_load((out / "image" / "config.yaml").read_text())["model"]["branch"] == "image"
    summary = json.loads((out / "compare.json").read_text())
    assert summary["n"] == 5 and summary["levels"] == ["inf", 6.0]
    assert len(summary["results"]) == 4 and len(summary["paired"]) == 2
    ids = {r["representation"]: r for r in summary["results"] if r["condition"] == "clean"}
    assert ids["signal"]["metrics"]["n"] == ids["image"]["metrics"]["n"] == 5
    test = summary["paired"][0]["tests"]["bleu_4"]
    assert 0.0 <= test["p_value"] <= 1.0 and test["diff"] == test["a"] - test["b"]
    table = (out / "compare.md").read_text()
    assert table == markdown(summary)
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    header = rows[0].split(" | ")
    assert "bleu_4" in header and "label_macro_f1" in header and "meteor" not in header
    assert len(rows) == 1 + 2 * 3  # header + per level: signal, image, p-value row
    assert sum("p: image vs signal" in r for r in rows) == 2 and all(r.count("|") == rows[0].count("|") for r in rows)
    assert "[" in rows[1] and "p=" in rows[3]
    with Image.open(out / "compare.png") as png:
        assert png.format == "PNG" and png.size[0] > png.size[1] > 100
