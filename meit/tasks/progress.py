"""Progress as plain lines, for runs whose output goes to a log file (batch jobs, `> run.log`).

Lightning's default bar (rich's live display) prints nothing when stdout is not a terminal, so a 15-minute run
would log nothing between its model summary and its metrics. `meit.fit` uses `LineProgress` there instead.
"""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch.callbacks import ProgressBar


class LineProgress(ProgressBar):
    """One `[meit] ...` line every `every` optimiser steps, after each validation and every `predict_every`
    generation batches.

    Args:
        every: optimiser steps between lines.
        predict_every: generation (predict) batches between lines.
    """

    def __init__(self, every: int = 50, predict_every: int = 5) -> None:
        super().__init__()
        self.every, self.predict_every = every, predict_every
        self._enabled = True
        self._last_step = -1
        self._start = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _say(self, trainer: Any, text: str) -> None:
        if self._enabled and trainer.is_global_zero:
            print(f"[meit] {text}", flush=True)

    def _metrics(self, trainer: Any, pl_module: Any, prefix: str) -> str:
        items = self.get_metrics(trainer, pl_module)
        return ", ".join(f"{k} {v:.4g}" for k, v in items.items() if k.startswith(prefix) and isinstance(v, float))

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._start, self._last_step = time.perf_counter(), trainer.global_step

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step, total = trainer.global_step, trainer.estimated_stepping_batches
        if step == self._last_step or (step % self.every and step != total):
            return  # gradient accumulation repeats a step; print every `every` steps and the last one
        rate = (step - self._last_step) / max(time.perf_counter() - self._start, 1e-9)
        self._start, self._last_step = time.perf_counter(), step
        self._say(trainer, f"epoch {trainer.current_epoch} step {step}/{total} ({rate:.2f} steps/s) "
                           + self._metrics(trainer, pl_module, "train/"))

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self._say(trainer, f"validation after step {trainer.global_step}: "
                               + self._metrics(trainer, pl_module, "val/"))

    def on_predict_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                             dataloader_idx: int = 0) -> None:
        total = trainer.num_predict_batches[dataloader_idx]
        if (batch_idx + 1) % self.predict_every == 0 or batch_idx + 1 == total:
            self._say(trainer, f"generating: batch {batch_idx + 1}/{total}")
