"""evaluate_records / compare_records / read_predictions: the metrics.json producer."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .bertscore import bertscore_stats
from .bootstrap import bootstrap_values, paired_p_value, percentile_ci
from .grounding import grounding_summary, row_checks
from .label_metrics import ClinicalProtocols, build_label_stats
from .labels import extract_labels
from .text import TEXT_GROUPS, MeteorProcess, MetricStats, text_stats

GROUP_KEYS = {
    "bleu": ["bleu_1", "bleu_2", "bleu_3", "bleu_4"],
    "meteor": ["meteor"],
    "rouge": ["rouge_1", "rouge_2", "rouge_l"],
    "cider": ["cider_d"],
    "bertscore": ["bertscore_p", "bertscore_r", "bertscore_f1"],
    "labels": [
        "label_macro_f1", "label_ceiling_macro_f1", "label_hamming", "label_auc",
        "ce_micro_f1", "ce_macro_f1", "ce_precision", "ce_recall",
    ],
}
ALL_GROUPS = tuple(GROUP_KEYS)
METRIC_KEYS = tuple(key for keys in GROUP_KEYS.values() for key in keys)
"""Every scalar metric of a metrics.json, in table order (run reports, seed summaries, comparisons)."""
HEADLINE_METRICS = ("bleu_4", "meteor", "rouge_l", "cider_d", "bertscore_f1", "label_macro_f1")
"""The columns of MEIT's tables (robustness, zero-shot, run summaries)."""
PLOT_METRICS = ("bleu_4", "rouge_l", "bertscore_f1", "label_macro_f1")
"""The panels of metric-vs-noise plots."""
METRIC_TITLES = {"bleu_4": "BLEU-4", "meteor": "METEOR", "rouge_l": "ROUGE-L", "cider_d": "CIDEr-D",
                 "bertscore_f1": "BERTScore", "label_macro_f1": "label macro-F1"}
"""Column titles of the paper-style tables."""


def resolve_groups(metrics: list[str] | None) -> tuple[str, ...]:
    """Metric groups for names such as ``bleu``, ``bleu_4``, ``cider_d``, ``labels`` (None: all)."""
    if not metrics:
        return ALL_GROUPS
    out = []
    for m in metrics:
        name = m.strip().lower()
        group = next((g for g, keys in GROUP_KEYS.items() if name == g or name in keys), None)
        if name in ("cider_d", "cider-d"):
            group = "cider"
        if group is None:
            choices = ", ".join(list(GROUP_KEYS) + [k for v in GROUP_KEYS.values() for k in v])
            raise ValueError(f"unknown metric: {m}; choose from {choices}")
        if group not in out:
            out.append(group)
    return tuple(g for g in ALL_GROUPS if g in out)


MAX_TEXT_CHARS = 10_000
"""Predictions and references longer than this are truncated before scoring (with a counted warning): real reports
are far shorter (PTB-XL's longest ~1,000 characters; a generated report is bounded by `--test.max_new_tokens`), and
megabyte texts crash METEOR's Java process and make the n-gram metrics quadratic."""


def read_predictions(path: str | Path) -> list[dict]:
    """Read predictions.jsonl: one ``{"id", "prediction", "reference"}`` object a line.

    Malformed lines are an error (a ValueError naming the file and line number), never skipped:
    a silently shorter test set would change every score. Blank lines are ignored. A missing
    or null ``prediction`` is kept and scored as an empty string (counted in ``n_empty``).
    Types are checked: ``id`` a string or integer, ``prediction``/``reference`` strings, ``labels_true``
    a list of label strings (a bare string such as ``"NORM"`` would be scored as its characters),
    ``label_probs`` an object of label -> number.

    Args:
        path: The JSONL file (UTF-8; a leading byte-order mark is allowed).

    Returns:
        The records, with ``id``, ``prediction`` and ``reference`` as strings.

    Raises:
        ValueError: on bytes that are not UTF-8, invalid JSON, a non-object line, a missing ``id``/``reference``,
            a field of the wrong type, or a duplicate id (the message names the file and line).
    """
    path = Path(path)
    records, seen = [], {}
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            line = _decode_line(raw, where, lineno == 1)
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: malformed JSON ({e.msg})") from e
            if not isinstance(rec, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            _check_row(rec, where)
            rid = str(rec["id"])
            if rid in seen:
                raise ValueError(f"{where}: duplicate id {rid!r} (first on line {seen[rid]})")
            seen[rid] = lineno
            rec["id"] = rid
            rec["prediction"] = rec.get("prediction") or ""
            records.append(rec)
    return records


def _decode_line(raw: bytes, where: str, first: bool) -> str:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line); "
                         "save the file as UTF-8") from e
    return line.removeprefix("\ufeff") if first else line


