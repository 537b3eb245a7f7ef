"""The preprocessing cache: one memory-mapped float32 (N, 12, T) array + a JSON index per
dataset/rate/length/split, written once by streaming chunks through a worker pool, then read-only.

Layout of a cache directory `{cache_dir}/{source}-{rate}hz-{T}-{split}-{key}`:
- `signals.npy`: the (N, 12, T) array (np.lib.format, memory-mapped; N = records asked for,
  rows of skipped records stay zero and are never served);
- `layout.json`: written once the array file exists (shape + key);
- `chunks/NNNNNN.json`: one marker per finished chunk (its rows flushed to disk before the marker is
  written atomically), so an interrupted build resumes without redoing finished chunks;
- `index.json`: written atomically last: usable ids and their rows, skipped records with reasons,
  repairs, the source fingerprint. Its presence means "complete".

The key hashes the metadata CSVs' content (the source fingerprint), rate, length, split and record
ids, so a changed dataset gets a new cache. Nothing but one chunk is ever held in memory. A build holds
`meit.util.locks.exclusive` on its directory: concurrent builders of one cache wait for the first and open its result.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from meit.data.records import ECGRecord, RecordError, load_signal
from meit.data.source import Source
from meit.util.atomic import write_json
from meit.util.locks import exclusive

CACHE_VERSION = 1
N_LEADS = 12
INDEX_FILE, LAYOUT_FILE, SIGNALS_FILE, CHUNKS_DIR = "index.json", "layout.json", "signals.npy", "chunks"


def cache_key(source: Source, records: Sequence[ECGRecord], n_samples: int, split: str) -> str:
    """A hash of everything a cache's content depends on."""
    digest = hashlib.blake2b(digest_size=12)
    for part in (CACHE_VERSION, source.name, source.fingerprint(), source.sampling_rate, n_samples, split):
        digest.update(f"{part}\x00".encode())
    for record in records:
        digest.update(f"{record.record_id}\x00{record.path}\x01".encode())
    return digest.hexdigest()


def _fill_chunk(task: dict[str, Any]) -> dict[str, Any]:
    """Reads one chunk's records into rows [start, start + len) of the array and flushes them.

    Runs in a worker process. A record that fails is left as zeros and reported with its reason.
    """
    data = np.load(task["signals"], mmap_mode="r+")
    skipped, repairs = [], Counter()
    for offset, path in enumerate(task["paths"]):
        row = task["start"] + offset
        try:
            loaded = load_signal(Path(path), task["sampling_rate"], task["n_samples"])
        except RecordError as error:
            skipped.append([row, error.reason, str(error)])
            continue
        except Exception as error:  # an unexpected failure of one file must not stop the build
            skipped.append([row, "read_error", f"{path}: {type(error).__name__}: {error}"])
            continue
        data[row] = loaded.signal
        repairs.update(loaded.repairs)
    data.flush()
    del data
    return {"chunk": task["chunk"], "skipped": skipped, "repairs": dict(repairs)}


