"""A callback for tests: `os._exit(137)` (what a kill -9 leaves) when training is about to run step `step`."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.callbacks import Callback


class KillAtStep(Callback):
    """Ends the process abruptly before optimiser step `step` + 1, after the checkpoint of step `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            os._exit(137)
