"""ECG records and their signals: the record type, clear per-file errors, WFDB reading to (12, T) mV.

Every problem with one record raises `RecordError(path, problem, reason)`: `str()` names the file
and the problem, `.reason` is a short key the loaders and the cache count skips by. A signal is
returned only when it is trustworthy: the 12 standard leads (by name), finite, non-flat, in mV.
"""

from __future__ import annotations

import csv
import io
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

STANDARD_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
_LEAD_KEYS = tuple(name.upper() for name in STANDARD_LEADS)

# Non-finite samples: runs up to this fraction of a lead are interpolated; records with more
# than MOSTLY_NAN of all samples non-finite are dropped.
MAX_NAN_RUN_FRACTION = 0.10
MOSTLY_NAN = 0.5

_UNIT_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "nv": 1e-6}
# Bytes per sample of the WFDB formats whose file size we can check exactly.
_FORMAT_BYTES = {"8": 1.0, "16": 2.0, "24": 3.0, "32": 4.0, "61": 2.0, "80": 1.0, "160": 2.0, "212": 1.5,
                 "310": 4 / 3, "311": 4 / 3}
# What a header may make the reader allocate: the sampling rate of any ECG device, and at most the samples of a
# 10-minute 12-lead record at 1000 Hz (~58 MB as float64). Checked before any sample is read.
SAMPLING_RATE_RANGE = (50.0, 10_000.0)
MAX_DURATION_S = 600.0
MAX_SIGNAL_SAMPLES = 12 * 600 * 1000


@dataclass(frozen=True)
class ECGRecord:
    """One ECG with its report: the unit every loader, split and cache works with.

    Attributes:
        record_id: dataset-wide unique id (PTB-XL ecg_id, MIMIC study_id), as a string.
        patient_id: the patient (PTB-XL patient_id, MIMIC subject_id), as a string.
        report: the report text, unicode NFC, control characters removed.
        labels: SCP code -> likelihood (PTB-XL); empty where the dataset has none (MIMIC).
        path: WFDB record path without extension, inside the dataset root.
        fold: PTB-XL strat_fold (1..10), None elsewhere.
    """

    record_id: str
    patient_id: str
    report: str
    labels: dict[str, float] = field(default_factory=dict)
    path: Path = Path()
    fold: int | None = None


