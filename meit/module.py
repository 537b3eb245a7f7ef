"""The LightningModule: loss, AdamW with linear warm-up/decay, logging, generation; the model lives in meit.fusion.

The network (`self.net`) is built after construction by `build(backbone)`, because the embedded default backbone
is pre-trained on the training split's reports, which only the datamodule knows. Checkpoints and run directories
hold the trainable state only (encoder, projector, LoRA adapters, fusion layers, normalisation statistics).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from meit.align import label_targets, record_labels
from meit.backbone import Backbone, apply_lora
from meit.config import ModelConfig, OptimConfig
from meit.encoders import build_encoder
from meit.fusion import build_fusion


class MEITModule(L.LightningModule):
    """Trains an ECG-conditioned LM on report tokens and generates reports.

    Args:
        model: backbone, LoRA, encoder and fusion settings.
        optim: optimiser and schedule.
        max_new_tokens: longest generated report (tokens).
        num_beams: 1 = greedy decoding, > 1 = beam search (`--test.num_beams`).
    """

    def __init__(self, model: ModelConfig | None = None, optim: OptimConfig | None = None,
                 max_new_tokens: int = 64, num_beams: int = 1) -> None:
        super().__init__()
        self.model_cfg = model or ModelConfig()
        self.optim_cfg = optim or OptimConfig()
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams
        self.net: nn.Module | None = None
        self.tokenizer: Any = None
        self.backbone_reference: dict[str, Any] = {}
        self.strict_loading = False  # checkpoints carry the trainable state only
        self.label_head: nn.Module | None = None  # `recipe: aligned` (meit.align): stage 1's head, the aux loss's
        self._ecg_tokens: torch.Tensor | None = None

    # ------------------------------------------------------------------------------------------------ building

    def build(self, backbone: Backbone) -> None:
        """Adds LoRA to the frozen backbone and wraps it with the encoder and the fusion."""
        cfg = self.model_cfg
        llm = apply_lora(backbone.model, cfg)
        encoder = build_encoder(cfg.encoder, **cfg.encoder_kwargs)
        self.net = build_fusion(cfg.fusion, llm, encoder, ecg_input=cfg.ecg_input, **cfg.fusion_kwargs)
        self.net.train()  # from_pretrained returns the backbone in eval mode; LoRA dropout must be active in training
        self.tokenizer = backbone.tokenizer
        self.backbone_reference = dict(backbone.reference)

    def attach_label_head(self, head: nn.Module) -> None:
        """Keeps `meit.align`'s label head; with `aux_label_loss_weight > 0` it trains next to the LM loss on the
        pooled ECG tokens (captured from the projector's output, so the encoder runs once per step)."""
        self.label_head = head
        if self.model_cfg.aux_label_loss_weight > 0:
            self.net.projector.register_forward_hook(self._keep_ecg_tokens)
        else:  # kept for the checkpoint only: a trainable parameter without a gradient stops DDP
            head.requires_grad_(False)

    def _keep_ecg_tokens(self, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        self._ecg_tokens = output if self.training else None

    def _frozen_names(self) -> set[str]:
        """State-dict keys of `net` that belong to the frozen backbone (never saved)."""
        params = self.net.named_parameters(remove_duplicate=False)  # tied weights (lm_head = embeddings) too
        frozen = {name for name, p in params if not p.requires_grad}
        llm_buffers = {f"llm.{name}" for name, _ in self.net.llm.named_buffers() if "lora_" not in name}
        return frozen | llm_buffers

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything of `net` except the frozen backbone: trainable parameters + their modules' buffers."""
        frozen = self._frozen_names()
        return {k: v for k, v in self.net.state_dict().items() if k not in frozen}

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
        if self.label_head is not None:
            checkpoint["state_dict"].update({f"label_head.{k}": v for k, v in self.label_head.state_dict().items()})
        checkpoint["meit_backbone"] = dict(self.backbone_reference)

    # ------------------------------------------------------------------------------------------------ training

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Mean cross-entropy over the batch's report tokens."""
        loss, _ = self.net(batch["ecg"], batch["input_ids"], batch["attention_mask"], batch["labels"])
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["ids"]))
        weight = self.model_cfg.aux_label_loss_weight
        if weight > 0 and self.label_head is not None and self._ecg_tokens is not None:
            label_loss = self.aux_label_loss(self._ecg_tokens, batch)
            self.log("train/label_loss", label_loss, prog_bar=False, batch_size=len(batch["ids"]))
            loss = loss + weight * label_loss
        self._ecg_tokens = None
        self.log("lr", self.lr_schedulers().get_last_lr()[0], prog_bar=False, batch_size=len(batch["ids"]))
        return loss

    def aux_label_loss(self, tokens: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """BCE of the label head on the pooled ECG tokens against each record's labels (`meit.align`)."""
        labels = [record_labels(codes, report) for codes, report in zip(batch["labels_true"], batch["reports"])]
        logits = self.label_head(tokens)
        target = label_targets(labels, self.label_head.space).to(logits.device)
        return nn.functional.binary_cross_entropy_with_logits(logits, target)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch["ids"]))
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW over the trainable parameters; linear warm-up then linear decay to 0, stepped per batch."""
        cfg = self.optim_cfg
        opt = torch.optim.AdamW(self.param_groups(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_schedule(total, cfg.warmup_ratio,
                                                                     getattr(cfg, "schedule", "linear")))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def param_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters: those inside the LM (LoRA) at `lr`, the rest (encoder, projector) at `encoder_lr`."""
        lm, other = [], []
        for name, p in self.net.named_parameters():
            if p.requires_grad:
                (lm if name.startswith("llm.") else other).append(p)
        if self.label_head is not None and self.model_cfg.aux_label_loss_weight > 0:
            other += list(self.label_head.parameters())
        encoder_lr = self.optim_cfg.encoder_lr or self.optim_cfg.lr
        return [g for g in ({"params": lm}, {"params": other, "lr": encoder_lr}) if g["params"]]

    # ---------------------------------------------------------------------------------------------- generation

    @torch.no_grad()
    def generate_reports(self, ecg: torch.Tensor, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> list[str]:
        """Batched greedy (or `num_beams` beam search) decoding with the KV cache; returns the decoded reports."""
        tok = self.tokenizer
        ids = self.net.generate(ecg, prompt_ids, prompt_mask, max_new_tokens=self.max_new_tokens,
                                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                num_beams=self.num_beams)
        return [text.strip() for text in tok.batch_decode(ids, skip_special_tokens=True)]

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """One generation batch -> `predictions.jsonl` rows."""
        texts = self.generate_reports(batch["ecg"], batch["input_ids"], batch["attention_mask"])
        return [
            {"id": i, "prediction": p, "reference": r, "labels_true": y}
            for i, p, r, y in zip(batch["ids"], texts, batch["reports"], batch["labels_true"])
        ]


def linear_warmup_decay(total_steps: int, warmup_ratio: float):
    """LR multiplier: linear 0 -> 1 over `warmup_ratio * total_steps` steps, then linear 1 -> 0 at the end."""
    warmup = max(1, round(warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def cosine_warmup_decay(total_steps: int, warmup_ratio: float):
    """LR multiplier: linear 0 -> 1 over `warmup_ratio * total_steps` steps, then a half cosine 1 -> 0 at the end."""
    import math

    warmup = max(1, round(warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def warmup_schedule(total_steps: int, warmup_ratio: float, schedule: str = "linear"):
    """The LR multiplier of `OptimConfig.schedule`: `linear` (`linear_warmup_decay`) or `cosine`.

    Raises:
        ValueError: an unknown schedule.
    """
    if schedule == "linear":
        return linear_warmup_decay(total_steps, warmup_ratio)
    if schedule == "cosine":
        return cosine_warmup_decay(total_steps, warmup_ratio)
    raise ValueError(f"unknown schedule: {schedule}; choose from linear, cosine")