class SignalCache:
    """A built cache, read-only: `cache[i]` is the i-th usable record's float32 (12, T) signal.

    Args:
        directory: a complete cache directory (holding index.json).
        records: optional records to align with `ids` (`.records[i]` is the record of `cache[i]`).

    Raises:
        FileNotFoundError: if the directory holds no complete cache.
        ValueError: if `records` lacks one of the cached ids.
    """

    def __init__(self, directory: str | Path, records: Sequence[ECGRecord] | None = None) -> None:
        self.directory = Path(directory)
        index_file = self.directory / INDEX_FILE
        if not index_file.is_file():
            raise FileNotFoundError(f"{index_file}: no complete signal cache here (build it with SignalCache.build)")
        self.index: dict[str, Any] = json.loads(index_file.read_text(encoding="utf-8"))
        self.ids: list[str] = list(self.index["ids"])
        self._rows = np.asarray(self.index["rows"], dtype=np.int64)
        self.skipped: Counter = Counter(self.index["skipped"])
        self.sampling_rate: int = self.index["sampling_rate"]
        self.n_samples: int = self.index["n_samples"]
        self.records: list[ECGRecord] | None = None if records is None else self._align(records)
        self._data: np.ndarray | None = None
        self._fd: int | None = None

    def _align(self, records: Sequence[ECGRecord]) -> list[ECGRecord]:
        by_id = {r.record_id: r for r in records}
        missing = [i for i in self.ids if i not in by_id]
        if missing:
            raise ValueError(f"{self.directory}: cached record(s) {missing[:5]} are not among the given records")
        return [by_id[i] for i in self.ids]

    @property
    def data(self) -> np.ndarray:
        """The whole (N, 12, T) memory-mapped array (rows of skipped records are zeros)."""
        if self._data is None:
            self._data = np.load(self.directory / SIGNALS_FILE, mmap_mode="r")
        return self._data

    @property
    def skipped_records(self) -> list[dict[str, str]]:
        """Every record left out: {"id", "reason", "message"}."""
        return list(self.index["skipped_records"])

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> np.ndarray:
        # A positioned read rather than indexing the memmap: pages a long-lived map touched stay in this
        # process's RSS, so an epoch over 800k records would grow RSS towards the size of the cache.
        data = self.data
        row = np.empty(data.shape[1:], dtype=np.float32)
        if self._fd is None:
            self._fd = os.open(self.directory / SIGNALS_FILE, os.O_RDONLY)
        n_read = os.preadv(self._fd, [memoryview(row).cast("B")], data.offset + int(self._rows[i]) * row.nbytes)
        if n_read != row.nbytes:
            raise OSError(f"{self.directory / SIGNALS_FILE}: short read of row {self._rows[i]} (truncated cache?)")
        return row

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers re-open the memmap themselves
        state = self.__dict__.copy()
        state["_data"] = None
        state["_fd"] = None
        return state

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    @classmethod
    def build(
        cls,
        source: Source,
        records: Sequence[ECGRecord],
        n_samples: int,
        cache_dir: str | Path,
        split: str = "all",
        workers: int = 2,
        chunk_size: int = 256,
        progress: bool = True,
    ) -> SignalCache:
        """Opens the cache of (source, records, n_samples, split), building or resuming it first.

        Args:
            source: the dataset (its rate and fingerprint are part of the key).
            records: the records to cache, in order (e.g. one split).
            n_samples: length T of every signal.
            cache_dir: parent folder of all caches.
            split: a name for the directory and key ("train", "val", "test", "all").
            workers: processes reading records (1 reads in this process).
            chunk_size: records per chunk (the unit of resumption).
            progress: show a tqdm bar.

        Returns:
            The complete, read-only cache, aligned with `records`.
        """
        records = list(records)
        key = cache_key(source, records, n_samples, split)
        directory = Path(cache_dir) / f"{source.name}-{source.sampling_rate}hz-{n_samples}-{split}-{key}"
        if not (directory / INDEX_FILE).is_file():
            with exclusive(directory):  # other processes wait, then open what this one built
                if not (directory / INDEX_FILE).is_file():
                    _Builder(source, records, n_samples, directory, key, split).run(workers, chunk_size, progress)
        return cls(directory, records)


