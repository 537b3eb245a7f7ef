"""`python -m meit.report RECORD --run RUN_DIR` on the real PTB-XL fixture record, from a saved tiny run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from meit.fit import main
from meit.report import generate_report

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "tests" / "fixtures" / "ptbxl-mini" / "records100" / "00000" / "00001_lr"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("report")
    cache = base / "cache"
    return main([
        "--data.synthetic_n", "60", "--data.cache_dir", str(cache),
        "--data.batch_size", "8", "--model.backbone.embedded.hidden_size", "32",
        "--model.backbone.embedded.num_layers", "2", "--model.backbone.embedded.num_heads", "4",
        "--model.backbone.embedded.intermediate_size", "64", "--model.backbone.embedded.pretrain_steps", "20",
        "--model.backbone.embedded.pretrain_lr", "0.02", "--model.lora.r", "4",
        "--model.encoder_kwargs", '{"widths": [8, 8, 16, 16]}', "--trainer.max_steps", "2",
        "--trainer.enable_progress_bar", "false", "--test.skip", "true", "--test.max_new_tokens", "16",
        "--run_dir", str(base / "run"),
    ])


@pytest.mark.slow
def test_report_cli_prints_the_report_of_a_wfdb_record(run_dir):
    out = subprocess.run([sys.executable, "-m", "meit.report", str(RECORD), "--run", str(run_dir)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = out.stdout.strip()
    assert report and report == generate_report(RECORD, run_dir)  # greedy decoding: deterministic


@pytest.mark.slow
def test_report_of_a_missing_record_is_a_clear_error(run_dir, tmp_path, capsys):
    from meit.report import main as report_main

    shutil.copy(RECORD.with_suffix(".hea"), tmp_path / "00001_lr.hea")  # header without its .dat
    assert report_main([str(tmp_path / "00001_lr"), "--run", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "00001_lr.dat" in err and "not found" in err
    assert report_main([str(tmp_path / "nothing"), "--run", str(tmp_path)]) == 2
    assert "config.yaml not found" in capsys.readouterr().err
