"""Shared fixtures of the data layer: copies of the real fixtures and small datasets in the real layouts.

Datasets are written with `wfdb.wrsamp` (the reference writer) and plain CSV, never with MEIT's own
synthetic generator, so the loaders are tested against independent files.
"""

from __future__ import annotations

import shutil
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

FIXTURES = Path(__file__).parent / "fixtures"
PTBXL_FIXTURE = FIXTURES / "ptbxl-mini"
MIMIC_FIXTURE = FIXTURES / "mimic-iv-ecg-meta"
STANDARD = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
# MIMIC-IV-ECG headers list aVF before aVL.
MIMIC_ORDER = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")
_KNOWN_LEADS = tuple(n.upper() for n in STANDARD) + ("VX", "VY", "VZ")
MIMIC_STUDY_PATH = "files/p1000/p10000032/s40689238/40689238"


def lead_signals(names: Sequence[str], fs: float, n_samples: int, seed: int = 0) -> np.ndarray:
    """A (len(names), n_samples) test signal in mV whose leads are told apart by their name.

    Each lead is a sine of a frequency and amplitude derived from its (upper-cased) name plus a
    little seeded noise, so a lead keeps its waveform whatever its position in a file.
    """
    t = np.arange(n_samples) / fs
    rows = []
    for name in names:
        key = name.upper()
        k = _KNOWN_LEADS.index(key) if key in _KNOWN_LEADS else 20 + zlib.crc32(key.encode()) % 50
        rng = np.random.default_rng([seed, k])
        rows.append((0.2 + 0.05 * k) * np.sin(2 * np.pi * (1.0 + 0.25 * k) * t) + 0.01 * rng.standard_normal(n_samples))
    return np.asarray(rows)


def wrsamp(path: Path, signal_mv: np.ndarray, fs: float, names: Sequence[str], gain: float = 1000.0) -> None:
    """Writes `path`.hea/.dat (format 16) with wfdb.wrsamp; NaN samples become WFDB's invalid value."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = signal_mv.shape[0]
    wfdb.wrsamp(
        path.name, fs=fs, units=["mV"] * n, sig_name=list(names), p_signal=np.asarray(signal_mv.T, dtype=float),
        fmt=["16"] * n, adc_gain=[gain] * n, baseline=[0] * n, write_dir=str(path.parent),
    )


def ptbxl_row(ecg_id: int, patient_id: int, fold: int, report: str, scp_codes: str) -> dict[str, object]:
    """A ptbxl_database.csv row with the real column layout's essential columns."""
    folder = f"{(ecg_id // 1000) * 1000:05d}"
    return {
        "ecg_id": ecg_id, "patient_id": float(patient_id), "age": 50.0, "sex": 0, "report": report,
        "scp_codes": scp_codes, "strat_fold": fold,
        "filename_lr": f"records100/{folder}/{ecg_id:05d}_lr", "filename_hr": f"records500/{folder}/{ecg_id:05d}_hr",
    }


def write_ptbxl(root: Path, n: int = 20, rates: Sequence[int] = (100,), seed: int = 0) -> Path:
    """A small PTB-XL root: n records, 2 per patient, folds cycling 1..10, real CSV layout.

    Args:
        root: folder to write into.
        n: number of records.
        rates: which of records100 (100) / records500 (500) to write.
        seed: signal noise seed.

    Returns:
        root.
    """
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(PTBXL_FIXTURE / "scp_statements.csv", root / "scp_statements.csv")
    rows = []
    for i in range(n):
        ecg_id, patient = i + 1, 1000 + i // 2
        fold = (patient % 10) + 1
        codes = "{'NORM': 100.0, 'SR': 0.0}" if i % 2 == 0 else "{'IMI': 50.0, 'LVH': 100.0, 'SR': 0.0}"
        report = "sinus rhythm. normal ecg." if i % 2 == 0 else "sinusrhythmus. linkstyp. überdrehter linkstyp"
        row = ptbxl_row(ecg_id, patient, fold, report, codes)
        rows.append(row)
        for rate in rates:
            column = "filename_lr" if rate == 100 else "filename_hr"
            wrsamp(root / row[column], lead_signals(STANDARD, rate, 10 * rate, seed + i), rate, STANDARD)
    pd.DataFrame(rows).to_csv(root / "ptbxl_database.csv", index=False)
    return root


def mimic_study_path(subject: int, study: int) -> str:
    """The record path MIMIC-IV-ECG uses for (subject, study)."""
    return f"files/p{str(subject)[:4]}/p{subject}/s{study}/{study}"


def write_mimic(root: Path, studies: Sequence[tuple[int, int, Sequence[str]]], seed: int = 0) -> Path:
    """A MIMIC-IV-ECG root with one 500 Hz 12-lead record per (subject, study, statements).

    machine_measurements.csv lists the studies in reverse order (the loader must join on study_id).
    """
    listing, measurements = [], []
    for k, (subject, study, statements) in enumerate(studies):
        path = mimic_study_path(subject, study)
        listing.append({"subject_id": subject, "study_id": study, "file_name": study, "ecg_time": "2180-01-01 00:00:00",
                        "path": path})
        row = {"subject_id": subject, "study_id": study, "cart_id": 1, "ecg_time": "2180-01-01 00:00:00"}
        row.update({f"report_{j}": (statements[j] if j < len(statements) else "") for j in range(18)})
        row.update({"bandwidth": "0.005-150 Hz", "rr_interval": 800})
        measurements.append(row)
        wrsamp(root / path, lead_signals(MIMIC_ORDER, 500, 5000, seed + k), 500, MIMIC_ORDER, gain=200.0)
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(listing).to_csv(root / "record_list.csv", index=False)
    pd.DataFrame(measurements[::-1]).to_csv(root / "machine_measurements.csv", index=False)
    return root


@pytest.fixture
def ptbxl_fixture(tmp_path: Path) -> Path:
    """A writable copy of the real PTB-XL fixture (record 1 at 100 Hz only)."""
    return Path(shutil.copytree(PTBXL_FIXTURE, tmp_path / "ptbxl-mini"))


@pytest.fixture
def mimic_fixture(tmp_path: Path) -> Path:
    """A copy of the real MIMIC-IV-ECG metadata row of study 40689238 plus a 500 Hz waveform written with wrsamp.

    The waveform's leads are stored in MIMIC's order (aVF before aVL) at 200 adc units/mV.
    """
    root = Path(shutil.copytree(MIMIC_FIXTURE, tmp_path / "mimic"))
    wrsamp(root / MIMIC_STUDY_PATH, lead_signals(MIMIC_ORDER, 500, 5000), 500, MIMIC_ORDER, gain=200.0)
    return root


@pytest.fixture
def make_ptbxl(tmp_path: Path) -> Callable[..., Path]:
    """Builder: make_ptbxl(n=20, rates=(100,), seed=0, name="ptbxl") -> root of a small PTB-XL dataset."""

    def make(n: int = 20, rates: Sequence[int] = (100,), seed: int = 0, name: str = "ptbxl") -> Path:
        return write_ptbxl(tmp_path / name, n, rates, seed)

    return make


@pytest.fixture
def make_mimic(tmp_path: Path) -> Callable[..., Path]:
    """Builder: make_mimic(studies, seed=0, name="mimic") -> root of a small MIMIC-IV-ECG dataset."""

    def make(studies: Sequence[tuple[int, int, Sequence[str]]], seed: int = 0, name: str = "mimic") -> Path:
        return write_mimic(tmp_path / name, studies, seed)

    return make