class RecordError(ValueError):
    """A record (or a dataset file) that cannot be used.

    Args:
        path: the offending file or record path.
        problem: a human-readable description.
        reason: a short key for counting skips (`missing_dat`, `bad_header`, `wrong_leads`, ...).
    """

    def __init__(self, path: str | Path, problem: str, reason: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem
        self.reason = reason

    def __reduce__(self):  # keep the three arguments when sent between processes
        return (RecordError, (self.path, self.problem, self.reason))


@dataclass(frozen=True)
class LoadedSignal:
    """A signal ready for training plus the repairs made on the way (e.g. `nan_interpolated`)."""

    signal: np.ndarray
    repairs: tuple[str, ...] = ()


# --------------------------------------------------------------------------- text and CSVs


def clean_text(text: object) -> str:
    """Normalises report text: NFC unicode, control/format characters dropped, whitespace collapsed.

    Umlauts and other letters are kept (NFC composes "u" + combining diaeresis into "ü").

    Args:
        text: a cell value (str, NaN, None, number).

    Returns:
        The cleaned string; "" for missing values.
    """
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    return _clean_str(str(text))


@lru_cache(maxsize=1 << 16)
def _clean_str(text: str) -> str:
    if text.isascii() and text.isprintable():
        return " ".join(text.split())
    text = unicodedata.normalize("NFC", text)
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if char.isspace() or category in ("Cc", "Zl", "Zp"):
            kept.append(" ")
        elif category in ("Cf", "Cs", "Co", "Cn") or char == "\ufffd":
            continue
        else:
            kept.append(char)
    return re.sub(r"\s+", " ", "".join(kept)).strip()


def decode_csv_bytes(data: bytes) -> tuple[str, int]:
    """Decodes a CSV file line by line: UTF-8 where valid, else Windows-1252 (Latin-1 as last resort).

    Args:
        data: the raw file content.

    Returns:
        (text, number of lines that were not valid UTF-8).
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8"), 0
    except UnicodeDecodeError:
        pass
    lines, fallback = [], 0
    for raw in data.splitlines(keepends=True):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            fallback += 1
            try:
                lines.append(raw.decode("cp1252"))
            except UnicodeDecodeError:
                lines.append(raw.decode("latin-1"))
    return "".join(lines), fallback


def read_csv_robust(path: Path, required: Sequence[str], usecols=None) -> tuple[pd.DataFrame, int]:
    """Reads a metadata CSV as strings (empty cells -> ""), tolerating non-UTF-8 bytes.

    Args:
        path: the CSV file.
        required: columns that must exist.
        usecols: optional pandas `usecols` (names or a callable).

    Returns:
        (frame of str columns, number of lines decoded with the non-UTF-8 fallback).

    Raises:
        RecordError: missing file (`missing_csv`), unparsable CSV (`bad_csv`) or missing columns.
    """
    if not path.is_file():
        raise RecordError(path, "file not found", "missing_csv")
    if usecols is not None and not callable(usecols):
        wanted = frozenset(usecols)
        usecols = wanted.__contains__  # missing columns are reported below, by name
    options = {"dtype": str, "keep_default_na": False, "usecols": usecols, "quoting": csv.QUOTE_MINIMAL}
    fallback = 0
    try:
        try:
            frame = pd.read_csv(path, encoding="utf-8", **options)
        except UnicodeDecodeError:
            text, fallback = decode_csv_bytes(path.read_bytes())
            frame = pd.read_csv(io.StringIO(text), **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as error:
        raise RecordError(path, f"cannot parse CSV ({error})", "bad_csv") from error
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise RecordError(path, f"missing column(s) {', '.join(missing)}", "bad_csv")
    return frame, fallback


@lru_cache(maxsize=16)
def _resolved(root: Path) -> Path:
    return root.resolve()


@lru_cache(maxsize=1 << 16)
def _is_link(path: str) -> bool:
    return os.path.islink(path)


def _link_escapes(root: str, parts: tuple[str, ...]) -> bool:
    """Whether a symbolic link among the folders of root/parts leads outside the root.

    Only folders are checked (one cached lstat each); the full resolution runs only when one is a link.
    """
    prefix = root
    for part in parts[:-1]:
        prefix = os.path.join(prefix, part)
        if _is_link(prefix):
            return not Path(os.path.realpath(os.path.join(root, *parts))).is_relative_to(_resolved(Path(root)))
    return False


def resolve_inside(root: Path, relative: str) -> Path:
    """The path `relative` under `root`, refusing anything that escapes the root.

    Args:
        root: the dataset root.
        relative: a path from a CSV (e.g. "records100/00000/00001_lr").

    Returns:
        root / relative.

    Raises:
        RecordError: reason `path_escapes_root` for absolute paths, "..", or folder links leading
            outside; reason `empty_path` for an empty cell.
    """
    relative = relative.strip()
    if not relative:
        raise RecordError(root, "empty record path in the CSV", "empty_path")
    parts = tuple(p for p in relative.replace("\\", "/").split("/") if p not in ("", "."))
    absolute = os.path.isabs(relative) or relative.startswith("\\") or re.match(r"[A-Za-z]:", relative)
    if absolute or not parts or ".." in parts or _link_escapes(os.path.abspath(root), parts):
        raise RecordError(relative, f"record path escapes the dataset root {root}", "path_escapes_root")
    return root.joinpath(*parts)


# --------------------------------------------------------------------------- WFDB reading


def read_header(path: Path):
    """Reads and checks the WFDB header of `path` (no extension).

    Raises:
        RecordError: `missing_header`, `bad_header`, `missing_dat` (a signal file is absent) or
            `truncated_dat` (a signal file is shorter than the header says).
    """
    import wfdb

    header_file = path.with_suffix(".hea")
    if not header_file.is_file():
        raise RecordError(header_file, "WFDB header not found", "missing_header")
    try:
        header = wfdb.rdheader(str(path))
    except Exception as error:  # wfdb raises many types for bad text: report them all the same way
        raise RecordError(header_file, f"unreadable WFDB header ({type(error).__name__}: {error})", "bad_header")
    if not header.n_sig or not header.sig_len or not header.fs or not header.file_name or not header.sig_name:
        raise RecordError(header_file, "truncated WFDB header (no signals, length or rate)", "bad_header")
    if len(header.sig_name) != header.n_sig or len(header.file_name) != header.n_sig:
        raise RecordError(header_file, f"header declares {header.n_sig} signals but lists {len(header.sig_name)}",
                          "bad_header")
    _check_bounds(header_file, header)
    _check_signal_files(path, header)
    return header


def _check_bounds(header_file: Path, header) -> None:
    """Refuses a header whose rate, length or sample count no ECG has (it would make the reader allocate GBs)."""
    low, high = SAMPLING_RATE_RANGE
    fs, length = float(header.fs), int(header.sig_len)
    if not low <= fs <= high:
        raise RecordError(header_file, f"sampling frequency {fs:g} Hz is outside {low:g}..{high:g} Hz", "bad_header")
    if length / fs > MAX_DURATION_S:
        raise RecordError(header_file, f"header declares {length} samples at {fs:g} Hz ({length / fs:.0f} s), longer "
                          f"than {MAX_DURATION_S:.0f} s", "bad_header")
    if length * header.n_sig > MAX_SIGNAL_SAMPLES:
        raise RecordError(header_file, f"header declares {header.n_sig} signals x {length} samples, more than "
                          f"{MAX_SIGNAL_SAMPLES:,} in all", "bad_header")


def _check_signal_files(path: Path, header) -> None:
    for name in dict.fromkeys(header.file_name):
        if Path(name).name != name:
            raise RecordError(path.with_suffix(".hea"), f"signal file name {name!r} is not a plain name",
                              "path_escapes_root")
        data_file = path.parent / name
        if not data_file.is_file():
            raise RecordError(data_file, "WFDB signal file not found", "missing_dat")
        in_file = [k for k, n in enumerate(header.file_name) if n == name]
        fmt = header.fmt[in_file[0]]
        offset = (header.byte_offset or [0] * header.n_sig)[in_file[0]] or 0
        if fmt in _FORMAT_BYTES:
            expected = offset + int(np.ceil(header.sig_len * len(in_file) * _FORMAT_BYTES[fmt]))
            size = data_file.stat().st_size
            if size < expected:
                raise RecordError(data_file, f"signal file truncated: {size} bytes, header needs {expected}",
                                  "truncated_dat")


def read_wfdb(path: Path) -> tuple[np.ndarray, list[str], float]:
    """Reads a WFDB record as physical values in mV.

    Args:
        path: record path without extension.

    Returns:
        (signal (n_leads, T) float64 in mV, lead names as in the header, sampling rate in Hz).

    Raises:
        RecordError: for missing/unreadable files or unknown units.
    """
    import wfdb

    header = read_header(path)
    try:
        record = wfdb.rdrecord(str(path), physical=True, return_res=64)
    except Exception as error:
        raise RecordError(path.with_suffix(".dat"), f"cannot read samples ({type(error).__name__}: {error})",
                          "bad_dat")
    signal = record.p_signal
    if signal is None or signal.ndim != 2 or signal.shape[1] != header.n_sig:
        raise RecordError(path.with_suffix(".dat"), "samples do not match the header", "bad_dat")
    scale = []
    for name, unit in zip(header.sig_name, header.units or ["mV"] * header.n_sig):
        key = (unit or "mV").strip().lower()
        if key not in _UNIT_TO_MV:
            raise RecordError(path.with_suffix(".hea"), f"lead {name} has unknown units {unit!r}", "bad_units")
        scale.append(_UNIT_TO_MV[key])
    return signal.T * np.asarray(scale)[:, None], [str(n) for n in header.sig_name], float(header.fs)


# --------------------------------------------------------------------------- signal processing


def select_leads(signal: np.ndarray, names: Sequence[str], path: Path) -> np.ndarray:
    """The 12 standard leads of `signal`, by name (case-insensitive), in STANDARD_LEADS order.

    Extra leads (e.g. Frank X/Y/Z of a 15-lead record) are dropped.

    Raises:
        RecordError: reason `wrong_leads` when a standard lead is missing or listed twice.
    """
    keys = [name.strip().upper() for name in names]
    rows = []
    for lead, key in zip(STANDARD_LEADS, _LEAD_KEYS):
        found = [k for k, name in enumerate(keys) if name == key]
        if len(found) != 1:
            problem = "missing" if not found else "listed more than once"
            raise RecordError(path.with_suffix(".hea"), f"lead {lead} {problem} (leads: {', '.join(names)})",
                              "wrong_leads")
        rows.append(found[0])
    return signal[rows]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of the runs of True in a 1-D boolean array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def repair_nonfinite(signal: np.ndarray, path: Path) -> tuple[np.ndarray, bool]:
    """Linearly interpolates short NaN/inf runs; refuses records that are mostly or long-run non-finite.

    Args:
        signal: (n_leads, T) array.
        path: the record, for error messages.

    Returns:
        (repaired copy, whether anything was interpolated).

    Raises:
        RecordError: `mostly_nan` (> 50 % non-finite) or `long_nan_run` (a run > 10 % of a lead).
    """
    bad = ~np.isfinite(signal)
    if not bad.any():
        return signal, False
    n = signal.shape[1]
    if bad.mean() > MOSTLY_NAN:
        raise RecordError(path, f"{bad.mean():.0%} of the samples are NaN/inf", "mostly_nan")
    longest = max(stop - start for lead in bad for start, stop in _runs(lead))
    if longest > MAX_NAN_RUN_FRACTION * n:
        raise RecordError(path, f"a NaN/inf run of {longest} samples (> {MAX_NAN_RUN_FRACTION:.0%} of a lead)",
                          "long_nan_run")
    out = signal.copy()
    positions = np.arange(n)
    for k in np.flatnonzero(bad.any(axis=1)):
        good = ~bad[k]
        out[k, bad[k]] = np.interp(positions[bad[k]], positions[good], signal[k, good])
    return out, True


def resample(signal: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling (scipy.signal.resample_poly) along the last axis."""
    if fs_in == fs_out:
        return signal
    from scipy.signal import resample_poly

    ratio = Fraction(fs_out).limit_denominator(1000) / Fraction(fs_in).limit_denominator(1000)
    return resample_poly(signal, ratio.numerator, ratio.denominator, axis=-1)


def fit_length(signal: np.ndarray, n_samples: int) -> np.ndarray:
    """Crops to the first `n_samples` or pads with zeros at the end."""
    length = signal.shape[-1]
    if length >= n_samples:
        return signal[..., :n_samples]
    pad = [(0, 0)] * (signal.ndim - 1) + [(0, n_samples - length)]
    return np.pad(signal, pad)


def read_standard_leads(path: Path, refuse_flat: bool = True) -> tuple[np.ndarray, float, tuple[str, ...]]:
    """Reads one WFDB record's 12 standard leads at its own rate: read (mV), select the leads by name, repair
    short NaN runs and (by default) refuse flat leads.

    Args:
        path: record path without extension.
        refuse_flat: raise for a constant lead (training data); False leaves flat leads to `meit.data.quality`.

    Returns:
        (float64 (12, T) signal in mV, sampling rate in Hz, repairs made, e.g. `nan_interpolated`).

    Raises:
        RecordError: with a reason key for every kind of bad input.
    """
    raw, names, fs = read_wfdb(path)
    signal = select_leads(raw, names, path)
    signal, interpolated = repair_nonfinite(signal, path)
    flat = [lead for lead, row in zip(STANDARD_LEADS, signal) if np.ptp(row) == 0]
    if flat and refuse_flat:
        raise RecordError(path, f"flat (constant) lead(s): {', '.join(flat)}", "flat_leads")
    return signal, fs, ("nan_interpolated",) if interpolated else ()


def conform_signal(signal: np.ndarray, fs: float, sampling_rate: float, n_samples: int, path: Path) -> np.ndarray:
    """Resamples (polyphase) a (12, T) signal to `sampling_rate` and crops/pads it to `n_samples`, as float32.

    Raises:
        RecordError: `bad_dat` when resampling produced non-finite values.
    """
    signal = fit_length(resample(signal, fs, sampling_rate), n_samples).astype(np.float32)
    if not np.isfinite(signal).all():
        raise RecordError(path, "non-finite values after resampling", "bad_dat")
    return np.ascontiguousarray(signal)


def load_signal(path: Path, sampling_rate: float, n_samples: int) -> LoadedSignal:
    """Reads one WFDB record as a float32 (12, n_samples) array in mV at `sampling_rate`.

    Steps: read (mV), select the standard leads by name, repair short NaN runs, refuse flat leads,
    resample (polyphase), crop/pad (`read_standard_leads`, then `conform_signal`).

    Args:
        path: record path without extension.
        sampling_rate: target rate in Hz.
        n_samples: target length.

    Returns:
        The signal and the repairs made.

    Raises:
        RecordError: with a reason key for every kind of bad input.
    """
    signal, fs, repairs = read_standard_leads(path)
    return LoadedSignal(conform_signal(signal, fs, sampling_rate, n_samples, path), repairs)
