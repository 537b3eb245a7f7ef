"""Measurement-grounded consistency: do a report's checkable claims agree with the ECG's own measurements?

Claims come from `extract_labels` (SCP codes) plus a phrase matcher for axis deviation. Each claim has a
diagnostic threshold (AHA/ACC/HRS 2009 recommendations for the standardization and interpretation of the
ECG, parts II-V; Sokolow & Lyon 1949; Casale et al. 1987 for Cornell voltage) and a tolerance margin on the
other side, so only a measurement clearly on the wrong side contradicts the claim. A claim whose measurement
is None is not checked. Thresholds: `CLAIMS` and docs/METRICS.md ("Grounding").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .labels import extract_labels


@dataclass(frozen=True)
class Claim:
    """A report claim and the measurement that would contradict it."""

    name: str
    keys: tuple[str, ...]
    contradicted: Callable[..., bool]
    rule: str


CLAIMS: dict[str, Claim] = {c.name: c for c in (
    Claim("SBRAD", ("heart_rate_bpm",), lambda hr: hr > 65.0, "HR < 60 bpm; contradicted above 65"),
    Claim("STACH", ("heart_rate_bpm",), lambda hr: hr < 95.0, "HR > 100 bpm; contradicted below 95"),
    Claim("SR", ("heart_rate_bpm",), lambda hr: hr < 45.0 or hr > 115.0,
          "sinus 60-100 bpm (50-100 in the 2009 text); contradicted below 45 or above 115"),
    Claim("AFIB", ("rr_irregularity",), lambda irr: irr < 0.03,
          "irregularly irregular RR; contradicted when median |dRR| / median RR < 0.03"),
    Claim("CLBBB", ("qrs_ms",), lambda qrs: qrs < 100.0, "QRS >= 120 ms; contradicted below 100"),
    Claim("CRBBB", ("qrs_ms",), lambda qrs: qrs < 100.0, "QRS >= 120 ms; contradicted below 100"),
    Claim("1AVB", ("pr_ms",), lambda pr: pr < 180.0, "PR > 200 ms; contradicted below 180"),
    Claim("LVOLT", ("max_limb_qrs_mv",), lambda v: v > 0.8,
          "all limb-lead QRS < 0.5 mV; contradicted when the largest exceeds 0.8 mV"),
    Claim("LVH", ("sokolow_lyon_mv", "cornell_mv"), lambda sl, cornell: sl < 2.5 and cornell < 1.6,
          "Sokolow-Lyon >= 3.5 mV or Cornell >= 2.0-2.8 mV; contradicted when both are clearly below"),
    Claim("left axis deviation", ("qrs_axis_deg",), lambda axis: axis > -15.0,
          "axis < -30 deg; contradicted above -15"),
    Claim("right axis deviation", ("qrs_axis_deg",), lambda axis: axis < 75.0 and axis > -90.0,
          "axis > 90 deg; contradicted between -90 and 75"),
)}

_AXIS_PHRASES = {
    "left axis deviation": re.compile(r"left axis deviation|überdrehter linkstyp", re.IGNORECASE),
    "right axis deviation": re.compile(r"right axis deviation|rechtstyp", re.IGNORECASE),
}


def report_claims(report: str) -> list[str]:
    """The checkable claims a report makes (names of `CLAIMS`), in `CLAIMS` order."""
    found = extract_labels(report) | {name for name, rx in _AXIS_PHRASES.items() if rx.search(report or "")}
    return [name for name in CLAIMS if name in found]


def check_report(report: str, measurements: dict) -> list[dict]:
    """Check each measurable claim of a report against the ECG's measurements.

    Args:
        report: Report text (English or PTB-XL German).
        measurements: `meit.data.measure.measure_ecg` / `measurements_from_machine` output (None: unmeasured).

    Returns:
        ``{"claim", "status": "consistent" | "contradicted", "evidence"}`` per checked claim.
    """
    out = []
    for name in report_claims(report):
        claim = CLAIMS[name]
        values = [measurements.get(k) for k in claim.keys]
        if any(v is None for v in values):
            continue
        bad = claim.contradicted(*values)
        evidence = ", ".join(f"{k}={v:.3g}" for k, v in zip(claim.keys, values, strict=True))
        out.append({"claim": name, "status": "contradicted" if bad else "consistent",
                    "evidence": f"{evidence} ({claim.rule})"})
    return out


def row_checks(row: dict) -> list[dict] | None:
    """A predictions.jsonl row's checks: its ``grounding``, else computed from ``prediction`` and ``measurements``.

    Args:
        row: A predictions.jsonl row.

    Returns:
        The `check_report` list, or None when the row has neither ``grounding`` nor ``measurements``.
    """
    if row.get("grounding") is not None:
        return row["grounding"]
    if row.get("measurements") is None:
        return None
    return check_report(row.get("prediction", ""), row["measurements"])


def grounding_summary(rows: list[dict]) -> dict:
    """Checked / contradicted claim counts over rows that carry ``grounding`` or ``measurements``.

    Args:
        rows: predictions.jsonl rows (see `row_checks`); rows with neither key are skipped.

    Returns:
        ``grounding_checked``, ``grounding_contradicted``, ``grounding_contradiction_rate`` (0 when nothing
        was checked) and ``grounding_claims`` (claim -> {"checked", "contradicted", "rate"}).
    """
    per: dict[str, list[int]] = {}
    for row in rows:
        for check in row_checks(row) or []:
            counts = per.setdefault(check["claim"], [0, 0])
            counts[0] += 1
            counts[1] += check["status"] == "contradicted"
    checked = sum(c[0] for c in per.values())
    contradicted = sum(c[1] for c in per.values())
    return {
        "grounding_checked": checked,
        "grounding_contradicted": contradicted,
        "grounding_contradiction_rate": contradicted / checked if checked else 0.0,
        "grounding_claims": {k: {"checked": c[0], "contradicted": c[1], "rate": c[1] / c[0]}
                             for k, c in sorted(per.items())},
    }
