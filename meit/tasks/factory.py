"""The one factory of training tasks and datamodules: a run config -> its `ReportTask`, built on its backbone.

`meit.fit` (a fresh run, the backbone just resolved) and `meit.runs.rundir.load_run` (a saved run, the backbone
of its backbone.json) both build through `build_task`: the task of the config, the frozen backbone loaded where
the task needs one, then `task.build`.
"""

from __future__ import annotations

from typing import Any

import torch

from meit.config import ModelConfig, RunConfig
from meit.llm.backbone import load_backbone
from meit.llm.mllama import TINY
from meit.tasks.base import ReportTask
from meit.tasks.datamodule import MEITDataModule
from meit.tasks.fusion import FusionTask
from meit.tasks.images import ImageDataModule
from meit.tasks.mllama import MllamaTask


def needs_text_backbone(cfg: ModelConfig) -> bool:
    """Whether a run builds a text backbone (`model.llm`): every run but a real Mllama (a folder or hub id), which
    brings its own language model; the `tiny` Mllama is built on the text backbone."""
    return not (cfg.branch == "image" and cfg.image_model == "mllama" and cfg.vision_llm.model != TINY)


def make_task(cfg: RunConfig) -> ReportTask:
    """The unbuilt task of a run config: `MllamaTask` for `image_model: mllama`, else `FusionTask`."""
    task_class = MllamaTask if cfg.model.branch == "image" and cfg.model.image_model == "mllama" else FusionTask
    return task_class(cfg.model, cfg.optim, cfg.test.max_new_tokens, cfg.test.num_beams, cfg.data.cache_dir)


def make_datamodule(cfg: RunConfig) -> MEITDataModule:
    """The datamodule of a run config: rendered pages for the image branch, signals otherwise."""
    return ImageDataModule(cfg.data) if cfg.model.branch == "image" else MEITDataModule(cfg.data)


def build_task(task: ReportTask, cfg: RunConfig, reference: dict[str, Any] | None, device_type: str = "cpu",
               local_files_only: bool = False) -> ReportTask:
    """Loads the frozen backbone of `reference` (None: the task needs none) and builds `task` on it.

    Args:
        task: from `make_task(cfg)`.
        cfg: the run config (remote code, attention kernel, checkpointing of the backbone).
        reference: a resolved backbone reference (`meit.llm.backbone.resolve_backbone`, or a saved run's
            verified backbone.json).
        device_type: "cuda" loads bf16 weights, "cpu" fp32.
        local_files_only: never reach the network (a saved run).

    Returns:
        `task`, built.
    """
    backbone = None
    if reference is not None:  # loading may draw random numbers; the task's own initialisation must not depend on it
        with torch.random.fork_rng(devices=[]):
            backbone = load_backbone(reference, cfg.model.backbone, device_type=device_type,
                                     local_files_only=local_files_only)
    task.build(backbone, device_type)
    return task
