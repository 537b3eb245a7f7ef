"""The one torch Dataset of MEIT: (ECG, report, labels) items served from a SignalCache.

Training, validation, testing, noise sweeps, zero-shot tests and the probe all read their items here; an
optional seeded signal transform (noise) and an optional renderer (image-branch runs: the page of the signal)
make the variants, so every command sees the same record as the same item.

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
from meit.data.seeding import record_seed

SignalTransform = Callable[[np.ndarray, np.random.Generator], np.ndarray]
"""`transform(signal, rng)` on a float32 (12, T) signal in mV, `rng` seeded by (dataset seed, record id)."""
PageRenderer = Callable[[np.ndarray, int], torch.Tensor]
"""`render(signal, page_seed)` -> the (3, H, W) page an image-branch run reads."""


def record_labels(record: ECGRecord) -> list[str]:
    """The record's SCP codes, sorted (every listed code, likelihood 0.0 included)."""
    return sorted(record.labels)


def page_seed(seed: int, record_id: str, *extra: Any) -> int:
    """The render seed of one record's page (of one (record, epoch) training page when `extra` holds the epoch)."""
    return record_seed(seed, record_id, *extra) % 2**31


class ECGReportDataset(Dataset):
    """Items `{"id", "ecg", "report", "labels"}` for the given records; "ecg" is the (12, T) FloatTensor, or the
    rendered (3, H, W) page when `render` is given.

    Records the cache skipped (unreadable waveform, mostly NaN, ...) are left out; they are already counted in
    `cache.skipped`. A record neither cached nor skipped by this cache is an error.

    An item is addressed by position, or by `(position, epoch)` (`meit.tasks.images.EpochTaggedSampler`): the
    epoch joins the page seed, so random render artefacts give a new training page each epoch and the same ones
    on a rerun. The transform's generator is seeded by (seed, record id) only, so the same seed gives the same
    noisy set whatever the batch size, order or worker.

    Args:
        cache: the SignalCache holding the records' signals.
        records: the records to serve, in this order.
        transform: optional seeded signal transform (noise), applied before rendering.
        seed: seeds the transform and the pages per record.
        render: optional renderer of the (transformed) signal.

    Raises:
        ValueError: if a record is unknown to the cache.
    """

    def __init__(self, cache: SignalCache, records: Sequence[ECGRecord], transform: SignalTransform | None = None,
                 seed: int = 0, render: PageRenderer | None = None) -> None:
        self.cache, self.transform, self.seed, self.render = cache, transform, seed, render
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

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        i, *epoch = key if isinstance(key, tuple) else (key,)
        record = self.records[i]
        signal = self.raw_signal(i)
        if self.transform is not None:
            rng = np.random.default_rng(record_seed(self.seed, record.record_id))
            signal = np.asarray(self.transform(signal, rng), dtype=np.float32)
        if self.render is not None:
            ecg = self.render(signal, page_seed(self.seed, record.record_id, *epoch))
        else:
            ecg = torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32))
        return {"id": record.record_id, "ecg": ecg, "report": record.report, "labels": record_labels(record)}
