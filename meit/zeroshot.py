"""`python -m meit.zeroshot`: cross-dataset (zero-shot) transfer of a trained run, beside its in-domain numbers.

Two ways in:

    python -m meit.zeroshot --run RUN_DIR --dataset ptbxl|mimic --root DIR
    python -m meit.zeroshot --config configs/zeroshot.yaml

The first tests a finished run on another dataset's test split (never seen in training, its own report style)
and, with the same generation and scoring code, on the run's own test split (in-domain). The second runs the
whole experiment: trains with `meit.fit` (unless the run directory already holds a finished run), then tests it
in-domain and on every target of the YAML (see `configs/zeroshot.yaml`).

True labels: datasets storing SCP codes (PTB-XL) use them; MIMIC-IV-ECG stores none, so `meit.eval` extracts
them from the reference report (`meit.eval.labels.extract_labels`). Writes `RUN_DIR/zeroshot/metrics.json`,
`zeroshot.md` (MEIT's zero-shot table: BLEU-4, METEOR, ROUGE-L, CIDEr-D, BERTScore, label macro-F1) and the
predictions of every test set.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from meit.config import DataConfig
from meit.eval import HEADLINE_METRICS, METRIC_TITLES, Scorer, format_metric
from meit.report_html import write_report_safely
from meit.runs.experiment import asks_remote_code, check_fit_block, train_or_reuse
from meit.runs.predict import (
    LoadedRun,
    dataset_config,
    dataset_label,
    generate,
    load,
    open_split,
)
from meit.runs.rundir import add_load_flags, load_flags, write_jsonl
from meit.util.atomic import write_json, write_text
from meit.util.errors import UserFacingError

SYNTHETIC_KEYS = ("synthetic_format", "synthetic_n", "synthetic_seed", "split_seed")


def target_config(run_data: DataConfig, target: dict[str, Any]) -> DataConfig:
    """A target dataset (`{"dataset", "root"}` or `{"dataset": "synthetic", "synthetic_format", ...}`) as a
    data config with the run's rate, length and prompts.

    Raises:
        ValueError: unknown keys, or a real dataset without a root.
    """
    unknown = set(target) - {"dataset", "root", *SYNTHETIC_KEYS}
    if unknown:
        raise ValueError(f"unknown target key(s) {sorted(unknown)}; use dataset, root, {', '.join(SYNTHETIC_KEYS)}")
    dataset = target.get("dataset", "synthetic")
    if dataset not in ("synthetic", "ptbxl", "mimic"):
        raise ValueError(f"unknown dataset: {dataset}; choose from mimic, ptbxl, synthetic")
    if dataset != "synthetic" and not target.get("root"):
        raise ValueError(f"target dataset {dataset} needs a root (the dataset folder)")
    synthetic = {k: target[k] for k in SYNTHETIC_KEYS if k in target}
    return dataset_config(run_data, dataset, target.get("root"), **synthetic)


def evaluate_on(run: LoadedRun, cfg: DataConfig, setting: str, score: Scorer, out_dir: Path,
                limit: int | None, batch_size: int | None = None) -> dict[str, Any]:
    """Generates on `cfg`'s test split, writes its predictions and returns the scored entry."""
    start = time.perf_counter()
    split = open_split(cfg, "test", limit)
    rows = generate(run, split, batch_size=batch_size)
    name = f"{setting}-{split.name}"
    write_jsonl(out_dir / "predictions" / f"{name}.jsonl", rows)
    metrics = score(rows)
    print(f"[zeroshot] {name}: n={len(rows)} " + ", ".join(
        f"{key} {metrics[key]:.3f}" for key in HEADLINE_METRICS if isinstance(metrics.get(key), float)), flush=True)
    return {"train": dataset_label(run.cfg.data), "test": split.name, "setting": setting, "n": len(rows),
            "labels_from": "dataset" if split.has_labels else "reference text", "metrics": metrics,
            "seconds": round(time.perf_counter() - start, 1)}