class _Builder:
    """Writes one cache directory chunk by chunk (see the module docstring)."""

    def __init__(self, source: Source, records: list[ECGRecord], n_samples: int, directory: Path, key: str,
                 split: str) -> None:
        self.source, self.records, self.n_samples = source, records, n_samples
        self.directory, self.key, self.split = directory, key, split
        self.signals = directory / SIGNALS_FILE
        self.chunks = directory / CHUNKS_DIR

    def run(self, workers: int, chunk_size: int, progress: bool) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._prepare_array()
        tasks = [t for t in self._tasks(chunk_size) if not self._marker(t["chunk"]).is_file()]
        done_records = len(self.records) - sum(len(t["paths"]) for t in tasks)
        bar = tqdm(total=len(self.records), initial=done_records, unit="rec", disable=not progress,
                   desc=f"caching {self.source.name} {self.split} @ {self.source.sampling_rate} Hz")
        with bar:
            for task, result in self._execute(tasks, workers):
                write_json(self._marker(result["chunk"]), result)
                bar.update(len(task["paths"]))
        self._write_index(chunk_size)
        shutil.rmtree(self.chunks, ignore_errors=True)

    def _prepare_array(self) -> None:
        shape = [len(self.records), N_LEADS, self.n_samples]
        layout = self.directory / LAYOUT_FILE
        if layout.is_file() and self.signals.is_file():
            if json.loads(layout.read_text(encoding="utf-8")) == {"shape": shape, "key": self.key}:
                return
        shutil.rmtree(self.chunks, ignore_errors=True)
        array = np.lib.format.open_memmap(self.signals, mode="w+", dtype=np.float32, shape=tuple(shape))
        array.flush()
        del array
        write_json(layout, {"shape": shape, "key": self.key})

    def _marker(self, chunk: int) -> Path:
        return self.chunks / f"{chunk:06d}.json"

    def _tasks(self, chunk_size: int) -> Iterator[dict[str, Any]]:
        self.chunks.mkdir(exist_ok=True)
        for chunk, start in enumerate(range(0, len(self.records), chunk_size)):
            yield {
                "chunk": chunk, "start": start, "signals": str(self.signals),
                "paths": [str(r.path) for r in self.records[start:start + chunk_size]],
                "sampling_rate": self.source.sampling_rate, "n_samples": self.n_samples,
            }

    def _execute(self, tasks: list[dict[str, Any]], workers: int) -> Iterator[tuple[dict, dict]]:
        """Yields (task, result) as chunks finish; at most 2 x workers chunks in flight."""
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                yield task, _fill_chunk(task)
            return
        pending: dict[Future, dict] = {}
        queue = iter(tasks)
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            for task in queue:
                pending[pool.submit(_fill_chunk, task)] = task
                if len(pending) >= 2 * workers:
                    break
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield pending.pop(future), future.result()
                    task = next(queue, None)
                    if task is not None:
                        pending[pool.submit(_fill_chunk, task)] = task

    def _write_index(self, chunk_size: int) -> None:
        skipped_rows: dict[int, tuple[str, str]] = {}
        repairs: Counter = Counter()
        for chunk in range((len(self.records) + chunk_size - 1) // chunk_size):
            result = json.loads(self._marker(chunk).read_text(encoding="utf-8"))
            skipped_rows.update({row: (reason, message) for row, reason, message in result["skipped"]})
            repairs.update(result["repairs"])
        usable = [row for row in range(len(self.records)) if row not in skipped_rows]
        write_json(self.directory / INDEX_FILE, {
            "version": CACHE_VERSION,
            "source": self.source.name,
            "root": str(self.source.root),
            "split": self.split,
            "sampling_rate": self.source.sampling_rate,
            "n_samples": self.n_samples,
            "n_leads": N_LEADS,
            "fingerprint": self.source.fingerprint(),
            "key": self.key,
            "n_total": len(self.records),
            "ids": [self.records[row].record_id for row in usable],
            "rows": usable,
            "skipped": dict(Counter(reason for reason, _ in skipped_rows.values())),
            "skipped_records": [
                {"id": self.records[row].record_id, "reason": reason, "message": message}
                for row, (reason, message) in sorted(skipped_rows.items())
            ],
            "repaired": dict(repairs),
        })


def build_split_caches(
    source: Source,
    splits: dict[str, Sequence[ECGRecord]],
    n_samples: int,
    cache_dir: str | Path,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, SignalCache]:
    """One SignalCache per split (see `SignalCache.build`)."""
    return {
        name: SignalCache.build(source, records, n_samples, cache_dir, split=name, workers=workers, progress=progress)
        for name, records in splits.items()
    }
