"""The `aligned` training recipe: stage-1 supervised pre-training of the ECG encoder (+ projector) on the labels.

`--model.recipe aligned` (the CPU default) trains the freshly built encoder and projector as a multi-label
classifier before instruction tuning: a linear head on the mean-pooled ECG tokens (the features `meit.probe`
reads), BCE against each train record's SCP codes, or the labels `eval.labels.extract_labels` finds in its report
where a record has none (MIMIC-IV-ECG), for `encoder_pretrain_epochs` epochs at `encoder_pretrain_lr` (AdamW,
warm-up then cosine decay). Instruction tuning then starts from that encoder; `aux_label_loss_weight` keeps the
same head as an auxiliary loss next to the LM loss. `--model.recipe meit` is MEIT's own recipe: no stage 1, the
encoder is trained from scratch by the LM loss only.

Stage 1 is cheap and resumable: it draws no number from the global RNGs (its shuffle and head initialisation have
their own seeded generators), logs one `[meit] stage 1 ...` line per epoch, and writes RUN_DIR/stage1.pt
atomically after every epoch, so a rerun into the same run directory continues after the last finished epoch (or
skips stage 1 when it is done), provided the settings it depends on are the same.
"""

from __future__ import annotations

import io
import math
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from meit.config import ModelConfig
from meit.eval.labels import extract_labels
from meit.util.atomic import write_bytes
from meit.util.errors import UserFacingError

STAGE1_FILE = "stage1.pt"
"""Stage-1 state in a run directory: encoder, projector and head weights, optimiser, finished epochs, losses."""
STAGE1_WARMUP_RATIO = 0.05
"""Fraction of stage 1's steps spent warming the learning rate up."""
RECIPES = ("aligned", "meit")


def validate_recipe(cfg: ModelConfig) -> None:
    """Fails early (before any data or backbone is built) on recipe settings that cannot work.

    Raises:
        meit.util.errors.UserFacingError: naming the flag: an unknown recipe, a negative or fractional epoch count, a
            non-positive learning rate, a negative loss weight, or an auxiliary label loss asked for with MEIT's
            recipe (which trains the encoder by the LM loss only).
    """
    if cfg.recipe not in RECIPES:
        raise UserFacingError("--model.recipe", f"must be one of {', '.join(RECIPES)}, got {cfg.recipe!r}")
    epochs = cfg.encoder_pretrain_epochs
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise UserFacingError("--model.encoder_pretrain_epochs", f"must be an integer >= 0, got {epochs!r}")
    lr = cfg.encoder_pretrain_lr
    if not (lr > 0 and math.isfinite(lr)):
        raise UserFacingError("--model.encoder_pretrain_lr", f"must be a positive number, got {lr}")
    if not (cfg.aux_label_loss_weight >= 0 and math.isfinite(cfg.aux_label_loss_weight)):
        raise UserFacingError("--model.aux_label_loss_weight", f"must be >= 0, got {cfg.aux_label_loss_weight}")
    if cfg.recipe == "meit" and cfg.aux_label_loss_weight > 0:
        raise UserFacingError("--model.aux_label_loss_weight", "needs --model.recipe aligned: MEIT's recipe trains "
                              "the encoder by the LM loss only (set the weight to 0 or the recipe to aligned)")


def uses_label_head(cfg: ModelConfig) -> bool:
    """Whether a run of this config trains the label head (stage 1 or the auxiliary loss)."""
    return cfg.recipe == "aligned" and (cfg.encoder_pretrain_epochs > 0 or cfg.aux_label_loss_weight > 0)


def record_labels(codes: Iterable[str], report: str) -> set[str]:
    """A record's label set: its dataset codes, or the labels extracted from its report where it has none."""
    return set(codes) or extract_labels(report)


def label_space(dataset: Any) -> list[str]:
    """The sorted labels of a train split (an `ECGReportDataset`): the probe's and the label head's outputs."""
    return sorted(set().union(*(record_labels(r.labels, r.report) for r in dataset.records)))


def label_targets(label_sets: Sequence[set[str]], space: Sequence[str]) -> torch.Tensor:
    """(N, len(space)) 0/1 float targets of label sets."""
    index = {c: i for i, c in enumerate(space)}
    y = torch.zeros(len(label_sets), len(space))
    for row, labels in enumerate(label_sets):
        for code in labels:
            if code in index:
                y[row, index[code]] = 1.0
    return y


