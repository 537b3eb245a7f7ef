"""report.html: written by meit.fit, rebuilt by `python -m meit.report_html`, updated by robustness / zeroshot /
compare, showing the other branches' keys when present and "not computed for this run" when absent; loaded in a
real headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_fit import tiny_args

from meit import report_html, robustness, zeroshot
from meit.fit import main as fit_main
from meit.report_html import NOT_COMPUTED, REPORT_HTML, findings, main, select_examples, write_report_html

SECTION_IDS = ("config", "metrics", "clinical", "grounding", "findings", "robustness", "zeroshot", "compare",
               "examples")
CONTRACT_METRICS = {
    "ce_micro_f1": 0.4561, "ce_macro_f1": 0.3012, "ce_precision": 0.5, "ce_recall": 0.25,
    "label_ceiling_macro_f1": 0.8123, "probe_label_macro_f1": 0.6034, "probe_label_auc": 0.7045,
    "grounding_checked": 12, "grounding_contradicted": 3, "grounding_contradiction_rate": 0.25,
    "grounding_claims": {"tachycardia": {"checked": 4, "contradicted": 1, "rate": 0.25},
                         "atrial_fibrillation": {"checked": 8, "contradicted": 2, "rate": 0.25}},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One tiny trained and tested run (seconds), shared by the tests of this file."""
    root = tmp_path_factory.mktemp("html")
    return fit_main(tiny_args(root / "cache", root / "run"))


def copy_run(run_dir: Path, dest: Path) -> Path:
    """A copy of the run's result files (no checkpoints), to change without touching the shared run."""
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("checkpoints", "lightning_logs"))
    return dest


def with_contract_fields(run: Path) -> Path:
    """Adds the other branches' metrics.json keys and per-row `measurements` / `grounding` (as contracted)."""
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.update(CONTRACT_METRICS)
    metrics["ci95"].update({"ce_micro_f1": [0.4, 0.5], "grounding_contradiction_rate": [0.1, 0.4]})
    (run / "metrics.json").write_text(json.dumps(metrics))
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    for row in rows:
        row["measurements"] = {"heart_rate_bpm": 61.0, "rr_irregularity": 0.02, "qrs_ms": None, "pr_ms": 160.0,
                               "qrs_axis_deg": 30.0, "max_qrs_amplitude_mv": 1.2, "source": "neurokit2"}
        row["grounding"] = [{"claim": "tachycardia", "status": "contradicted", "evidence": "heart rate 61 bpm"},
                            {"claim": "atrial_fibrillation", "status": "consistent", "evidence": "RR regular"}]
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def section(html: str, name: str) -> str:
    """The text of one <section id=...> of the page."""
    match = re.search(rf'<section id="{name}">(.*?)</section>', html, re.S)
    assert match, f"section {name} missing"
    return match.group(1)


def test_fit_writes_a_self_contained_page_marking_absent_results(run_dir):
    html = (run_dir / REPORT_HTML).read_text()
    for name in SECTION_IDS:
        section(html, name)
    assert "http://" not in html and "https://" not in html  # nothing fetched: opens from disk
    ecgs = re.findall(r'alt="ECG of [^"]+" src="data:image/png;base64,([^"]+)"', section(html, "examples"))
    assert len(ecgs) >= 3
    page = Image.open(io.BytesIO(base64.b64decode(ecgs[0])))
    assert page.size == (440, 340) and np.asarray(page.convert("L")).std() > 10  # the paper-style page at 40 dpi
    assert "data:image/png;base64," in section(html, "findings")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for name, key in (("clinical efficacy", "ce_micro_f1"), ("labeller ceiling", "label_ceiling_macro_f1"),
                      ("probe", "probe_label_macro_f1"), ("grounding", "grounding_contradiction_rate")):
        assert (f"{name}: {NOT_COMPUTED}" in html) == (key not in metrics), name  # shown exactly when computed
    assert f"Robustness: {NOT_COMPUTED}" in html and f"Zero-shot: {NOT_COMPUTED}" in html
    lo, hi = metrics["ci95"]["label_hamming"]
    assert f"{metrics['label_hamming']:.3f} [{lo:.3f}, {hi:.3f}]" in section(html, "metrics")
    assert len(re.findall(r'<div class="example">', html)) >= 3 and '<span class="why">best</span>' in html


def test_contract_fields_are_shown_when_present(run_dir, tmp_path):
    run = with_contract_fields(copy_run(run_dir, tmp_path / "run"))
    html = write_report_html(run).read_text()
    assert NOT_COMPUTED not in section(html, "clinical")
    assert "0.456 [0.400, 0.500]" in section(html, "clinical") and "0.812" in section(html, "clinical")
    grounding = section(html, "grounding")
    assert '<td class="num">12</td>' in grounding  # counts stay integers
    assert "0.250 [0.100, 0.400]" in grounding and "atrial_fibrillation" in grounding and "tachycardia" in grounding
    examples = section(html, "examples")
    assert 'class="chip contradicted" title="heart rate 61 bpm"' in examples
    assert "heart_rate_bpm 61" in examples and "qrs_ms n/a" in examples and "(neurokit2)" in examples


