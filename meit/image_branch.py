"""The image branch of `python -m meit.fit` (`--model.branch image`): ECGs rendered on the fly as paper printouts.

Two image models share the signal branch's data, splits, run directory and metrics:

- `--model.image_model encoder` (the controlled comparison): `MEITModule` unchanged, with an image encoder
  (`cnn_small`, `vit_tiny`, ...) feeding the same fusion and the same frozen LLM; only the batch's "ecg" entry is a
  (3, H, W) page instead of a (12, T) signal.
- `--model.image_model mllama`: `MllamaModule`, LLaMA 3.2 Vision (`meit.vision_llm`) with LoRA; on a CPU a tiny
  Mllama whose self-attention text layers come from the run's text backbone (the embedded default); a real one (a
  folder or hub id) needs no text backbone (`needs_text_backbone`).

Images are rendered by `meit.data.render.ImageTransform` with `data.render` / `data.image_size`. Validation and test
pages are seeded by record id exactly as `meit.predict.generate` seeds them, so a reloaded run regenerates the same
predictions; training pages are seeded by (record, epoch), so random artefacts (`data.render.artefacts`) give a new
page each epoch, the same ones on a rerun or after a resume.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from meit.backbone import cache_root
from meit.config import DataConfig, ModelConfig, OptimConfig, RunConfig
from meit.data.image_io import IMAGE_SUFFIXES, load_ecg_image
from meit.data.records import load_signal
from meit.data.render import ImageTransform, RenderConfig
from meit.data.seeding import record_seed
from meit.datamodule import MEITDataModule
from meit.module import MEITModule
from meit.vision_llm import TINY, load_report_model

EVAL_SEED = 0
"""Seed of validation/test pages (`meit.predict.generate`'s default seed, so both render the same pages)."""
TRAIN_SEED = 1
"""Seed of training pages."""
ADAPTER_DIR = "adapter"
"""Run-directory folder of the Mllama LoRA adapter (peft layout)."""


# ------------------------------------------------------------------------------------------------------ rendering


def image_transform(cfg: DataConfig) -> Any:
    """The `ImageTransform` of a data config: `cfg.render` settings, pages resized to `cfg.image_size`."""
    size = tuple(cfg.image_size) if cfg.image_size else None
    return ImageTransform(cfg.sampling_rate, RenderConfig(**dict(cfg.render)), size)


def page_seed(seed: int, record_id: str, *extra: Any) -> int:
    """The render seed of one record (identical to `meit.predict.TransformedSplit` for the same seed), or of one
    (record, epoch) training page when `extra` holds the epoch."""
    return record_seed(seed, record_id, *extra) % 2**31


class EpochTaggedSampler(Sampler):
    """Shuffled training indices tagged with the epoch, `(index, epoch)`: `RenderedDataset` renders a new page for
    each (record, epoch).

    Lightning calls `set_epoch` before every epoch (after a resume too, so pages match an uninterrupted run); where
    nothing does (a DDP sampler wrapped around this one), each pass advances the epoch itself.

    Args:
        n: number of training items.
    """

    def __init__(self, n: int) -> None:
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        return iter([(i, epoch) for i in torch.randperm(self.n).tolist()])


class RenderedDataset(Dataset):
    """Items of an `ECGReportDataset` whose "ecg" entry is replaced by the rendered (3, H, W) page.

    Indexed by position (the page is seeded by record id: same record, same page) or by `(position, epoch)` from
    `EpochTaggedSampler` (seeded by record id and epoch).

    Args:
        base: the signal dataset.
        transform: an `ImageTransform`.
        seed: with the record id (and epoch), seeds each page.
    """

    def __init__(self, base: Any, transform: Any, seed: int) -> None:
        self.base, self.transform, self.seed = base, transform, seed
        self.records = base.records
        self.cache = base.cache

    def __len__(self) -> int:
        return len(self.base)

    def raw_signal(self, i: int) -> Any:
        """The base dataset's (12, T) signal in mV of record `i` (what the image was rendered from)."""
        return self.base.raw_signal(i)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        i, *epoch = key if isinstance(key, tuple) else (key,)
        item = self.base[i]
        image = self.transform.image(item["ecg"], page_seed(self.seed, item["id"], *epoch))
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

    def train_dataloader(self) -> DataLoader:
        """Shuffled training pages, rendered anew each epoch (`EpochTaggedSampler`)."""
        self.setup()
        sampler = EpochTaggedSampler(len(self.datasets["train"]))
        return self._loader("train", self.cfg.batch_size, True, self.collator(train=True), sampler)

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
                 instruction: str | None = None, num_beams: int = 1) -> None:
        super().__init__(model, optim, max_new_tokens, num_beams)
        self.instruction = instruction or DataConfig().instruction

    def build(self, backbone: Any, device_type: str = "cpu") -> None:
        """Loads the Mllama and adds LoRA.

        Args:
            backbone: the run's text backbone, which the `tiny` model is built on (once); None for a real Mllama
                (a folder or hub id), which needs none.
            device_type: "cuda" loads the Mllama in bf16, "cpu" in fp32.
        """

        cfg = self.model_cfg
        if backbone is None and needs_text_backbone(cfg):
            raise ValueError("--model.vision_llm.model tiny is built on the run's text backbone: pass it to build()")
        self.net = load_report_model(
            cfg.vision_llm, text_backbone_dir=backbone.reference["path"] if backbone else None,
            cache_root=cache_root(cfg) / "mllama", device_type=device_type,
            gradient_checkpointing=cfg.gradient_checkpointing, attn_implementation=cfg.attn_implementation,
            trust_remote_code=cfg.trust_remote_code)
        self.net.train()
        self.tokenizer = self.net.tokenizer
        self.backbone_reference = dict(backbone.reference) if backbone else {"kind": "mllama",
                                                                             "path": cfg.vision_llm.model}

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
        return self.net.generate(ecg, self.instruction, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """One encoded generation batch -> `predictions.jsonl` rows."""
        encoded = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        texts = self.net.generate(encoded, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams)
        return [
            {"id": i, "prediction": p, "reference": r, "labels_true": y}
            for i, p, r, y in zip(batch["ids"], texts, batch["reports"], batch["labels_true"])
        ]

    def save_extras(self, run_dir: Path) -> None:
        """Writes the LoRA adapter in peft's layout to `run_dir/adapter` (loadable by `MllamaReportModel`)."""
        self.net.save_adapter(Path(run_dir) / ADAPTER_DIR)


# ---------------------------------------------------------------------------------------------------- factories


def needs_text_backbone(cfg: ModelConfig) -> bool:
    """Whether a run builds a text backbone (`model.llm`): every run but a real Mllama (a folder or hub id), which
    brings its own language model; the `tiny` Mllama is built on the text backbone."""
    return not (cfg.branch == "image" and cfg.image_model == "mllama" and cfg.vision_llm.model != TINY)


def build_module(module: MEITModule, backbone: Any, device_type: str) -> None:
    """`module.build(backbone)`; a `MllamaModule` also gets the device type (it loads its own weights, bf16 on cuda)."""
    if isinstance(module, MllamaModule):
        module.build(backbone, device_type)
    else:
        module.build(backbone)


def make_module(cfg: RunConfig) -> MEITModule:
    """The LightningModule of a run config: `MllamaModule` for `image_model: mllama`, else `MEITModule`."""
    if cfg.model.branch == "image" and cfg.model.image_model == "mllama":
        return MllamaModule(cfg.model, cfg.optim, cfg.test.max_new_tokens, cfg.data.instruction, cfg.test.num_beams)
    return MEITModule(cfg.model, cfg.optim, cfg.test.max_new_tokens, cfg.test.num_beams)


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

    size = tuple(cfg.data.image_size)
    if str(path).lower().endswith(IMAGE_SUFFIXES):
        return load_ecg_image(path, size=size)
    signal = load_signal(Path(path), cfg.data.sampling_rate, cfg.data.n_samples).signal
    return image_transform(cfg.data).image(np.asarray(signal, dtype=np.float32), page_seed(EVAL_SEED, str(path)))