class LabelHead(nn.Module):
    """A linear multi-label classifier on the mean-pooled ECG tokens (B, n, hidden) -> (B, n_labels) logits.

    Args:
        hidden_size: width of the ECG tokens.
        space: the label names, in output order.
        seed: seed of the initialisation (a private generator; the global RNG is not used).
    """

    def __init__(self, hidden_size: int, space: Sequence[str], seed: int = 0) -> None:
        super().__init__()
        if not space:
            raise ValueError("the label head needs at least one label: no train record has a label")
        self.space = list(space)
        self.linear = nn.Linear(hidden_size, len(space))
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.linear.weight.normal_(0.0, 0.01, generator=gen)
            self.linear.bias.zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.linear(tokens.float().mean(dim=1))


class _ECGAndLabels(Dataset):
    """(ECG, label set) items of an `ECGReportDataset`."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, set[str]]:
        item = self.dataset[index]
        return item["ecg"], record_labels(item["labels"], item["report"])


def _collate(items: list[tuple[torch.Tensor, set[str]]]) -> tuple[torch.Tensor, list[set[str]]]:
    return torch.stack([x for x, _ in items]), [y for _, y in items]


def _signature(cfg: ModelConfig, data_cfg: Any, space: Sequence[str], seed: int) -> dict[str, Any]:
    """What a saved stage-1 state depends on (a mismatch means it is retrained, not reused)."""
    return {"encoder": cfg.encoder, "encoder_kwargs": dict(cfg.encoder_kwargs), "fusion": cfg.fusion,
            "fusion_kwargs": cfg.fusion_kwargs(), "ecg_input": cfg.ecg_input,
            "epochs": int(cfg.encoder_pretrain_epochs), "lr": float(cfg.encoder_pretrain_lr),
            "batch_size": int(data_cfg.batch_size), "labels": list(space), "seed": int(seed)}


def _stage1_modules(net: nn.Module, head: LabelHead) -> dict[str, nn.Module]:
    return {"encoder": net.encoder, "projector": net.projector, "head": head}


def _load_state(path: Path, signature: dict[str, Any]) -> dict[str, Any] | None:
    """The saved stage-1 state at `path` if it exists and was trained with `signature`, else None."""
    if not path.is_file():
        return None
    state = torch.load(io.BytesIO(path.read_bytes()), weights_only=True)
    if state.get("signature") != signature:
        print(f"[meit] stage 1: {path} was trained with other settings; training stage 1 again", flush=True)
        return None
    return state


def _save_state(path: Path, modules: dict[str, nn.Module], opt: torch.optim.Optimizer, epoch: int,
                losses: list[float], signature: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save({"modules": {k: m.state_dict() for k, m in modules.items()}, "optimizer": opt.state_dict(),
                "epochs_done": epoch, "losses": losses, "signature": signature}, buffer)
    write_bytes(path, buffer.getvalue())


def _lr_factor(step: int, total: int) -> float:
    warmup = max(1, round(STAGE1_WARMUP_RATIO * total))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def pretrain_encoder(net: nn.Module, head: LabelHead, dataset: Any, cfg: ModelConfig, data_cfg: Any,
                     run_dir: Path | None, seed: int = 0, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Stage 1: trains `net.encoder`, `net.projector` and `head` as a multi-label classifier on `dataset`.

    Args:
        net: the built fusion model (`encode_ecg`, `encoder`, `projector`); its LM is not used.
        head: the label head over `label_space(dataset)`.
        dataset: the train split (`ECGReportDataset`).
        cfg: the model config (`encoder_pretrain_epochs`, `encoder_pretrain_lr`).
        data_cfg: the data config (`batch_size`, `num_workers`).
        run_dir: where the resumable state is written after every epoch (None: not written).
        seed: the run's seed (shuffle of epoch e: seed and e).
        device: where to train.

    Returns:
        `{"epochs", "losses" (mean BCE per epoch), "seconds", "resumed_from_epoch"}`.
    """
    epochs, start_time = int(cfg.encoder_pretrain_epochs), time.perf_counter()
    modules = _stage1_modules(net, head)
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.encoder_pretrain_lr, weight_decay=0.0)
    signature = _signature(cfg, data_cfg, head.space, seed)
    path = run_dir / STAGE1_FILE if run_dir is not None else None
    state = _load_state(path, signature) if path is not None else None
    done, losses = 0, []
    if state is not None:
        for name, module in modules.items():
            module.load_state_dict(state["modules"][name])
        opt.load_state_dict(state["optimizer"])
        done, losses = int(state["epochs_done"]), list(state["losses"])
        print(f"[meit] stage 1: resuming after epoch {done}/{epochs} from {path}", flush=True)
    loader_data = _ECGAndLabels(dataset)
    steps_per_epoch = max(1, len(loader_data) // data_cfg.batch_size)
    offset, total = done * steps_per_epoch, epochs * steps_per_epoch  # a resumed schedule goes on where it was
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s + offset, total))
    for epoch in range(done, epochs):
        tick = time.perf_counter()
        loss = _train_epoch(net, head, opt, sched, loader_data, data_cfg, seed, epoch, device)
        losses.append(loss)
        if path is not None:
            _save_state(path, modules, opt, epoch + 1, losses, signature)
        print(f"[meit] stage 1 epoch {epoch + 1}/{epochs}: label loss {loss:.4f} "
              f"({time.perf_counter() - tick:.0f} s)", flush=True)
    return {"epochs": epochs, "losses": [round(x, 5) for x in losses], "resumed_from_epoch": done,
            "seconds": round(time.perf_counter() - start_time, 1)}


