"""Synthetic 12-lead ECGs whose findings are really in the waveform, written as PTB-XL or MIMIC-IV-ECG.

This module samples each record's SCP codes with PTB-XL-like co-occurrence (`sample_codes`), writes the
matching reports, renders the signals in memory (`synthesize`) or as a dataset in the real on-disk format
(`write_dataset`), and holds the `python -m meit.data synth` command and the throughput benchmark. The
waveform model itself (a moving cardiac dipole projected onto the leads, per-finding morphology, rhythm,
electrode noise and device filtering) is in `meit.data.synth_beats`; `render_record` is re-exported here.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal as sps
from tqdm import tqdm

from meit.data import wfdb_io
from meit.data.measure import MIMIC_MISSING as MIMIC_MISSING
from meit.data.records import STANDARD_LEADS
from meit.data.reports import mimic_statements, ptbxl_report
from meit.data.scp import SCP_STATEMENTS_CSV, scp_statements
from meit.data.synth_beats import LEADS_3D as LEADS_3D
from meit.data.synth_beats import LEADS_ELECTRODES as LEADS_ELECTRODES
from meit.data.synth_beats import _place_pvcs as _place_pvcs
from meit.data.synth_beats import _rhythm as _rhythm
from meit.data.synth_beats import render_record

PTBXL_LEADS = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
MIMIC_LEADS = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")
RHYTHMS = ("SR", "SBRAD", "STACH", "AFIB", "AFLT")
CHUNK = 32  # records per work unit; fixed so the dataset does not depend on the worker count


@dataclass
class SynthBatch:
    """Synthetic records: signals in mV (n, 12, T) in standard lead order, labels, reports, measurements."""

    signals: np.ndarray
    codes: list[dict[str, float]]
    reports: list[str]
    measurements: list[dict[str, float]]
    fs: int
    site: str

    @property
    def heart_rate(self) -> np.ndarray:
        """Mean ventricular rate of each record, bpm."""
        return np.array([m["heart_rate"] for m in self.measurements])


# ---------------------------------------------------------------- labels


def _likelihood(code: str) -> float:
    """PTB-XL convention: diagnostic statements carry a likelihood, rhythm and form statements 0.0."""
    return 100.0 if scp_statements()[code].diagnostic else 0.0


def sample_codes(rng: np.random.Generator) -> dict[str, float]:
    """One record's SCP codes with PTB-XL-like co-occurrence (one rhythm, exclusive BBBs, NORM alone)."""
    rhythm = RHYTHMS[rng.choice(5, p=[0.74, 0.08, 0.07, 0.07, 0.04])]
    sinus = rhythm in ("SR", "SBRAD", "STACH")
    if sinus and rng.random() < 0.47:
        return {"NORM": 100.0, rhythm: 0.0}
    while True:
        found = set()
        for code, p in (("CLBBB", 0.09), ("CRBBB", 0.10), ("LAFB", 0.14), ("LVH", 0.17), ("LVOLT", 0.10),
                        ("STE_", 0.10), ("STD_", 0.14), ("INVT", 0.14), ("1AVB", 0.12), ("PVC", 0.11)):
            if rng.random() < p:
                found.add(code)
        if "CLBBB" in found:
            found -= {"CRBBB", "LAFB", "LVH", "STE_", "STD_", "INVT"}
        if "LVOLT" in found:
            found.discard("LVH")
        if "STE_" in found:
            found.discard("STD_")
        if not sinus:
            found -= {"1AVB", "PVC"}
        if found or not sinus:
            break
    return {c: _likelihood(c) for c in sorted(found)} | {rhythm: 0.0}


def _render_chunk(codes: list[dict[str, float]], seed: int, chunk: int, fs: int, duration_s: float,
                  site: str) -> tuple[np.ndarray, list[dict[str, float]]]:
    rng = np.random.default_rng([seed, 1, chunk])
    out = [render_record(c, rng, fs, duration_s, site) for c in codes]
    return np.stack([o[0] for o in out]), [o[1] for o in out]


