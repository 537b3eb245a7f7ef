"""`python -m meit.fit --seeds ...`: one run directory per seed and the parent's mean ± sd."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from meit.fit import main
from meit.runs.seeds import aggregate, split_seed_args
from tests.test_fit import tiny_args


def test_split_seed_args_takes_out_seeds_and_run_dir():
    seeds, parent, rest = split_seed_args(["--seeds", "0", "2", "--run_dir", "P", "--trainer.max_epochs", "2"])
    assert seeds == [0, 2] and str(parent) == "P" and rest == ["--trainer.max_epochs", "2"]
    assert split_seed_args(["--run_dir", "P", "--seed_everything", "3"]) == (None, None,
                                                                           ["--run_dir", "P", "--seed_everything", "3"])


@pytest.mark.parametrize("bad", [["--seeds"], ["--seeds", "x"], ["--seeds", "1", "1"]])
def test_bad_seeds_are_refused(bad):
    with pytest.raises(SystemExit):
        split_seed_args(bad)


def test_aggregate_is_mean_and_sample_sd_of_float_metrics():
    summary = aggregate({0: {"bleu_4": 0.2, "n": 5, "ci95": {}}, 1: {"bleu_4": 0.4, "n": 5, "ci95": {}}})
    assert summary["seeds"] == [0, 1] and set(summary["mean"]) == {"bleu_4"}
    assert summary["mean"]["bleu_4"] == pytest.approx(0.3)
    assert summary["sd"]["bleu_4"] == pytest.approx(math.sqrt(0.02))


@pytest.mark.slow
def test_fit_with_seeds_writes_a_run_per_seed_and_their_mean(tmp_path, capsys):
    parent = tmp_path / "runs"
    assert main(tiny_args(tmp_path / "cache", parent, "--seeds", "0", "1")) == parent
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(parent)
    summary = json.loads((parent / "metrics.json").read_text())
    assert summary["seeds"] == [0, 1]
    for seed in (0, 1):
        seed_dir = parent / f"seed_{seed}"
        assert yaml.safe_load((seed_dir / "config.yaml").read_text())["seed_everything"] == seed
        assert summary["per_seed"][str(seed)] == json.loads((seed_dir / "metrics.json").read_text())
    bleu = [summary["per_seed"][s]["bleu_4"] for s in ("0", "1")]
    assert summary["mean"]["bleu_4"] == pytest.approx(sum(bleu) / 2)
    report = (parent / "report.md").read_text()
    assert "| bleu_4 |" in report and "seed 1" in report


@pytest.mark.slow
def test_seeds_reuse_finished_runs_and_refuse_other_settings(tmp_path, capsys):
    parent = tmp_path / "runs"
    args = tiny_args(tmp_path / "cache", parent, "--seeds", "0")
    main(args)
    first = (parent / "seed_0" / "weights.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == parent  # the same command again: the finished seed run is reused, not trained again
    assert "holds the finished run of this config: reusing it" in capsys.readouterr().out
    assert (parent / "seed_0" / "weights.safetensors").stat().st_mtime_ns == first
    with pytest.raises(SystemExit) as exit_info:  # other settings into the same seed directory: refused
        main([*args, "--model.lora.r", "2"])
    assert exit_info.value.code == 2 and "model.lora.r: 4, but this command line asks for 2" in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_seed_run_resumes_from_its_checkpoint(tmp_path, capsys):
    parent = tmp_path / "runs"
    args = tiny_args(tmp_path / "cache", parent, "--seeds", "0", "--trainer.max_steps", "4")
    seed_dir = parent / "seed_0"
    main(args)
    for name in ("run.json", "metrics.json"):  # what a kill during the test step leaves: checkpoints, no results
        (seed_dir / name).unlink()
    capsys.readouterr()
    assert main(args) == parent
    assert f"resuming from {seed_dir / 'checkpoints' / 'last.ckpt'}" in capsys.readouterr().out
    assert json.loads((seed_dir / "run.json").read_text())["train_steps"] == 4 and (seed_dir / "metrics.json").is_file()
