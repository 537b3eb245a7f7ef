"""`python -m meit.report_html RUN_DIR [--baseline RUN_DIR] [--out FILE]`: a run's results as one HTML page.

The page (`RUN_DIR/report.html`, self-contained: charts and ECGs are inlined as base64 images, no network) holds
the run's configuration, every metric of metrics.json with its 95 % CI, the clinical label, clinical-efficacy,
labeller-ceiling, probe and grounding tables (each says "not computed for this run" where metrics.json lacks it),
a per-finding F1 chart, the robustness / zero-shot / signal-vs-image results found for the run
(`RUN_DIR/robustness/`, `RUN_DIR/zeroshot/`, a `compare.json` in the parent folder naming the run) and a selection
of test records: the ECG page, the generated report beside the reference, the findings matched / missed / invented
and the grounding flags of each prediction.

`meit.fit` writes it at the end of a run; `meit.robustness`, `meit.zeroshot` and `meit.compare` rewrite it after
their own outputs. A failure to write the page is reported on stderr and never loses the run's other outputs
(`write_report_safely`).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import yaml

from meit.data.dataset import page_seed
from meit.data.render import RenderConfig, render_pil
from meit.data.scp import scp_statements
from meit.eval import HEADLINE_METRICS, METRIC_KEYS, format_metric, read_predictions
from meit.eval.label_metrics import LabelStats, label_space
from meit.eval.labels import extract_labels
from meit.runs.predict import open_split
from meit.runs.rundir import CONFIG, METRICS, PREDICTIONS, RUN_INFO, read_config
from meit.tasks.images import EVAL_SEED, page_renderer
from meit.util.atomic import write_text
from meit.util.errors import UserFacingError

REPORT_HTML = "report.html"
TEMPLATE = "report.html.j2"
NOT_COMPUTED = "not computed for this run"
SECTIONS = {
    "label": ("label_macro_f1", "label_hamming", "label_auc"),
    "efficacy": ("ce_micro_f1", "ce_macro_f1", "ce_precision", "ce_recall"),
    "ceiling": ("label_ceiling_macro_f1",),
    "probe": ("probe_label_macro_f1", "probe_label_auc"),
    "grounding": ("grounding_checked", "grounding_contradicted", "grounding_contradiction_rate"),
}
RESULT_METRICS = (*HEADLINE_METRICS, "ce_macro_f1",
                  "grounding_contradiction_rate")  # the columns of the robustness / zero-shot / compare tables
N_BEST, N_WORST, N_FINDINGS, N_CHART = 3, 3, 6, 25
ECG_DPI = 40  # the paper-style page at 440x340 px: leads readable, ~30 kB each as a 16-colour PNG


@dataclass
class RunData:
    """What the page is built from: one run directory's files.

    Attributes:
        run_dir: the run directory.
        config: config.yaml as a dict.
        metrics: metrics.json.
        rows: predictions.jsonl rows.
        info: run.json (empty if absent).
        robustness: RUN_DIR/robustness/metrics.json, if the run has one.
        zeroshot: RUN_DIR/zeroshot/metrics.json, if the run has one.
        compare: the parent folder's compare.json, if it names this run.
    """

    run_dir: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    rows: list[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)
    robustness: dict[str, Any] | None = None
    zeroshot: dict[str, Any] | None = None
    compare: dict[str, Any] | None = None


def _json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, None if absent; a ValueError naming the file if it is not valid JSON."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from e


def _compare_for(run_dir: Path) -> dict[str, Any] | None:
    """The signal-vs-image summary of the `meit.compare` experiment this run belongs to, if any."""
    summary = _json(run_dir.parent / "compare.json")
    if not summary:
        return None
    named = {Path(p).resolve() for p in (summary.get("runs") or {}).values()}
    return summary if run_dir.resolve() in named else None


def load_run_data(run_dir: str | Path) -> RunData:
    """Reads a run directory's config, metrics, predictions and any robustness / zero-shot / compare results.

    A run trained with `--test.skip` has no metrics.json / predictions.jsonl: its page says so and shows the rest.

    Raises:
        FileNotFoundError: config.yaml is missing.
        ValueError: one of the files is malformed (named in the message).
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise FileNotFoundError(f"{run_dir / CONFIG} not found: is {run_dir} a `meit.fit` run directory?")
    config = yaml.safe_load((run_dir / CONFIG).read_text(encoding="utf-8")) or {}
    rows = read_predictions(run_dir / PREDICTIONS) if (run_dir / PREDICTIONS).is_file() else []
    return RunData(run_dir, config, _json(run_dir / METRICS) or {}, rows,
                   _json(run_dir / RUN_INFO) or {}, _json(run_dir / "robustness" / "metrics.json"),
                   _json(run_dir / "zeroshot" / "metrics.json"), _compare_for(run_dir))


