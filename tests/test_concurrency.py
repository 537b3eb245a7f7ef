"""Several processes starting at once on one empty cache (issue 12 item 3): nobody crashes, and the cache they
leave is byte for byte the one a single process builds."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from pathlib import Path

import torch

from meit.config import DataConfig, EmbeddedLMConfig
from meit.data.cache import SignalCache
from meit.llm.backbone import build_embedded
from meit.tasks.datamodule import open_dataset
from meit.util.locks import build_folder, exclusive, remove_stale_pid_temps, temp_folder

N_PROCESSES = 4
TINY_LM = EmbeddedLMConfig(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32,
                           vocab_size=300, pretrain_steps=2)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _build_everything(cache: str) -> dict[str, str]:
    """What one `meit.fit` start builds on an empty cache: the synthetic dataset, its signal cache (small chunks,
    so builders overlap), the embedded backbone. Returns a digest of every file that ends up in the cache."""
    cfg = DataConfig(synthetic_n=40, cache_dir=cache)
    source = open_dataset(cfg)
    signals = SignalCache.build(source, source.records, cfg.n_samples, Path(cache) / "signals", workers=1,
                                chunk_size=3, progress=False)
    torch.manual_seed(0)
    folder, _ = build_embedded([r.report for r in source.records], ["a prompt"], TINY_LM, Path(cache) / "backbones")
    index = json.loads((signals.directory / "index.json").read_text())
    for location_dependent in ("root", "key"):  # the dataset's path (hashed into the key) differs between 2 caches
        index.pop(location_dependent)
    digests = {"index": hashlib.sha256(json.dumps(index, sort_keys=True).encode()).hexdigest(),
               "signals": _digest(signals.directory / "signals.npy")}
    backbone = [p for p in sorted(folder.iterdir()) if p.name != "meit_backbone.json"]  # it holds the build time
    digests.update({f"backbone/{p.name}": _digest(p) for p in backbone})
    digests.update({f"synthetic/{p.relative_to(source.root)}": _digest(p) for p in sorted(source.root.rglob("*"))
                    if p.is_file()})
    return digests


def _start_together(barrier, cache: str, queue) -> None:
    barrier.wait()
    try:
        queue.put(("ok", _build_everything(cache)))
    except BaseException as error:  # reported to the test, which names it
        queue.put(("error", f"{type(error).__name__}: {error}"))


def test_concurrent_builders_on_an_empty_cache_match_a_single_build(tmp_path):
    single = _build_everything(str(tmp_path / "single"))
    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(N_PROCESSES), context.Queue()
    shared = str(tmp_path / "shared")
    processes = [context.Process(target=_start_together, args=(barrier, shared, queue)) for _ in range(N_PROCESSES)]
    for process in processes:
        process.start()
    results = [queue.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert [status for status, _ in results] == ["ok"] * N_PROCESSES, [r for s, r in results if s != "ok"]
    differing = sorted({key for _, result in results for key in single if result.get(key) != single[key]})
    assert not differing and all(result.keys() == single.keys() for _, result in results)
    leftovers = [p.name for p in Path(shared).rglob("*") if ".tmp" in p.name or p.name == "chunks"]
    assert not leftovers


def test_a_killed_builders_temporary_folder_is_removed_by_the_next_build(tmp_path):
    target = tmp_path / "thing"
    stale = target.with_name(f".{target.name}.tmp-999999")  # left by a writer killed mid-build
    (stale / "sub").mkdir(parents=True)
    partial = target / "half.bin"  # a target folder without its completion marker
    partial.parent.mkdir()
    partial.write_bytes(b"x")

    def build(tmp: Path) -> None:
        assert tmp == temp_folder(target)
        tmp.mkdir()
        (tmp / "done").write_text("")

    assert build_folder(target, "done", build) == target
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["thing"]
    assert [p.name for p in target.iterdir()] == ["done"]


def test_stale_checkpoint_temp_files_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    dead = tmp_path / ".last.ckpt.999999.tmp"
    live = tmp_path / f".last.ckpt.{os.getpid()}.tmp"
    dead.write_bytes(b"half")
    live.write_bytes(b"writing")
    assert remove_stale_pid_temps(tmp_path) == [dead]
    assert live.is_file() and not dead.exists()


def test_exclusive_lock_is_released_when_the_block_raises(tmp_path):
    try:
        with exclusive(tmp_path / "x"):
            raise KeyError("boom")
    except KeyError:
        pass
    with exclusive(tmp_path / "x"):  # would block forever if the first holder had kept the lock
        pass
