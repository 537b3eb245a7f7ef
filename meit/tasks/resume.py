"""An exact resume: the RNG states and the training sampler's position travel in every checkpoint.

Saved at each checkpoint (`on_save_checkpoint`) and restored when `--ckpt_path` resumes (`on_load_checkpoint`,
the RNG states at `on_train_start`, after everything that set the run up has drawn its numbers): the torch, numpy
and python RNG states (dropout draws from torch's) and (epoch, batches trained in it), from which
`meit.tasks.datamodule.ResumableSampler` restarts the epoch's shuffle at the next batch. Steps an interrupted run logged
after its checkpoint are dropped from its CSV log when the run resumes (they are trained and logged again).
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

from meit.util.atomic import atomic_file

KEY = "meit_resume"


def rng_states() -> dict[str, Any]:
    """The global RNG states, in types `torch.load(weights_only=True)` reads back."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]}


def set_rng_states(states: dict[str, Any]) -> None:
    """Restores what `rng_states` returned."""
    torch.set_rng_state(states["torch"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def drop_logged_steps(log_root: str | Path, step: int, keep: str | Path) -> int:
    """Removes the rows logged at `step` or later from every `metrics.csv` under `log_root` but the one in `keep`
    (the resumed run's own log folder), so that a resume logs no step twice.

    Returns:
        The number of rows removed.
    """
    removed = 0
    for path in sorted(Path(log_root).rglob("metrics.csv")):
        if path.parent.resolve() == Path(keep).resolve():
            continue
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames or [], list(reader)
        kept = [row for row in rows if not row.get("step") or int(float(row["step"])) < step]
        if len(kept) < len(rows):
            with atomic_file(path) as f:
                writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
                writer.writeheader()
                writer.writerows(kept)
            removed += len(rows) - len(kept)
    return removed


class ExactResume(Callback):
    """Saves and restores the run's RNG states and sampler position (see the module docstring)."""

    def __init__(self) -> None:
        self.batches_in_epoch = 0
        self._pending: dict[str, Any] | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pending = self._pending
        resumed_here = pending is not None and pending["epoch"] == trainer.current_epoch
        self.batches_in_epoch = pending["batches_in_epoch"] if resumed_here else 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.batches_in_epoch += 1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is None:
            return
        set_rng_states(self._pending["rng"])
        logger = trainer.logger
        if trainer.is_global_zero and isinstance(logger, CSVLogger):
            drop_logged_steps(logger.root_dir, trainer.global_step, logger.log_dir)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[KEY] = {"rng": rng_states(), "epoch": trainer.current_epoch,
                           "batches_in_epoch": self.batches_in_epoch}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._pending = checkpoint.get(KEY)
        datamodule = trainer.datamodule
        if self._pending is not None and hasattr(datamodule, "resume_training_at"):
            samples = self._pending["batches_in_epoch"] * datamodule.cfg.batch_size
            datamodule.resume_training_at(self._pending["epoch"], samples)