def markdown(summary: dict[str, Any]) -> str:
    """MEIT's zero-shot table: one row per (trained on -> tested on), in-domain first; value [95 % CI]."""
    lines = [f"# Zero-shot transfer: `{summary['run']}`", "",
             "Cells are corpus-level value [95 % bootstrap CI]; BERTScore is F1 with "
             f"`{summary.get('bertscore_model', '-')}`.", "",
             "| trained on | tested on | setting | n | " + " | ".join(map(METRIC_TITLES.get, HEADLINE_METRICS)) + " |",
             "|---|---|---|---:|" + "---:|" * len(HEADLINE_METRICS)]
    for entry in summary["results"]:
        cells = [format_metric(entry["metrics"], key) for key in HEADLINE_METRICS]
        lines.append(f"| {entry['train']} | {entry['test']} | {entry['setting']} | {entry['n']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_zeroshot(run_dir: str | Path, targets: Sequence[dict[str, Any]], limit: int | None = None,
                 n_bootstrap: int | None = None, in_domain: bool = True, out: str | Path | None = None,
                 batch_size: int | None = None, load_options: dict[str, bool] | None = None) -> dict[str, Any]:
    """Tests a run in-domain and on each target dataset; writes metrics.json and zeroshot.md.

    Args:
        run_dir: a finished `meit.fit` run directory.
        targets: target datasets (see `target_config`).
        limit: first `limit` test records of each dataset.
        n_bootstrap: bootstrap resamples (default: the run's `test.n_bootstrap`).
        in_domain: also test on the run's own test split (same code path, for a like-for-like table).
        out: output folder (default RUN_DIR/zeroshot).
        batch_size: generation batch size (default: the run's).
        load_options: the command line's `meit.runs.rundir.load_run` flags (`trust_remote_code`,
            `allow_unverified_backbone`).

    Returns:
        The summary written to metrics.json.
    """
    run = load(run_dir, **(load_options or {}))
    out_dir = Path(out) if out else Path(run_dir) / "zeroshot"
    configs = [("in-domain", run.cfg.data)] if in_domain else []
    configs += [("zero-shot", target_config(run.cfg.data, t)) for t in targets]
    n_boot = run.cfg.test.n_bootstrap if n_bootstrap is None else n_bootstrap
    with Scorer(run.cfg.test.bertscore_model, n_boot, seed=0) as score:
        results = [evaluate_on(run, cfg, setting, score, out_dir, limit, batch_size) for setting, cfg in configs]
    summary = {"run": str(run_dir), "train_dataset": dataset_label(run.cfg.data), "limit": limit,
               "n_bootstrap": n_boot, "bertscore_model": results[0]["metrics"].get("bertscore_model"),
               "results": results}
    write_outputs(summary, out_dir)
    return summary