def _json_type(value: object) -> str:
    """The JSON name of a parsed value's type ("string", "number", "list", ...)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {type(None): "null", str: "string", list: "list", dict: "object"}.get(type(value), type(value).__name__)


def _check_row(rec: dict, where: str) -> None:
    """Raises ValueError (naming `where`, i.e. file:line) for a missing or mistyped field of one record."""
    for key in ("id", "reference"):
        if rec.get(key) is None:
            raise ValueError(f"{where}: missing {key!r}")
    if _json_type(rec["id"]) not in ("string", "number") or isinstance(rec["id"], float):
        raise ValueError(f"{where}: 'id' must be a string or an integer, got {_json_type(rec['id'])}")
    for key in ("prediction", "reference"):
        if rec.get(key) is not None and not isinstance(rec[key], str):
            raise ValueError(f"{where}: {key!r} must be a string, got {_json_type(rec[key])}")
    labels = rec.get("labels_true")
    if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        got = f"the string {labels!r}" if isinstance(labels, str) else _json_type(labels)
        if isinstance(labels, list):
            got = "a list holding a " + next(_json_type(x) for x in labels if not isinstance(x, str))
        raise ValueError(f'{where}: \'labels_true\' must be a list of label strings (e.g. ["NORM"]), got {got}')
    probs = rec.get("label_probs")
    if probs is not None and not (isinstance(probs, dict) and all(_json_type(v) == "number" for v in probs.values())):
        raise ValueError(f"{where}: 'label_probs' must be an object of label -> probability, got "
                         + (f"a {_json_type(probs)}" if not isinstance(probs, dict) else "a non-numeric probability"))


def bound_lengths(records: list[dict], limit: int = MAX_TEXT_CHARS) -> tuple[list[dict], int]:
    """Copies of `records` whose ``prediction``/``reference`` are cut to `limit` characters.

    Returns:
        (the records, the number of records with a text cut); records without a long text are passed through.
    """
    out, n_cut = [], 0
    for r in records:
        long = [k for k in ("prediction", "reference") if isinstance(r.get(k), str) and len(r[k]) > limit]
        if long:
            n_cut += 1
            r = {**r, **{k: r[k][:limit] for k in long}}
        out.append(r)
    if n_cut:
        warnings.warn(f"{n_cut} of {len(records)} records have a prediction or reference longer than {limit:,} "
                      f"characters; truncated to {limit:,} for scoring (n_truncated)", stacklevel=3)
    return out, n_cut


def _texts(records: list[dict]) -> tuple[list[str], list[str], int]:
    hyps = ["" if r.get("prediction") is None else str(r["prediction"]) for r in records]
    refs = [str(r.get("reference") or "") for r in records]
    return hyps, refs, sum(1 for h in hyps if not h.strip())


def _truth(records: list[dict]) -> list[set[str]]:
    return [
        set(r["labels_true"]) if r.get("labels_true") is not None else extract_labels(r["reference"]) for r in records
    ]


def _protocols(records: list[dict], refs: list[str], pred: list[set[str]]) -> ClinicalProtocols:
    """CE (prediction vs reference-text labels) and, when every record has codes, the labeller ceiling."""
    has_codes = all(r.get("labels_true") is not None for r in records)
    truth = [set(r["labels_true"]) for r in records] if has_codes else None
    return ClinicalProtocols([extract_labels(t) for t in refs], pred, truth)


class _Scored:
    """Per-record statistics of one prediction set (everything the bootstrap needs)."""

    def __init__(
        self,
        records: list[dict],
        groups: tuple[str, ...],
        bertscore_model: str | None,
        meteor: MeteorProcess | None,
        bert: tuple[np.ndarray, str, bool] | None = None,
    ):
        hyps, refs, self.n_empty = _texts(records)
        self.n = len(records)
        self.stats: dict[str, MetricStats] = text_stats(
            hyps, refs, tuple(g for g in groups if g in TEXT_GROUPS), meteor
        )
        self.info: dict = {}
        if "bertscore" in groups:
            x, name, rescaled = bert if bert is not None else bertscore_stats(hyps, refs, bertscore_model)
            self.stats["bertscore"] = _mean(x, ["bertscore_p", "bertscore_r", "bertscore_f1"])
            self.info.update(bertscore_model=name, bertscore_rescaled=rescaled)
        self.labels = self.protocols = None
        if "labels" in groups:
            probs = [r.get("label_probs") for r in records]
            pred = [extract_labels(h) for h in hyps]
            self.labels = build_label_stats(_truth(records), pred, probs)
            self.protocols = _protocols(records, refs, pred)
            self.info["label_auc_source"] = "probabilities" if self.labels["statement"].use_probs else "binary"
        checks = [row_checks(r) for r in records]
        if any(c is not None for c in checks):
            self.stats["grounding"] = _grounding_stats(checks)
            summary = grounding_summary(records)
            self.info.update({k: v for k, v in summary.items() if k != "grounding_contradiction_rate"})

    def point(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.stats.values():
            out.update(s.corpus())
            out.update(s.point)
        out.update({k: float(v[0]) for k, v in self.extra(np.ones((1, self.n))).items()})
        return out

    def extra(self, w: np.ndarray) -> dict[str, np.ndarray]:
        if self.labels is None:
            return {}
        return {**self.labels["statement"].aggregate(w), **self.protocols.aggregate(w)}

    def boot(self, n_bootstrap: int, seed: int) -> dict[str, np.ndarray]:
        return bootstrap_values(self.stats, self.n, n_bootstrap, seed, self.extra)


def _mean(x: np.ndarray, names: list[str]) -> MetricStats:
    def aggregate(s: np.ndarray) -> dict[str, np.ndarray]:
        return {name: s[:, i] / s[:, -1] for i, name in enumerate(names)}

    return MetricStats(np.column_stack([x, np.ones(len(x))]), aggregate)


def _grounding_stats(checks: list[list[dict] | None]) -> MetricStats:
    """Per-record (contradicted, checked) claim counts; the rate is a ratio of sums, so it bootstraps."""
    x = np.array([[sum(c["status"] == "contradicted" for c in cs or []), len(cs or [])] for cs in checks], float)

    def aggregate(s: np.ndarray) -> dict[str, np.ndarray]:
        return {"grounding_contradiction_rate": s[:, 0] / np.maximum(s[:, 1], 1.0)}

    return MetricStats(x, aggregate)


def _label_details(scored: _Scored) -> dict:
    out = {}
    for level, ls in (scored.labels or {}).items():
        agg = {k.removeprefix("label_"): float(v[0]) for k, v in ls.aggregate(np.ones((1, scored.n))).items()}
        out[level] = {**agg, "per_label": ls.per_label()}
    return out


def evaluate_records(
    records: list[dict],
    *,
    bertscore_model: str | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    metrics: list[str] | None = None,
    meteor: MeteorProcess | None = None,
) -> dict:
    """All metrics with bootstrap 95 % CIs, as the metrics.json dict.

    Args:
        records: ``{"id", "prediction", "reference"}`` dicts (+ optional ``labels_true``, ``label_probs``).
        bertscore_model: None for the offline MiniLM, else a bert-score model name or local path.
        n_bootstrap: Bootstrap resamples over records (0: no CIs).
        seed: Bootstrap seed.
        metrics: Metric groups or keys to compute (None: all).
        meteor: A running METEOR process to reuse (tests, repeated evaluations).

    Returns:
        The metrics.json dict (see DESIGN.md / docs/METRICS.md).
    """
    groups = resolve_groups(metrics)
    if not records:
        raise ValueError("no records to evaluate")
    records, n_truncated = bound_lengths(records)
    scored = _Scored(records, groups, bertscore_model, meteor)
    if scored.n_empty:
        warnings.warn(f"{scored.n_empty} of {scored.n} predictions are empty; scored as empty strings", stacklevel=2)
    out: dict = {k: v for k, v in scored.point().items()}
    out.update(scored.info)
    out.update(n=scored.n, n_empty=scored.n_empty, n_truncated=n_truncated, n_bootstrap=n_bootstrap, seed=seed)
    if n_bootstrap > 0:
        boot = scored.boot(n_bootstrap, seed)
        out["ci95"] = {k: percentile_ci(v) for k, v in boot.items()}
    if scored.labels is not None:
        out["labels"] = _label_details(scored)
    return out


def compare_records(
    records_a: list[dict],
    records_b: list[dict],
    *,
    bertscore_model: str | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    metrics: list[str] | None = None,
    meteor: MeteorProcess | None = None,
) -> dict:
    """Paired bootstrap test of A against B (records matched by id, same resamples for both).

    Returns:
        ``{metric: {"a", "b", "diff", "ci95", "p_value"}}`` with diff = A - B and a two-sided p-value.

    Raises:
        ValueError: when the id sets differ or references disagree.
    """
    by_id = {r["id"]: r for r in records_b}
    ids_a = [r["id"] for r in records_a]
    if set(ids_a) != set(by_id) or len(ids_a) != len(by_id):
        only_a, only_b = sorted(set(ids_a) - set(by_id)), sorted(set(by_id) - set(ids_a))
        raise ValueError(f"prediction files do not cover the same ids: only in A {only_a[:5]}, only in B {only_b[:5]}")
    matched_b = [by_id[i] for i in ids_a]
    bad = [a["id"] for a, b in zip(records_a, matched_b) if a["reference"] != b["reference"]]
    if bad:
        raise ValueError(f"references differ between the files for ids {bad[:5]}")
    groups = resolve_groups(metrics)
    records_a, matched_b = bound_lengths(records_a)[0], bound_lengths(matched_b)[0]
    own = meteor is None and "meteor" in groups
    meteor = MeteorProcess() if own else meteor
    try:
        bert_a = bert_b = None
        if "bertscore" in groups:  # one scorer call: shared references are embedded once
            ha, refs, _ = _texts(records_a)
            hb, _, _ = _texts(matched_b)
            x, name, rescaled = bertscore_stats(ha + hb, refs + refs, bertscore_model)
            bert_a, bert_b = (x[: len(ha)], name, rescaled), (x[len(ha) :], name, rescaled)
        sa = _Scored(records_a, groups, bertscore_model, meteor, bert_a)
        sb = _Scored(matched_b, groups, bertscore_model, meteor, bert_b)
    finally:
        if own and meteor is not None:
            meteor.close()
    pa, pb = sa.point(), sb.point()
    ba, bb = sa.boot(n_bootstrap, seed), sb.boot(n_bootstrap, seed)
    out = {}
    for k in (k for k in pa if k in pb):  # the ceiling only exists where both files have labels_true
        diff = pa[k] - pb[k]
        d = ba[k] - bb[k]
        out[k] = {"a": pa[k], "b": pb[k], "diff": diff, "ci95": percentile_ci(d), "p_value": paired_p_value(d, diff)}
    return out


def format_metric(metrics: dict[str, Any], key: str) -> str:
    """`metrics[key]` as table text, "0.412 [0.380, 0.441]" with its 95 % CI where there is one, "-" if absent."""
    value = metrics.get(key)
    if not isinstance(value, (int, float)) or value != value:  # absent, or NaN
        return "-"
    low_high = (metrics.get("ci95") or {}).get(key)
    return f"{value:.3f} [{low_high[0]:.3f}, {low_high[1]:.3f}]" if low_high else f"{value:.3f}"
