"""The memory-mapped signal cache (round trip, resume, fingerprint) and the torch Dataset on top of it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import meit.data.cache as cache_module
from meit.data.cache import SignalCache, build_split_caches
from meit.data.dataset import ECGReportDataset
from meit.data.sources import open_source
from meit.data.splits import split_records


def _direct(source, records, n):
    return np.stack([source.read_signal(r, n) for r in records])


def test_round_trip_equals_direct_reads(make_ptbxl, tmp_path):
    source = open_source("ptbxl", make_ptbxl(n=10), 100)
    cache = SignalCache.build(source, source.records, 1000, tmp_path / "cache", workers=1, chunk_size=3,
                              progress=False)
    assert len(cache) == 10 and cache.ids == [r.record_id for r in source.records]
    assert cache.records == source.records and not cache.skipped
    stored = np.stack([cache[i] for i in range(len(cache))])
    assert stored.dtype == np.float32 and stored.shape == (10, 12, 1000)
    np.testing.assert_array_equal(stored, _direct(source, source.records, 1000))
    assert isinstance(cache.data, np.memmap) and cache.data.shape == (10, 12, 1000)
    index = json.loads((cache.directory / "index.json").read_text())
    assert index["fingerprint"] == source.fingerprint() and index["sampling_rate"] == 100
    assert not (cache.directory / "chunks").exists()


def test_complete_cache_is_read_without_reading_records(make_ptbxl, tmp_path, monkeypatch):
    source = open_source("ptbxl", make_ptbxl(n=4), 100)
    first = SignalCache.build(source, source.records, 1000, tmp_path / "cache", workers=1, progress=False)

    def fail(task):
        raise AssertionError("a complete cache must not read records again")

    monkeypatch.setattr(cache_module, "_fill_chunk", fail)
    again = SignalCache.build(source, source.records, 1000, tmp_path / "cache", workers=1, progress=False)
    assert again.directory == first.directory
    np.testing.assert_array_equal(again[3], first[3])


def test_resume_after_interruption_skips_finished_chunks(make_ptbxl, tmp_path, monkeypatch):
    source = open_source("ptbxl", make_ptbxl(n=10), 100)
    real = cache_module._fill_chunk
    calls: list[int] = []

    def interrupted(task):
        if task["chunk"] == 2:
            raise KeyboardInterrupt
        calls.append(task["chunk"])
        return real(task)

    monkeypatch.setattr(cache_module, "_fill_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        SignalCache.build(source, source.records, 1000, tmp_path / "cache", workers=1, chunk_size=3, progress=False)
    (directory,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]  # beside it: its build's .lock file
    assert not (directory / "index.json").exists()
    assert sorted(p.name for p in (directory / "chunks").iterdir()) == ["000000.json", "000001.json"]

    calls.clear()

    def counting(task):
        calls.append(task["chunk"])
        return real(task)

    monkeypatch.setattr(cache_module, "_fill_chunk", counting)
    cache = SignalCache.build(source, source.records, 1000, tmp_path / "cache", workers=1, chunk_size=3,
                              progress=False)
    assert calls == [2, 3]
    np.testing.assert_array_equal(np.stack([cache[i] for i in range(10)]), _direct(source, source.records, 1000))


def test_changed_dataset_gets_a_new_cache(make_ptbxl, tmp_path):
    root = make_ptbxl(n=4)
    source = open_source("ptbxl", root, 100)
    first = SignalCache.build(source, source.records, 1000, tmp_path / "cache", workers=1, progress=False)
    frame = pd.read_csv(root / "ptbxl_database.csv")
    frame.loc[0, "report"] = "a changed report"
    frame.to_csv(root / "ptbxl_database.csv", index=False)
    changed = open_source("ptbxl", root, 100)
    assert changed.fingerprint() != source.fingerprint()
    second = SignalCache.build(changed, changed.records, 1000, tmp_path / "cache", workers=1, progress=False)
    assert second.directory != first.directory and second.records[0].report == "a changed report"
    other_length = SignalCache.build(changed, changed.records, 500, tmp_path / "cache", workers=1, progress=False)
    assert other_length.directory not in (first.directory, second.directory) and other_length[0].shape == (12, 500)


def test_worker_pool_build_with_splits(make_ptbxl, tmp_path):
    source = open_source("ptbxl", make_ptbxl(n=20), 100)
    splits = split_records(source)
    caches = build_split_caches(source, splits, 1000, tmp_path / "cache", workers=2, progress=False)
    reopened = SignalCache.build(source, splits["train"], 1000, tmp_path / "cache", split="train", progress=False)
    assert reopened.directory == caches["train"].directory
    for name, records in splits.items():
        assert caches[name].ids == [r.record_id for r in records]
        assert f"-{name}-" in caches[name].directory.name
    big = SignalCache.build(source, source.records, 1000, tmp_path / "pool", workers=2, chunk_size=4,
                            progress=False)
    np.testing.assert_array_equal(np.stack([big[i] for i in range(20)]), _direct(source, source.records, 1000))


def test_dataset_items(ptbxl_fixture, tmp_path):
    source = open_source("ptbxl", ptbxl_fixture, 100)
    cache = SignalCache.build(source, source.records, 1000, tmp_path / "cache", workers=1, progress=False)
    dataset = ECGReportDataset(cache, source.records)
    item = dataset[0]
    assert set(item) == {"id", "ecg", "report", "labels"}
    assert item["id"] == "1" and item["report"] == "sinusrhythmus periphere niederspannung"
    assert item["labels"] == ["LVOLT", "NORM", "SR"]  # likelihood-0.0 codes are present codes
    assert item["ecg"].dtype == torch.float32 and item["ecg"].shape == (12, 1000)
    np.testing.assert_array_equal(item["ecg"].numpy(), source.read_signal(source.records[0], 1000))
    shifted = ECGReportDataset(cache, source.records, transform=lambda x, rng: x + 1.0)
    torch.testing.assert_close(shifted[0]["ecg"], item["ecg"] + 1.0)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=1)))
    assert batch["ecg"].shape == (1, 12, 1000)


def test_dataset_refuses_records_unknown_to_the_cache(make_ptbxl, tmp_path):
    source = open_source("ptbxl", make_ptbxl(n=4), 100)
    cache = SignalCache.build(source, source.records[:2], 1000, tmp_path / "cache", workers=1, progress=False)
    with pytest.raises(ValueError, match="not in the cache"):
        ECGReportDataset(cache, source.records)
    with pytest.raises(FileNotFoundError, match="no complete signal cache"):
        SignalCache(tmp_path)
