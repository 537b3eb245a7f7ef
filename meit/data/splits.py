"""Train/val/test splits that never put one patient in two splits.

`split_records` is the one split function (training, evaluation, inspection), with two methods
(`--data.split`):
- `folds` (default): PTB-XL records carry `strat_fold` (1..10): folds 1-8 train, 9 val, 10 test (the
  standard split; PTB-XL assigns whole patients to a fold). Records without folds (MIMIC-IV-ECG) have no
  standard split and are split by patient, as with `patient`.
- `patient`: each patient id is hashed with the seed into [0, 1) and placed by the split fractions
  (80/10/10, the shares of PTB-XL's 8/1/1 folds), whatever folds the records carry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from meit.data.records import ECGRecord
from meit.data.source import Source
from meit.util.errors import UserFacingError

SPLITS = ("train", "val", "test")
SPLIT_METHODS = ("folds", "patient")
FOLD_SPLIT = {**{fold: "train" for fold in range(1, 9)}, 9: "val", 10: "test"}


def patient_unit(patient_id: str, seed: int) -> float:
    """A deterministic pseudo-random number in [0, 1) for (patient, seed), stable across runs and machines."""
    digest = hashlib.blake2b(f"{seed}:{patient_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_by_patient(
    records: Sequence[ECGRecord], seed: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> dict[str, list[ECGRecord]]:
    """Splits records by hashed patient id: all records of a patient land in the same split.

    Args:
        records: the records.
        seed: changes the assignment.
        fractions: train/val/test shares of patients (normalised to sum to 1).

    Returns:
        {"train": [...], "val": [...], "test": [...]}, each in input order.
    """
    total = float(sum(fractions))
    train_end = fractions[0] / total
    val_end = train_end + fractions[1] / total
    splits: dict[str, list[ECGRecord]] = {name: [] for name in SPLITS}
    for record in records:
        u = patient_unit(record.patient_id, seed)
        splits["train" if u < train_end else "val" if u < val_end else "test"].append(record)
    return splits


def split_by_fold(records: Sequence[ECGRecord]) -> dict[str, list[ECGRecord]]:
    """PTB-XL's standard split: strat_fold 1-8 train, 9 val, 10 test."""
    splits: dict[str, list[ECGRecord]] = {name: [] for name in SPLITS}
    for record in records:
        if record.fold not in FOLD_SPLIT:
            raise ValueError(f"record {record.record_id}: strat_fold {record.fold!r} is not in 1..10")
        splits[FOLD_SPLIT[record.fold]].append(record)
    return splits


def check_disjoint_patients(splits: dict[str, list[ECGRecord]]) -> None:
    """Raises ValueError naming a patient found in two splits (and the splits)."""
    owner: dict[str, str] = {}
    for name, records in splits.items():
        for record in records:
            first = owner.setdefault(record.patient_id, name)
            if first != name:
                raise ValueError(
                    f"patient {record.patient_id} is in both the {first} and the {name} split "
                    f"(record {record.record_id}); a dataset's folds must keep each patient in one split"
                )


def split_records(
    source: Source, seed: int = 0, records: Sequence[ECGRecord] | None = None, method: str = "folds"
) -> dict[str, list[ECGRecord]]:
    """The train/val/test split of a source's records.

    Args:
        source: the dataset.
        seed: seeds the patient hash (ignored by PTB-XL's fixed folds).
        records: a subset to split instead of `source.records` (e.g. records whose signals are valid).
        method: `folds` (PTB-XL's strat_fold when every record has one, otherwise by patient) or `patient`.

    Returns:
        {"train", "val", "test"} -> records, each in input order (a split may be empty).

    Raises:
        UserFacingError: an unknown `method` (naming `--data.split`).
        ValueError: if a patient would be in two splits.
    """
    if method not in SPLIT_METHODS:
        raise UserFacingError("--data.split", f"unknown split {method!r}; choose from {', '.join(SPLIT_METHODS)}")
    records = list(source.records if records is None else records)
    if method == "folds" and records and all(r.fold is not None for r in records):
        splits = split_by_fold(records)
    else:
        splits = split_by_patient(records, seed)
    check_disjoint_patients(splits)
    return splits
