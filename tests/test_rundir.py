"""Run directories: unique names when runs start together, atomic files with the user's umask, clear errors on
empty or corrupt files, and a full disk that leaves the previous files intact."""

from __future__ import annotations

import datetime as dt
import errno
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_fit import tiny_args

import meit.util.atomic
from meit.fit import choose_run_dir
from meit.fit import main as fit_main
from meit.report import main as report_main
from meit.runs.rundir import (
    BACKBONE,
    CONFIG,
    RUN_DIR_ENV,
    WEIGHTS,
    load_run,
    new_run_dir,
    read_run_json,
    save_run,
)
from meit.util.errors import RunFileError

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "tests" / "fixtures" / "ptbxl-mini" / "records100" / "00000" / "00001_lr"
NOW = dt.datetime(2026, 1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny finished run (no test generation)."""
    base = tmp_path_factory.mktemp("rundir")
    return fit_main(tiny_args(base / "cache", base / "run", "--test.skip", "true"))


# ------------------------------------------------------------------------------------------ unique run directories


def test_new_run_dir_adds_a_suffix_when_the_name_is_taken(tmp_path):
    (tmp_path / "2026-01-02_03-04-05").mkdir()
    (tmp_path / "2026-01-02_03-04-05" / "weights.safetensors").write_bytes(b"another run's")
    assert new_run_dir(tmp_path, NOW) == tmp_path / "2026-01-02_03-04-05_2"
    assert new_run_dir(tmp_path, NOW) == tmp_path / "2026-01-02_03-04-05_3"
    assert new_run_dir(tmp_path, NOW, prefix="compare-") == tmp_path / "compare-2026-01-02_03-04-05"
    assert (tmp_path / "2026-01-02_03-04-05" / "weights.safetensors").read_bytes() == b"another run's"


def test_only_spawned_ranks_take_the_inherited_run_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(RUN_DIR_ENV, f"{os.getppid()}:runs/chosen-by-my-parent")
    assert choose_run_dir(None) == Path("runs/chosen-by-my-parent")  # a DDP rank Lightning spawned
    monkeypatch.setenv(RUN_DIR_ENV, f"{os.getpid() + 1}:runs/of-another-run")  # left by an earlier run of a shell
    fresh = choose_run_dir(None)
    assert fresh.parent == Path("runs") and fresh.is_dir() and os.environ[RUN_DIR_ENV] == f"{os.getpid()}:{fresh}"
    monkeypatch.setenv("RANK", "1")  # rank 1 of an outside launcher: rank 0's directory comes by broadcast
    before = sorted(Path("runs").iterdir())
    assert choose_run_dir(None).name.endswith("-pending") and sorted(Path("runs").iterdir()) == before
    assert choose_run_dir("given") == Path("given")


def _fit_in(folder: str, cache: str, barrier) -> None:
    """One tiny `meit.fit` without --run_dir in `folder`, started at the barrier, at a fixed clock second."""
    os.chdir(folder)
    import meit.runs.rundir

    class FixedClock(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return NOW

    meit.runs.rundir.dt = type("dt", (), {"datetime": FixedClock})  # both runs start in the same second, every time
    args = tiny_args(Path(cache), Path("unused"), "--test.skip", "true")
    at = args.index("--run_dir")
    del args[at : at + 2]
    barrier.wait()
    fit_main(args)


@pytest.mark.slow
def test_two_runs_started_in_one_second_get_two_run_dirs(tmp_path):
    fit_main(tiny_args(tmp_path / "cache", tmp_path / "warm", "--test.skip", "true"))  # build the caches once
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_fit_in, args=(str(tmp_path), str(tmp_path / "cache"), barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
    assert [p.exitcode for p in procs] == [0, 0]
    runs = sorted((tmp_path / "runs").iterdir())
    assert [r.name for r in runs] == ["2026-01-02_03-04-05", "2026-01-02_03-04-05_2"]
    for run in runs:  # both complete, each with its own weights
        assert {CONFIG, BACKBONE, WEIGHTS, "run.json"} <= {p.name for p in run.iterdir()}
        assert read_run_json(run / "run.json")["train_steps"] == 3


@pytest.mark.slow
def test_ddp_ranks_share_the_run_dir_rank_0_chose(tmp_path):
    from test_robustness import TINY_FIT

    env = {**os.environ, "MEIT_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop(RUN_DIR_ENV, None)
    command = [sys.executable, "-m", "meit.fit", *TINY_FIT, "--trainer.strategy", "ddp", "--trainer.devices", "2",
               "--trainer.accelerator", "cpu", "--trainer.max_steps", "3",
               "--trainer.callbacks+=meit.data.scale.SampleIdLogger", "--trainer.callbacks.out_dir=ids"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and result.stdout.strip().splitlines()[-1] == str(Path("runs") / runs[0].name)
    assert {WEIGHTS, BACKBONE, CONFIG, "run.json"} <= {p.name for p in runs[0].iterdir()}
    assert {p.name for p in (tmp_path / "ids").iterdir()} == {"sample_ids.rank0.jsonl", "sample_ids.rank1.jsonl"}


# ------------------------------------------------------------------------------------------------------- run files


def test_run_files_get_the_users_umask(trained):
    expected = 0o666 & ~meit.util.atomic._umask()
    for name in (CONFIG, BACKBONE, WEIGHTS, "run.json"):
        assert (trained / name).stat().st_mode & 0o777 == expected, name


CORRUPTIONS = {
    (CONFIG, b""): "config.yaml: empty (0 bytes)",
    (CONFIG, b"model: [unclosed\n"): "config.yaml: not valid YAML at line 2",
    (CONFIG, b"- a list\n"): "config.yaml: not a `meit.fit` configuration",
    (CONFIG, b"model:\n  lora:\n    r: many\n"): "config.yaml: not a `meit.fit` configuration",
    (BACKBONE, b""): "backbone.json: empty (0 bytes)",
    (BACKBONE, b'{"llm": "embedded", "path": '): "backbone.json: not valid JSON at line 1 column 29",
    (BACKBONE, b"[1, 2]"): "backbone.json: not a backbone reference",
    (BACKBONE, b"\xff\xfe\x00garbage"): "backbone.json: not UTF-8 text",
    (WEIGHTS, b""): "weights.safetensors: empty (0 bytes)",
    (WEIGHTS, b"\x00" * 7 + b"garbage" * 50): "weights.safetensors: not a safetensors file",
    (WEIGHTS, "half"): "weights.safetensors: not a safetensors file",
}


@pytest.mark.parametrize(("name", "content"), list(CORRUPTIONS), ids=lambda v: v if isinstance(v, str) else None)
def test_an_empty_or_corrupt_run_file_is_a_clear_error(trained, tmp_path, name, content):
    run_dir = Path(shutil.copytree(trained, tmp_path / "run"))
    path = run_dir / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2] if content == "half" else content)
    with pytest.raises(RunFileError) as error:
        load_run(run_dir)
    assert str(error.value).startswith(str(run_dir / CORRUPTIONS[name, content]))


def test_report_names_an_empty_backbone_json_and_exits_2(trained, tmp_path, capsys):
    run_dir = Path(shutil.copytree(trained, tmp_path / "run"))
    (run_dir / BACKBONE).write_bytes(b"")  # what a full disk left before run files were atomic
    assert report_main([str(RECORD), "--run", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run_dir / BACKBONE}: empty") and "Traceback" not in err


def test_weights_that_do_not_match_the_model_name_the_file(trained, tmp_path):
    from safetensors.torch import save_file

    run_dir = Path(shutil.copytree(trained, tmp_path / "run"))
    save_file({"something.else": torch.zeros(2)}, str(run_dir / WEIGHTS))
    with pytest.raises(RunFileError, match=r"weights\.safetensors: does not hold this run's weights"):
        load_run(run_dir)


class _Module:
    """What `save_run` reads of a module."""

    def __init__(self, value: float) -> None:
        self.state = {"w": torch.full((1000,), value)}
        self.backbone_reference = {"llm": "embedded", "path": f"/backbones/{value}", "hash": str(value)}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return self.state

    def save_extras(self, run_dir) -> None:
        """A task with nothing besides its weights to save."""


def test_a_full_disk_keeps_the_previous_run_files(tmp_path, monkeypatch):
    save_run(tmp_path, _Module(1.0))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_fdopen = os.fdopen

    class FullDisk:
        """A file whose writes stop with ENOSPC after 10 bytes."""

        def __init__(self, f) -> None:
            self.f, self.written = f, 0

        def write(self, data):
            if self.written + len(data) > 10:
                self.f.write(data[: 10 - self.written])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.written += len(data)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    monkeypatch.setattr(meit.util.atomic.os, "fdopen", lambda *a, **k: FullDisk(real_fdopen(*a, **k)))
    with pytest.raises(OSError, match="No space left"):
        save_run(tmp_path, _Module(2.0))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp file, no 0-byte file
    assert all(len(content) > 0 for content in before.values())


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
