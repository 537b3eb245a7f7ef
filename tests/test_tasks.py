"""The task interface: every task declares the hooks the shared training, saving and prediction code calls, and
the factory picks the task of a config."""

from __future__ import annotations

import pytest

from meit.config import ModelConfig, RunConfig
from meit.tasks.base import ReportTask
from meit.tasks.factory import make_datamodule, make_task, needs_text_backbone
from meit.tasks.fusion import FusionTask
from meit.tasks.images import ImageDataModule
from meit.tasks.mllama import MllamaTask

HOOKS = ("build", "collator", "forward", "generate_reports", "param_groups")
"""The hooks `ReportTask` leaves to each task (it raises NotImplementedError for them)."""


@pytest.mark.parametrize("task_class", [FusionTask, MllamaTask])
def test_every_task_implements_the_hooks(task_class):
    assert issubclass(task_class, ReportTask)
    missing = [hook for hook in HOOKS if getattr(task_class, hook) is getattr(ReportTask, hook)]
    assert missing == []


def test_the_base_hooks_refuse_to_run():
    task = ReportTask()
    with pytest.raises(NotImplementedError):
        task.generate_reports({})
    with pytest.raises(NotImplementedError):
        task.collator(None)


def run_config(**model) -> RunConfig:
    return RunConfig(model=ModelConfig(**model))


def test_the_factory_picks_the_task_and_datamodule_of_a_config():
    signal = run_config()
    assert type(make_task(signal)) is FusionTask and type(make_datamodule(signal)) is not ImageDataModule
    image = run_config(branch="image", encoder="cnn_small")
    assert type(make_task(image)) is FusionTask and type(make_datamodule(image)) is ImageDataModule
    mllama = run_config(branch="image", image_model="mllama")
    assert type(make_task(mllama)) is MllamaTask and mllama.model.vision_llm.model == "tiny"
    assert needs_text_backbone(mllama.model)  # the tiny Mllama is built on the run's text backbone
    mllama.model.vision_llm.model = "/models/Llama-3.2-11B-Vision"
    assert not needs_text_backbone(mllama.model)


def test_an_unbuilt_task_says_what_is_missing_before_batching():
    with pytest.raises(RuntimeError, match="build"):
        FusionTask().collator(RunConfig().data)
    with pytest.raises(RuntimeError, match="build"):
        MllamaTask().collator(RunConfig().data)