def test_baseline_scores_go_beside_the_run(run_dir, tmp_path):
    base = copy_run(run_dir, tmp_path / "baseline")
    metrics = json.loads((base / "metrics.json").read_text())
    metrics["label_hamming"] = metrics["label_hamming"] + 0.5
    (base / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "page.html"
    assert main([str(run_dir), "--baseline", str(base), "--out", str(out)]) == out
    table = section(out.read_text(), "metrics")
    assert "no-ECG baseline" in table and "-0.500" in table


def test_robustness_zeroshot_and_compare_results_update_the_page(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "compare" / "signal")
    metrics = json.loads((run / "metrics.json").read_text())
    results = [{"noise": "gaussian", "level": level, "condition": name, "clean": level == "inf",
                "metrics": {**metrics, "bleu_4": value}} for level, name, value in
               (("inf", "clean", 0.3), (6.0, "gaussian_snr6", 0.1234))]
    robustness.write_outputs({"run": str(run), "protocol": "snr", "seed": 0, "split": "test", "dataset": "synthetic",
                              "n": 6, "results": results}, run / "robustness")
    html = (run / REPORT_HTML).read_text()
    assert "gaussian_snr6" in section(html, "robustness") and "0.123" in section(html, "robustness")
    assert 'alt="robustness curves" src="data:image/png;base64,' in html
    zeroshot.write_outputs({"run": str(run), "results": [{"train": "synthetic-ptbxl", "test": "ptbxl", "n": 6,
                                                         "setting": "zero-shot", "metrics": metrics}]},
                           run / "zeroshot")
    assert "zero-shot" in section((run / REPORT_HTML).read_text(), "zeroshot")
    compare = {"representations": ["signal"], "runs": {"signal": str(run)}, "noise": "gaussian", "n": 6,
               "results": [{"representation": "signal", "level": "inf", "condition": "clean", "metrics": metrics}]}
    (run.parent / "compare.json").write_text(json.dumps(compare))
    assert NOT_COMPUTED not in section(write_report_html(run).read_text(), "compare")


def test_a_page_that_cannot_be_built_is_reported_and_costs_nothing_else(run_dir, tmp_path, capsys):
    run = copy_run(run_dir, tmp_path / "run")
    (run / REPORT_HTML).unlink()
    (run / "zeroshot").mkdir()
    (run / "zeroshot" / "metrics.json").write_text("{not json")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert report_html.write_report_safely(run) is None
    err = capsys.readouterr().err
    assert "report.html NOT written" in err and "zeroshot/metrics.json: not valid JSON" in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing")])
    assert exit_info.value.code == 2 and "config.yaml not found" in capsys.readouterr().err


def test_an_untested_run_gets_a_page_that_says_so(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "run")
    (run / "metrics.json").unlink()
    (run / "predictions.jsonl").unlink()
    html = write_report_html(run).read_text()
    assert f"Test metrics: {NOT_COMPUTED}" in html and f"Examples: {NOT_COMPUTED}" in html
    assert "resnet_small_1d" in section(html, "config")


def test_examples_are_best_worst_and_one_per_frequent_finding():
    rows = [{"id": str(i)} for i in range(8)]
    truths = [{"SR"}, {"SR"}, {"AFIB"}, {"SR", "LVH"}, {"SR"}, {"SR"}, {"IRBBB"}, {"SR"}]
    preds = [{"SR"}, {"SR"}, set(), {"SR", "LVH"}, {"AFIB"}, {"SR"}, {"IRBBB"}, set()]
    chosen = select_examples(rows, truths, preds)
    assert [i for why, i in chosen if why == "best"] == [3, 0, 1]  # F1 1; more codes, then id, decide ties
    assert [i for why, i in chosen if why == "worst"] == [2, 4, 7]
    # one unshown record per finding, most frequent first; LVH and AFIB are shown already
    assert [c for c in chosen if c[0].startswith("finding")] == [("finding SR", 5), ("finding IRBBB", 6)]
    chips = {f["code"]: f["status"] for f in findings({"SR", "AFIB"}, {"SR", "LVH"})}
    assert chips == {"SR": "matched", "LVH": "missed", "AFIB": "invented"}


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed "
                    "(apt-get install chromium; .ci/run installs it)")
def test_page_renders_in_headless_chromium(run_dir, tmp_path):
    run = with_contract_fields(copy_run(run_dir, tmp_path / "run"))
    page = write_report_html(run)
    shot = tmp_path / "shot.png"
    command = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--window-size=1280,2000", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*command, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    subprocess.run([*command, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    for name in SECTION_IDS:
        assert f'<section id="{name}">' in dom
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', dom)) >= 4
    assert dom.count("<table") >= 4 and "atrial_fibrillation" in dom
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2000, 1280) and pixels.std() > 20  # text, tables and charts, not a blank page