def _train_epoch(net: nn.Module, head: LabelHead, opt: torch.optim.Optimizer, sched: Any, data: Dataset,
                 data_cfg: Any, seed: int, epoch: int, device: str | torch.device) -> float:
    """One stage-1 epoch over a seeded shuffle; returns the mean BCE."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(data), generator=generator).tolist()
    loader = DataLoader(torch.utils.data.Subset(data, order), batch_size=data_cfg.batch_size,
                        drop_last=len(data) > data_cfg.batch_size, num_workers=data_cfg.num_workers,
                        collate_fn=_collate, generator=generator)  # its base seed from here, not the global RNG
    was_training = net.training
    net.train()
    total, n = 0.0, 0
    for ecg, labels in loader:
        logits = head(net.encode_ecg(ecg.to(device)))
        loss = F.binary_cross_entropy_with_logits(logits, label_targets(labels, head.space).to(logits.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total, n = total + loss.item() * len(labels), n + len(labels)
    net.train(was_training)
    return total / max(1, n)


def prepare_recipe(module: Any, datamodule: Any, cfg: Any, run_dir: Path | None, resume: bool, seed: int,
                   device: str | torch.device = "cpu") -> dict[str, Any] | None:
    """Applies the run's recipe to a built `FusionTask` before instruction tuning.

    `aligned`: builds the label head over the train split's labels, runs stage 1 (not when `resume`: the
    checkpoint holds the encoder stage 1 trained) and attaches the head for the auxiliary loss. `meit`, or an
    image-branch run: nothing.

    Args:
        module: the built `FusionTask`.
        datamodule: the set-up `MEITDataModule`.
        cfg: the `RunConfig`.
        run_dir: where stage 1's resumable state goes (None: not saved).
        resume: training resumes from a Lightning checkpoint.
        seed: the run's seed.
        device: where stage 1 trains.

    Returns:
        Stage 1's summary (`pretrain_encoder`) for run.json, `{"skipped": reason}` (a resumed run; an image-branch
        run, with a warning), or None when the recipe has no stage 1 and no label head.
    """
    if not uses_label_head(cfg.model):
        return None
    if cfg.model.branch != "signal":
        note = (f"--model.recipe aligned: stage 1 and the label loss are signal-branch only; this "
                f"{cfg.model.branch}-branch run trains as --model.recipe meit")
        warnings.warn(note, stacklevel=2)
        return {"skipped": note}
    net = module.net.to(device)
    head = LabelHead(net.backbone.hidden_size, label_space(datamodule.datasets["train"]), seed).to(device)
    summary: dict[str, Any] | None = None
    if cfg.model.encoder_pretrain_epochs > 0:
        if resume:
            summary = {"skipped": "resumed from a checkpoint that holds the stage-1 encoder"}
        else:
            summary = pretrain_encoder(net, head, datamodule.datasets["train"], cfg.model, cfg.data, run_dir,
                                       seed, device)
    module.attach_label_head(head)
    return summary
