"""kill -9 + `--ckpt_path RUN/checkpoints/last.ckpt` gives the uninterrupted run, byte for byte (issue 12 item 5)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_fit import tiny_args

from meit.tasks.resume import drop_logged_steps

REPO = Path(__file__).resolve().parents[1]


def _fit(args: list[str], expect: int = 0) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "meit.fit", *args], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == expect, out.stderr[-3000:]


@pytest.mark.slow
def test_a_killed_and_resumed_run_is_the_uninterrupted_run(tmp_path):
    cache = tmp_path / "cache"

    def args(run_dir: Path, *extra: str) -> list[str]:
        checkpoints = ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
                       f"--trainer.callbacks.dirpath={run_dir / 'checkpoints'}", "--trainer.callbacks.save_last=true",
                       "--trainer.callbacks.save_top_k=0", "--trainer.callbacks.every_n_train_steps=3"]
        return tiny_args(cache, run_dir, "--trainer.max_steps", "8", "--model.lora.dropout", "0.3",
                         *checkpoints, *extra)

    _fit(args(tmp_path / "a"))
    killed = tmp_path / "b"
    _fit(args(killed, "--trainer.callbacks+=kill_at_step.KillAtStep", "--trainer.callbacks.step=4"), expect=137)
    _fit(args(killed, "--ckpt_path", str(killed / "checkpoints" / "last.ckpt")))  # resumed at step 3, mid-epoch
    for name in ("weights.safetensors", "predictions.jsonl"):
        assert (killed / name).read_bytes() == (tmp_path / "a" / name).read_bytes(), name
    rows = [row for f in (killed / "lightning_logs").rglob("metrics.csv") for row in csv.DictReader(f.open())]
    steps = [int(row["step"]) for row in rows if row.get("train/loss")]
    assert len(steps) == len(set(steps)) and max(steps) == 7  # each step logged once, up to the last one


def test_steps_logged_after_the_checkpoint_are_not_logged_twice(tmp_path):
    killed = tmp_path / "lightning_logs" / "version_0" / "metrics.csv"  # the run killed at step 5 had logged 0-4
    killed.parent.mkdir(parents=True)
    killed.write_text("epoch,step,train/loss\n" + "".join(f"0,{s},1.{s}\n" for s in range(5)))
    resumed = tmp_path / "lightning_logs" / "version_1"  # resumed from the step-3 checkpoint: logs 3, 4, ... again
    resumed.mkdir()
    assert drop_logged_steps(tmp_path / "lightning_logs", 3, resumed) == 2
    assert killed.read_text() == "epoch,step,train/loss\n0,0,1.0\n0,1,1.1\n0,2,1.2\n"
