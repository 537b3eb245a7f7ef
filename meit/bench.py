"""`python -m meit.bench [data|render|train|generate|eval|grounding|smollm2|all]`: speed and memory figures.

Each figure is a median over repeats with min and max. The machine's fp32 matmul peak is measured in
the same run, so achieved FLOP/s fractions compare like with like on a noisy machine. Results are
printed, written to `bench.json` and appended to `docs/BENCHMARKS.md` with the command and machine.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from meit.util.atomic import write_json, write_text

# suite name -> (module, function); each function takes `repeats`, `peak_gflops` and `tiny` and returns
# {figure: value or Stat}. meit.benchmarks repeats the primitives of meit.data.synth, meit.data.render, meit.eval.
SUITES: dict[str, tuple[str, str]] = {
    "data": ("meit.benchmarks", "data_suite"),
    "render": ("meit.benchmarks", "render_suite"),
    "train": ("meit.benchmarks", "train_suite"),
    "generate": ("meit.benchmarks", "generate_suite"),
    "eval": ("meit.benchmarks", "eval_suite"),
    "grounding": ("meit.benchmarks", "grounding_suite"),
    "smollm2": ("meit.benchmarks", "smollm2_suite"),
}


def repeat_timed(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Runs `fn` `warmup` + `repeats` times; returns the median/min/max wall seconds of the timed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return summarise(times)


def interleaved_timed(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Runs every function once per round, the order rotated each round, so load on a shared machine hits all alike.

    Returns:
        Each function's wall seconds, one per timed round (round r of every list was measured together).
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def ratio_stat(times: dict[str, list[float]], numerator: str, denominator: str) -> dict[str, float]:
    """Median, min and max over rounds of `numerator`'s time over `denominator`'s, both from the same round."""
    return summarise([a / b for a, b in zip(times[numerator], times[denominator])])


def summarise(values: list[float]) -> dict[str, float]:
    """Median, min and max of `values`."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def rate(count: float, seconds: dict[str, float]) -> dict[str, float]:
    """Turns a seconds summary into a per-second rate summary (min rate from the max time)."""
    return {"median": count / seconds["median"], "min": count / seconds["max"], "max": count / seconds["min"],
            "n": seconds["n"]}


def matmul_peak_gflops(size: int = 1024, repeats: int = 5) -> dict[str, float]:
    """The fp32 matmul rate this machine reaches now with torch's thread count, in GFLOP/s."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds = repeat_timed(lambda: a @ b, repeats, warmup=2)
    return rate(2 * size**3 / 1e9, seconds)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (and its finished children), in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024  # ru_maxrss is KiB on Linux


def machine_description() -> str:
    """One line naming the CPU, cores, torch threads, memory and torch/Python versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, {mem_gb:.0f} GiB RAM, {gpu}, "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def run_suites(names: list[str], repeats: int, tiny: bool = False) -> dict[str, Any]:
    """Runs the named suites and returns all figures with the peak matmul rate and machine line."""
    results: dict[str, Any] = {
        "machine": machine_description(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m meit.bench " + " ".join(sys.argv[1:]),
        "fp32_matmul_peak_gflops": matmul_peak_gflops(),
    }
    for name in names:
        module_name, function_name = SUITES[name]
        suite = getattr(importlib.import_module(module_name), function_name)
        print(f"[bench] {name} ...", flush=True)
        results[name] = suite(repeats=repeats, peak_gflops=results["fp32_matmul_peak_gflops"]["median"], tiny=tiny)
    results["peak_rss_mb"] = peak_rss_mb()
    return results


def format_value(value: Any) -> str:
    """A figure as table text: a median with [min, max], or the plain value."""
    if isinstance(value, dict) and "median" in value:
        return f"{value['median']:.4g} [{value['min']:.4g}, {value['max']:.4g}] (n={value['n']})"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_section(results: dict[str, Any]) -> str:
    """The results as a BENCHMARKS.md section: command, machine, one table per suite."""
    lines = [f"## {results['date']}", "", f"Command: `{results['command']}`", "", f"Machine: {results['machine']}", "",
             f"fp32 matmul peak (1024^3, same run): {format_value(results['fp32_matmul_peak_gflops'])} GFLOP/s; "
             f"peak RSS {results['peak_rss_mb']:.0f} MiB", ""]
    for name in SUITES:
        if name not in results:
            continue
        lines += [f"### {name}", "", "| figure | median [min, max] |", "|---|---|"]
        lines += [f"| {key} | {format_value(value)} |" for key, value in results[name].items()]
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m meit.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suites", nargs="*", default=["all"], choices=[*SUITES, "all"], help="what to measure")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per figure (median, min, max)")
    parser.add_argument("--out", default="bench.json", help="where to write the JSON results")
    parser.add_argument("--tiny", action="store_true", help="tiny workloads (seconds): checks the plumbing only")
    parser.add_argument("--benchmarks-md", default="docs/BENCHMARKS.md", help="markdown file to append to ('' = none)")
    args = parser.parse_args(argv)
    names = list(SUITES) if "all" in args.suites else args.suites
    results = run_suites(names, args.repeats, args.tiny)
    write_json(args.out, results)
    section = markdown_section(results)
    print(section)
    if args.benchmarks_md:
        path = Path(args.benchmarks_md)
        before = path.read_text(encoding="utf-8") if path.is_file() else ""
        write_text(path, before + section)  # appended atomically: the old text survives a failed write
        print(f"appended to {path}; JSON in {args.out}")


if __name__ == "__main__":
    main()
