"""`python -m meit.compare --config configs/compare.yaml`: signal vs image representation, head to head.

Every representation (the signal branch, the controlled image branch, optionally LLaMA 3.2 Vision) is trained and
tested by `python -m meit.fit` from the shared `fit:` block (data, split, backbone, trainer; `meit.fit`'s own config
schema) merged with its own block (`representations: {name: {model: {...}}}`), each into `RUN_DIR/<name>/`; a
finished run of the same settings there is reused (`meit.runs.experiment.train_or_reuse`). Then each trained run
generates reports for the same test records at every SNR level (`snr_db`; noise of kind `noise` is added to the
signal before rendering for image runs, seeded per record exactly alike for all representations) and the reports
are scored with 95 % bootstrap CIs. Representations are compared pairwise at every level with a paired bootstrap
(`meit.eval.compare_records`).

Outputs in RUN_DIR: `compare.md` (one table: every metric with its 95 % CI per representation and SNR, and the
paired-bootstrap p-values between representations), `compare.png` (metric vs SNR, one line per representation),
`compare.json` (everything), `predictions/<name>/<condition>.jsonl`, and the run directory of each representation.
"""

from __future__ import annotations

import gc
import itertools
import math
import os
import sys
from pathlib import Path
from typing import Any

from meit.eval import METRIC_KEYS, PLOT_METRICS, Scorer, format_metric
from meit.report_html import write_report_safely
from meit.robustness import Condition, condition_seed, level_json, level_text, plot_curves, transform_for
from meit.runs.experiment import asks_remote_code, check_fit_block, merge_fit_blocks, train_or_reuse
from meit.runs.predict import generate, load, open_split
from meit.runs.rundir import new_run_dir, write_jsonl
from meit.util.atomic import write_json, write_text
from meit.util.errors import UserFacingError

DEFAULT_REPRESENTATIONS: dict[str, dict[str, Any]] = {
    "signal": {},
    "image": {"model": {"branch": "image", "encoder": "cnn_small"}},
}


def build_parser() -> Any:
    """The jsonargparse parser of `python -m meit.compare` (every option also in `--config` YAML)."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog="python -m meit.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of these options")
    parser.add_argument("--fit", type=dict[str, Any], default={},
                        help="meit.fit options shared by every representation, as in a configs/*.yaml preset "
                             "({trainer: {max_epochs: 4}, data: {...}, model: {...}})")
    parser.add_argument("--representations", type=dict[str, dict[str, Any]], default=DEFAULT_REPRESENTATIONS,
                        help="name -> that representation's meit.fit options over `fit` (the first is the reference "
                             "of the p-values), e.g. {signal: {}, image: {model: {branch: image, encoder: cnn_small}}}")
    parser.add_argument("--snr_db", type=list[float | str], default=["inf", 18, 12, 6, 0],
                        help="SNR levels in dB per lead (`inf` = clean)")
    parser.add_argument("--noise", type=str, default="gaussian", help="noise kind of `meit.data.noise`")
    parser.add_argument("--limit", type=int | None, default=None, help="test records per level (default: all)")
    parser.add_argument("--metrics", type=list[str] | None, default=None,
                        help="metric groups or keys to compute (default: all; see `meit.eval`)")
    parser.add_argument("--n_bootstrap", type=int, default=1000, help="bootstrap resamples (CIs and p-values)")
    parser.add_argument("--bertscore_model", type=str | None, default=None, help="BERTScore model (default MiniLM)")
    parser.add_argument("--seed", type=int, default=0, help="training seed of every run and seed of the noise")
    parser.add_argument("--run_dir", type=str | None, default=None,
                        help="output folder (default: runs/compare-<date-time>/); printed last")
    return parser


def representation_blocks(cfg: Any) -> dict[str, dict[str, Any]]:
    """Each representation's whole `meit.fit` config: the shared `fit` block, its own block over it, the seed."""
    shared = check_fit_block(cfg.fit, "--fit")
    blocks = {}
    for name, own in cfg.representations.items():
        block = merge_fit_blocks(shared, check_fit_block(own, f"--representations.{name}"))
        blocks[name] = {**block, "seed_everything": cfg.seed}
    return blocks


def train_all(blocks: dict[str, dict[str, Any]], run_dir: Path) -> dict[str, Path]:
    """Trains and tests every representation with `meit.fit` (or reuses its finished run); returns run dirs."""
    runs = {}
    for name, block in blocks.items():
        print(f"[compare] {name}", flush=True)
        train_or_reuse(run_dir / name, block, "compare")
        runs[name] = run_dir / name
        gc.collect()
    return runs


