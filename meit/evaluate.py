"""``python -m meit.evaluate PREDICTIONS.jsonl``: all report metrics with bootstrap 95 % CIs.

Writes metrics.json (default: beside the predictions), prints a table, optionally writes a
Markdown table (``--markdown``) and a paired bootstrap comparison (``--compare B.jsonl``).
``python -m meit.evaluate labeller --ptbxl-database PATH [--folds F ...] [--json]`` measures the report labeller
on a PTB-XL database file (reports against their own ``scp_codes``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from meit.eval import compare_records, evaluate_records, read_predictions
from meit.eval.core import GROUP_KEYS, MAX_TEXT_CHARS
from meit.eval.labeller_check import check_labeller, format_check
from meit.util.atomic import write_json, write_text
from meit.util.errors import UserFacingError

ORDER = [k for keys in GROUP_KEYS.values() for k in keys]


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = argparse.ArgumentParser(prog="python -m meit.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("predictions", type=Path, help="predictions.jsonl ({id, prediction, reference[, labels_true]})")
    p.add_argument("--out", type=Path, default=None, help="metrics.json path (default: beside the predictions)")
    p.add_argument("--metrics", nargs="+", default=None, help=f"groups or keys: {', '.join(GROUP_KEYS)} (default all)")
    p.add_argument("--bertscore-model", default=None, help="bert-score model name or path (default: offline MiniLM)")
    p.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples (0: no CIs)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--compare", type=Path, default=None, help="second predictions file B: paired bootstrap A - B")
    p.add_argument("--markdown", type=Path, default=None, help="also write a Markdown table here")
    return p


def _fmt(v: float) -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def table_rows(metrics: dict, compare: dict | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the results table."""
    header = ["metric", "value", "95% CI"]
    if compare:
        header += ["B", "A - B", "p"]
    rows = []
    for k in ORDER:
        if k not in metrics:
            continue
        ci = metrics.get("ci95", {}).get(k)
        row = [k, _fmt(metrics[k]), f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""]
        if compare and k in compare:
            c = compare[k]
            row += [_fmt(c["b"]), _fmt(c["diff"]), f"{c['p_value']:.4f}"]
        rows.append(row)
    return header, rows


def to_markdown(metrics: dict, compare: dict | None = None) -> str:
    """A Markdown table of the metrics (and comparison)."""
    header, rows = table_rows(metrics, compare)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    note = f"n = {metrics['n']} ({metrics['n_empty']} empty predictions"
    if metrics.get("n_truncated"):
        note += f", {metrics['n_truncated']} truncated to {MAX_TEXT_CHARS:,} characters"
    note += ")"
    if "bertscore_model" in metrics:
        note += f"; BERTScore model: {metrics['bertscore_model']} (rescaled: {metrics['bertscore_rescaled']})"
    return "\n".join(lines) + f"\n\n{note}\n"


def print_table(metrics: dict, compare: dict | None = None) -> None:
    """Print the results with rich."""
    from rich.console import Console
    from rich.table import Table

    header, rows = table_rows(metrics, compare)
    title = f"n = {metrics['n']}, empty predictions = {metrics['n_empty']}"
    if metrics.get("n_truncated"):
        title += f", truncated to {MAX_TEXT_CHARS:,} characters = {metrics['n_truncated']}"
    table = Table(title=title)
    for h in header:
        table.add_column(h, justify="left" if h == "metric" else "right")
    for r in rows:
        table.add_row(*r)
    console = Console()
    console.print(table)
    if "bertscore_model" in metrics:
        console.print(f"BERTScore model: {metrics['bertscore_model']} (rescaled: {metrics['bertscore_rescaled']})")


def build_labeller_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m meit.evaluate labeller``."""
    p = argparse.ArgumentParser(
        prog="python -m meit.evaluate labeller", description="Score the report labeller on PTB-XL's own scp_codes."
    )
    p.add_argument("--ptbxl-database", type=Path, required=True, help="ptbxl_database.csv (report, scp_codes)")
    p.add_argument("--min-likelihood", type=float, default=0.0,
                   help="a code is true at this likelihood or above, or at 0 (unquantified); default 0: every code")
    p.add_argument("--folds", type=int, nargs="+", default=None, metavar="FOLD",
                   help="score only the rows of these strat_fold values (e.g. --folds 1 2 3 4); default: every row")
    p.add_argument("--text-classifier", action="store_true",
                   help="also score a text classifier cross-fitted by strat_fold (trained on the other folds' rows): "
                        "an estimate of how much of the coding the report text carries (about 2 min per 5,000 rows)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON instead of a table")
    return p


def labeller_main(argv: list[str]) -> int:
    """Run ``python -m meit.evaluate labeller``."""
    args = build_labeller_parser().parse_args(argv)
    try:
        result = check_labeller(args.ptbxl_database, args.min_likelihood, args.folds, args.text_classifier,
                                progress=lambda line: print(line, file=sys.stderr, flush=True))
    except (ValueError, OSError, UserFacingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else format_check(result), end="\n" if args.json else "")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "labeller":
        return labeller_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        records = read_predictions(args.predictions)
        kw = dict(
            bertscore_model=args.bertscore_model, n_bootstrap=args.n_bootstrap, seed=args.seed, metrics=args.metrics
        )
        metrics = evaluate_records(records, **kw)
        compare = None
        if args.compare is not None:
            compare = compare_records(records, read_predictions(args.compare), **kw)
            metrics["compare"] = {"a": str(args.predictions), "b": str(args.compare), "metrics": compare}
    except (ValueError, OSError, UserFacingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or args.predictions.with_name("metrics.json")
    write_json(out, metrics)
    print_table(metrics, compare)
    print(f"wrote {out}")
    if args.markdown is not None:
        write_text(args.markdown, to_markdown(metrics, compare))
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
