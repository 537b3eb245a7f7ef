"""`ReportTask`: the interface Lightning trains and every command generates through.

A task is a LightningModule over one input kind whose network is built after construction (`build`), because
the embedded default backbone is pre-trained on the training split's reports, which only the datamodule knows.
What differs between tasks is declared by these hooks, and nothing outside a task asks which task it is:

- `input_kind`: "signal" (batches carry (B, 12, T) signals) or "image" ((B, 3, H, W) pages);
- `build(backbone, device_type)`: builds `self.net` (and `self.tokenizer`, `self.backbone_reference`);
- `collator(data_cfg, train, generate)`: dataset items -> this task's batches (the datamodule, `meit.runs.predict`
  and `meit.report` all batch through it);
- `forward(batch) -> loss`, `param_groups()`: training;
- `generate_reports(batch) -> list[str]`: the reports of a `collator(generate=True)` batch;
- `trainable_state_dict()` and `save_extras(run_dir)`: what a run directory and a checkpoint keep.

Training steps, the optimiser and its schedule, checkpoint contents and prediction rows are shared here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from meit.config import DataConfig, ModelConfig, OptimConfig


class ReportTask(L.LightningModule):
    """An ECG-to-report model trained on report tokens (see the module docstring for the hooks).

    Args:
        model: the model config.
        optim: optimiser and schedule.
        max_new_tokens: longest generated report (tokens).
        num_beams: 1 = greedy decoding, > 1 = beam search (`--test.num_beams`).
        cache_dir: the run's cache (`--data.cache_dir`), where a task builds what it caches (the tiny Mllama).
    """

    input_kind = "signal"

    def __init__(self, model: ModelConfig | None = None, optim: OptimConfig | None = None,
                 max_new_tokens: int = 64, num_beams: int = 1, cache_dir: str | None = None) -> None:
        super().__init__()
        self.cache_dir = cache_dir
        self.model_cfg = model or ModelConfig()
        self.optim_cfg = optim or OptimConfig()
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams
        self.net: nn.Module | None = None
        self.tokenizer: Any = None
        self.backbone_reference: dict[str, Any] = {}
        self.strict_loading = False  # checkpoints carry the trainable state only

    # ------------------------------------------------------------------------------------------------- hooks

    def build(self, backbone: Any, device_type: str = "cpu") -> None:
        """Builds `self.net` around the frozen backbone (None where the task brings its own language model)."""
        raise NotImplementedError

    def collator(self, data_cfg: DataConfig, train: bool = False, generate: bool = False) -> Callable:
        """The collate function of this task's batches (training sequences, or prompts only with `generate`)."""
        raise NotImplementedError

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Mean cross-entropy over the batch's report tokens."""
        raise NotImplementedError

    def generate_reports(self, batch: dict[str, Any]) -> list[str]:
        """The decoded reports of a `collator(generate=True)` batch (greedy, or `num_beams` beam search)."""
        raise NotImplementedError

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimiser's parameter groups (every trainable parameter once)."""
        raise NotImplementedError

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What weights.safetensors and checkpoints hold: everything trained, never the frozen backbone."""
        return {name: p for name, p in self.net.named_parameters() if p.requires_grad}

    def save_extras(self, run_dir: Path) -> None:
        """Writes what the run directory keeps besides weights.safetensors (default: nothing)."""

    def auxiliary_loss(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """A loss added to the LM loss in training (default: none)."""
        return None

    # ---------------------------------------------------------------------------------------------- shared

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Loads a `trainable_state_dict()`; every trainable key must be present and no other.

        Raises:
            KeyError: on missing or unexpected keys.
        """
        expected = set(self.trainable_state_dict())
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise KeyError(f"trainable weights do not match the model: missing {sorted(missing)[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]}")
        self.net.load_state_dict(state, strict=False)

    def count_trainable(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.net.parameters() if p.requires_grad)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {f"net.{k}": v for k, v in self.trainable_state_dict().items()}
        checkpoint["meit_backbone"] = dict(self.backbone_reference)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["ids"]))
        extra = self.auxiliary_loss(batch)
        if extra is not None:
            loss = loss + extra
        self.log("lr", self.lr_schedulers().get_last_lr()[0], prog_bar=False, batch_size=len(batch["ids"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch["ids"]))
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW over `param_groups()`; linear warm-up then linear (or cosine) decay to 0, stepped per batch."""
        cfg = self.optim_cfg
        opt = torch.optim.AdamW(self.param_groups(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_schedule(total, cfg.warmup_ratio, cfg.schedule))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """One generation batch -> `predictions.jsonl` rows."""
        return prediction_rows(batch, self.generate_reports(batch))

    def batch_tensors(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The tensors of a batch, on this task's device (ids, reports and labels stay behind)."""
        return {k: v.to(self.device) for k, v in batch.items() if isinstance(v, torch.Tensor)}


def prediction_rows(batch: dict[str, Any], texts: list[str]) -> list[dict[str, Any]]:
    """The `predictions.jsonl` rows of a generation batch: id, prediction, reference and the record's labels."""
    return [{"id": i, "prediction": p, "reference": r, "labels_true": y}
            for i, p, r, y in zip(batch["ids"], texts, batch["reports"], batch["labels_true"])]


def linear_warmup_decay(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """LR multiplier: linear 0 -> 1 over `warmup_ratio * total_steps` steps, then linear 1 -> 0 at the end."""
    warmup = max(1, round(warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def cosine_warmup_decay(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """LR multiplier: linear 0 -> 1 over `warmup_ratio * total_steps` steps, then a half cosine 1 -> 0 at the end."""
    warmup = max(1, round(warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def warmup_schedule(total_steps: int, warmup_ratio: float, schedule: str = "linear") -> Callable[[int], float]:
    """The LR multiplier of `OptimConfig.schedule`: `linear` (`linear_warmup_decay`) or `cosine`.

    Raises:
        ValueError: an unknown schedule.
    """
    if schedule == "linear":
        return linear_warmup_decay(total_steps, warmup_ratio)
    if schedule == "cosine":
        return cosine_warmup_decay(total_steps, warmup_ratio)
    raise ValueError(f"unknown schedule: {schedule}; choose from linear, cosine")
