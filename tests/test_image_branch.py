"""The image branch of `python -m meit.fit`: config fields, the cosine schedule, rendered batches, the controlled
image encoder end to end (run directory, reload, `meit.report` on images and records) and LLaMA 3.2 Vision (slow)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_fit import print_config, tiny_args

from meit.config import DataConfig, ImageInputConfig
from meit.fit import main
from meit.tasks.base import warmup_schedule

REPO = Path(__file__).resolve().parents[1]

ROW_KEYS = {"id", "prediction", "reference", "labels_true", "measurements", "grounding"}
"""A test row: the report fields plus the input ECG's measurements and the prediction's grounding checks."""


def tiny_image_args(cache: Path, run_dir: Path, *extra: str) -> list[str]:
    """`test_fit.tiny_args` as an image-branch run: `cnn_small` on 64 x 80 pages, 2 steps."""
    return tiny_args(
        cache, run_dir,
        "--model.branch", "image", "--model.encoder", "cnn_small",
        "--model.encoder_kwargs", '{"widths": [8, 8, 16, 16], "n_tokens": 4}',
        "--data.image.size", "[64, 80]", "--data.image.render", '{"dpi": 30}',
        "--trainer.max_steps", "2", "--test.max_new_tokens", "8", *extra,
    )


def test_new_fields_default_to_the_signal_branch(capsys):
    config = print_config(capsys)
    assert (config["model"]["branch"], config["model"]["image_model"]) == ("signal", "encoder")
    assert config["optim"]["schedule"] == "linear" and config["model"]["vision_llm"]["lora"]["dropout"] == 0.05
    assert config["data"]["image"] == {"size": [224, 288], "render": {"dpi": 50}}


def test_the_llama32_vision_preset_parses(capsys):
    config = print_config(capsys, "--config", str(REPO / "configs" / "llama32_vision_lora.yaml"))
    assert (config["model"]["branch"], config["model"]["image_model"]) == ("image", "mllama")
    assert config["model"]["vision_llm"]["model"] == "meta-llama/Llama-3.2-11B-Vision-Instruct"
    assert (config["optim"]["schedule"], config["optim"]["lr"]) == ("cosine", 2e-4)


def test_help_documents_the_image_flags(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--model.branch", "--model.image_model", "--model.vision_llm.model", "--data.image.size",
                 "--data.image.render", "--optim.schedule"):
        assert flag in text


def test_cosine_schedule_warms_up_then_decays_to_zero():
    cosine, linear = warmup_schedule(100, 0.1, "cosine"), warmup_schedule(100, 0.1, "linear")
    assert cosine(0) == pytest.approx(0.1) and cosine(9) == pytest.approx(1.0)
    assert cosine(10) == pytest.approx(1.0) and cosine(55) == pytest.approx(0.5) and cosine(100) == pytest.approx(0.0)
    assert cosine(30) > linear(30)  # cosine stays higher early in the decay
    assert all(cosine(s) >= cosine(s + 1) for s in range(10, 100))
    assert math.isclose(linear(55), 0.5)
    with pytest.raises(ValueError, match="unknown schedule"):
        warmup_schedule(10, 0.1, "step")




def test_rendered_items_are_deterministic_per_record(tmp_path):
    from meit.tasks.datamodule import MEITDataModule
    from meit.tasks.images import ImageDataModule

    data = DataConfig(synthetic_n=40, cache_dir=str(tmp_path), image=ImageInputConfig([48, 64], {"dpi": 30}))
    dm = ImageDataModule(data)
    dm.setup()
    first, again = dm.datasets["test"][0], dm.datasets["test"][0]
    assert first["ecg"].shape == (3, 48, 64) and 0.0 <= float(first["ecg"].min()) <= float(first["ecg"].max()) <= 1
    assert (first["ecg"] == again["ecg"]).all()
    assert first["id"] == again["id"] and first["report"]
    signal_dm = MEITDataModule(data)
    signal_dm.setup()
    assert signal_dm.datasets["test"][0]["ecg"].shape[0] == 12 and len(signal_dm.datasets["test"]) == len(
        dm.datasets["test"])


def test_training_pages_change_each_epoch_and_repeat_on_a_rerun(tmp_path):
    from meit.tasks.images import EpochTaggedSampler, ImageDataModule

    render = {"dpi": 30, "artefacts": {"rotation": 0.5, "noise": 0.5}}
    data = DataConfig(synthetic_n=40, cache_dir=str(tmp_path), image=ImageInputConfig([48, 64], render))
    dm = ImageDataModule(data)
    dm.setup()
    train = dm.datasets["train"]
    epoch0, epoch1 = train[(0, 0)]["ecg"], train[(0, 1)]["ecg"]
    assert not torch.equal(epoch0, epoch1) and torch.equal(epoch0, train[(0, 0)]["ecg"])
    sampler = EpochTaggedSampler(len(train))
    sampler.set_epoch(3)  # as Lightning does before each epoch, resumes included
    keys = list(sampler)
    assert sorted(i for i, _ in keys) == list(range(len(train))) and {e for _, e in keys} == {3}
    assert {e for _, e in sampler} == {4}  # with nobody calling set_epoch, each pass is a new epoch
    assert torch.equal(dm.datasets["test"][0]["ecg"], dm.datasets["test"][0]["ecg"])  # eval pages stay fixed


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> tuple[Path, Path]:
    """One tiny controlled image-branch run (cache dir, run dir)."""
    base = tmp_path_factory.mktemp("image")
    run_dir = main(tiny_image_args(base / "cache", base / "run"))
    return base / "cache", run_dir


@pytest.mark.slow
def test_image_run_writes_the_signal_branch_run_directory(image_run):
    _, run_dir = image_run
    for name in ("config.yaml", "weights.safetensors", "backbone.json", "predictions.jsonl", "metrics.json",
                 "report.md", "run.json"):
        assert (run_dir / name).is_file(), name
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert rows and all(set(r) == ROW_KEYS for r in rows)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n"] == len(rows) and "ci95" in metrics and 0 <= metrics["bleu_4"] <= 1
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["branch"] == "image" and saved["model"]["encoder"] == "cnn_small"
    assert json.loads((run_dir / "run.json").read_text())["train_steps"] == 2


@pytest.mark.slow
def test_image_run_reloads_to_the_same_predictions(image_run):
    from meit.runs.predict import generate, load, open_split

    _, run_dir = image_run
    run = load(run_dir)
    assert run.input_kind == "image"
    saved = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    again = generate(run, open_split(run.cfg.data, "test"))
    assert [(r["id"], r["prediction"], r["reference"]) for r in again] == [
        (r["id"], r["prediction"], r["reference"]) for r in saved]


@pytest.mark.slow
def test_report_reads_images_and_records_for_image_runs(image_run, tmp_path, capsys):
    from meit.data.render import render
    from meit.report import main as report_main
    from meit.runs.predict import open_split
    from meit.runs.rundir import read_config

    _, run_dir = image_run
    cfg = read_config(run_dir)
    split = open_split(cfg.data, "test", limit=1)
    record, signal = split.records[0], split.cache[0]
    page = tmp_path / "page.png"
    Image.fromarray(render(np.asarray(signal), cfg.data.sampling_rate)).convert("L").save(page)  # wrong size + mode
    assert report_main([str(page), "--run", str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() is not None
    assert report_main([str(record.path), "--run", str(run_dir)]) == 0
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    assert report_main([str(bad), "--run", str(run_dir)]) == 2
    assert "broken.png" in capsys.readouterr().err


def tiny_mllama_args(cache: Path, run_dir: Path, model: str, *extra: str) -> list[str]:
    """`tiny_image_args` for `--model.image_model mllama` (`model`: tiny, a folder or a hub id), 4 test records."""
    return tiny_image_args(
        cache, run_dir, "--model.image_model", "mllama", "--model.vision_llm.model", model,
        "--model.vision_llm.lora.r", "4", "--data.max_report_tokens", "17",
        "--model.vision_llm.tiny", '{"image_size": 56, "patch_size": 14, "max_num_tiles": 2, '
        '"vision_hidden_size": 32, "vision_layers": 1, "vision_global_layers": 1, "vision_heads": 2, '
        '"cross_attention_layers": [1]}',
        "--data.image.size", "[56, 72]", "--optim.schedule", "cosine", "--optim.lr", "1e-3",
        "--test.limit", "4", "--test.max_new_tokens", "6", *extra)


@pytest.fixture(scope="module")
def mllama_run(image_run, tmp_path_factory) -> Path:
    """A tiny LLaMA 3.2 Vision run (`--model.vision_llm.model tiny`, built on the embedded text backbone)."""
    cache, _ = image_run
    return main(tiny_mllama_args(cache, tmp_path_factory.mktemp("mllama") / "run", "tiny"))


@pytest.mark.slow
def test_mllama_branch_trains_saves_and_reloads(mllama_run):
    from meit.runs.predict import generate, load, open_split

    run_dir = mllama_run
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(set(r) == ROW_KEYS for r in rows)
    assert json.loads((run_dir / "metrics.json").read_text())["n"] == 4
    info = json.loads((run_dir / "run.json").read_text())
    assert info["train_steps"] == 2 and 0 < info["trainable_parameters"]
    run = load(run_dir)
    assert run.input_kind == "image" and run.module.count_trainable() == info["trainable_parameters"]
    again = generate(run, open_split(run.cfg.data, "test", limit=4))
    assert [r["prediction"] for r in again] == [r["prediction"] for r in rows]


@pytest.mark.slow
def test_a_mllama_folder_needs_no_text_backbone(image_run, mllama_run, tmp_path):
    from meit.runs.predict import generate, load, open_split

    cache, _ = image_run
    folder = next((cache / "backbones" / "mllama").glob("tiny-mllama-*"))  # written by the tiny run: a Mllama folder
    fresh = tmp_path / "cache"  # the run's data is written here afresh, and no text backbone is built
    run_dir = main(tiny_mllama_args(cache, tmp_path / "run", str(folder), "--data.cache_dir", str(fresh)))
    assert (fresh / "synthetic").is_dir() and not (fresh / "backbones").exists()
    assert json.loads((run_dir / "backbone.json").read_text()) == {"kind": "mllama", "path": str(folder)}
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    run = load(run_dir)
    again = generate(run, open_split(run.cfg.data, "test", limit=4))
    assert [r["prediction"] for r in again] == [r["prediction"] for r in rows]
