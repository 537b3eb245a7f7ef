"""`python -m meit.robustness --run RUN_DIR`: how a trained run degrades under ECG noise.

Two protocols:

- `snr` (default): for each noise kind (`meit.data.noise.NOISES`: gaussian, baseline, powerline, emg, motion, mix)
  and each SNR in dB (per lead, 10 log10(P_signal / P_noise); `inf` = clean), noise is added to every test signal,
  reports are generated and scored.
- `meit-segment`: MEIT's own protocol (`meit.data.noise.meit_segment_noise`): Gaussian noise on one random segment,
  for each clean "ratio" (1.0 = clean, 0.95, 0.9, 0.85, 0.8).

Noise is seeded per (seed, protocol, kind, level, record id): the same command gives the same numbers. For
image-branch runs the noise goes on the signal before it is rendered. Writes, under `RUN_DIR/robustness/` (or
`--out`): `metrics.json` (every condition's full metrics with 95 % CIs), `robustness.md` (tables), `robustness.png`
(metric vs noise level, one line per noise kind, CI bands) and `predictions/<condition>.jsonl`.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meit.data.noise import MEIT_RATIOS, NOISES, add_noise, meit_segment_noise
from meit.data.seeding import record_seed
from meit.eval import HEADLINE_METRICS, PLOT_METRICS, Scorer, format_metric
from meit.report_html import write_report_safely
from meit.runs.predict import (
    EvalSplit,
    LoadedRun,
    SignalTransform,
    generate,
    load,
    open_split,
)
from meit.runs.rundir import add_load_flags, load_flags, write_jsonl
from meit.util.atomic import atomic_file, write_json, write_text
from meit.util.errors import UserFacingError

PROTOCOLS = ("snr", "meit-segment")
DEFAULT_SNR_DB = ("inf", "24", "18", "12", "6", "0")
DEFAULT_NOISES = ("gaussian", "baseline", "powerline", "emg", "motion")
SEGMENT_NOISE = "meit-segment"


@dataclass(frozen=True)
class Condition:
    """One noisy test set: a noise kind at one level (SNR in dB, or MEIT's clean ratio)."""

    noise: str
    level: float

    @property
    def clean(self) -> bool:
        """Whether no noise is added (SNR inf, or ratio 1.0)."""
        return math.isinf(self.level) if self.noise != SEGMENT_NOISE else self.level >= 1.0

    @property
    def name(self) -> str:
        """File-name-safe id, e.g. `gaussian_snr12`, `meit-segment_ratio0.9`, `clean`."""
        if self.clean:
            return "clean"
        unit = "ratio" if self.noise == SEGMENT_NOISE else "snr"
        return f"{self.noise}_{unit}{self.level:g}"


def parse_level(text: str) -> float:
    """An SNR or ratio from the command line: a number, or `inf`."""
    value = float(text)
    if math.isnan(value):
        raise argparse.ArgumentTypeError(f"not a noise level: {text}")
    return value


def level_json(value: float) -> float | str:
    """A level as JSON can hold it (`inf` as the string "inf")."""
    return "inf" if math.isinf(value) else value


def level_text(value: float | str) -> str:
    """A level for tables: `inf`, `12`, `0.95`."""
    return "inf" if value == "inf" else f"{float(value):g}"


def conditions(protocol: str, noises: Sequence[str], levels: Sequence[float]) -> list[Condition]:
    """Every (noise, level) pair of a sweep, levels in the given order.

    Raises:
        ValueError: unknown protocol or noise kind, or a ratio outside [0, 1].
    """

    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol: {protocol}; choose from {', '.join(PROTOCOLS)}")
    if protocol == SEGMENT_NOISE:
        bad = [r for r in levels if not 0.0 <= r <= 1.0]
        if bad:
            raise ValueError(f"--ratio values must be in [0, 1], got {bad}")
        return [Condition(SEGMENT_NOISE, float(r)) for r in levels]
    for noise in noises:
        NOISES.get(noise)  # unknown kinds fail, listing the choices
    return [Condition(noise, float(level)) for noise in noises for level in levels]


def transform_for(condition: Condition, fs: float) -> SignalTransform | None:
    """The seeded signal transform of a condition (None when clean)."""
    if condition.clean:
        return None
    if condition.noise == SEGMENT_NOISE:
        return lambda signal, rng: meit_segment_noise(signal, condition.level, rng)
    return lambda signal, rng: add_noise(signal, condition.level, condition.noise, fs, rng)


def condition_seed(seed: int, condition: Condition) -> int:
    """The seed of one condition's noise (records add their id to it)."""
    return record_seed(seed, condition.noise, repr(condition.level))


def sweep(run: LoadedRun, split: EvalSplit, conds: Sequence[Condition], score: Scorer, seed: int,
          out: Path | None = None, batch_size: int | None = None) -> list[dict[str, Any]]:
    """Generates and scores every condition; the clean test set is generated and scored once.

    Returns:
        One entry per condition: {"noise", "level", "condition", "clean", "metrics", "seconds"}.
    """
    fs = float(run.cfg.data.sampling_rate)
    cached: dict[str, tuple[dict[str, Any], float]] = {}
    results = []
    for condition in conds:
        start = time.perf_counter()
        if condition.name not in cached:
            rows = generate(run, split, transform_for(condition, fs), condition_seed(seed, condition), batch_size)
            if out is not None:
                write_jsonl(out / "predictions" / f"{condition.name}.jsonl", rows)
            cached[condition.name] = (score(rows), time.perf_counter() - start)
            print(f"[robustness] {condition.name}: " + ", ".join(
                f"{k} {cached[condition.name][0][k]:.3f}" for k in HEADLINE_METRICS if k in cached[condition.name][0]),
                flush=True)
        metrics, seconds = cached[condition.name]
        results.append({"noise": condition.noise, "level": level_json(condition.level), "condition": condition.name,
                        "clean": condition.clean, "metrics": metrics, "seconds": round(seconds, 2)})
    return results


def markdown(summary: dict[str, Any], metrics: Sequence[str] = HEADLINE_METRICS) -> str:
    """One table per metric: a row per noise kind, a column per level, cells `value [95 % CI]`."""
    unit = "clean ratio" if summary["protocol"] == SEGMENT_NOISE else "SNR (dB)"
    levels = list(dict.fromkeys(level_text(r["level"]) for r in summary["results"]))
    noises = list(dict.fromkeys(r["noise"] for r in summary["results"]))
    by_key = {(r["noise"], level_text(r["level"])): r["metrics"] for r in summary["results"]}
    lines = [f"# Noise robustness: `{summary['run']}`", "",
             f"Protocol `{summary['protocol']}` on the {summary['split']} split of `{summary['dataset']}` "
             f"(n = {summary['n']}), seed {summary['seed']}; cells are value [95 % bootstrap CI]. Noise levels: "
             f"{unit}.", ""]
    for key in metrics:
        lines += [f"## {key}", "", "| noise | " + " | ".join(levels) + " |", "|---|" + "---:|" * len(levels)]
        for noise in noises:
            cells = [format_metric(by_key.get((noise, level), {}), key) for level in levels]
            lines.append(f"| {noise} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_positions(levels: Sequence[float | str]) -> tuple[list[float], list[str]]:
    """x positions and tick labels: finite levels as they are, `inf` one step right of the largest ("clean")."""
    finite = sorted({float(v) for v in levels if v != "inf"})
    step = (finite[-1] - finite[0]) / max(1, len(finite) - 1) if len(finite) > 1 else 6.0
    right = (finite[-1] if finite else 0.0) + step
    xs = [right if v == "inf" else float(v) for v in levels]
    labels = ["clean" if v == "inf" else f"{float(v):g}" for v in levels]
    return xs, labels


def plot(summary: dict[str, Any], path: Path, metrics: Sequence[str] = PLOT_METRICS) -> None:
    """Metric vs noise level, one line per noise kind, shaded 95 % CI bands; one panel per metric (PNG)."""
    xlabel = "clean ratio" if summary["protocol"] == SEGMENT_NOISE else "SNR per lead (dB)"
    title = f"noise robustness ({summary['dataset']}, n = {summary['n']})"
    plot_curves(summary["results"], "noise", metrics, xlabel, title, path)


def plot_curves(results: list[dict[str, Any]], line_key: str, metrics: Sequence[str], xlabel: str, title: str,
                path: Path) -> None:
    """One panel per metric: the metric vs `level`, one line per value of `row[line_key]`, 95 % CI bands (PNG).

    Args:
        results: rows `{line_key: name, "level": SNR dB or "inf", "metrics": metrics.json dict}`.
        line_key: the row field naming a line (the noise kind, the representation).
        metrics: metric keys, one panel each.
        xlabel: x-axis label.
        title: figure title.
        path: PNG to write (parents created).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    names = list(dict.fromkeys(r[line_key] for r in results))
    for ax, key in zip(axes[0], metrics):
        for name in names:
            rows = [r for r in results if r[line_key] == name and key in r["metrics"]]
            xs, labels = plot_positions([r["level"] for r in rows])
            order = np.argsort(xs)
            x = np.asarray(xs)[order]
            y = np.asarray([rows[i]["metrics"][key] for i in order], dtype=float)
            ci = [(rows[i]["metrics"].get("ci95") or {}).get(key, [np.nan, np.nan]) for i in order]
            (line,) = ax.plot(x, y, marker="o", label=name)
            ax.fill_between(x, [c[0] for c in ci], [c[1] for c in ci], color=line.get_color(), alpha=0.15)
            ax.set_xticks(x, [labels[i] for i in order])
        ax.set_title(key)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def run_robustness(run_dir: str | Path, protocol: str = "snr", noises: Sequence[str] = DEFAULT_NOISES,
                   levels: Sequence[float] | None = None, seed: int = 0, split: str = "test", limit: int | None = None,
                   n_bootstrap: int | None = None, out: str | Path | None = None,
                   batch_size: int | None = None, load_options: dict[str, bool] | None = None) -> dict[str, Any]:
    """The whole sweep: load the run, open its test split, generate and score every condition, write outputs.

    Args:
        run_dir: a finished `meit.fit` run directory.
        protocol: "snr" or "meit-segment".
        noises: noise kinds (snr protocol).
        levels: SNRs in dB (snr) or clean ratios (meit-segment); defaults: inf 24 18 12 6 0 / 1.0 .. 0.8.
        seed: noise seed.
        split: which split of the run's dataset to test on.
        limit: first `limit` records of the split only.
        n_bootstrap: bootstrap resamples (default: the run's `test.n_bootstrap`).
        out: output folder (default RUN_DIR/robustness).
        batch_size: generation batch size (default: the run's).
        load_options: the command line's `meit.runs.rundir.load_run` flags (`trust_remote_code`,
            `allow_unverified_backbone`).

    Returns:
        The summary written to metrics.json.
    """

    if levels is None:
        levels = MEIT_RATIOS if protocol == SEGMENT_NOISE else [parse_level(v) for v in DEFAULT_SNR_DB]
    conds = conditions(protocol, noises, levels)
    run = load(run_dir, **(load_options or {}))
    out_dir = Path(out) if out else Path(run_dir) / "robustness"
    data = open_split(run.cfg.data, split, limit)
    n_boot = run.cfg.test.n_bootstrap if n_bootstrap is None else n_bootstrap
    start = time.perf_counter()
    with Scorer(run.cfg.test.bertscore_model, n_boot, seed=0) as score:
        results = sweep(run, data, conds, score, seed, out_dir, batch_size)
    summary = {"run": str(run_dir), "protocol": protocol, "seed": seed, "split": split, "dataset": data.name,
               "n": len(data.records), "input": run.input_kind, "n_bootstrap": n_boot,
               "seconds": round(time.perf_counter() - start, 1), "results": results}
    write_outputs(summary, out_dir)
    return summary


def write_outputs(summary: dict[str, Any], out_dir: Path) -> None:
    """metrics.json, robustness.md and robustness.png in `out_dir`; the run's report.html when `out_dir` is
    RUN_DIR/robustness (the folder the page reads)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", summary)
    write_text(out_dir / "robustness.md", markdown(summary))
    plot(summary, out_dir / "robustness.png")
    if out_dir.resolve() == (Path(summary["run"]) / "robustness").resolve():
        write_report_safely(summary["run"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m meit.robustness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run directory written by `python -m meit.fit`")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="snr", help="noise protocol (default: snr)")
    parser.add_argument("--snr-db", nargs="+", type=parse_level, default=None,
                        help="SNRs in dB per lead, `inf` = clean (default: inf 24 18 12 6 0)")
    parser.add_argument("--noise", nargs="+", default=list(DEFAULT_NOISES),
                        help="noise kinds (default: gaussian baseline powerline emg motion; also: mix)")
    parser.add_argument("--ratio", nargs="+", type=parse_level, default=None,
                        help="meit-segment clean ratios (default: 1.0 0.95 0.9 0.85 0.8)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (same seed, same numbers)")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test", help="split to test on")
    parser.add_argument("--limit", type=int, default=None, help="first N records of the split only")
    parser.add_argument("--n-bootstrap", type=int, default=None, help="bootstrap resamples (default: the run's)")
    parser.add_argument("--batch-size", type=int, default=None, help="generation batch size (default: the run's)")
    parser.add_argument("--out", default=None, help="output folder (default: RUN_DIR/robustness)")
    add_load_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the command line; prints the markdown tables and where the outputs went."""
    args = build_parser().parse_args(argv)
    if args.protocol == SEGMENT_NOISE and args.snr_db is not None:
        build_parser().error("--snr-db belongs to the snr protocol; use --ratio with --protocol meit-segment")
    levels = args.ratio if args.protocol == SEGMENT_NOISE else args.snr_db
    try:
        summary = run_robustness(args.run, args.protocol, args.noise, levels, args.seed, args.split, args.limit,
                                 args.n_bootstrap, args.out, args.batch_size, load_flags(args))
    except (UserFacingError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    out_dir = Path(args.out) if args.out else Path(args.run) / "robustness"
    print(markdown(summary))
    print(f"wrote {out_dir / 'metrics.json'}, {out_dir / 'robustness.md'}, {out_dir / 'robustness.png'}")
    return summary


if __name__ == "__main__":
    main()
