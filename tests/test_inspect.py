"""`python -m meit.data inspect`: the JSON summary and the tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from meit.data.__main__ import main
from meit.data.inspect import report_language

REQUIRED_KEYS = {"records", "usable", "skipped", "sampling_rate", "n_leads", "n_samples", "labels", "splits"}


def _inspect_json(capsys, *argv):
    main(["inspect", *argv, "--json"])
    return json.loads(capsys.readouterr().out)


def test_json_on_the_real_ptbxl_fixture(capsys, ptbxl_fixture):
    summary = _inspect_json(capsys, "--dataset", "ptbxl", "--root", str(ptbxl_fixture))
    assert REQUIRED_KEYS <= set(summary)
    assert summary["records"] == 1 and summary["usable"] == 1 and summary["skipped"] == {}
    assert summary["sampling_rate"] == 100 and summary["n_leads"] == 12 and summary["n_samples"] == 1000
    assert summary["labels"] == {"NORM": 1, "LVOLT": 1, "SR": 1} and summary["superclasses"] == {"NORM": 1}
    assert summary["splits"] == {"train": 1, "val": 0, "test": 0}
    assert summary["languages"] == {"german": 1}


def test_json_counts_skips_of_metadata_and_signals(capsys, make_ptbxl):
    root = make_ptbxl(n=20)
    (root / "records100" / "00000" / "00003_lr.dat").unlink()
    text = (root / "ptbxl_database.csv").read_text().replace("{'NORM': 100.0, 'SR': 0.0}", "{'NORM': ", 1)
    (root / "ptbxl_database.csv").write_text(text)
    summary = _inspect_json(capsys, "--dataset", "ptbxl", "--root", str(root))
    assert summary["records"] == 20 and summary["usable"] == 18
    assert summary["skipped"] == {"bad_scp_codes": 1, "missing_dat": 1}
    assert summary["skipped_examples"]["missing_dat"].endswith("00003_lr.dat: WFDB signal file not found")
    assert sum(summary["splits"].values()) == 18
    assert summary["languages"] == {"english": 8, "german": 10}  # records 1 and 3 (English) are skipped
    metadata_only = _inspect_json(capsys, "--dataset", "ptbxl", "--root", str(root), "--no-signals")
    assert metadata_only["usable"] == 19 and metadata_only["skipped"] == {"bad_scp_codes": 1}
    assert metadata_only["signals_checked"] is False


def test_json_on_mimic_resampled(capsys, mimic_fixture):
    summary = _inspect_json(capsys, "--dataset", "mimic", "--root", str(mimic_fixture), "--sampling-rate", "100")
    assert summary["usable"] == 1 and summary["sampling_rate"] == 100 and summary["n_samples"] == 1000
    assert summary["native_rate"] == 500 and summary["labels"] == {} and summary["languages"] == {"english": 1}
    assert summary["source_leads"][3:6] == ["aVR", "aVF", "aVL"]


def test_missing_500hz_is_a_clear_error(capsys, ptbxl_fixture):
    with pytest.raises(SystemExit) as caught:
        main(["inspect", "--dataset", "ptbxl", "--root", str(ptbxl_fixture), "--sampling-rate", "500"])
    assert caught.value.code == 2
    assert "records500" in capsys.readouterr().err


def test_tables_from_the_command_line(ptbxl_fixture):
    result = subprocess.run(
        [sys.executable, "-m", "meit.data", "inspect", "--dataset", "ptbxl", "--root", str(ptbxl_fixture)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "120"},
    )
    assert result.returncode == 0, result.stderr
    for text in ("records", "usable", "skipped", "report languages", "german", "splits", "LVOLT"):
        assert text in result.stdout


def test_report_language():
    assert report_language("sinusrhythmus periphere niederspannung") == "german"
    assert report_language("überdrehter linkstyp") == "german"
    assert report_language("sinus rhythm. left axis deviation. abnormal ecg") == "english"
    assert report_language("12345") == "unknown"
