"""Scale-out: Lightning DDP on 2 CPU processes (gloo) through `python -m meit.fit`; DeepSpeed ZeRO-2 on CUDA only."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_robustness import TINY_FIT

REPO = Path(__file__).resolve().parents[1]


def _fit(run_dir: Path, cache: Path, *extra: str, config: Path | None = None, timeout: float = 400,
         rank0_delay_s: float | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEIT_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    preset = ["--config", str(config)] if config else []  # first, so the tiny flags override the preset's sizes
    entry = ["-m", "meit.fit"]
    if rank0_delay_s is not None:  # rank 0 writes its run files late: the other rank finishes first, every time
        entry, env["MEIT_TEST_RANK0_DELAY_S"] = [str(REPO / "tests" / "fit_slow_rank0.py")], str(rank0_delay_s)
    command = [sys.executable, *entry, *preset, *TINY_FIT, "--run_dir", str(run_dir), *extra]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _ids(run_dir: Path, rank: int) -> list[list[str]]:
    lines = (run_dir / f"sample_ids.rank{rank}.jsonl").read_text().splitlines()
    return [json.loads(line)["ids"] for line in lines]


@pytest.mark.slow
def test_ddp_two_cpu_ranks_see_different_records_and_weights_load(tmp_path):
    run_dir = tmp_path / "run"
    result = _fit(run_dir, tmp_path / "cache", "--trainer.strategy", "ddp", "--trainer.devices", "2",
         "--trainer.accelerator", "cpu", "--trainer.max_steps", "3",
         "--trainer.callbacks+=meit.data.scale.SampleIdLogger", f"--trainer.callbacks.out_dir={run_dir}",
         "--test.skip", "false", "--test.metrics", "[bleu]", "--test.n_bootstrap", "0", rank0_delay_s=5)
    assert "Traceback" not in result.stderr, result.stderr[-4000:]  # rank 1 did not crash on rank 0's run.json
    assert result.stdout.strip().splitlines()[-1] == str(run_dir) and result.stdout.count("trained 3 steps") == 1
    # Each rank generated for its shard of the test split; rank 0 wrote all of them, once each.
    predictions = [json.loads(line)["id"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    n_test = json.loads((run_dir / "run.json").read_text())["n_records"]["test"]
    assert len(predictions) == len(set(predictions)) == n_test
    rank0, rank1 = _ids(run_dir, 0), _ids(run_dir, 1)
    assert len(rank0) == len(rank1) == 3  # both ranks ran every optimiser step
    assert all(len(batch) == 4 for batch in rank0 + rank1)  # per-rank batch size
    first0, first1 = set(rank0[0]), set(rank1[0])
    assert not first0 & first1, "both ranks trained on the same records"
    seen0, seen1 = {i for b in rank0 for i in b}, {i for b in rank1 for i in b}
    assert len(seen0 & seen1) <= 1  # DistributedSampler shards the epoch (pads by at most one record per rank)
    lines = [json.loads(line) for line in (run_dir / "sample_ids.rank1.jsonl").read_text().splitlines()]
    assert {line["world_size"] for line in lines} == {2} and {line["rank"] for line in lines} == {1}

    from meit.runs.rundir import load_run

    os.environ["MEIT_CACHE_DIR"] = str(tmp_path / "cache")
    module, tokenizer, cfg = load_run(run_dir)
    assert cfg.model.lora.r == 2 and module.count_trainable() > 0
    item = {"id": "x", "ecg": torch.randn(12, cfg.data.n_samples), "report": "", "labels": []}
    reports = module.generate_reports(module.collator(cfg.data, generate=True)([item]))
    assert len(reports) == 1 and isinstance(reports[0], str)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="DeepSpeed ZeRO-2 runs on CUDA GPUs only (Lightning's "
                    "DeepSpeed strategy refuses CPU); this machine has no GPU")
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed "
                    "(pip install -e '.[gpu]')")
def test_deepspeed_zero2_preset_trains_and_saves(tmp_path):
    preset = REPO / "configs" / "deepspeed_zero2.yaml"
    assert preset.is_file(), "configs/deepspeed_zero2.yaml is missing"
    run_dir = tmp_path / "run"
    devices = str(min(2, torch.cuda.device_count()))
    _fit(run_dir, tmp_path / "cache", "--trainer.devices", devices,
         "--trainer.max_steps", "3", "--trainer.callbacks+=meit.data.scale.SampleIdLogger",
         f"--trainer.callbacks.out_dir={run_dir}", config=preset)
    assert (run_dir / "weights.safetensors").is_file()
    from meit.runs.rundir import load_run

    os.environ["MEIT_CACHE_DIR"] = str(tmp_path / "cache")
    module, _, cfg = load_run(run_dir, device="cuda")
    assert module.count_trainable() > 0 and next(module.parameters()).is_cuda
