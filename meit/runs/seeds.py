"""Multi-seed runs (`python -m meit.fit --seeds 0 1 2 ...`): one normal run directory per seed under a parent, and
the parent's metrics.json / report.md with every seed's metrics and their mean ± sd."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meit.eval import METRIC_KEYS
from meit.runs.rundir import METRICS, REPORT, new_run_dir
from meit.util.atomic import write_json, write_text


def split_seed_args(args: list[str]) -> tuple[list[int] | None, Path | None, list[str]]:
    """Takes `--seeds N [N ...]` (and `--run_dir`, when seeds are given) out of a `meit.fit` command line.

    Returns:
        The seeds (None without `--seeds`), the `--run_dir` given (None if absent), and the remaining arguments
        (all of them, `--run_dir` included, when there is no `--seeds`).

    Raises:
        SystemExit: `--seeds` without values or with non-integers, or a seed given twice (argparse's message).
    """
    parser = argparse.ArgumentParser(prog="python -m meit.fit", add_help=False, allow_abbrev=False)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--run_dir", type=str, default=None)
    known, rest = parser.parse_known_args(args)
    if known.seeds is None:
        return None, None, list(args)
    if len(set(known.seeds)) != len(known.seeds):
        parser.error(f"--seeds: each seed once, got {known.seeds}")
    return known.seeds, Path(known.run_dir) if known.run_dir else None, rest


def seed_run_args(rest: list[str], parent: Path, seed: int) -> list[str]:
    """The command line of one seed's run: PARENT/seed_N, seeded with N (after the user's own flags)."""
    return [*rest, "--seed_everything", str(seed), "--run_dir", str(parent / f"seed_{seed}")]


def run_seeds(seeds: list[int], parent: Path | None, rest: list[str], run: Callable[[list[str]], Path]) -> Path:
    """Runs `run` (one `meit.fit` run) per seed, then writes the parent's metrics.json and report.md.

    Args:
        seeds: the seeds, in run order.
        parent: the parent directory (default `runs/<date-time>/`).
        rest: the command line without `--seeds` and `--run_dir`.
        run: runs one command line; returns its run directory.

    Returns:
        The parent directory.
    """
    parent = parent or new_run_dir()
    run_dirs = {seed: run(seed_run_args(rest, parent, seed)) for seed in seeds}
    per_seed = {}
    for seed, run_dir in run_dirs.items():
        path = run_dir / METRICS
        if not path.exists():
            raise FileNotFoundError(f"{path}: seed {seed}'s run wrote no metrics (was it run with --test.skip?)")
        per_seed[seed] = json.loads(path.read_text())
    summary = aggregate(per_seed)
    write_json(parent / METRICS, summary)
    write_text(parent / REPORT, seeds_markdown(summary))
    return parent


def aggregate(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation (n - 1; 0.0 for one seed) of every float metric all seeds report.

    Returns:
        `{"seeds", "per_seed": {seed: metrics}, "mean": {key: float}, "sd": {key: float}}`.
    """
    seeds = list(per_seed)
    keys = [k for k, v in per_seed[seeds[0]].items()
            if isinstance(v, float) and all(isinstance(per_seed[s].get(k), float) for s in seeds)]
    mean, sd = {}, {}
    for key in keys:
        values = [per_seed[s][key] for s in seeds]
        mean[key] = sum(values) / len(values)
        var = sum((v - mean[key]) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
        sd[key] = math.sqrt(var)
    return {"seeds": seeds, "per_seed": {str(s): per_seed[s] for s in seeds}, "mean": mean, "sd": sd}


def seeds_markdown(summary: dict[str, Any]) -> str:
    """The parent's report: one row per metric, mean ± sd and each seed's value."""
    seeds = summary["seeds"]
    keys = [k for k in METRIC_KEYS if k in summary["mean"]]
    keys += [k for k in summary["mean"] if k not in keys]
    lines = [f"# MEIT multi-seed run ({len(seeds)} seeds)", "",
             "Each seed is a normal run directory (`seed_N/`, with its own report.md and 95 % CIs); "
             "sd is the sample standard deviation over the seeds.", "",
             "| metric | mean ± sd | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|---:|" + "---:|" * len(seeds)]
    for key in keys:
        values = " | ".join(f"{summary['per_seed'][str(s)][key]:.3f}" for s in seeds)
        lines.append(f"| {key} | {summary['mean'][key]:.3f} ± {summary['sd'][key]:.3f} | {values} |")
    return "\n".join(lines) + "\n"
