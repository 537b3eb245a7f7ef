"""The image branch of `python -m meit.fit` (`--model.branch image`): ECGs rendered on the fly as paper printouts.

Two image models share the signal branch's data, splits, run directory and metrics:

- `--model.image_model encoder` (the controlled comparison): `MEITModule` unchanged, with an image encoder
  (`cnn_small`, `vit_tiny`, ...) feeding the same fusion and the same frozen LLM; only the batch's "ecg" entry is a
  (3, H, W) page instead of a (12, T) signal.
- `--model.image_model mllama`: `MllamaModule`, LLaMA 3.2 Vision (`meit.vision_llm`) with LoRA; on a CPU a tiny
  Mllama whose self-attention text layers come from the run's text backbone (the embedded default).

Images are rendered by `meit.data.render.ImageTransform` with `data.render` / `data.image_size`. Validation and test
pages are seeded by record id exactly as `meit.predict.generate` seeds them, so a reloaded run regenerates the same
predictions; training pages use another seed (a fixed page per record).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from meit.config import DataConfig, ModelConfig, OptimConfig, RunConfig
from meit.datamodule import MEITDataModule
from meit.module import MEITModule

EVAL_SEED = 0
"""Seed of validation/test pages (`meit.predict.generate`'s default seed, so both render the same pages)."""
TRAIN_SEED = 1
"""Seed of training pages."""
ADAPTER_DIR = "adapter"
"""Run-directory folder of the Mllama LoRA adapter (peft layout)."""


# ------------------------------------------------------------------------------------------------------ rendering


def image_transform(cfg: DataConfig) -> Any:
    """The `ImageTransform` of a data config: `cfg.render` settings, pages resized to `cfg.image_size`."""
    from meit.data.render import ImageTransform, RenderConfig

    size = tuple(cfg.image_size) if cfg.image_size else None
    return ImageTransform(cfg.sampling_rate, RenderConfig(**dict(cfg.render)), size)


def page_seed(seed: int, record_id: str) -> int:
    """The render seed of one record (identical to `meit.predict.TransformedSplit` for the same seed)."""
    from meit.predict import record_seed

    return record_seed(seed, record_id) % 2**31


class RenderedDataset(Dataset):
    """Items of an `ECGReportDataset` whose "ecg" entry is replaced by the rendered (3, H, W) page.

    Args:
        base: the signal dataset.
        transform: an `ImageTransform`.
        seed: with the record id, seeds each page (same record, same page).
    """

    def __init__(self, base: Any, transform: Any, seed: int) -> None:
        self.base, self.transform, self.seed = base, transform, seed
        self.records = base.records
        self.cache = base.cache

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.base[i]
        image = self.transform.image(item["ecg"], page_seed(self.seed, item["id"]))
        return {**item, "ecg": image}


class ImageDataModule(MEITDataModule):
    """`MEITDataModule` whose datasets serve rendered pages; with a `MllamaModule`, batches are its encoded inputs.

    Args:
        cfg: the data config (`render`, `image_size`).
        module: the LightningModule being trained; a `MllamaModule` switches the collate function to its processor.
    """

    def __init__(self, cfg: DataConfig | None = None, module: Any = None) -> None:
        super().__init__(cfg)
        self.module = module

    def setup(self, stage: str | None = None) -> None:
        """Opens and caches the splits as the signal branch does, then renders their items on the fly."""
        if self.datasets:
            return
        super().setup(stage)
        transform = image_transform(self.cfg)
        for name, dataset in list(self.datasets.items()):
            seed = TRAIN_SEED if name == "train" else EVAL_SEED
            self.datasets[name] = RenderedDataset(dataset, transform, seed)

    def collator(self, train: bool = False, generate: bool = False) -> Any:
        """`PromptCollator` for the encoder model, `MllamaCollator` for Mllama."""
        if isinstance(self.module, MllamaModule):
            if self.module.net is None:
                raise RuntimeError("MllamaModule.build() must run before building dataloaders")
            return MllamaCollator(self.module.net, self.cfg, train=train, generate=generate)
        return super().collator(train=train, generate=generate)


class MllamaCollator:
    """Dataset items -> `MllamaReportModel.encode` batches (+ ids, references and labels for predictions).

    Args:
        report_model: the `MllamaReportModel` (its processor tiles and tokenises).
        cfg: the data config (instructions).
        train: sample the instruction among `instruction` + `paraphrases` (if `cfg.sample_instructions`).
        generate: prompts only (left padded), no reports.
    """

    def __init__(self, report_model: Any, cfg: DataConfig, train: bool = False, generate: bool = False) -> None:
        self.report_model, self.cfg, self.generate = report_model, cfg, generate
        self.instructions = [cfg.instruction, *cfg.paraphrases] if train and cfg.sample_instructions else None

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        images = torch.stack([item["ecg"] for item in items])
        texts = [random.choice(self.instructions) if self.instructions else self.cfg.instruction for _ in items]
        reports = None if self.generate else [item["report"] for item in items]
        batch: dict[str, Any] = dict(self.report_model.encode(images, texts, reports))
        batch.update(ids=[item["id"] for item in items], reports=[item["report"] for item in items],
                     labels_true=[list(item["labels"]) for item in items])
        return batch


# ---------------------------------------------------------------------------------------------------- modules


class MllamaModule(MEITModule):
    """LLaMA 3.2 Vision with LoRA as a LightningModule: the same optimiser, schedule, run directory and generation
    interface as `MEITModule` (`generate_reports(images, ids, mask)`, used by `meit.predict` and `meit.report`).

    Args:
        model: `model.vision_llm` (model, LoRA, report length), `gradient_checkpointing`, `attn_implementation`.
        optim: optimiser and schedule (`schedule: cosine` for the paper's recipe).
        max_new_tokens: longest generated report.
        instruction: the instruction of generation (the run's `data.instruction`).
    """

    input_kind = "image"

    def __init__(self, model: ModelConfig | None = None, optim: OptimConfig | None = None, max_new_tokens: int = 64,
                 instruction: str | None = None) -> None:
        super().__init__(model, optim, max_new_tokens)
        self.instruction = instruction or DataConfig().instruction

    def build(self, backbone: Any) -> None:
        """Loads the Mllama (the tiny one is built once on the backbone's folder) and adds LoRA."""
        from meit.backbone import cache_root
        from meit.vision_llm import load_report_model

        cfg = self.model_cfg
        first = next(backbone.model.parameters())
        self.net = load_report_model(
            cfg.vision_llm, text_backbone_dir=backbone.reference["path"], cache_root=cache_root(cfg) / "mllama",
            device_type="cuda" if first.dtype == torch.bfloat16 else "cpu",
            gradient_checkpointing=cfg.gradient_checkpointing, attn_implementation=cfg.attn_implementation,
            trust_remote_code=cfg.trust_remote_code)
        self.net.train()
        self.tokenizer = self.net.tokenizer
        self.backbone_reference = dict(backbone.reference)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The LoRA matrices (the Mllama itself stays frozen)."""
        return {name: p for name, p in self.net.named_parameters() if p.requires_grad}

    def param_groups(self) -> list[dict[str, Any]]:
        """One group: every LoRA matrix at `lr`."""
        return [{"params": self.net.trainable_parameters()}]

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Mean cross-entropy over the report tokens of an encoded batch."""
        return self.net({k: v for k, v in batch.items() if isinstance(v, torch.Tensor)})

    @torch.no_grad()
    def generate_reports(self, ecg: torch.Tensor, prompt_ids: torch.Tensor | None = None,
                         prompt_mask: torch.Tensor | None = None) -> list[str]:
        """Greedy reports for (B, 3, H, W) page tensors; the text prompt is the chat template around the run's
        instruction (`prompt_ids` / `prompt_mask` are accepted for interface compatibility and not used)."""
        return self.net.generate(ecg, self.instruction, max_new_tokens=self.max_new_tokens)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """One encoded generation batch -> `predictions.jsonl` rows."""
        encoded = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        texts = self.net.generate(encoded, max_new_tokens=self.max_new_tokens)
        return [
            {"id": i, "prediction": p, "reference": r, "labels_true": y}
            for i, p, r, y in zip(batch["ids"], texts, batch["reports"], batch["labels_true"])
        ]

    def save_extras(self, run_dir: Path) -> None:
        """Writes the LoRA adapter in peft's layout to `run_dir/adapter` (loadable by `MllamaReportModel`)."""
        self.net.save_adapter(Path(run_dir) / ADAPTER_DIR)


# ---------------------------------------------------------------------------------------------------- factories


def check_config(cfg: RunConfig) -> None:
    """Fails early on an image-branch config that cannot work.

    Raises:
        ValueError: the controlled image branch with an encoder that does not read images, or a bad image size.
    """
    model = cfg.model
    if model.branch != "image":
        return
    if len(cfg.data.image_size) != 2 or min(cfg.data.image_size) < 16:
        raise ValueError(f"--data.image_size must be [H, W] with sides >= 16, got {cfg.data.image_size}")
    if model.image_model == "encoder":
        from meit.encoders import build_encoder

        kind = getattr(build_encoder(model.encoder, **model.encoder_kwargs), "input_kind", "signal")
        if kind != "image":
            raise ValueError(f"--model.branch image needs an image encoder (cnn_small, vit_tiny, resnet18_2d, "
                             f"pretrained_vision); {model.encoder} reads {kind}s")


def make_module(cfg: RunConfig) -> MEITModule:
    """The LightningModule of a run config: `MllamaModule` for `image_model: mllama`, else `MEITModule`."""
    if cfg.model.branch == "image" and cfg.model.image_model == "mllama":
        return MllamaModule(cfg.model, cfg.optim, cfg.test.max_new_tokens, cfg.data.instruction)
    return MEITModule(cfg.model, cfg.optim, cfg.test.max_new_tokens)


def make_datamodule(cfg: RunConfig, module: Any) -> MEITDataModule:
    """The datamodule of a run config: rendered pages for the image branch, signals otherwise."""
    if cfg.model.branch == "image":
        return ImageDataModule(cfg.data, module)
    return MEITDataModule(cfg.data)


def image_input(path: str | Path, cfg: RunConfig) -> torch.Tensor:
    """The (3, H, W) input of an image-branch run for one file: an image (resized to `data.image_size`, converted
    to RGB with a notice) or a WFDB record (read like training data, then rendered like the test pages).

    Raises:
        FileNotFoundError / meit.data.image_io.ImageError: an unreadable image (the message names the file).
        meit.data.records.RecordError: an unusable record.
    """
    from meit.data.image_io import load_ecg_image
    from meit.data.records import load_signal
    from meit.report import IMAGE_SUFFIXES

    size = tuple(cfg.data.image_size)
    if str(path).lower().endswith(IMAGE_SUFFIXES):
        return load_ecg_image(path, size=size)
    signal = load_signal(Path(path), cfg.data.sampling_rate, cfg.data.n_samples).signal
    return image_transform(cfg.data).image(np.asarray(signal, dtype=np.float32), page_seed(EVAL_SEED, str(path)))
