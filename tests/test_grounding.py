"""Measurement-grounded consistency: meit.data.measure + meit.eval.grounding."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import PTBXL_FIXTURE

from meit.data.cache import SignalCache
from meit.data.dataset import ECGReportDataset
from meit.data.measure import measure_ecg, measurements_from_machine
from meit.data.records import load_signal
from meit.data.sources import open_source
from meit.data.synth import synthesize
from meit.eval import evaluate_records
from meit.eval.grounding import check_report, grounding_summary
from meit.runs.rundir import attach_grounding


@pytest.fixture(scope="module")
def synth_rows() -> tuple[list[dict], list[dict]]:
    batch = synthesize(60, seed=7)
    measured = [measure_ecg(s, batch.fs) for s in batch.signals]
    paired = [{"prediction": r, "measurements": m} for r, m in zip(batch.reports, measured, strict=True)]
    shifted = np.roll(np.arange(len(measured)), 1)
    shuffled = [{"prediction": batch.reports[i], "measurements": measured[j]} for i, j in enumerate(shifted)]
    return paired, shuffled


def test_reference_reports_agree_with_their_own_ecg_and_not_with_another(synth_rows) -> None:
    paired, shuffled = (grounding_summary(rows) for rows in synth_rows)
    assert paired["grounding_checked"] >= 40
    assert paired["grounding_contradiction_rate"] <= 0.05
    assert shuffled["grounding_contradiction_rate"] >= 0.25
    assert paired["grounding_claims"].keys() <= {
        "SR", "SBRAD", "STACH", "AFIB", "CLBBB", "CRBBB", "1AVB", "LVOLT", "LVH",
        "left axis deviation", "right axis deviation"}


def test_ptbxl_record_1_low_voltage_sinus_is_not_contradicted() -> None:
    loaded = load_signal(PTBXL_FIXTURE / "records100" / "00000" / "00001_lr", 100, 1000)
    measured = measure_ecg(loaded.signal, 100)
    checks = check_report("sinusrhythmus periphere niederspannung", measured)
    assert "SR" in {c["claim"] for c in checks}  # the labeller leaves "periphere niederspannung" uncoded (PTB-XL does)
    assert all(c["status"] == "consistent" for c in checks)
    low_voltage = check_report("sinus rhythm. low limb lead voltage", measured)
    assert {c["claim"] for c in low_voltage} == {"SR", "LVOLT"}
    assert all(c["status"] == "consistent" for c in low_voltage)
    assert 55 < measured["heart_rate_bpm"] < 75


def test_claims_are_decided_with_margins_and_unmeasured_claims_skipped() -> None:
    fast = {"heart_rate_bpm": 120.0, "qrs_ms": None, "qrs_axis_deg": -50.0}
    by_claim = {c["claim"]: c["status"] for c in check_report(
        "sinus bradycardia. complete left bundle branch block. left axis deviation", fast)}
    assert by_claim == {"SBRAD": "contradicted", "left axis deviation": "consistent"}
    near = check_report("sinus bradycardia", {"heart_rate_bpm": 63.0})
    assert [c["status"] for c in near] == ["consistent"]


def test_summary_counts_and_rates() -> None:
    rows = [{"grounding": [{"claim": "SR", "status": "contradicted", "evidence": ""},
                           {"claim": "LVOLT", "status": "consistent", "evidence": ""}]},
            {"prediction": "sinus tachycardia", "measurements": {"heart_rate_bpm": 110.0}},
            {"prediction": "sinus tachycardia"}]
    out = grounding_summary(rows)
    assert (out["grounding_checked"], out["grounding_contradicted"]) == (3, 1)
    assert out["grounding_contradiction_rate"] == pytest.approx(1 / 3)
    assert out["grounding_claims"]["SR"] == {"checked": 1, "contradicted": 1, "rate": 1.0}


def test_machine_measurements_convert_and_drop_missing() -> None:
    row = {"rr_interval": "800", "p_onset": "40", "qrs_onset": "200", "qrs_end": "290", "qrs_axis": "29999"}
    out = measurements_from_machine(row)
    assert out["heart_rate_bpm"] == pytest.approx(75.0)
    assert (out["pr_ms"], out["qrs_ms"], out["qrs_axis_deg"]) == (160.0, 90.0, None)
    assert out["source"] == "machine_measurements"


def test_measure_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match="12, T"):
        measure_ecg(np.zeros((3, 1000), dtype=np.float32), 100)


def test_evaluate_records_reports_grounding_with_a_ci(synth_rows) -> None:
    paired, shuffled = synth_rows
    records = [{"id": str(i), "reference": r["prediction"], **r} for i, r in enumerate(shuffled)]
    out = evaluate_records(records, metrics=["labels"], n_bootstrap=200)
    expected = grounding_summary(shuffled)
    assert out["grounding_contradiction_rate"] == pytest.approx(expected["grounding_contradiction_rate"])
    assert (out["grounding_checked"], out["grounding_contradicted"]) == (
        expected["grounding_checked"], expected["grounding_contradicted"])
    low, high = out["ci95"]["grounding_contradiction_rate"]
    assert low < out["grounding_contradiction_rate"] < high
    plain = evaluate_records([{k: v for k, v in r.items() if k != "measurements"} for r in records],
                             metrics=["labels"], n_bootstrap=0)
    assert "grounding_checked" not in plain


def test_test_rows_get_measurements_of_their_own_input_ecg(ptbxl_fixture, tmp_path) -> None:
    source = open_source("ptbxl", ptbxl_fixture, 100)
    cache = SignalCache.build(source, source.records, 1000, tmp_path / "cache", workers=1, progress=False)
    dataset = ECGReportDataset(cache, source.records)
    record_id = dataset.records[0].record_id
    rows = [{"id": record_id, "prediction": "sinus tachycardia", "reference": "x"},
            {"id": "not-in-the-split", "prediction": "sinus tachycardia", "reference": "x"}]
    out = attach_grounding(rows, dataset, 100)
    assert out[0]["measurements"]["source"] == "neurokit2"
    assert 55 < out[0]["measurements"]["heart_rate_bpm"] < 75
    assert out[0]["grounding"][0]["claim"] == "STACH" and out[0]["grounding"][0]["status"] == "contradicted"
    assert out[1] == rows[1]


def test_mimic_rows_take_rate_pr_qrs_and_axis_from_the_machine_measurements(tmp_path) -> None:
    """MIMIC-IV-ECG's machine_measurements.csv is the measurement source where it has a value; the signal
    (neurokit2) keeps RR irregularity and voltages, and the references stay uncontradicted."""
    import pandas as pd

    from meit.data.mimic import MEASUREMENTS_CSV, machine_measurements_for
    from meit.data.synth import write_dataset

    root = write_dataset(tmp_path / "mimic", "mimic", n=12, seed=3, workers=1)
    csv_path = root / MEASUREMENTS_CSV
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    edited = frame.loc[0, "study_id"]
    frame.loc[0, "rr_interval"] = "400"  # 150 bpm: the machine's value must win over the signal's
    frame.loc[1, "qrs_axis"] = "29999"  # not measured by the machine: the signal's axis is used
    frame.to_csv(csv_path, index=False)
    source = open_source("mimic", root, 100)
    cache = SignalCache.build(source, source.records, 1000, tmp_path / "cache", workers=1, progress=False)
    dataset = ECGReportDataset(cache, source.records)
    rows = [{"id": r.record_id, "prediction": r.report, "reference": r.report} for r in dataset.records]
    machine = machine_measurements_for(source, [row["id"] for row in rows])
    assert set(machine) == {row["id"] for row in rows}
    out = {row["id"]: row for row in attach_grounding(rows, dataset, 100, machine)}
    first = out[edited]["measurements"]
    assert first["heart_rate_bpm"] == pytest.approx(150.0)
    assert first["source"].startswith("machine_measurements (heart_rate_bpm") and "neurokit2" in first["source"]
    assert first["rr_irregularity"] is not None and first["max_qrs_amplitude_mv"] is not None  # from the signal
    position = [r.record_id for r in dataset.records].index(frame.loc[1, "study_id"])
    second = out[frame.loc[1, "study_id"]]["measurements"]
    signal_axis = measure_ecg(dataset.raw_signal(position), 100)["qrs_axis_deg"]
    assert second["qrs_axis_deg"] == pytest.approx(signal_axis) and "qrs_axis_deg" not in second["source"]
    untouched = [row for key, row in out.items() if key != edited]
    assert grounding_summary(untouched)["grounding_contradiction_rate"] <= 0.05
    assert machine_measurements_for(open_source("ptbxl", PTBXL_FIXTURE, 100), ["1"]) == {}