# ------------------------------------------------------------------------------- images


def png_data_uri(image: Any) -> str:
    """A PIL image or a matplotlib figure as a `data:image/png;base64,...` URI (figures are closed)."""
    buffer = io.BytesIO()
    if hasattr(image, "savefig"):
        import matplotlib.pyplot as plt

        image.savefig(buffer, format="png", dpi=90)
        plt.close(image)
    else:
        image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def file_data_uri(path: Path) -> str | None:
    """A PNG file inlined as a data URI, None if it is absent."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii") if path.is_file() else None


def finding_chart(per_label: dict[str, dict[str, float]], n: int = N_CHART) -> str | None:
    """A horizontal bar chart of per-code F1 (the `n` codes with most support), as a data URI."""
    if not per_label:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    codes = sorted(per_label, key=lambda c: (-per_label[c]["support"], c))[:n][::-1]
    f1 = [per_label[c]["f1"] for c in codes]
    fig, ax = plt.subplots(figsize=(7.5, 0.28 * len(codes) + 0.9))
    bars = ax.barh(range(len(codes)), f1, color=[plt.cm.RdYlGn(0.15 + 0.7 * v) for v in f1])
    ax.set_yticks(range(len(codes)), [f"{c} (n={per_label[c]['support']})" for c in codes], fontsize=8)
    ax.bar_label(bars, [f"{v:.2f}" for v in f1], fontsize=7, padding=2)
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("F1 of the findings in the generated reports")
    ax.grid(axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return png_data_uri(fig)


class ECGPictures:
    """The ECG of a test record as the page shows it: the paper-style page (signal runs) or the input image.

    Opens the run's test split once, at the first picture, with `meit.runs.predict.open_split` (the signal cache
    `meit.fit` filled); if that fails, `error` says why and every picture is None.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.error: str | None = None
        self.position: dict[str, int] | None = None

    def _open(self) -> None:
        try:
            self.cfg = read_config(self.run_dir)
            self.split = open_split(self.cfg.data, "test")
            self.position = {rid: i for i, rid in enumerate(self.split.cache.ids)}
        except Exception as e:  # the page still shows everything else
            self.error = f"the test split could not be opened ({type(e).__name__}: {e})"

    def __call__(self, record_id: str) -> str | None:
        """The record's picture as a data URI, None if it has none."""
        if self.position is None and self.error is None:
            self._open()
        if self.error or record_id not in self.position:
            return None
        from PIL import Image

        signal = self.split.cache[self.position[record_id]]
        if self.cfg.model.branch == "image":  # the input image, as `meit.runs.predict.generate` renders it
            tensor = page_renderer(self.cfg.data)(signal, page_seed(EVAL_SEED, record_id))
            array = (tensor.permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)
            page = Image.fromarray(array)
        else:
            page = render_pil(signal, float(self.cfg.data.sampling_rate), RenderConfig(dpi=ECG_DPI))
        return png_data_uri(page.quantize(colors=16))


# ------------------------------------------------------------------------------- tables


