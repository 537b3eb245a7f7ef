"""`python -m meit.fit`: flags, presets, the tiny pipeline end to end, reloading a run, resuming a checkpoint."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from meit.fit import main, resolve_precision
from meit.runs.rundir import load_run

REPO = Path(__file__).resolve().parents[1]
PRESETS = [REPO / "configs" / f"{name}.yaml" for name in (
    "default", "meit_llama2_7b_ptbxl", "meit_mistral_7b_mimic", "meit_gpt2_medium", "smollm2_135m", "deepspeed_zero2")]


def tiny_setup_args(cache: Path) -> list[str]:
    """The tiny data, backbone and test flags every tiny run shares: 60 synthetic records, a 2-layer 32-wide
    backbone, quiet trainer, BLEU and label scores only."""
    return [
        "--data.synthetic_n", "60", "--data.cache_dir", str(cache),
        "--data.batch_size", "8", "--data.eval_batch_size", "8", "--data.max_report_tokens", "24",
        "--model.backbone.embedded.hidden_size", "32", "--model.backbone.embedded.num_layers", "2",
        "--model.backbone.embedded.num_heads", "4", "--model.backbone.embedded.num_kv_heads", "2",
        "--model.backbone.embedded.intermediate_size", "64", "--model.backbone.embedded.pretrain_steps", "3",
        "--model.lora.r", "4",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--test.n_bootstrap", "10", "--test.metrics", "[bleu,labels]",
    ]


def tiny_args(cache: Path, run_dir: Path, *extra: str) -> list[str]:
    """A configuration that trains in seconds: `tiny_setup_args`, a small ResNet, 3 steps."""
    return [
        *tiny_setup_args(cache), "--model.encoder_kwargs", '{"widths": [8, 8, 16, 16]}',
        "--trainer.max_steps", "3", "--trainer.log_every_n_steps", "1", "--test.max_new_tokens", "12",
        "--run_dir", str(run_dir), *extra,
    ]


def print_config(capsys, *args: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_print_config_lists_every_group(capsys):
    config = print_config(capsys)
    assert {"trainer", "model", "data", "optim", "test", "run_dir", "ckpt_path", "seed_everything"} <= set(config)
    assert config["model"]["llm"] == "embedded" and config["model"]["lora"]["r"] == 64
    assert config["model"]["lora"]["alpha"] == 128 and config["model"]["lora"]["dropout"] == 0.1
    assert config["data"]["dataset"] == "synthetic" and config["data"]["sampling_rate"] == 100
    assert config["optim"]["warmup_ratio"] == 0.03 and "hidden_size" in config["model"]["backbone"]["embedded"]


def test_help_documents_the_flags(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--model.llm", "--model.ecg_input", "--model.backbone.trust_remote_code", "--data.dataset",
                 "--data.root", "--data.sampling_rate", "--run_dir", "--ckpt_path", "--trainer.max_epochs",
                 "--optim.lr"):
        assert flag in text
    assert "no-ECG baseline" in text  # field docstrings are the help texts


def test_flags_override_defaults(capsys):
    config = print_config(capsys, "--model.lora.r", "8", "--data.dataset", "ptbxl", "--data.root", "/data/ptb-xl",
                          "--model.ecg_input", "zero")
    assert (config["model"]["lora"]["r"], config["model"]["ecg_input"]) == (8, "zero")
    assert (config["data"]["dataset"], config["data"]["root"]) == ("ptbxl", "/data/ptb-xl")


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_parses(preset, capsys):
    config = print_config(capsys, "--config", str(preset))
    assert config["model"]["llm"] and config["data"]["dataset"] in ("synthetic", "ptbxl", "mimic")


def test_default_preset_is_the_embedded_default(capsys):
    assert print_config(capsys, "--config", str(REPO / "configs" / "default.yaml")) == print_config(capsys)


def test_paper_presets_follow_meit(capsys):
    for name in ("meit_llama2_7b_ptbxl", "meit_mistral_7b_mimic", "meit_gpt2_medium"):
        config = print_config(capsys, "--config", str(REPO / "configs" / f"{name}.yaml"))
        assert (config["data"]["sampling_rate"], config["data"]["n_samples"]) == (500, 5000)
        data = config["data"]
        assert (config["optim"]["lr"], data["batch_size"], data["max_report_tokens"]) == (2e-5, 64, 128)
        assert (config["trainer"]["max_epochs"], config["trainer"]["precision"]) == (5, "bf16-mixed")
        assert (config["model"]["lora"]["r"], config["model"]["lora"]["alpha"]) == (64, 128)
        assert config["model"]["encoder_kwargs"] == {"n_tokens": 1}  # one globally pooled ECG token
        assert config["model"]["encoder"] == "resnet50_1d"  # MEIT's code: 1-D ResNet-50, 2048-d
        assert config["model"]["projector"] == {"kind": "meit", "normalize": True, "mid_dim": 2048}
    zero2 = print_config(capsys, "--config", str(REPO / "configs" / "deepspeed_zero2.yaml"))
    assert zero2["trainer"]["strategy"] == "deepspeed_stage_2" and zero2["model"]["backbone"]["gradient_checkpointing"]


def test_cpu_precision_is_always_fp32():
    if torch.cuda.is_available():
        pytest.skip("checks the CPU policy")
    with pytest.warns(UserWarning, match="fp32"):
        assert resolve_precision("bf16-mixed", "auto") == "32-true"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision(None, "cpu") == "32-true"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path, str]:
    """One tiny `python -m meit.fit` run in a subprocess, progress on, stdout a pipe: (cache dir, run dir, stdout)."""
    base = tmp_path_factory.mktemp("fit")
    cache, run_dir = base / "cache", base / "run"
    args = tiny_args(cache, run_dir, "--trainer.enable_progress_bar", "true")
    out = subprocess.run([sys.executable, "-m", "meit.fit", *args], cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return cache, run_dir, out.stdout


@pytest.mark.slow
def test_fit_writes_a_complete_run_directory(tiny_run):
    _, run_dir, stdout = tiny_run
    assert stdout.strip().splitlines()[-1] == str(run_dir)
    for name in ("config.yaml", "weights.safetensors", "backbone.json", "predictions.jsonl", "metrics.json",
                 "report.md", "run.json"):
        assert (run_dir / name).is_file(), name
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert rows and all({"id", "prediction", "reference", "labels_true", "measurements", "grounding"} <= set(r)
                        for r in rows)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n"] == len(rows) and 0 <= metrics["bleu_4"] <= 1 and 0 <= metrics["label_macro_f1"] <= 1
    assert metrics["grounding_checked"] == sum(len(r["grounding"]) for r in rows)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["train_steps"] == 3 and info["backbone"]["llm"] == "embedded"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["run_dir"] == str(run_dir) and saved["model"]["lora"]["r"] == 4
    assert "| bleu_4 |" in (run_dir / "report.md").read_text()


@pytest.mark.slow
def test_progress_goes_to_a_log_file_as_lines(tiny_run):
    _, _, stdout = tiny_run  # not a terminal: rich's live bar would print nothing
    lines = stdout.splitlines()
    assert any(line.startswith("[meit] epoch 0 step 3/3 (") and "train/loss" in line for line in lines)
    assert any(line.startswith("[meit] generating: batch ") for line in lines)


@pytest.mark.slow
def test_a_rerun_from_the_cache_repeats_the_first_run(tiny_run, tmp_path):
    cache, run_dir, _ = tiny_run  # the first run built the data and pre-trained the backbone; this one reads them
    args = tiny_args(cache, tmp_path / "again", "--trainer.enable_progress_bar", "true")
    out = subprocess.run([sys.executable, "-m", "meit.fit", *args], cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("weights.safetensors", "predictions.jsonl"):  # weights: 3 steps barely move the predictions
        assert (tmp_path / "again" / name).read_bytes() == (run_dir / name).read_bytes(), name


@pytest.mark.slow
def test_a_saved_run_reloads_to_the_same_predictions(tiny_run):
    from meit.tasks.datamodule import MEITDataModule

    _, run_dir, _ = tiny_run
    module, tokenizer, cfg = load_run(run_dir)
    saved = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    dm = MEITDataModule(cfg.data)
    dm.set_collator(module.collator)
    again = []
    for batch in dm.predict_dataloader("test"):
        again += module.predict_step(batch, 0)
    assert len(again) == len(saved)
    assert again == [{k: row[k] for k in fresh} for fresh, row in zip(again, saved)]  # saved rows add measurements


@pytest.mark.slow
def test_resume_from_a_checkpoint_continues_the_step_count(tiny_run, tmp_path):
    cache, _, _ = tiny_run
    first = main(tiny_args(cache, tmp_path / "first", "--trainer.max_steps", "2", "--test.skip", "true"))
    ckpt = first / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    assert state["global_step"] == 2
    assert all("lora_" in k or not k.startswith("net.llm.") for k in state["state_dict"])  # no frozen weights
    stale = tmp_path / "second" / "checkpoints" / ".last.ckpt.999999.tmp"  # a checkpoint write killed half-way
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a checkpoint")
    second = main(tiny_args(cache, tmp_path / "second", "--trainer.max_steps", "4", "--test.skip", "true",
                            "--ckpt_path", str(ckpt)))
    assert json.loads((second / "run.json").read_text())["train_steps"] == 4
    rows = [row for f in (second / "lightning_logs").rglob("metrics.csv") for row in csv.DictReader(f.open())]
    steps = {int(row["step"]) for row in rows if row.get("train/loss")}
    assert steps == {2, 3}  # the resumed run trained steps 2 and 3 only
    assert not list((second / "checkpoints").glob(".*.tmp"))  # none left, and the stale one was removed


def test_num_beams_must_be_positive_and_is_named_at_parse_time(capsys):
    assert print_config(capsys, "--test.num_beams", "3")["test"]["num_beams"] == 3
    with pytest.raises(SystemExit) as exit_info:
        main(["--test.num_beams", "0", "--print_config"])
    assert exit_info.value.code == 2 and "test.num_beams" in capsys.readouterr().err


@pytest.mark.slow
def test_test_num_beams_decodes_the_test_split_with_beam_search(tiny_run, tmp_path):
    from meit.tasks.datamodule import MEITDataModule

    cache, _, _ = tiny_run
    run_dir = main(tiny_args(cache, tmp_path / "beams", "--test.num_beams", "3"))
    module, tokenizer, cfg = load_run(run_dir)
    assert cfg.test.num_beams == 3 and module.num_beams == 3  # saved runs decode with the run's setting
    saved = [json.loads(line)["prediction"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    dm = MEITDataModule(cfg.data)
    dm.set_collator(module.collator)
    beams = []
    for batch in dm.predict_dataloader("test"):
        args = (batch["ecg"], batch["input_ids"], batch["attention_mask"])
        beams += module.generate_reports(batch)
    assert beams == saved and len(saved) > 0
    ids = module.net.generate(*args, max_new_tokens=12, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id, num_beams=3)
    assert [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)] == beams[-len(ids):]


PINNED = Path(__file__).parent / "fixtures" / "pinned_tiny_predictions.json"
"""The predictions of one tiny seeded run, pinned when `meit/` was restructured (write with MEIT_PIN_WRITE=1)."""


def cpu_model() -> str:
    """The CPU's model name (pinned float results hold for one kind of machine)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


@pytest.mark.slow
def test_a_tiny_seeded_run_gives_the_pinned_predictions(tmp_path):
    """Guards refactors: the same config and seed must train and decode to the same reports as when pinned.
    Floating-point sums depend on the thread count and the CPU, so the run uses one thread and the check is
    skipped on another CPU model or torch version (where the pin says nothing)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_dir = main(tiny_args(tmp_path / "cache", tmp_path / "run", "--trainer.max_steps", "60",
                                 "--optim.lr", "3e-3", "--model.aux_label_loss_weight", "0",
                                 "--trainer.max_epochs", "16"))
    finally:
        torch.set_num_threads(threads)
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    got = {"cpu": cpu_model(), "torch": torch.__version__, "predictions": [[r["id"], r["prediction"]] for r in rows]}
    if os.environ.get("MEIT_PIN_WRITE"):
        PINNED.write_text(json.dumps(got, indent=1) + "\n")
    pinned = json.loads(PINNED.read_text())
    if (pinned["cpu"], pinned["torch"]) != (got["cpu"], got["torch"]):
        pytest.skip(f"predictions pinned on {pinned['cpu']} with torch {pinned['torch']}")
    assert got["predictions"] == pinned["predictions"]