def _plan_codes(n: int, seed: int) -> list[dict[str, float]]:
    rng = np.random.default_rng([seed, 0])
    return [sample_codes(rng) for _ in range(n)]


def synthesize(n: int, seed: int, fs: int = 500, duration_s: float = 10.0, site: str = "ptbxl") -> SynthBatch:
    """Generates `n` synthetic records in memory.

    Args:
        n: number of records.
        seed: random seed; the same seed gives the same records (and the same as `write_dataset`).
        fs: sampling frequency, Hz.
        duration_s: record length, seconds.
        site: "ptbxl" or "mimic" (device characteristics and report style).

    Returns:
        A `SynthBatch` with signals (n, 12, T) float32 in mV, codes, reports and measurements.
    """
    if site not in ("ptbxl", "mimic"):
        raise ValueError(f"unknown site: {site}; choose from mimic, ptbxl")
    codes = _plan_codes(n, seed)
    signals, measurements = [], []
    for chunk, start in enumerate(range(0, n, CHUNK)):
        x, m = _render_chunk(codes[start : start + CHUNK], seed, chunk, fs, duration_s, site)
        signals.append(x)
        measurements += m
    stacked = np.concatenate(signals) if signals else np.zeros((0, 12, round(fs * duration_s)), np.float32)
    return SynthBatch(stacked, codes, _reports(codes, seed, site), measurements, fs, site)


def _reports(codes: list[dict[str, float]], seed: int, site: str) -> list[str]:
    rng = np.random.default_rng([seed, 2])
    if site == "ptbxl":
        return [ptbxl_report(c, rng) for c in codes]
    return [". ".join(mimic_statements(c, rng)) for c in codes]


# ---------------------------------------------------------------- on-disk datasets

PTBXL_COLUMNS = (
    "ecg_id", "patient_id", "age", "sex", "height", "weight", "nurse", "site", "device", "recording_date", "report",
    "scp_codes", "heart_axis", "infarction_stadium1", "infarction_stadium2", "validated_by", "second_opinion",
    "initial_autogenerated_report", "validated_by_human", "baseline_drift", "static_noise", "burst_noise",
    "electrodes_problems", "extra_beats", "pacemaker", "strat_fold", "filename_lr", "filename_hr",
)
MIMIC_RECORD_COLUMNS = ("subject_id", "study_id", "file_name", "ecg_time", "path")
MIMIC_MEASUREMENT_COLUMNS = (
    "subject_id", "study_id", "cart_id", "ecg_time", *(f"report_{k}" for k in range(18)), "bandwidth", "filtering",
    "rr_interval", "p_onset", "p_end", "qrs_onset", "qrs_end", "t_end", "p_axis", "qrs_axis", "t_axis",
)
_MIMIC_ORDER = [STANDARD_LEADS.index(name) for name in ("I", "II", "III", "aVR", "aVF", "aVL")] + list(range(6, 12))


@dataclass
class _Job:
    """One chunk of records to render and write (picklable for the process pool)."""

    codes: list[dict[str, float]]
    seed: int
    chunk: int
    fmt: str
    root: str
    paths: list[str]  # record paths relative to root (PTB-XL: the 500 Hz one)
    times: list[str]  # recording times "YYYY-mm-dd HH:MM:SS"


def _ptbxl_paths(ecg_id: int) -> tuple[str, str]:
    folder = f"{(ecg_id // 1000) * 1000:05d}"
    return f"records100/{folder}/{ecg_id:05d}_lr", f"records500/{folder}/{ecg_id:05d}_hr"


def _mimic_path(subject_id: int, study_id: int) -> str:
    return f"files/p{str(subject_id)[:4]}/p{subject_id}/s{study_id}/{study_id}"


