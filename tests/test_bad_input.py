"""Corrupted copies of datasets: every kind of bad input is a clear error naming the file or a counted skip."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from conftest import STANDARD, lead_signals, wrsamp

from meit.data.cache import SignalCache
from meit.data.dataset import ECGReportDataset
from meit.data.records import RecordError, load_signal, read_csv_robust, repair_nonfinite, resolve_inside
from meit.data.sources import open_source


def _edit_rows(root, **changes):
    """Sets column values of ptbxl_database.csv rows: changes = {column: {row_index: value}}."""
    frame = pd.read_csv(root / "ptbxl_database.csv", dtype=str, keep_default_na=False)
    for column, values in changes.items():
        for index, value in values.items():
            frame.loc[index, column] = value
    frame.to_csv(root / "ptbxl_database.csv", index=False)


def _reason(path, rate=100, n=1000):
    with pytest.raises(RecordError) as caught:
        load_signal(path, rate, n)
    return caught.value


def test_missing_dat_names_the_file(ptbxl_fixture):
    record = open_source("ptbxl", ptbxl_fixture, 100).records[0]
    record.path.with_suffix(".dat").unlink()
    error = _reason(record.path)
    assert error.reason == "missing_dat" and str(error).startswith(str(record.path.with_suffix(".dat")))


def test_missing_header(ptbxl_fixture):
    record = open_source("ptbxl", ptbxl_fixture, 100).records[0]
    record.path.with_suffix(".hea").unlink()
    assert _reason(record.path).reason == "missing_header"


@pytest.mark.parametrize("text", ["", "00001_lr 12 100 1000\n", "00001_lr 12 100 1000\nnot a signal line\n",
                                  "\xff\xfe garbage \x00\n"])
def test_bad_or_truncated_header(ptbxl_fixture, text):
    record = open_source("ptbxl", ptbxl_fixture, 100).records[0]
    record.path.with_suffix(".hea").write_bytes(text.encode("latin-1"))
    error = _reason(record.path)
    assert error.reason == "bad_header" and ".hea" in str(error)


def test_header_cut_mid_signal_lines(ptbxl_fixture):
    record = open_source("ptbxl", ptbxl_fixture, 100).records[0]
    header = record.path.with_suffix(".hea")
    header.write_text("\n".join(header.read_text().splitlines()[:7]) + "\n")  # 6 of 12 signal lines
    assert _reason(record.path).reason == "bad_header"


def test_truncated_dat(ptbxl_fixture):
    record = open_source("ptbxl", ptbxl_fixture, 100).records[0]
    dat = record.path.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:12 * 2 * 500])  # a whole number of frames: half the record
    error = _reason(record.path)
    assert error.reason == "truncated_dat" and "12000 bytes" in str(error)


def test_wrong_lead_count(tmp_path):
    names = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    wrsamp(tmp_path / "eight", lead_signals(names, 100, 1000), 100, names)
    error = _reason(tmp_path / "eight")
    assert error.reason == "wrong_leads" and "III" in str(error)


def test_flat_lead(tmp_path):
    signal = lead_signals(STANDARD, 100, 1000)
    signal[7] = 0.0
    wrsamp(tmp_path / "flat", signal, 100, STANDARD)
    error = _reason(tmp_path / "flat")
    assert error.reason == "flat_leads" and "V2" in str(error)


def test_inf_is_treated_like_nan(tmp_path):
    signal = np.ones((12, 100))
    signal[0, 10:12] = np.inf
    signal[0, 12] = 3.0
    repaired, changed = repair_nonfinite(signal, tmp_path / "rec")
    assert changed and np.isfinite(repaired).all()
    np.testing.assert_allclose(repaired[0, 9:14], [1.0, 1 + 2 / 3, 1 + 4 / 3, 3.0, 1.0])


def test_malformed_metadata_rows_are_counted_skips(make_ptbxl):
    root = make_ptbxl(n=8)
    _edit_rows(
        root,
        scp_codes={0: "{'NORM': 100.0", 1: "__import__('os').system('echo pwned')"},
        report={2: "   ", 3: "\x00\x01"},
        filename_lr={4: "../../../etc/passwd", 5: "/etc/hostname"},
        strat_fold={6: "11"},
    )
    source = open_source("ptbxl", root, 100)
    assert source.skipped == {"bad_scp_codes": 2, "empty_report": 2, "path_escapes_root": 2, "bad_fold": 1}
    assert [r.record_id for r in source.records] == ["8"]


def test_symlink_escaping_the_root_is_rejected(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "records100")
    with pytest.raises(RecordError) as caught:
        resolve_inside(root, "records100/00000/00001_lr")
    assert caught.value.reason == "path_escapes_root"
    assert resolve_inside(root, "a/b") == root / "a" / "b"


def test_non_utf8_csv_keeps_umlauts(make_ptbxl):
    root = make_ptbxl(n=2)
    text = (root / "ptbxl_database.csv").read_text(encoding="utf-8")
    text = text.replace("sinus rhythm. normal ecg.", "sinusrhythmus normales ekg \u2013 ver\u00e4ndert")
    (root / "ptbxl_database.csv").write_bytes(text.encode("cp1252"))  # umlauts and the dash as single bytes
    source = open_source("ptbxl", root, 100)
    reports = [r.report for r in source.records]
    assert reports[0] == "sinusrhythmus normales ekg \u2013 ver\u00e4ndert"
    assert reports[1] == "sinusrhythmus. linkstyp. \u00fcberdrehter linkstyp"  # the UTF-8 line is kept as is
    assert source.repaired["non_utf8_lines"] >= 1


def test_missing_csv_and_missing_columns(tmp_path, make_ptbxl):
    with pytest.raises(RecordError) as caught:
        open_source("mimic", tmp_path)
    assert caught.value.reason == "missing_csv" and "record_list.csv" in str(caught.value)
    root = make_ptbxl(n=2)
    frame = pd.read_csv(root / "ptbxl_database.csv").drop(columns=["scp_codes"])
    frame.to_csv(root / "ptbxl_database.csv", index=False)
    with pytest.raises(RecordError, match="missing column\\(s\\) scp_codes"):
        open_source("ptbxl", root)
    (root / "bad.csv").write_bytes(b'a,b\n"1,2\n')
    with pytest.raises(RecordError, match="bad.csv"):
        read_csv_robust(root / "bad.csv", ("a",))


def test_mimic_bad_rows_are_counted(make_mimic):
    studies = [(10000001, 50000001, ["Sinus rhythm"]), (10000002, 50000002, ["", ""]),
               (10000003, 50000003, ["Normal ECG"]), (10000004, 50000004, ["Abnormal ECG"])]
    root = make_mimic(studies)
    listing = pd.read_csv(root / "record_list.csv", dtype=str)
    listing.loc[2, "path"] = "files/../../outside/50000003"
    listing.loc[3, "subject_id"] = "99999999"  # measurements say 10000004: a mismatched join
    extra = listing.iloc[[0]].assign(study_id="50000009")  # listed, but no measurements row
    pd.concat([listing, extra]).to_csv(root / "record_list.csv", index=False)
    source = open_source("mimic", root)
    assert [r.record_id for r in source.records] == ["50000001"]
    assert source.skipped == {"empty_report": 1, "path_escapes_root": 1, "subject_mismatch": 1,
                              "no_measurements": 1}


def test_cache_counts_bad_records_and_never_crashes(make_ptbxl, tmp_path):
    root = make_ptbxl(n=6)
    source = open_source("ptbxl", root, 100)
    records = source.records
    records[0].path.with_suffix(".dat").unlink()
    records[1].path.with_suffix(".hea").write_text("garbage\n")
    flat = lead_signals(STANDARD, 100, 1000)
    flat[3] = 0.25
    wrsamp(records[2].path, flat, 100, STANDARD)
    cache = SignalCache.build(source, records, 1000, tmp_path / "cache", workers=1, progress=False)
    assert cache.skipped == {"missing_dat": 1, "bad_header": 1, "flat_leads": 1}
    assert cache.ids == ["4", "5", "6"] and len(cache) == 3
    assert {e["id"]: e["reason"] for e in cache.skipped_records} == {"1": "missing_dat", "2": "bad_header",
                                                                     "3": "flat_leads"}
    assert all(str(records[0].path) in e["message"] for e in cache.skipped_records if e["id"] == "1")
    dataset = ECGReportDataset(cache, records)
    assert [item["id"] for item in dataset] == ["4", "5", "6"]
