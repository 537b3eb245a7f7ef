"""PTB-XL and MIMIC-IV-ECG loaders on the real fixtures and on small datasets in the real layouts; splits."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import wfdb
from conftest import MIMIC_ORDER, STANDARD, lead_signals, write_ptbxl, wrsamp

from meit.data.dataset import record_labels
from meit.data.mimic import join_report, report_columns
from meit.data.ptbxl import parse_scp_codes, record_superclasses
from meit.data.records import STANDARD_LEADS, RecordError, clean_text, fit_length, load_signal, select_leads
from meit.data.sources import open_source
from meit.data.splits import check_disjoint_patients, split_by_patient, split_records


def test_real_ptbxl_record_1(ptbxl_fixture):
    source = open_source("ptbxl", ptbxl_fixture, 100)
    assert source.sampling_rate == 100 and len(source.records) == 1 and not source.skipped
    record = source.records[0]
    assert record.record_id == "1" and record.patient_id == "15709" and record.fold == 3
    assert record.report == "sinusrhythmus periphere niederspannung"
    assert record.labels == {"NORM": 100.0, "LVOLT": 0.0, "SR": 0.0}
    assert record_labels(record) == ["LVOLT", "NORM", "SR"]
    assert record_superclasses(record) == ["NORM"]

    signal = source.read_signal(record, 1000)
    assert signal.shape == (12, 1000) and signal.dtype == np.float32
    reference = wfdb.rdrecord(str(record.path))
    assert reference.sig_name == ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    np.testing.assert_allclose(signal, reference.p_signal.T, atol=1e-6)
    # The header's initial values (adc units) at 1000 adc/mV: the first samples are -0.119, -0.055, 0.064 mV.
    np.testing.assert_allclose(signal[:3, 0], [-0.119, -0.055, 0.064], atol=1e-6)
    assert 0.3 < np.abs(signal).max() < 5.0  # mV, not adc units or volts


def test_ptbxl_500hz_missing_is_reported(ptbxl_fixture):
    with pytest.raises(RecordError) as caught:
        open_source("ptbxl", ptbxl_fixture, 500)
    assert caught.value.reason == "missing_records"
    assert "records500" in str(caught.value) and "sampling_rate=100" in str(caught.value)


def test_ptbxl_default_rate_is_native(ptbxl_fixture):
    assert open_source("ptbxl", ptbxl_fixture).sampling_rate == 100


def test_real_mimic_row_with_written_waveform(mimic_fixture):
    source = open_source("mimic", mimic_fixture)
    assert source.sampling_rate == 500 and not source.skipped
    (record,) = source.records
    assert record.record_id == "40689238" and record.patient_id == "10000032" and record.labels == {}
    assert record.report == "Sinus rhythm. Possible right atrial abnormality. Borderline ECG"
    signal = source.read_signal(record, 5000)
    assert signal.shape == (12, 5000) and signal.dtype == np.float32
    written = lead_signals(MIMIC_ORDER, 500, 5000)
    for k, lead in enumerate(STANDARD_LEADS):  # aVL/aVF are swapped on disk: selected by name
        np.testing.assert_allclose(signal[k], written[MIMIC_ORDER.index(lead)], atol=0.5 / 200 + 1e-6)


def test_mimic_joins_on_study_id_not_row_order(make_mimic):
    studies = [(10000001, 50000001, ["Sinus rhythm", "Normal ECG"]),
               (10000002, 50000002, ["Atrial fibrillation", "", "Abnormal ECG"]),
               (10000003, 50000003, ["Sinus bradycardia"])]
    source = open_source("mimic", make_mimic(studies))
    reports = {r.record_id: r.report for r in source.records}
    assert reports == {"50000001": "Sinus rhythm. Normal ECG", "50000002": "Atrial fibrillation. Abnormal ECG",
                       "50000003": "Sinus bradycardia"}


def test_mimic_report_columns_sorted_numerically():
    columns = [f"report_{k}" for k in (10, 2, 0, 17, 1)] + ["study_id", "report_x"]
    assert report_columns(columns) == ["report_0", "report_1", "report_2", "report_10", "report_17"]
    assert join_report(["A", "", " B ", float("nan"), "C"]) == "A. B. C"


def test_mimic_at_100hz_is_resampled(mimic_fixture):
    source = open_source("mimic", mimic_fixture, 100)
    signal = source.read_signal(source.records[0], 1000)
    full = open_source("mimic", mimic_fixture).read_signal(source.records[0], 5000)
    assert signal.shape == (12, 1000)
    # The test leads are sines <= 4.75 Hz + 0.01 mV noise: decimation keeps them (compare away from the edges).
    np.testing.assert_allclose(signal[:, 50:-50], full[:, 250:-250:5], atol=0.06)


def test_lead_selection_by_name_with_shuffled_and_extra_leads(tmp_path):
    names = ["v6", "VX", "avf", "I", "V1", "iii", "AvL", "V3", "V2", "vy", "ii", "V5", "aVR", "V4", "VZ"]
    wrsamp(tmp_path / "rec", lead_signals(names, 500, 5000), 500, names)
    signal = load_signal(tmp_path / "rec", 500, 5000).signal
    expected = lead_signals(STANDARD, 500, 5000)  # same per-lead waveforms, standard order
    assert signal.shape == (12, 5000)
    np.testing.assert_allclose(signal, expected, atol=0.02)


def test_missing_lead_is_wrong_leads(tmp_path):
    names = [n for n in STANDARD if n != "V4"] + ["X"]
    with pytest.raises(RecordError) as caught:
        select_leads(np.zeros((12, 10)), names, tmp_path / "rec")
    assert caught.value.reason == "wrong_leads" and "V4" in str(caught.value)
    with pytest.raises(RecordError, match="more than once"):
        select_leads(np.zeros((13, 10)), [*STANDARD, "v1"], tmp_path / "rec")


def test_resampling_500_to_100(tmp_path):
    fs, t = 500, np.arange(5000) / 500
    sine = np.tile(np.sin(2 * np.pi * 3 * t), (12, 1))
    wrsamp(tmp_path / "rec", sine, fs, STANDARD)
    signal = load_signal(tmp_path / "rec", 100, 1000).signal
    t100 = np.arange(1000) / 100
    assert signal.shape == (12, 1000)
    np.testing.assert_allclose(signal[:, 20:-20], np.tile(np.sin(2 * np.pi * 3 * t100), (12, 1))[:, 20:-20],
                               atol=0.01)


def test_ptbxl_100hz_from_500hz_only(make_ptbxl):
    root = make_ptbxl(n=2, rates=(500,))
    source = open_source("ptbxl", root, 100)
    assert source.native_rate == 500 and source.repaired["lr_from_hr"] == 1
    assert source.read_signal(source.records[0], 1000).shape == (12, 1000)


def test_crop_and_pad(ptbxl_fixture):
    source = open_source("ptbxl", ptbxl_fixture, 100)
    record = source.records[0]
    full = source.read_signal(record, 1000)
    np.testing.assert_array_equal(source.read_signal(record, 800), full[:, :800])
    padded = source.read_signal(record, 1200)
    np.testing.assert_array_equal(padded[:, :1000], full)
    assert not padded[:, 1000:].any()
    assert fit_length(np.ones((2, 3)), 5).tolist() == [[1, 1, 1, 0, 0]] * 2


def test_nan_runs_interpolated_or_refused(tmp_path):
    base = lead_signals(STANDARD, 500, 5000)
    short = base.copy()
    short[2, 1000:1100] = np.nan  # 2 % of a lead: interpolated
    wrsamp(tmp_path / "short", short, 500, STANDARD)
    loaded = load_signal(tmp_path / "short", 500, 5000)
    assert loaded.repairs == ("nan_interpolated",) and np.isfinite(loaded.signal).all()
    np.testing.assert_allclose(loaded.signal[2, 1100:], base[2, 1100:], atol=0.01)
    longrun = base.copy()
    longrun[4, :1000] = np.nan  # 20 % of one lead
    wrsamp(tmp_path / "long", longrun, 500, STANDARD)
    with pytest.raises(RecordError) as caught:
        load_signal(tmp_path / "long", 500, 5000)
    assert caught.value.reason == "long_nan_run"
    mostly = base.copy()
    mostly[:, ::3] = np.nan
    mostly[:, 1::3] = np.nan
    wrsamp(tmp_path / "mostly", mostly, 500, STANDARD)
    with pytest.raises(RecordError) as caught:
        load_signal(tmp_path / "mostly", 500, 5000)
    assert caught.value.reason == "mostly_nan" and "mostly" in str(caught.value)


def test_parse_scp_codes():
    assert parse_scp_codes("{'NORM': 100.0, 'SR': 0}") == {"NORM": 100.0, "SR": 0.0}
    for bad in ("{'NORM': 100.0", "__import__('os').getcwd()", "['NORM']", "{'NORM': 'high'}", ""):
        with pytest.raises(ValueError):
            parse_scp_codes(bad)


def test_clean_text_keeps_umlauts_nfc():
    decomposed = "u\u0308berdrehter linkstyp"  # NFD ü
    assert clean_text(decomposed) == "überdrehter linkstyp"
    assert clean_text("sinus\x00 rhythm\u200b\t\n normal\ufffd") == "sinus rhythm normal"
    assert clean_text(float("nan")) == "" and clean_text(None) == ""


def test_ptbxl_split_by_folds(make_ptbxl):
    source = open_source("ptbxl", make_ptbxl(n=40))
    splits = split_records(source)
    folds = {name: {r.fold for r in records} for name, records in splits.items()}
    assert folds["train"] <= set(range(1, 9)) and folds["val"] == {9} and folds["test"] == {10}
    assert sum(len(v) for v in splits.values()) == 40
    check_disjoint_patients(splits)


def test_ptbxl_patient_in_two_folds_is_refused(make_ptbxl):
    root = make_ptbxl(n=4)
    frame = pd.read_csv(root / "ptbxl_database.csv")
    frame.loc[0, "strat_fold"], frame.loc[1, "strat_fold"] = 1, 10  # records 1 and 2 share a patient
    frame.to_csv(root / "ptbxl_database.csv", index=False)
    with pytest.raises(ValueError, match="patient 1000"):
        split_records(open_source("ptbxl", root))


def test_mimic_split_by_patient_is_disjoint_seeded_and_balanced(make_mimic):
    studies = [(10000000 + i // 3, 50000000 + i, ["Sinus rhythm"]) for i in range(30)]
    source = open_source("mimic", make_mimic(studies))
    splits = split_records(source, seed=1)
    check_disjoint_patients(splits)
    assert sum(len(v) for v in splits.values()) == 30
    again = split_records(source, seed=1)
    assert {k: [r.record_id for r in v] for k, v in splits.items()} == {
        k: [r.record_id for r in v] for k, v in again.items()}
    # ~80/10/10 over many patients, and a different seed moves patients.
    many = [source.records[0].__class__(str(i), str(i // 2), "x") for i in range(20000)]
    sizes = {k: len(v) for k, v in split_by_patient(many, seed=3).items()}
    assert abs(sizes["train"] / 20000 - 0.8) < 0.02 and abs(sizes["val"] / 20000 - 0.1) < 0.02
    other = split_by_patient(many, seed=4)
    assert [r.record_id for r in other["val"]] != [r.record_id for r in split_by_patient(many, seed=3)["val"]]


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="choose from mimic, ptbxl"):
        open_source("ptb", ".")


def test_ptbxl_both_rates(tmp_path):
    root = write_ptbxl(tmp_path / "both", n=2, rates=(100, 500))
    assert open_source("ptbxl", root).sampling_rate == 500
    high = open_source("ptbxl", root, 500)
    assert high.records[0].path.name.endswith("_hr")
    assert high.read_signal(high.records[0], 5000).shape == (12, 5000)
    shutil.rmtree(root / "records500")
    with pytest.raises(RecordError, match="records500"):
        open_source("ptbxl", root, 500)


@pytest.mark.parametrize("fmt, rate", [("ptbxl", 100), ("ptbxl", 500), ("mimic", 500), ("mimic", 100)])
def test_synthetic_datasets_load_with_no_special_case(tmp_path, fmt, rate):
    from meit.data.synth import write_dataset

    root = write_dataset(tmp_path / fmt, fmt, 16, seed=0, workers=1)
    source = open_source(fmt, root, rate)
    assert len(source.records) == 16 and not source.skipped
    assert all(r.report for r in source.records)
    assert all(r.labels for r in source.records) == (fmt == "ptbxl")
    signals, reasons = [], []
    for record in source.records:
        try:
            signals.append(source.read_signal(record, 10 * rate))
        except RecordError as error:  # MIMIC-like synthetic data has some mostly-NaN records
            reasons.append(error.reason)
    assert set(reasons) <= ({"mostly_nan", "long_nan_run"} if fmt == "mimic" else set()) and len(signals) >= 12
    assert all(s.shape == (12, 10 * rate) and s.dtype == np.float32 and np.isfinite(s).all() for s in signals)
    check_disjoint_patients(split_records(source))
