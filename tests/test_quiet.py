"""A run prints no deprecation warnings caused by the project's own calls and none of Lightning's logger tips."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_fit import REPO, tiny_args

NOISE = re.compile(r"FutureWarning|DeprecationWarning|Tip:|litlogger|litmodels|tensorboardX|args parameter is intended")


@pytest.mark.slow
@pytest.mark.parametrize("seeds", [[], ["--seeds", "0"]])
def test_a_tiny_run_prints_no_deprecation_warnings_or_logger_tips(tmp_path: Path, seeds: list[str]):
    args = tiny_args(tmp_path / "cache", tmp_path / "run", "--trainer.enable_progress_bar", "true", *seeds)
    out = subprocess.run([sys.executable, "-m", "meit.fit", *args], cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    noisy = [line for line in (out.stdout + out.stderr).splitlines() if NOISE.search(line)]
    assert not noisy, "\n".join(noisy)
    assert list((tmp_path / "run").rglob("lightning_logs/**/metrics.csv")), "the CSV logger still writes"
