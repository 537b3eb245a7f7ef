"""PTB-XL 1.0.3 on disk: ptbxl_database.csv + scp_statements.csv + WFDB records at 100 or 500 Hz.

Rows with malformed metadata are skipped and counted by reason (never `eval`: `scp_codes` is parsed
with `ast.literal_eval`). Every listed SCP code counts as present: PTB-XL gives rhythm and form
statements likelihood 0.0 ("SR": 0.0) meaning present but unquantified.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

from meit.data.records import ECGRecord, RecordError, clean_text, read_csv_robust, resolve_inside
from meit.data.scp import superclasses
from meit.data.source import Source

DATABASE_CSV = "ptbxl_database.csv"
STATEMENTS_CSV = "scp_statements.csv"
REQUIRED_COLUMNS = ("ecg_id", "patient_id", "report", "scp_codes", "strat_fold", "filename_lr", "filename_hr")
LOW_RATE, HIGH_RATE = 100, 500


def parse_scp_codes(text: str) -> dict[str, float]:
    """Parses a `scp_codes` cell such as "{'NORM': 100.0, 'SR': 0.0}" safely.

    Raises:
        ValueError: when the cell is not a dict literal of str -> number.
    """
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as error:
        raise ValueError(f"scp_codes is not a Python dict literal: {text[:80]!r}") from error
    if not isinstance(value, dict):
        raise ValueError(f"scp_codes is not a dict: {text[:80]!r}")
    codes = {}
    for code, likelihood in value.items():
        if not isinstance(code, str) or isinstance(likelihood, bool) or not isinstance(likelihood, (int, float)):
            raise ValueError(f"scp_codes entry {code!r}: {likelihood!r} is not code -> number")
        codes[code.strip()] = float(likelihood)
    return codes


def record_superclasses(record: ECGRecord) -> list[str]:
    """The record's diagnostic superclasses (NORM/MI/STTC/CD/HYP), sorted."""
    return superclasses(list(record.labels))


def _choose_column(root: Path, frame, sampling_rate: int | None, counts: Counter) -> tuple[str, int, int]:
    """(filename column, native rate of those files, output rate) for the requested rate."""
    folders = {}
    for column, rate in (("filename_lr", LOW_RATE), ("filename_hr", HIGH_RATE)):
        first = next((v for v in frame[column] if v.strip()), "")
        folder = Path(first.strip()).parts[0] if first.strip() else f"records{rate}"
        folders[column] = (root / folder).is_dir()
    if sampling_rate is None:
        sampling_rate = HIGH_RATE if folders["filename_hr"] else LOW_RATE
    if sampling_rate > LOW_RATE:
        if not folders["filename_hr"]:
            alternative = " (records100/ exists: use sampling_rate=100)" if folders["filename_lr"] else ""
            raise RecordError(root / "records500", f"no 500 Hz PTB-XL records: the folder is missing{alternative}",
                              "missing_records")
        return "filename_hr", HIGH_RATE, sampling_rate
    if folders["filename_lr"]:
        return "filename_lr", LOW_RATE, sampling_rate
    if folders["filename_hr"]:
        counts["lr_from_hr"] += 1
        return "filename_hr", HIGH_RATE, sampling_rate
    raise RecordError(root / "records100", "no PTB-XL waveform folder (records100/ or records500/)", "missing_records")


def _parse_row(root: Path, row: dict[str, str], column: str) -> ECGRecord:
    """One database row as an ECGRecord (raises RecordError with a skip reason)."""
    where = root / DATABASE_CSV
    ecg_id = row["ecg_id"].strip()
    try:
        record_id = str(int(float(ecg_id)))
    except ValueError:
        raise RecordError(where, f"ecg_id {ecg_id!r} is not a number", "bad_id") from None
    try:
        labels = parse_scp_codes(row["scp_codes"])
    except ValueError as error:
        raise RecordError(where, f"ecg_id {record_id}: {error}", "bad_scp_codes") from None
    try:
        patient_id = str(int(float(row["patient_id"])))
        fold = int(float(row["strat_fold"]))
    except ValueError:
        raise RecordError(where, f"ecg_id {record_id}: patient_id/strat_fold not numbers", "bad_fold") from None
    if not 1 <= fold <= 10:
        raise RecordError(where, f"ecg_id {record_id}: strat_fold {fold} not in 1..10", "bad_fold")
    report = clean_text(row["report"])
    if not report:
        raise RecordError(where, f"ecg_id {record_id}: empty report", "empty_report")
    path = resolve_inside(root, row[column])
    return ECGRecord(record_id, patient_id, report, labels, path, fold)


def load_ptbxl(root: Path, sampling_rate: int | None = None) -> Source:
    """Reads a PTB-XL root.

    Args:
        root: folder holding ptbxl_database.csv, scp_statements.csv and records100/ and/or records500/.
        sampling_rate: output rate; > 100 Hz reads the 500 Hz files (which must exist), <= 100 Hz the
            100 Hz files (or the 500 Hz ones, downsampled, when only those exist). None: native.

    Returns:
        A Source whose `.skipped` counts the rejected rows by reason.

    Raises:
        RecordError: missing/unparsable CSVs, or no waveform folder for the requested rate.
    """
    root = Path(root)
    frame, fallback = read_csv_robust(root / DATABASE_CSV, REQUIRED_COLUMNS, usecols=REQUIRED_COLUMNS)
    read_csv_robust(root / STATEMENTS_CSV, ("description",))
    repaired: Counter = Counter()
    if fallback:
        repaired["non_utf8_lines"] += fallback
    column, native, rate = _choose_column(root, frame, sampling_rate, repaired)
    records, skipped, seen = [], Counter(), set()
    for row in frame.to_dict("records"):
        try:
            record = _parse_row(root, row, column)
        except RecordError as error:
            skipped[error.reason] += 1
            continue
        if record.record_id in seen:
            skipped["duplicate_id"] += 1
            continue
        seen.add(record.record_id)
        records.append(record)
    return Source(
        name="ptbxl", root=root, sampling_rate=rate, records=records, skipped=skipped, repaired=repaired,
        metadata_files=(root / DATABASE_CSV, root / STATEMENTS_CSV), native_rate=native,
    )
