"""MIMIC-IV-ECG 1.0 on disk: record_list.csv + machine_measurements.csv + 500 Hz WFDB under files/.

The two CSVs are joined on `study_id` (never by row order). The report is the non-empty
`report_0..report_17` statements, in column order, joined with ". ". MIMIC has no SCP labels.
"""

from __future__ import annotations

import gc
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from meit.data.records import ECGRecord, RecordError, clean_text, read_csv_robust, resolve_inside
from meit.data.source import Source

RECORD_LIST_CSV = "record_list.csv"
MEASUREMENTS_CSV = "machine_measurements.csv"
NATIVE_RATE = 500
# the machine's global measurements that grounding can use (ms from the record start / degrees; 29999 = none)
MACHINE_COLUMNS = ("rr_interval", "p_onset", "qrs_onset", "qrs_end", "qrs_axis")
_REPORT_COLUMN = re.compile(r"report_(\d+)")


def _measurement_column(name: str) -> bool:
    return name in ("subject_id", "study_id") or _REPORT_COLUMN.fullmatch(name) is not None


def report_columns(columns) -> list[str]:
    """The `report_k` columns sorted by k as a number (report_2 before report_10)."""
    found = [c for c in columns if _REPORT_COLUMN.fullmatch(c)]
    return sorted(found, key=lambda c: int(_REPORT_COLUMN.fullmatch(c).group(1)))


def join_report(statements) -> str:
    """Joins the non-empty machine statements with ". " (each cleaned: NFC, no control characters)."""
    cleaned = (clean_text(x) for x in statements if not (isinstance(x, str) and not x))
    return ". ".join(s for s in cleaned if s)


def _unique_by_study(frame: pd.DataFrame, skipped: Counter, what: str) -> pd.DataFrame:
    """Drops rows without a numeric study_id and every row of a study_id listed twice (counted)."""
    frame = frame.assign(study_id=frame["study_id"].str.strip())
    bad = ~frame["study_id"].str.fullmatch(r"\d+")
    skipped[f"bad_study_id_{what}"] += int(bad.sum())
    frame = frame[~bad]
    duplicated = frame["study_id"].duplicated(keep=False)
    skipped[f"duplicate_study_{what}"] += int(duplicated.sum())
    return frame[~duplicated]


def _joined(root: Path, skipped: Counter, repaired: Counter) -> pd.DataFrame:
    """record_list rows with their measurements row (inner join on study_id, validated one-to-one)."""
    listing, fallback_a = read_csv_robust(root / RECORD_LIST_CSV, ("subject_id", "study_id", "path"))
    measurements, fallback_b = read_csv_robust(
        root / MEASUREMENTS_CSV, ("subject_id", "study_id", "report_0"), usecols=_measurement_column
    )
    if fallback_a + fallback_b:
        repaired["non_utf8_lines"] += fallback_a + fallback_b
    listing = _unique_by_study(listing[["subject_id", "study_id", "path"]], skipped, "record_list")
    measurements = _unique_by_study(measurements, skipped, "measurements")
    joined = listing.merge(measurements, on="study_id", how="left", suffixes=("", "_m"), validate="one_to_one",
                           indicator=True)
    missing = joined["_merge"] == "left_only"
    skipped["no_measurements"] += int(missing.sum())
    joined = joined[~missing]
    mismatch = joined["subject_id"].str.strip() != joined["subject_id_m"].str.strip()
    skipped["subject_mismatch"] += int(mismatch.sum())
    return joined[~mismatch]


def load_mimic(root: Path, sampling_rate: int | None = None) -> Source:
    """Reads a MIMIC-IV-ECG root.

    Args:
        root: folder holding record_list.csv, machine_measurements.csv and files/.
        sampling_rate: output rate (the files are 500 Hz; other rates are resampled). None: 500.

    Returns:
        A Source whose `.skipped` counts rows dropped by reason (`empty_report`, `path_escapes_root`,
        `no_measurements`, `subject_mismatch`, duplicates, ...).

    Raises:
        RecordError: for missing or unparsable CSVs.
    """
    root = Path(root)
    skipped: Counter = Counter()
    repaired: Counter = Counter()
    joined = _joined(root, skipped, repaired)
    columns = report_columns(joined.columns)
    rows = joined[["study_id", "subject_id", "path", *columns]].itertuples(index=False, name=None)
    with gc_paused():
        records = _records(root, rows, skipped)
    return Source(
        name="mimic", root=root, sampling_rate=sampling_rate or NATIVE_RATE, records=records,
        skipped=+skipped, repaired=repaired, metadata_files=(root / RECORD_LIST_CSV, root / MEASUREMENTS_CSV),
        native_rate=NATIVE_RATE,
    )


@contextmanager
def gc_paused() -> Iterator[None]:
    """Suspends the cyclic garbage collector while ~1M small objects are built: otherwise full collections whose
    cost grows with the heap make loading 800k rows super-linear (measured 94 s with it, 28 s without)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _records(root: Path, rows: Iterable[tuple], skipped: Counter) -> list[ECGRecord]:
    """One ECGRecord per joined row with a report and a path inside the root; the others counted in `skipped`."""
    records = []
    for study, subject, rel, *statements in rows:
        report = join_report(statements)
        if not report:
            skipped["empty_report"] += 1
            continue
        try:
            path = resolve_inside(root, rel)
        except RecordError as error:
            skipped[error.reason] += 1
            continue
        records.append(ECGRecord(str(study), subject.strip(), report, {}, path, None))
    return records


def read_machine_measurements(root: Path, study_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """The `MACHINE_COLUMNS` of machine_measurements.csv for the given studies (as strings, as in the file).

    Studies listed twice (dropped by `load_mimic` too) and exports without these columns give no entry, so
    grounding falls back to measuring the signal.

    Args:
        root: the MIMIC-IV-ECG root.
        study_ids: the record ids (study_id) wanted.

    Returns:
        study_id -> {column: value} for the columns the file has.

    Raises:
        RecordError: the CSV is missing or unparsable.
    """
    wanted = set(study_ids)
    frame, _ = read_csv_robust(root / MEASUREMENTS_CSV, ("study_id",),
                               usecols=lambda c: c == "study_id" or c in MACHINE_COLUMNS)
    columns = [c for c in MACHINE_COLUMNS if c in frame.columns]
    if not columns:
        return {}
    frame = frame.assign(study_id=frame["study_id"].str.strip())
    frame = frame[frame["study_id"].isin(wanted)]
    frame = frame[~frame["study_id"].duplicated(keep=False)]
    return {study: dict(zip(columns, values)) for study, *values in frame[["study_id", *columns]].itertuples(
        index=False, name=None)}


def machine_measurements_for(source: Source, record_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """`read_machine_measurements` for a MIMIC-IV-ECG source; {} for a dataset without machine measurements."""
    return read_machine_measurements(source.root, record_ids) if source.name == "mimic" else {}