def metric_rows(metrics: dict[str, Any], baseline: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every scalar metric (table metrics first) with its CI, and the baseline's value beside it when given."""
    scalar = [k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    skip = {"n", "n_empty", "n_bootstrap", "seed"}
    keys = [k for k in METRIC_KEYS if k in scalar] + [k for k in scalar if k not in METRIC_KEYS and k not in skip]
    rows = []
    for key in keys:
        row = {"key": key, "value": metric_text(metrics, key), "baseline": None, "delta": None}
        if baseline is not None:
            row["baseline"] = metric_text(baseline, key)
            other = baseline.get(key)
            if isinstance(other, (int, float)) and isinstance(metrics[key], float):
                row["delta"] = f"{metrics[key] - other:+.3f}"
        rows.append(row)
    return rows


def metric_text(metrics: dict[str, Any], key: str) -> str:
    """A metric as the tables show it: counts as integers, scores as `meit.eval.format_metric` gives them."""
    value = metrics.get(key)
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else format_metric(metrics, key)


def section_rows(metrics: dict[str, Any], keys: tuple[str, ...]) -> list[dict[str, str]]:
    """The metrics of one clinical section that the run has, formatted (empty: not computed)."""
    return [{"key": k, "value": metric_text(metrics, k)} for k in keys if isinstance(metrics.get(k), (int, float))]


def grounding_claims(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-claim grounding table of metrics.json, as rows."""
    claims = metrics.get("grounding_claims") or {}
    return [{"claim": name, **{k: c.get(k) for k in ("checked", "contradicted", "rate")}}
            for name, c in sorted(claims.items())]


def result_table(results: list[dict[str, Any]], columns: tuple[str, ...]) -> dict[str, Any]:
    """A table of `results` entries (each with a "metrics" dict): the named columns, then the main metrics."""
    present = {k for r in results for k, v in r["metrics"].items() if isinstance(v, (int, float))}
    keys = [k for k in RESULT_METRICS if k in present]
    return {"header": [*columns, *keys], "n_fixed": len(columns),
            "rows": [[str(r.get(c, "")) for c in columns] + [format_metric(r["metrics"], k) for k in keys]
                     for r in results]}


# ------------------------------------------------------------------------------- examples


def truth_of(row: dict[str, Any]) -> set[str]:
    """A row's true codes: `labels_true`, else the labels of its reference text (as `meit.eval` scores it)."""
    return set(row["labels_true"]) if row.get("labels_true") is not None else extract_labels(row["reference"])


def findings(pred: set[str], truth: set[str]) -> list[dict[str, str]]:
    """Chips for the page: each code matched, missed (in truth only) or invented (in prediction only)."""
    table = scp_statements()
    status = {c: "matched" for c in pred & truth} | {c: "missed" for c in truth - pred}
    status |= {c: "invented" for c in pred - truth}
    return [{"code": c, "status": s, "title": table[c].description if c in table else c}
            for c, s in sorted(status.items(), key=lambda cs: (("matched", "missed", "invented").index(cs[1]), cs[0]))]


def record_f1(pred: set[str], truth: set[str]) -> float:
    """F1 of one record's predicted codes against its true codes (1 when both are empty)."""
    return 1.0 if not pred and not truth else 2 * len(pred & truth) / (len(pred) + len(truth))


def select_examples(rows: list[dict[str, Any]], truths: list[set[str]], preds: list[set[str]]) -> list[tuple[str, int]]:
    """(why, row index): the best and worst records by label F1, then one record per most frequent finding."""
    f1 = [record_f1(p, t) for p, t in zip(preds, truths)]
    best = sorted(range(len(rows)), key=lambda i: (-f1[i], -len(truths[i]), rows[i]["id"]))[:N_BEST]
    worst = sorted(range(len(rows)), key=lambda i: (f1[i], -len(truths[i]), rows[i]["id"]))
    chosen: list[tuple[str, int]] = [("best", i) for i in best]
    chosen += [("worst", i) for i in worst if i not in best][:N_WORST]
    counts: dict[str, int] = {}
    for truth in truths:
        for code in truth:
            counts[code] = counts.get(code, 0) + 1
    for code in sorted(counts, key=lambda c: (-counts[c], c))[:N_FINDINGS]:
        taken = {j for _, j in chosen}
        with_code = [i for i in range(len(rows)) if code in truths[i] and i not in taken]
        if with_code:
            chosen.append((f"finding {code}", with_code[0]))
    return chosen


def examples(data: RunData, pictures: ECGPictures) -> list[dict[str, Any]]:
    """The selected records with their picture, texts, finding chips and grounding flags."""
    preds = [extract_labels(r["prediction"]) for r in data.rows]
    truths = [truth_of(r) for r in data.rows]
    out = []
    for why, i in select_examples(data.rows, truths, preds):
        row = data.rows[i]
        entry = {"why": why, "id": row["id"], "prediction": row["prediction"], "reference": row["reference"],
                 "f1": f"{record_f1(preds[i], truths[i]):.2f}", "ecg": pictures(row["id"]),
                 "vs_reference": findings(preds[i], extract_labels(row["reference"])),
                 "vs_codes": findings(preds[i], set(row["labels_true"])) if row.get("labels_true") is not None
                 else None,
                 "grounding": row.get("grounding"), "measurements": row.get("measurements")}
        out.append(entry)
    return out


def per_finding(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per-SCP-code precision / recall / F1 / support of the predictions' labels (`meit.eval`'s statistics)."""
    truths = [truth_of(r) for r in rows]
    preds = [extract_labels(r["prediction"]) for r in rows]
    return LabelStats(truths, preds, [None] * len(rows), label_space(truths)).per_label()


# ------------------------------------------------------------------------------- page


def config_summary(data: RunData) -> list[tuple[str, str]]:
    """The settings a reader needs to place the run, as (name, value) pairs."""
    model, dataset = data.config.get("model") or {}, data.config.get("data") or {}
    trainer, test = data.config.get("trainer") or {}, data.config.get("test") or {}
    info = data.info
    pairs = [("backbone", model.get("llm")), ("fusion", model.get("fusion")), ("encoder", model.get("encoder")),
             ("branch", model.get("branch")), ("ECG input", model.get("ecg_input")),
             ("dataset", dataset.get("dataset") if dataset.get("dataset") != "synthetic"
              else f"synthetic ({dataset.get('synthetic_format')}, n = {dataset.get('synthetic_n')})"),
             ("sampling rate", f"{dataset.get('sampling_rate')} Hz"), ("seed", data.config.get("seed_everything")),
             ("max steps", trainer.get("max_steps")), ("train steps", info.get("train_steps")),
             ("trainable parameters", f"{info['trainable_parameters']:,}" if "trainable_parameters" in info else None),
             ("records", ", ".join(f"{k} {v}" for k, v in (info.get("n_records") or {}).items()) or None),
             ("test metrics", ", ".join(test.get("metrics") or []) or "all"),
             ("BERTScore model", data.metrics.get("bertscore_model")), ("run directory", str(data.run_dir))]
    return [(k, str(v)) for k, v in pairs if v is not None]


def page_context(data: RunData, baseline: RunData | None = None) -> dict[str, Any]:
    """Everything the template shows."""
    metrics = data.metrics
    pictures = ECGPictures(data.run_dir)
    compare = data.compare
    return {
        "title": f"MEIT run {data.run_dir.name}", "config": config_summary(data), "n": metrics.get("n", len(data.rows)),
        "metrics": metric_rows(metrics, baseline.metrics if baseline else None),
        "baseline": str(baseline.run_dir) if baseline else None, "not_computed": NOT_COMPUTED,
        "sections": {name: section_rows(metrics, keys) for name, keys in SECTIONS.items()},
        "has_codes": any(r.get("labels_true") is not None for r in data.rows),
        "claims": grounding_claims(metrics), "chart_n": N_CHART, "finding_chart": finding_chart(per_finding(data.rows)),
        "robustness": data.robustness and {
            "table": result_table(data.robustness["results"], ("noise", "condition")),
            "chart": file_data_uri(data.run_dir / "robustness" / "robustness.png"),
            "protocol": data.robustness.get("protocol"), "n": data.robustness.get("n")},
        "zeroshot": data.zeroshot and result_table(data.zeroshot["results"], ("train", "test", "setting", "n")),
        "compare": compare and {"table": result_table(compare["results"], ("representation", "condition")),
                                "chart": file_data_uri(data.run_dir.parent / "compare.png"),
                                "noise": compare.get("noise"), "n": compare.get("n")},
        "examples": examples(data, pictures), "ecg_error": pictures.error,
    }


def render_page(context: dict[str, Any]) -> str:
    """The HTML of the page, from the package's Jinja2 template."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("meit", "resources"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template(TEMPLATE).render(**context)


def write_report_html(run_dir: str | Path, baseline: str | Path | None = None, out: str | Path | None = None) -> Path:
    """Writes the run's HTML page.

    Args:
        run_dir: a tested `meit.fit` run directory.
        baseline: a no-ECG baseline run directory (`--model.ecg_input zero`) whose scores go beside the run's.
        out: the file to write (default RUN_DIR/report.html).

    Returns:
        The path written.

    Raises:
        FileNotFoundError: a required file of the run (or of the baseline) is missing.
        ValueError: a file is malformed.
    """
    data = load_run_data(run_dir)
    context = page_context(data, load_run_data(baseline) if baseline else None)
    path = Path(out) if out else data.run_dir / REPORT_HTML
    write_text(path, render_page(context))
    return path


def write_report_safely(run_dir: str | Path, **kwargs: Any) -> Path | None:
    """`write_report_html`, with any failure printed to stderr (with its traceback) instead of raised.

    Used after a run's other outputs are written, so that a page that cannot be built never costs a run.
    """
    try:
        return write_report_html(run_dir, **kwargs)
    except Exception as e:
        print(f"[meit] {Path(run_dir) / REPORT_HTML} NOT written ({type(e).__name__}: {e}); the run's other "
              f"outputs are complete. Retry with `python -m meit.report_html {run_dir}`.\n{traceback.format_exc()}",
              file=sys.stderr, flush=True)
        return None


def main(argv: list[str] | None = None) -> Path:
    """`python -m meit.report_html RUN_DIR [--baseline RUN_DIR] [--out FILE]`; prints the page's path."""
    parser = argparse.ArgumentParser(prog="python -m meit.report_html", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run directory written by `python -m meit.fit`")
    parser.add_argument("--baseline", default=None, help="a no-ECG baseline run directory to show beside the scores")
    parser.add_argument("--out", default=None, help="the file to write (default: RUN_DIR/report.html)")
    args = parser.parse_args(argv)
    try:
        path = write_report_html(args.run_dir, args.baseline, args.out)
    except (FileNotFoundError, ValueError, UserFacingError) as e:
        parser.exit(2, f"python -m meit.report_html: error: {e}\n")
    print(path, flush=True)
    return path


if __name__ == "__main__":
    main()
