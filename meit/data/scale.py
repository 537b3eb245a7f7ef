"""Tools for MIMIC-IV-ECG scale (800k records): a fast bulk writer of MIMIC-format test data, memory probes.

`write_mimic_bulk` writes a MIMIC-IV-ECG-layout dataset (record_list.csv, machine_measurements.csv, WFDB
format-16 records under files/) with vectorised numpy: thousands of records a second, so scale tests can build
tens of thousands of records in seconds. Signals are cheap (a few sinusoids per lead plus noise), not
physiological: use `meit.data.synth` for data a model should learn from. With `waveforms=False` only the two CSVs
are written (metadata-loading benchmarks at 800k rows).

`rss_mb` / `RssSampler` measure resident memory, including file-backed (memory-mapped) pages.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import threading
import time
from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import Callback

from meit.data.synth import MIMIC_LEADS

STATEMENTS = ("Sinus rhythm", "Sinus bradycardia", "Sinus tachycardia", "Atrial fibrillation",
              "Left axis deviation", "Right bundle branch block", "Left ventricular hypertrophy",
              "Nonspecific T wave abnormality", "Borderline ECG", "Abnormal ECG", "Normal ECG")
FS = 500
ADC_GAIN = 200.0


def mimic_path(subject: int, study: int) -> str:
    """MIMIC-IV-ECG's record path for (subject, study)."""
    return f"files/p{str(subject)[:4]}/p{subject}/s{study}/{study}"


def header_text(study: int, n_samples: int, checksums: np.ndarray) -> str:
    """A WFDB header of one 12-lead format-16 record at 500 Hz, 200 adu/mV (MIMIC-IV-ECG's layout)."""
    lines = [f"{study} 12 {FS} {n_samples}"]
    lines += [f"{study}.dat 16 {ADC_GAIN:g}(0)/mV 16 0 0 {int(c)} 0 {lead}" for lead, c in zip(MIMIC_LEADS, checksums)]
    return "\n".join(lines) + "\n"


def _ids(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_patients = max(1, n // 2)
    subjects = 10000000 + rng.choice(9000000, size=n_patients, replace=False)
    studies = 40000000 + rng.choice(50000000, size=n, replace=False)
    return subjects[rng.integers(0, n_patients, size=n)], studies


def _write_csvs(root: Path, subjects: np.ndarray, studies: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng([seed, 1])
    picks = rng.integers(0, len(STATEMENTS), size=(len(studies), 3))
    with open(root / "record_list.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["subject_id", "study_id", "file_name", "ecg_time", "path"])
        out.writerows((s, st, st, "2180-01-01 00:00:00", mimic_path(s, st))
                      for s, st in zip(subjects.tolist(), studies.tolist()))
    columns = ["subject_id", "study_id", "cart_id", "ecg_time", *(f"report_{k}" for k in range(18)), "bandwidth",
               "filtering", "rr_interval"]
    order = rng.permutation(len(studies))  # the loader must join on study_id, not on row order
    with open(root / "machine_measurements.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(columns)
        for i in order.tolist():
            reports = [STATEMENTS[k] for k in dict.fromkeys(picks[i].tolist())]
            out.writerow([subjects[i], studies[i], 6000001, "2180-01-01 00:00:00", *reports,
                          *([""] * (18 - len(reports))), "0.005-150 Hz", "60 Hz notch", 800])


def _signals(rng: np.random.Generator, n: int, n_samples: int) -> np.ndarray:
    """(n, 12, n_samples) int16 ADC values: per-lead sinusoid mixtures with random phase plus noise."""
    t = np.arange(n_samples, dtype=np.float32) / FS
    freq = rng.uniform(0.8, 2.0, size=(n, 1, 1)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 12, 1)).astype(np.float32)
    amp = rng.uniform(0.2, 1.2, size=(n, 12, 1)).astype(np.float32)
    mv = amp * np.sin(2 * np.pi * freq * t + phase) + 0.3 * amp * np.sin(6 * np.pi * freq * t + 2 * phase)
    mv += 0.02 * rng.standard_normal(mv.shape, dtype=np.float32)
    return np.round(mv * ADC_GAIN).astype("<i2")


def write_mimic_bulk(root: str | Path, n: int, seed: int = 0, n_samples: int = 5000, waveforms: bool = True,
                     block: int = 512) -> Path:
    """Writes `n` records in the MIMIC-IV-ECG layout, quickly (see the module docstring).

    Args:
        root: dataset root (created).
        n: number of records (about two per patient).
        seed: seed of ids, statements and signals.
        n_samples: samples per lead at 500 Hz (MIMIC: 5000 = 10 s).
        waveforms: also write the WFDB records (False: the CSVs only).
        block: records generated per numpy call (bounds the writer's memory).

    Returns:
        The dataset root.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    subjects, studies = _ids(n, seed)
    _write_csvs(root, subjects, studies, seed)
    if not waveforms:
        return root
    rng = np.random.default_rng([seed, 2])
    for start in range(0, n, block):
        adc = _signals(rng, min(block, n - start), n_samples)
        checksums = (adc.astype(np.int64).sum(axis=-1) + 32768) % 65536 - 32768
        for k in range(adc.shape[0]):
            subject, study = int(subjects[start + k]), int(studies[start + k])
            folder = root / Path(mimic_path(subject, study)).parent
            folder.mkdir(parents=True, exist_ok=True)
            np.ascontiguousarray(adc[k].T).tofile(folder / f"{study}.dat")
            (folder / f"{study}.hea").write_text(header_text(study, n_samples, checksums[k]))
    return root


def rss_mb() -> float:
    """Current resident set size of this process in MiB (anonymous + file-backed pages)."""
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident set size of this process (or of its finished children) in MiB.

    For this process Linux's `VmHWM` is used: `getrusage`'s ru_maxrss survives `exec`, so a process started by
    forking a large parent (pytest, late in a test session) would report the parent's size as its own peak.
    """
    if not children:
        try:
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
        except (OSError, StopIteration):
            pass
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024


class RssSampler:
    """Samples the summed RSS of this process and its live children in a background thread; keeps the peak.

    Catches the workers of a process pool, which `getrusage(RUSAGE_CHILDREN)` reports only once they exit, and
    reports per-process peaks too.

    Args:
        interval: seconds between samples.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_total_mb = 0.0
        self.peak_process_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process(os.getpid())
        sizes = []
        for process in [me, *me.children(recursive=True)]:
            try:
                sizes.append(process.memory_info().rss / 2**20)
            except psutil.Error:  # a child that just exited
                continue
        self.peak_total_mb = max(self.peak_total_mb, sum(sizes))
        self.peak_process_mb = max(self.peak_process_mb, max(sizes, default=0.0))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


class SampleIdLogger(Callback):
    """Lightning callback: appends the record ids of every training batch to `out_dir/sample_ids.rank{R}.jsonl`.

    One JSON line per batch: {"rank", "world_size", "epoch", "step", "ids"}. Used to check that DDP ranks see
    different records: `python -m meit.fit --trainer.callbacks+=meit.data.scale.SampleIdLogger
    --trainer.callbacks.out_dir RUN_DIR ...`.

    Args:
        out_dir: folder of the per-rank files (created).
    """

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.out_dir = Path(out_dir)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        line = {"rank": trainer.global_rank, "world_size": trainer.world_size, "epoch": trainer.current_epoch,
                "step": trainer.global_step, "ids": list(batch["ids"])}
        with open(self.out_dir / f"sample_ids.rank{trainer.global_rank}.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