def _add_nan_runs(x: np.ndarray, rng: np.random.Generator) -> None:
    """MIMIC-like missing samples: short NaN runs in some records, rarely a mostly-NaN record."""
    n = x.shape[-1]
    u = rng.random()
    if u < 0.008:
        start = int(rng.integers(0, n // 4))
        x[:, start : start + int(n * rng.uniform(0.6, 0.95))] = np.nan
    elif u < 0.06:
        for _ in range(int(rng.integers(1, 3))):
            start, length = int(rng.integers(0, n - 300)), int(rng.integers(10, 250))
            leads = slice(None) if rng.random() < 0.5 else rng.choice(12, int(rng.integers(1, 12)), replace=False)
            x[leads, start : start + length] = np.nan


def _write_chunk(job: _Job) -> list[dict[str, float]]:
    """Renders a chunk at 500 Hz and writes its WFDB records; returns their measurements."""
    signals, measurements = _render_chunk(job.codes, job.seed, job.chunk, 500, 10.0, job.fmt)
    root = Path(job.root)
    if job.fmt == "ptbxl":
        low = decimate5(signals)
        for k, rel in enumerate(job.paths):
            wfdb_io.write_record(root / rel, signals[k], 500, PTBXL_LEADS, 1000.0)
            lr = rel.replace("records500", "records100").replace("_hr", "_lr")
            wfdb_io.write_record(root / lr, low[k], 100, PTBXL_LEADS, 1000.0)
    else:
        rng = np.random.default_rng([job.seed, 3, job.chunk])
        for k, rel in enumerate(job.paths):
            x = signals[k][_MIMIC_ORDER]
            _add_nan_runs(x, rng)
            when = dt.datetime.strptime(job.times[k], "%Y-%m-%d %H:%M:%S")
            wfdb_io.write_record(root / rel, x, 500, MIMIC_LEADS, 200.0, base_datetime=when)
    return measurements


_DECIMATION_TAPS = sps.firwin(41, 40.0, fs=500.0)


def decimate5(x: np.ndarray) -> np.ndarray:
    """500 Hz -> 100 Hz along the last axis: 41-tap linear-phase low-pass (40 Hz), evaluated only at kept samples."""
    half = len(_DECIMATION_TAPS) // 2
    # odd extension (as filtfilt pads) keeps the edges free of a slope break
    head = 2 * x[..., :1] - x[..., half:0:-1]
    tail = 2 * x[..., -1:] - x[..., -2 : -half - 2 : -1]
    padded = np.concatenate([head, x, tail], axis=-1)
    windows = np.lib.stride_tricks.sliding_window_view(padded, len(_DECIMATION_TAPS), axis=-1)[..., ::5, :]
    return np.einsum("...k,k->...", windows, _DECIMATION_TAPS[::-1].astype(x.dtype))


def _random_times(rng: np.random.Generator, n: int, first_year: int, years: int) -> list[str]:
    base = dt.datetime(first_year, 1, 1)
    seconds = rng.integers(0, years * 365 * 86400, n)
    return [(base + dt.timedelta(seconds=int(s))).strftime("%Y-%m-%d %H:%M:%S") for s in seconds]


def _patients(rng: np.random.Generator, n: int) -> np.ndarray:
    """Patient index of each record: most patients have one record, some several (shuffled)."""
    counts = np.minimum(rng.geometric(0.72, n), 5)
    owner = np.repeat(np.arange(n), counts)[:n]
    return owner[rng.permutation(n)]


def _heart_axis(deg: float) -> str:
    if -30 <= deg <= 90:
        return "MID"
    if -45 <= deg < -30:
        return "LAD"
    if -90 <= deg < -45:
        return "ALAD"
    return "RAD" if 90 < deg <= 120 else "ARAD" if deg > 120 else "AXL"


def _ptbxl_rows(codes: list[dict[str, float]], reports: list[str], seed: int,
                measurements: list[dict[str, float]]) -> list[dict[str, str]]:
    n = len(codes)
    rng = np.random.default_rng([seed, 4])
    owner = _patients(rng, n)
    patient_ids = rng.choice(np.arange(1, 30000 + 3 * n), size=n, replace=False)
    folds, ages, sexes = rng.integers(1, 11, n), rng.integers(18, 90, n), rng.integers(0, 2, n)
    weights = rng.integers(50, 110, n)
    dates = _random_times(rng, n, 1984, 17)
    rows = []
    for i in range(n):
        p = owner[i]
        lr, hr = _ptbxl_paths(i + 1)
        rows.append({
            "ecg_id": str(i + 1), "patient_id": f"{float(patient_ids[p]):.1f}", "age": f"{float(ages[p]):.1f}",
            "sex": str(sexes[p]), "height": "", "weight": f"{float(weights[p]):.1f}" if rng.random() < 0.5 else "",
            "nurse": f"{float(rng.integers(0, 12)):.1f}", "site": f"{float(rng.integers(0, 3)):.1f}",
            "device": ("CS-12   E", "AT-6 C 5.5", "CS100    3")[int(rng.integers(3))], "recording_date": dates[i],
            "report": reports[i], "scp_codes": repr(codes[i]), "heart_axis": _heart_axis(measurements[i]["qrs_axis"]),
            "infarction_stadium1": "", "infarction_stadium2": "", "validated_by": "", "second_opinion": "False",
            "initial_autogenerated_report": "False", "validated_by_human": "True", "baseline_drift": "",
            "static_noise": "", "burst_noise": "", "electrodes_problems": "",
            "extra_beats": "VES" if "PVC" in codes[i] else "", "pacemaker": "", "strat_fold": str(folds[p]),
            "filename_lr": lr, "filename_hr": hr,
        })
    return rows


def _mimic_ids(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng([seed, 4])
    owner = _patients(rng, n)
    subjects = 10000000 + rng.choice(9000000, size=n, replace=False)
    studies = 40000000 + rng.choice(20000000, size=n, replace=False)
    return subjects[owner], studies, _random_times(rng, n, 2110, 90)


def _mimic_measurement_row(subject: int, study: int, when: str, statements: list[str],
                           m: dict[str, float], rng: np.random.Generator) -> dict[str, str]:
    slots = list(statements)
    if len(slots) > 1 and rng.random() < 0.35:
        slots.insert(len(slots) - 1, "")  # MIMIC leaves gaps between report columns
    row = {"subject_id": str(subject), "study_id": str(study), "cart_id": str(int(rng.integers(6000000, 6999999))),
           "ecg_time": when, "bandwidth": "0.005-150 Hz", "filtering": "60 Hz notch Baseline filter"}
    row |= {f"report_{k}": (slots[k] if k < len(slots) else "") for k in range(18)}
    no_p = np.isnan(m["pr_ms"])
    p_onset = 40 + int(rng.integers(0, 20))
    qrs_onset = p_onset + (120 if no_p else round(m["pr_ms"]))
    row |= {"rr_interval": str(round(m["rr_ms"])), "p_onset": str(MIMIC_MISSING if no_p else p_onset),
            "p_end": str(MIMIC_MISSING if no_p else p_onset + 100), "qrs_onset": str(qrs_onset),
            "qrs_end": str(qrs_onset + round(m["qrs_ms"])), "t_end": str(qrs_onset + round(m["qt_ms"])),
            "p_axis": str(MIMIC_MISSING if no_p else round(m["p_axis"])), "qrs_axis": str(round(m["qrs_axis"])),
            "t_axis": str(round(m["t_axis"]))}
    return row


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _run_jobs(jobs: list[_Job], workers: int, n: int, desc: str) -> list[dict[str, float]]:
    measurements: list[dict[str, float]] = []
    with tqdm(total=n, desc=desc, unit="rec") as bar:
        if workers <= 1:
            results = map(_write_chunk, jobs)
            for m in results:
                measurements += m
                bar.update(len(m))
            return measurements
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(workers) as pool:
            for m in pool.imap(_write_chunk, jobs):
                measurements += m
                bar.update(len(m))
    return measurements


def write_dataset(out: Path | str, fmt: str, n: int, seed: int, workers: int | None = None) -> Path:
    """Writes a synthetic dataset of `n` records in the real PTB-XL or MIMIC-IV-ECG on-disk format.

    Args:
        out: dataset root (created).
        fmt: "ptbxl" (ptbxl_database.csv, scp_statements.csv, records100/ + records500/) or "mimic"
            (record_list.csv, machine_measurements.csv, files/...).
        n: number of records.
        seed: random seed; the same seed writes the same dataset whatever `workers` is.
        workers: writer processes (default: CPU count).

    Returns:
        The dataset root.
    """
    if fmt not in ("ptbxl", "mimic"):
        raise ValueError(f"unknown format: {fmt}; choose from mimic, ptbxl")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    codes = _plan_codes(n, seed)
    if fmt == "ptbxl":
        paths, times = [_ptbxl_paths(i + 1)[1] for i in range(n)], [""] * n
    else:
        subjects, studies, times = _mimic_ids(n, seed)
        paths = [_mimic_path(int(a), int(b)) for a, b in zip(subjects, studies)]
    jobs = [_Job(codes[s : s + CHUNK], seed, k, fmt, str(root), paths[s : s + CHUNK], times[s : s + CHUNK])
            for k, s in enumerate(range(0, n, CHUNK))]
    measurements = _run_jobs(jobs, workers or os.cpu_count() or 1, n, f"synth {fmt}")
    if fmt == "ptbxl":
        rows = _ptbxl_rows(codes, _reports(codes, seed, "ptbxl"), seed, measurements)
        _write_csv(root / "ptbxl_database.csv", PTBXL_COLUMNS, rows)
        shutil.copyfile(SCP_STATEMENTS_CSV, root / "scp_statements.csv")
    else:
        _write_mimic_csvs(root, codes, seed, subjects, studies, times, paths, measurements)
    return root


def _write_mimic_csvs(root: Path, codes: list[dict[str, float]], seed: int, subjects: np.ndarray,
                      studies: np.ndarray, times: list[str], paths: list[str],
                      measurements: list[dict[str, float]]) -> None:
    rng = np.random.default_rng([seed, 2])
    statements = [mimic_statements(c, rng) for c in codes]
    rng = np.random.default_rng([seed, 5])
    records = [{"subject_id": str(s), "study_id": str(st), "file_name": str(st), "ecg_time": t, "path": p}
               for s, st, t, p in zip(subjects, studies, times, paths)]
    machine = [_mimic_measurement_row(int(s), int(st), t, lines, m, rng)
               for s, st, t, lines, m in zip(subjects, studies, times, statements, measurements)]
    order = sorted(range(len(records)), key=lambda i: (int(subjects[i]), int(studies[i])))
    _write_csv(root / "record_list.csv", MIMIC_RECORD_COLUMNS, [records[i] for i in order])
    _write_csv(root / "machine_measurements.csv", MIMIC_MEASUREMENT_COLUMNS,
               [machine[i] for i in rng.permutation(len(machine))])


def benchmark(n: int = 400, fmt: str = "ptbxl", workers: int | None = None) -> dict[str, float | int | str]:
    """Measures synthetic data throughput (generation + WFDB/CSV writing) in a temporary directory.

    Args:
        n: records to write.
        fmt: "ptbxl" (writes 500 Hz and 100 Hz files) or "mimic".
        workers: writer processes (default: CPU count).

    Returns:
        {"records_per_s", "seconds", "n", "workers", "format"}.
    """
    workers = workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_dataset(Path(tmp) / "data", fmt, n, seed=0, workers=workers)
        seconds = time.perf_counter() - start
    return {"records_per_s": n / seconds, "seconds": seconds, "n": n, "workers": workers, "format": fmt}


def synth_command(args: argparse.Namespace) -> None:
    """`python -m meit.data synth`: writes a dataset and prints where."""
    root = write_dataset(Path(args.out), args.format, args.n, args.seed, args.workers)
    print(f"wrote {args.n} synthetic {args.format} records to {root}")
