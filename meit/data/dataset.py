"""A torch Dataset of (ECG, report, labels) items served from a SignalCache.

Labels: every SCP code the record lists, sorted. PTB-XL lists rhythm and form statements with
likelihood 0.0 (e.g. "SR": 0.0) meaning present but unquantified, so a listed code is a present
code whatever its likelihood.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from meit.data.cache import SignalCache
from meit.data.records import ECGRecord


def record_labels(record: ECGRecord) -> list[str]:
    """The record's SCP codes, sorted (every listed code, likelihood 0.0 included)."""
    return sorted(record.labels)


class ECGReportDataset(Dataset):
    """Items `{"id", "ecg" (FloatTensor 12 x T), "report", "labels"}` for the given records.

    Records the cache skipped (unreadable waveform, mostly NaN, ...) are left out; they are already
    counted in `cache.skipped`. A record neither cached nor skipped by this cache is an error.

    Args:
        cache: the SignalCache holding the records' signals.
        records: the records to serve, in this order.
        transform: optional function applied to each float32 (12, T) numpy signal (e.g. noise).

    Raises:
        ValueError: if a record is unknown to the cache.
    """

    def __init__(
        self,
        cache: SignalCache,
        records: Sequence[ECGRecord],
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.cache = cache
        self.transform = transform
        position = {record_id: i for i, record_id in enumerate(cache.ids)}
        skipped = {entry["id"] for entry in cache.skipped_records}
        unknown = [r.record_id for r in records if r.record_id not in position and r.record_id not in skipped]
        if unknown:
            raise ValueError(f"record(s) {unknown[:5]} are not in the cache {cache.directory}")
        kept = [r for r in records if r.record_id in position]
        self.records = kept
        self._positions = [position[r.record_id] for r in kept]

    def __len__(self) -> int:
        return len(self.records)

    def raw_signal(self, i: int) -> np.ndarray:
        """Record `i`'s cached (12, T) signal in mV, before any transform."""
        return self.cache[self._positions[i]]

    def __getitem__(self, i: int) -> dict[str, Any]:
        record = self.records[i]
        signal = self.cache[self._positions[i]]
        if self.transform is not None:
            signal = np.asarray(self.transform(signal), dtype=np.float32)
        return {
            "id": record.record_id,
            "ecg": torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32)),
            "report": record.report,
            "labels": record_labels(record),
        }
