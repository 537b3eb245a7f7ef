"""`FusionTask`: an ECG encoder + a fusion into a frozen causal LM with LoRA (MEIT's prefix-KV and the
alternatives of `meit.fusion`), for signals and for the controlled image branch's image encoders.

Checkpoints and run directories hold the trainable state only (encoder, projector, LoRA adapters, fusion layers,
normalisation statistics, the `aligned` recipe's label head).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from meit.config import DataConfig, ModelConfig, OptimConfig
from meit.encoders import build_encoder
from meit.fusion import build_fusion
from meit.llm.backbone import Backbone
from meit.llm.lora import apply_lora
from meit.tasks.align import label_targets, record_labels
from meit.tasks.base import ReportTask
from meit.tasks.datamodule import PromptCollator


class FusionTask(ReportTask):
    """An ECG encoder + fusion into the frozen LLM (LoRA), trained on report tokens.

    Args:
        model: backbone, LoRA, encoder and fusion settings.
        optim: optimiser and schedule.
        max_new_tokens: longest generated report (tokens).
        num_beams: 1 = greedy decoding, > 1 = beam search (`--test.num_beams`).
    """

    def __init__(self, model: ModelConfig | None = None, optim: OptimConfig | None = None,
                 max_new_tokens: int = 64, num_beams: int = 1, cache_dir: str | None = None) -> None:
        super().__init__(model, optim, max_new_tokens, num_beams, cache_dir)
        self.label_head: nn.Module | None = None  # `recipe: aligned` (meit.tasks.align): stage 1's head, the aux loss's
        self._ecg_tokens: torch.Tensor | None = None

    @property
    def input_kind(self) -> str:
        """What the encoder reads: "signal" or "image" (the controlled image branch)."""
        return getattr(self.net.encoder, "input_kind", "signal") if self.net is not None else "signal"

    # ------------------------------------------------------------------------------------------------ building

    def build(self, backbone: Backbone, device_type: str = "cpu") -> None:
        """Adds LoRA to the frozen backbone and wraps it with the encoder and the fusion."""
        cfg = self.model_cfg
        llm = apply_lora(backbone.model, cfg.lora)
        encoder = build_encoder(cfg.encoder, **cfg.encoder_kwargs)
        self.net = build_fusion(cfg.fusion, llm, encoder, ecg_input=cfg.ecg_input, **cfg.fusion_kwargs())
        self.net.train()  # from_pretrained returns the backbone in eval mode; LoRA dropout must be active in training
        self.tokenizer = backbone.tokenizer
        self.backbone_reference = dict(backbone.reference)

    def collator(self, data_cfg: DataConfig, train: bool = False, generate: bool = False) -> Callable:
        """`PromptCollator` over the backbone's tokenizer."""
        if self.tokenizer is None:
            raise RuntimeError("FusionTask.build() must run before batches are made")
        return PromptCollator(self.tokenizer, data_cfg, train=train, generate=generate)

    def attach_label_head(self, head: nn.Module) -> None:
        """Keeps `meit.tasks.align`'s label head; with `aux_label_loss_weight > 0` it trains next to the LM loss on
        the pooled ECG tokens (captured from the projector's output, so the encoder runs once per step)."""
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

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.label_head is not None:
            checkpoint["state_dict"].update({f"label_head.{k}": v for k, v in self.label_head.state_dict().items()})

    # ------------------------------------------------------------------------------------------------ training

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Mean cross-entropy over the batch's report tokens."""
        loss, _ = self.net(batch["ecg"], batch["input_ids"], batch["attention_mask"], batch["labels"])
        return loss

    def auxiliary_loss(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """`aux_label_loss_weight` x the label head's BCE on the ECG tokens the LM step just encoded."""
        tokens, self._ecg_tokens = self._ecg_tokens, None
        weight = self.model_cfg.aux_label_loss_weight
        if weight <= 0 or self.label_head is None or tokens is None:
            return None
        label_loss = self.aux_label_loss(tokens, batch)
        self.log("train/label_loss", label_loss, prog_bar=False, batch_size=len(batch["ids"]))
        return weight * label_loss

    def aux_label_loss(self, tokens: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """BCE of the label head on the pooled ECG tokens against each record's labels (`meit.tasks.align`)."""
        labels = [record_labels(codes, report) for codes, report in zip(batch["labels_true"], batch["reports"])]
        logits = self.label_head(tokens)
        target = label_targets(labels, self.label_head.space).to(logits.device)
        return nn.functional.binary_cross_entropy_with_logits(logits, target)

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
    def generate_reports(self, batch: dict[str, Any]) -> list[str]:
        """Batched greedy (or `num_beams` beam search) decoding with the KV cache; returns the decoded reports."""
        tok, tensors = self.tokenizer, self.batch_tensors(batch)
        ids = self.net.generate(tensors["ecg"], tensors["input_ids"], tensors["attention_mask"],
                                max_new_tokens=self.max_new_tokens, eos_token_id=tok.eos_token_id,
                                pad_token_id=tok.pad_token_id, num_beams=self.num_beams)
        return [text.strip() for text in tok.batch_decode(ids, skip_special_tokens=True)]
