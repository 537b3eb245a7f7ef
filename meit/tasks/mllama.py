"""`MllamaTask`: LLaMA 3.2 Vision (`meit.llm.mllama`) with LoRA, the image branch's second model.

`--model.image_model mllama` trains it on the same rendered pages, splits, run directory and metrics as the
controlled image branch; on a CPU a tiny Mllama whose self-attention text layers come from the run's text
backbone (the embedded default), a real one (a folder or hub id) needs no text backbone
(`meit.tasks.factory.needs_text_backbone`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from meit.config import DataConfig
from meit.llm.backbone import cache_root
from meit.llm.mllama import TINY, load_report_model
from meit.tasks.base import ReportTask

ADAPTER_DIR = "adapter"
"""Run-directory folder of the Mllama LoRA adapter (peft layout)."""


class MllamaCollator:
    """Dataset items -> `MllamaReportModel.encode` batches (+ ids, references and labels for predictions).

    Args:
        report_model: the `MllamaReportModel` (its processor tiles and tokenises).
        cfg: the data config (`prompt`, `max_report_tokens`).
        train: sample the instruction among `instruction` + `paraphrases` (if `cfg.prompt.sample_instructions`).
        generate: prompts only (left padded), no reports.
    """

    def __init__(self, report_model: Any, cfg: DataConfig, train: bool = False, generate: bool = False) -> None:
        self.report_model, self.cfg, self.generate = report_model, cfg, generate
        self.instructions = cfg.prompt.instructions() if train and cfg.prompt.sample_instructions else None

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        images = torch.stack([item["ecg"] for item in items])
        texts = [random.choice(self.instructions) if self.instructions else self.cfg.prompt.instruction for _ in items]
        reports = None if self.generate else [item["report"] for item in items]
        batch: dict[str, Any] = dict(self.report_model.encode(images, texts, reports, self.cfg.max_report_tokens))
        batch.update(ids=[item["id"] for item in items], reports=[item["report"] for item in items],
                     labels_true=[list(item["labels"]) for item in items])
        return batch


class MllamaTask(ReportTask):
    """LLaMA 3.2 Vision with LoRA: the same optimiser, schedule, run directory and prediction rows as `FusionTask`.

    Args:
        model: `model.vision_llm` (model, LoRA) and `model.backbone` (checkpointing, attention, remote code).
        optim: optimiser and schedule (`schedule: cosine` for the paper's recipe).
        max_new_tokens: longest generated report.
        num_beams: 1 = greedy decoding, > 1 = beam search.
    """

    input_kind = "image"

    def build(self, backbone: Any, device_type: str = "cpu") -> None:
        """Loads the Mllama and adds LoRA.

        Args:
            backbone: the run's text backbone, which the `tiny` model is built on (once); None for a real Mllama
                (a folder or hub id), which needs none.
            device_type: "cuda" loads the Mllama in bf16, "cpu" in fp32.
        """
        cfg = self.model_cfg
        if backbone is None and cfg.vision_llm.model == TINY:
            raise ValueError("--model.vision_llm.model tiny is built on the run's text backbone: pass it to build()")
        self.net = load_report_model(
            cfg.vision_llm, text_backbone_dir=backbone.reference["path"] if backbone else None,
            cache_root=cache_root(self.cache_dir) / "mllama", device_type=device_type,
            gradient_checkpointing=cfg.backbone.gradient_checkpointing,
            attn_implementation=cfg.backbone.attn_implementation, trust_remote_code=cfg.backbone.trust_remote_code)
        self.net.train()
        self.tokenizer = self.net.tokenizer
        self.backbone_reference = dict(backbone.reference) if backbone else {"kind": "mllama",
                                                                             "path": cfg.vision_llm.model}

    def collator(self, data_cfg: DataConfig, train: bool = False, generate: bool = False) -> Callable:
        """`MllamaCollator`: the Mllama processor's tiles and the chat template around the instruction."""
        if self.net is None:
            raise RuntimeError("MllamaTask.build() must run before batches are made")
        return MllamaCollator(self.net, data_cfg, train=train, generate=generate)

    def param_groups(self) -> list[dict[str, Any]]:
        """One group: every LoRA matrix at `lr`."""
        return [{"params": self.net.trainable_parameters()}]

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Mean cross-entropy over the report tokens of an encoded batch."""
        return self.net({k: v for k, v in batch.items() if isinstance(v, torch.Tensor)})

    @torch.no_grad()
    def generate_reports(self, batch: dict[str, Any]) -> list[str]:
        """Greedy (or beam) reports of an encoded generation batch."""
        return self.net.generate(self.batch_tensors(batch), max_new_tokens=self.max_new_tokens,
                                 num_beams=self.num_beams)

    def save_extras(self, run_dir: Path) -> None:
        """Writes the LoRA adapter in peft's layout to `run_dir/adapter` (loadable by `MllamaReportModel`)."""
        self.net.save_adapter(Path(run_dir) / ADAPTER_DIR)
