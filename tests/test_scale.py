"""MIMIC-IV-ECG scale: bounded memory while caching and during an epoch, resumable caching, fast metadata loading.

The 20k-record dataset is written by `meit.data.scale.write_mimic_bulk` (vectorised, seconds) rather than
`meit.data.synth.write_dataset` (physiological, ~minutes for 20k): these tests measure the pipeline, not the model.
Each measured step runs in its own subprocess so its peak RSS is its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from meit.data.mimic import load_mimic
from meit.data.scale import write_mimic_bulk

N_RECORDS = 20_000
N_SAMPLES = 1000  # 2 s at 500 Hz on disk and in the cache: the record count, not the length, is what scales here
CHUNK = 256
RSS_LIMIT_MB = 2048
SENTINEL = 7.0

_PRELUDE = """
import json, sys, time
from pathlib import Path
from meit.data.cache import SignalCache
from meit.data.sources import open_source
from meit.data.scale import RssSampler, peak_rss_mb
root, cache_dir, n_samples, chunk = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
source = open_source("mimic", root)
records = source.records
"""

BUILD = _PRELUDE + """
with RssSampler() as sampler:
    cache = SignalCache.build(source, records, n_samples, cache_dir, split="all", workers=int(sys.argv[5]),
                              chunk_size=chunk, progress=False)
print(json.dumps({"n": len(cache), "peak_rss_mb": peak_rss_mb(), "peak_process_mb": sampler.peak_process_mb,
                  "peak_children_mb": peak_rss_mb(children=True)}))
"""

EPOCH = _PRELUDE + """
import torch
from torch.utils.data import DataLoader
from meit.data.dataset import ECGReportDataset
from meit.data.scale import rss_mb
cache = SignalCache.build(source, records, n_samples, cache_dir, split="all", workers=1, chunk_size=chunk,
                          progress=False)
dataset = ECGReportDataset(cache, records)
def anon_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon")) / 1024
start_anon, anon_peak = anon_mb(), 0.0
total, seen, start = 0.0, 0, time.perf_counter()
for batch in DataLoader(dataset, batch_size=64, shuffle=True, collate_fn=lambda items: items):
    ecg = torch.stack([item["ecg"] for item in batch])
    total += float(ecg.abs().sum())
    seen += len(batch)
    anon_peak = max(anon_peak, anon_mb())
print(json.dumps({"seen": seen, "total": total, "peak_rss_mb": peak_rss_mb(), "anon_growth_mb": anon_peak - start_anon,
                  "end_rss_mb": rss_mb(), "seconds": time.perf_counter() - start}))
