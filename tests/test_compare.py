"""`python -m meit.compare`: the preset parses, and a tiny signal-vs-image comparison writes its table and plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image
from test_fit import tiny_setup_args

from meit.compare import build_parser, main, markdown, representation_blocks

REPO = Path(__file__).resolve().parents[1]


def fit_block(args: list[str]) -> dict:
    """`meit.fit` flags (`--group.key value`, `--model.backbone.embedded.key value`) as a `fit:` block of nested
    keys."""
    block: dict = {}
    for flag, value in zip(args[0::2], args[1::2], strict=True):
        *groups, key = flag.removeprefix("--").split(".")
        node = block
        for group in groups:
            node = node.setdefault(group, {})
        node[key] = yaml.safe_load(value)
    return block


def tiny_fit(cache: Path) -> dict:
    """Shared `meit.fit` options of a tiny comparison: `test_fit.tiny_setup_args`, 64 x 80 pages, 2 steps."""
    return fit_block([
        *tiny_setup_args(cache), "--data.image.size", "[64, 80]", "--data.image.render", '{"dpi": 30}',
        "--trainer.max_steps", "2", "--test.max_new_tokens", "8",
    ])


def test_the_default_preset_compares_signal_and_image_on_one_setup():
    cfg = build_parser().parse_args(["--config", str(REPO / "configs" / "compare.yaml")])
    assert list(cfg.representations)[:2] == ["signal", "image"]
    assert cfg.representations["image"]["model"]["branch"] == "image" and not cfg.representations["signal"]
    assert [str(v) for v in cfg.snr_db][0] == "inf" and len(cfg.snr_db) >= 3
    assert "synthetic_n" not in cfg.fit.get("data", {})  # the default data (and its caches) of `python -m meit.fit`
    blocks = representation_blocks(cfg)
    assert blocks["image"]["model"] == {"recipe": "meit", "branch": "image", "encoder": "cnn_small",
                                        "encoder_kwargs": {"n_tokens": 8}}
    assert blocks["signal"]["trainer"] == blocks["image"]["trainer"] and blocks["signal"]["seed_everything"] == 0


def test_a_representation_block_that_is_not_a_mapping_fails_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--representations", json.dumps({"signal": {}, "image": {"run_dir": "x"}}),
              "--run_dir", str(tmp_path / "compare")])
    assert exit_info.value.code == 2
    assert "--representations.image: holds run_dir" in capsys.readouterr().err
    assert not (tmp_path / "compare" / "signal").exists()


def test_tiny_comparison_writes_one_table_and_one_plot(tmp_path):
    widths = {"widths": [8, 8, 16, 16]}
    args = [
        "--fit", json.dumps(tiny_fit(tmp_path / "cache")),
        "--representations", json.dumps({
            "signal": {"model": {"encoder_kwargs": widths}},
            "image": {"model": {"branch": "image", "encoder": "cnn_small",
                                "encoder_kwargs": {**widths, "n_tokens": 4}}}}),
        "--snr_db", "[inf, 6]", "--limit", "5", "--metrics", "[bleu,labels]", "--n_bootstrap", "20",
        "--run_dir", str(tmp_path / "compare"),
    ]
    out = main(args)
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

    weights = {name: (out / name / "weights.safetensors").stat().st_mtime_ns for name in ("signal", "image")}
    assert main(args) == out  # a rerun reuses both finished runs and scores them again
    assert {name: (out / name / "weights.safetensors").stat().st_mtime_ns for name in weights} == weights
    assert json.loads((out / "compare.json").read_text())["results"] == summary["results"]
