"""Rendered pages for the image branch (`--model.branch image`): ECGs drawn on the fly as paper printouts.

Both image tasks (`FusionTask` with an image encoder: the controlled comparison; `MllamaTask`: LLaMA 3.2 Vision)
read the signal branch's data, splits and caches through `ImageDataModule`, whose datasets render each item with
`meit.data.render.ImageTransform` (`data.image.render` / `data.image.size`). Validation and test pages are seeded
by record id exactly as `meit.runs.predict.generate` seeds them, so a reloaded run regenerates the same predictions;
training pages are seeded by (record, epoch), so random artefacts (`data.image.render.artefacts`) give a new page
each epoch, the same ones on a rerun or after a resume.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from meit.config import DataConfig, RunConfig
from meit.data.dataset import ECGReportDataset, PageRenderer, page_seed
from meit.data.image_io import IMAGE_SUFFIXES, load_ecg_image
from meit.data.records import load_signal
from meit.data.render import ImageTransform, RenderConfig
from meit.tasks.datamodule import MEITDataModule

EVAL_SEED = 0
"""Seed of validation/test pages (`meit.runs.predict.generate`'s default seed, so both render the same pages)."""
TRAIN_SEED = 1
"""Seed of training pages."""


def page_renderer(cfg: DataConfig) -> PageRenderer:
    """`render(signal, seed) -> (3, H, W)` page tensor of a data config, the one render factory (datasets, single
    records, report.html): `ImageTransform` with the `cfg.image.render` settings, pages resized to `cfg.image.size`."""
    size = tuple(cfg.image.size) if cfg.image.size else None
    return ImageTransform(cfg.sampling_rate, RenderConfig(**dict(cfg.image.render)), size).image


class EpochTaggedSampler(Sampler):
    """Shuffled training indices tagged with the epoch, `(index, epoch)`: `ECGReportDataset` renders a new page for
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


class ImageDataModule(MEITDataModule):
    """`MEITDataModule` whose datasets serve rendered pages (`ECGReportDataset` with a renderer).

    Args:
        cfg: the data config (`image`).
    """

    def setup(self, stage: str | None = None) -> None:
        """Opens and caches the splits as the signal branch does, then renders their items on the fly."""
        if self.datasets:
            return
        super().setup(stage)
        render = page_renderer(self.cfg)
        for name, dataset in list(self.datasets.items()):
            seed = TRAIN_SEED if name == "train" else EVAL_SEED
            self.datasets[name] = ECGReportDataset(dataset.cache, dataset.records, seed=seed, render=render)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training pages, rendered anew each epoch (`EpochTaggedSampler`)."""
        self.setup()
        sampler = EpochTaggedSampler(len(self.datasets["train"]))
        return self._loader("train", self.cfg.batch_size, True, self.collator(train=True), sampler)


def image_input(path: str | Path, cfg: RunConfig) -> torch.Tensor:
    """The (3, H, W) input of an image-branch run for one file: an image (resized to `data.image.size`, converted
    to RGB with a notice) or a WFDB record (read like training data, then rendered like the test pages).

    Raises:
        FileNotFoundError / meit.data.image_io.ImageError: an unreadable image (the message names the file).
        meit.data.records.RecordError: an unusable record.
    """

    size = tuple(cfg.data.image.size)
    if str(path).lower().endswith(IMAGE_SUFFIXES):
        return load_ecg_image(path, size=size)
    signal = load_signal(Path(path), cfg.data.sampling_rate, cfg.data.n_samples).signal
    return page_renderer(cfg.data)(np.asarray(signal, dtype=np.float32), page_seed(EVAL_SEED, str(path)))