def write_outputs(summary: dict[str, Any], out_dir: Path) -> None:
    """metrics.json and zeroshot.md in `out_dir`; the run's report.html when `out_dir` is RUN_DIR/zeroshot (the
    folder the page reads)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", summary)
    write_text(out_dir / "zeroshot.md", markdown(summary))
    if out_dir.resolve() == (Path(summary["run"]) / "zeroshot").resolve():
        write_report_safely(summary["run"])


def run_config_file(path: str | Path, load_options: dict[str, bool] | None = None) -> dict[str, Any]:
    """The whole experiment of a zeroshot YAML: train (or reuse) the run, then test it.

    The YAML is this invocation's input, so its `fit.model.backbone.trust_remote_code` allows remote code as the same
    flag of `meit.fit` does; a run trained now is reloaded without the backbone check (this invocation resolved it), a
    reused one is checked as `meit.runs.rundir.load_run` checks any saved run (`load_options`: the command line's
    flags).

    YAML keys: `run_dir`, `fit` (meit.fit flags as nested keys), `targets` (list of datasets), optional `limit`,
    `n_bootstrap`, `batch_size`, `in_domain`.

    Raises:
        ValueError: a missing `run_dir`/`targets` or an unknown key.
    """
    spec = yaml.safe_load(Path(path).read_text()) or {}
    allowed = {"run_dir", "fit", "targets", "limit", "n_bootstrap", "batch_size", "in_domain"}
    if set(spec) - allowed:
        raise ValueError(f"{path}: unknown key(s) {sorted(set(spec) - allowed)}; choose from {sorted(allowed)}")
    if not spec.get("run_dir") or not spec.get("targets"):
        raise ValueError(f"{path}: needs `run_dir` and `targets`")
    run_dir = Path(spec["run_dir"])
    start = time.perf_counter()
    fit_config = check_fit_block(spec.get("fit"), f"{path}: fit")
    trained = train_or_reuse(run_dir, fit_config, "zeroshot")
    options = dict(load_options or {"trust_remote_code": False, "allow_unverified_backbone": False})
    options["trust_remote_code"] |= asks_remote_code(fit_config)
    options["allow_unverified_backbone"] |= trained
    summary = run_zeroshot(run_dir, spec["targets"], spec.get("limit"), spec.get("n_bootstrap"),
                           spec.get("in_domain", True), batch_size=spec.get("batch_size"), load_options=options)
    summary["experiment_seconds"] = round(time.perf_counter() - start, 1)
    write_json(run_dir / "zeroshot" / "metrics.json", summary)
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m meit.zeroshot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="run the whole experiment of a YAML (configs/zeroshot.yaml)")
    parser.add_argument("--run", default=None, help="a finished run directory (`python -m meit.fit`)")
    parser.add_argument("--dataset", choices=("ptbxl", "mimic", "synthetic"), default=None,
                        help="the dataset to test on, zero-shot")
    parser.add_argument("--root", default=None, help="its root folder (ptbxl, mimic)")
    parser.add_argument("--synthetic-format", choices=("ptbxl", "mimic"), default="ptbxl",
                        help="with --dataset synthetic: the synthetic site to test on")
    parser.add_argument("--synthetic-n", type=int, default=None, help="with --dataset synthetic: its size")
    parser.add_argument("--synthetic-seed", type=int, default=1, help="with --dataset synthetic: its seed")
    parser.add_argument("--limit", type=int, default=None, help="first N test records of each dataset")
    parser.add_argument("--n-bootstrap", type=int, default=None, help="bootstrap resamples (default: the run's)")
    parser.add_argument("--batch-size", type=int, default=None, help="generation batch size (default: the run's)")
    parser.add_argument("--no-in-domain", action="store_true", help="skip the in-domain test split")
    parser.add_argument("--out", default=None, help="output folder (default: RUN_DIR/zeroshot)")
    add_load_flags(parser)
    return parser


def cli_target(args: argparse.Namespace) -> dict[str, Any]:
    """The target dataset named on the command line."""
    if args.dataset == "synthetic":
        target = {"dataset": "synthetic", "synthetic_format": args.synthetic_format,
                  "synthetic_seed": args.synthetic_seed}
        if args.synthetic_n:
            target["synthetic_n"] = args.synthetic_n
        return target
    return {"dataset": args.dataset, "root": args.root}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the command line; prints the zero-shot table."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.config and (not args.run or not args.dataset):
        parser.error("give --run RUN_DIR --dataset ptbxl|mimic|synthetic [--root DIR], or --config FILE")
    if not args.config and args.dataset != "synthetic" and not args.root:
        parser.error(f"--dataset {args.dataset} needs --root DIR")
    try:
        if args.config:
            summary = run_config_file(args.config, load_flags(args))
        else:
            summary = run_zeroshot(args.run, [cli_target(args)], args.limit, args.n_bootstrap,
                                   not args.no_in_domain, args.out, args.batch_size, load_flags(args))
    except (UserFacingError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(markdown(summary))
    return summary


if __name__ == "__main__":
    main()