def evaluate_all(cfg: Any, blocks: dict[str, dict[str, Any]], runs: dict[str, Path], out: Path,
                 scorer: Scorer) -> dict[str, Any]:
    """Generates and scores every representation at every SNR level, then the pairwise paired bootstraps."""
    levels = [float(v) for v in cfg.snr_db]
    conds = [Condition(cfg.noise, level) for level in levels]
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
    results = []
    ids: list[str] | None = None
    for name, run_dir in runs.items():  # trained by this invocation, with these flags: reloaded as they asked
        trust = asks_remote_code(blocks[name])
        run = load(run_dir, trust_remote_code=trust, allow_unverified_backbone=True)
        split = open_split(run.cfg.data, "test", limit=cfg.limit)
        split_ids = [r.record_id for r in split.records]
        if ids is not None and split_ids != ids:
            raise ValueError(f"{name} was tested on other records than {next(iter(runs))}: the runs must share "
                             "data options (the shared fit block)")
        ids = split_ids
        fs = float(run.cfg.data.sampling_rate)
        rows[name] = {}
        for cond in conds:
            generated = generate(run, split, transform_for(cond, fs), condition_seed(cfg.seed, cond))
            rows[name][cond.name] = generated
            write_jsonl(out / "predictions" / name / f"{cond.name}.jsonl", generated)
            metrics = scorer(generated)
            results.append({"representation": name, "level": level_json(cond.level), "condition": cond.name,
                            "metrics": metrics})
            print(f"[compare] {name} {cond.name}: " + ", ".join(
                f"{k} {metrics[k]:.3f}" for k in PLOT_METRICS if isinstance(metrics.get(k), float)), flush=True)
        del run
        gc.collect()
    tests = []
    for a, b in itertools.combinations(runs, 2):
        for cond in conds:
            paired = scorer.compare(rows[b][cond.name], rows[a][cond.name])
            tests.append({"a": b, "b": a, "level": level_json(cond.level), "condition": cond.name, "tests": paired})
    return {"representations": list(runs), "runs": {k: str(v) for k, v in runs.items()}, "noise": cfg.noise,
            "levels": [level_json(v) for v in levels], "n": len(ids or []), "results": results, "paired": tests}


def _p_cell(tests: dict[str, Any], key: str) -> str:
    """A paired-bootstrap p-value with the sign of the difference, or `-`."""
    test = tests.get(key)
    if not test or not isinstance(test.get("p_value"), (int, float)) or math.isnan(test["diff"]):
        return "-"
    return f"p={test['p_value']:.3f} ({test['diff']:+.3f})"


def table_keys(summary: dict[str, Any]) -> list[str]:
    """The main metrics present in the results, in `meit.eval.METRIC_KEYS` order."""
    present = {k for r in summary["results"] for k, v in r["metrics"].items() if isinstance(v, (int, float))}
    return [k for k in METRIC_KEYS if k in present]


def markdown(summary: dict[str, Any]) -> str:
    """One Markdown table: per SNR level, each representation's metrics (95 % CI) and the pairwise p-values."""
    keys = table_keys(summary)
    lines = [f"# Signal vs image: {', '.join(summary['representations'])}", "",
             f"Same test records (n = {summary['n']}), `{summary['noise']}` noise on the signal (before rendering "
             "for image runs). Cells: value [95 % bootstrap CI]; `p` rows: paired bootstrap of the first named "
             "representation against the second (difference in brackets).", "",
             "| SNR (dB) | representation | " + " | ".join(keys) + " |",
             "|---|---|" + "---:|" * len(keys)]
    for level in summary["levels"]:
        for r in (r for r in summary["results"] if r["level"] == level):
            lines.append(f"| {level_text(level)} | {r['representation']} | "
                         + " | ".join(format_metric(r["metrics"], k) for k in keys) + " |")
        for t in (t for t in summary["paired"] if t["level"] == level):
            lines.append(f"| {level_text(level)} | p: {t['a']} vs {t['b']} | "
                         + " | ".join(_p_cell(t["tests"], k) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path) -> None:
    """Metric vs SNR, one line per representation with its 95 % CI band; one panel per metric (PNG)."""
    keys = [k for k in PLOT_METRICS if k in table_keys(summary)] or table_keys(summary)[:4]
    title = f"signal vs image under {summary['noise']} noise (n = {summary['n']})"
    plot_curves(summary["results"], "representation", keys, "SNR per lead (dB)", title, path)


def run_compare(cfg: Any) -> Path:
    """Trains, evaluates and writes compare.md / compare.png / compare.json; returns the output folder."""
    out = Path(cfg.run_dir) if cfg.run_dir else new_run_dir(prefix="compare-")
    out.mkdir(parents=True, exist_ok=True)
    if len(cfg.representations) < 1:
        raise UserFacingError("--representations", "is empty")
    blocks = representation_blocks(cfg)  # every block checked before the first run trains
    runs = train_all(blocks, out)
    scorer = Scorer(cfg.bertscore_model, cfg.n_bootstrap, seed=0, metrics=cfg.metrics)
    try:
        summary = evaluate_all(cfg, blocks, runs, out, scorer)
    finally:
        scorer.close()
    write_json(out / "compare.json", summary)
    write_text(out / "compare.md", markdown(summary))
    plot(summary, out / "compare.png")
    for run_dir in runs.values():  # each representation's page shows the head-to-head table
        write_report_safely(run_dir)
    return out


def main(argv: list[str] | None = None) -> Path:
    """`python -m meit.compare [--config configs/compare.yaml] [options]`; prints the table, then the folder."""
    parser = build_parser()
    cfg = parser.parse_args(argv)
    try:
        out = run_compare(cfg)
    except UserFacingError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    print((out / "compare.md").read_text(), flush=True)
    print(os.fspath(out), flush=True)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