"""


def _python(code: str, root: Path, cache_dir: Path, *args: str, timeout: float = 300) -> dict:
    command = [sys.executable, "-c", code, str(root), str(cache_dir), str(N_SAMPLES), str(CHUNK), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "PYTHONHASHSEED": "0"})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _cache_folder(cache_dir: Path) -> Path:
    (folder,) = [p for p in cache_dir.iterdir() if p.is_dir()]
    return folder


def _interrupt_build(root: Path, cache_dir: Path, min_chunks: int, timeout: float = 180) -> set[str]:
    """Starts a 2-worker build, kills its whole process group once `min_chunks` chunks are finished."""
    command = [sys.executable, "-c", BUILD, str(root), str(cache_dir), str(N_SAMPLES), str(CHUNK), "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + timeout
    done: set[str] = set()
    try:
        while time.monotonic() < deadline and process.poll() is None:
            chunks = list(cache_dir.glob("*/chunks/*.json"))
            if len(chunks) >= min_chunks:
                break
            time.sleep(0.2)
        assert process.poll() is None, "the build finished before it could be interrupted"
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    done = {p.stem for p in cache_dir.glob("*/chunks/*.json")}
    assert len(done) >= min_chunks
    return done


@pytest.mark.slow
def test_20k_mimic_caching_is_bounded_and_resumable_and_epoch_streams(tmp_path):
    root = write_mimic_bulk(tmp_path / "mimic", N_RECORDS, seed=0, n_samples=N_SAMPLES)
    cache_dir = tmp_path / "cache"
    n_chunks = -(-N_RECORDS // CHUNK)

    # 1. Interrupted build: kill the builder and its workers once a third of the chunks are finished.
    finished = sorted(int(c) for c in _interrupt_build(root, cache_dir, min_chunks=n_chunks // 3))
    folder = _cache_folder(cache_dir)
    assert not (folder / "index.json").exists()
    # Mark the finished chunks' rows: a resume that recomputed them would overwrite the mark.
    data = np.load(folder / "signals.npy", mmap_mode="r+")
    for chunk in finished:
        data[chunk * CHUNK:(chunk + 1) * CHUNK] = SENTINEL
    data.flush()
    del data

    # 2. Resume with 2 workers: bounded memory in the builder and in every worker; finished chunks untouched.
    built = _python(BUILD, root, cache_dir, "2")
    assert built["n"] == N_RECORDS
    assert built["peak_rss_mb"] < RSS_LIMIT_MB and built["peak_process_mb"] < RSS_LIMIT_MB, built
    assert built["peak_children_mb"] < RSS_LIMIT_MB, built
    data = np.load(folder / "signals.npy", mmap_mode="r")
    marked = np.zeros(n_chunks, dtype=bool)
    marked[finished] = True
    for chunk in range(n_chunks):
        first = data[chunk * CHUNK, 0, :4]
        assert np.all(first == SENTINEL) == marked[chunk], f"chunk {chunk}: finished={marked[chunk]}"
    source = load_mimic(root)
    for k in (N_RECORDS - 1, next(c for c in range(n_chunks) if not marked[c]) * CHUNK):
        np.testing.assert_allclose(data[k], source.read_signal(source.records[k], N_SAMPLES), atol=1e-6)
    del data

    # 3. One shuffled epoch over the cache stays under the limit.
    epoch = _python(EPOCH, root, cache_dir)
    assert epoch["seen"] == N_RECORDS and epoch["total"] > 0
    assert epoch["peak_rss_mb"] < RSS_LIMIT_MB, epoch
    # Streaming: the epoch's private memory grows by far less than the cache's 0.9 GiB (memory-mapped pages
    # are file-backed and reclaimable; a loader that held the data set in memory would add ~0.9 GiB here).
    cache_mb = N_RECORDS * 12 * N_SAMPLES * 4 / 2**20
    assert epoch["anon_growth_mb"] < cache_mb / 4, epoch
    print(json.dumps({"resumed_build": built, "epoch": epoch, "finished_before_kill": len(finished)}))
    shutil.rmtree(tmp_path / "mimic")
    shutil.rmtree(cache_dir)


def test_metadata_loader_rejects_escaping_paths_and_counts_skips(tmp_path):
    root = write_mimic_bulk(tmp_path / "m", 300, seed=3, waveforms=False)
    # Odd rows the loader must treat exactly like load_mimic: escape attempts, dots, an empty report, a link out.
    lines = (root / "record_list.csv").read_text().splitlines()
    header, rows = lines[0], lines[1:]
    rows[0] = rows[0].rsplit(",", 1)[0] + ",../outside/record"
    rows[1] = rows[1].rsplit(",", 1)[0] + ",./files//p1/./x/y"
    rows[2] = rows[2].rsplit(",", 1)[0] + ",/etc/passwd"
    subject = rows[3].split(",")[0]
    rows[3] = rows[3].rsplit(",", 1)[0] + f",linked/p{subject}/s1/1"
    (root / "record_list.csv").write_text("\n".join([header, *rows]) + "\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, root / "linked")
    measurements = (root / "machine_measurements.csv").read_text().splitlines()
    study = rows[4].split(",")[1]
    measurements = [m if m.split(",")[1] != study else ",".join(m.split(",")[:4] + [""] * 18 + m.split(",")[22:])
                    for m in measurements]
    (root / "machine_measurements.csv").write_text("\n".join(measurements) + "\n")

    source = load_mimic(root)
    assert source.skipped["path_escapes_root"] == 3 and source.skipped["empty_report"] == 1
    assert len(source.records) == 300 - 4


def test_bulk_writer_records_read_back_as_written(tmp_path):
    root = write_mimic_bulk(tmp_path / "m", 6, seed=1, n_samples=500)
    source = load_mimic(root)
    assert len(source.records) == 6 and not source.skipped
    signal_mv = source.read_signal(source.records[0], 500)
    assert signal_mv.shape == (12, 500) and 0.05 < np.abs(signal_mv).max() < 3.0
    assert len({r.patient_id for r in source.records}) < 6  # several records per patient
    header = (source.records[0].path.with_suffix(".hea")).read_text().splitlines()
    assert header[0].split()[1:] == ["12", "500", "500"] and header[5].split()[-1] == "aVF"

