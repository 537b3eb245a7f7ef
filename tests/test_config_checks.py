"""Parse-time checks of a run config (`meit.config_checks`): bad settings fail in seconds, naming the flag."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from meit.config import (
    CrossAttentionConfig,
    DataConfig,
    ImageInputConfig,
    ModelConfig,
    OptimConfig,
    ProjectorConfig,
    PromptConfig,
    RunConfig,
    TestConfig,
    run_config_from_dict,
)
from meit.config_checks import check_run_config, factory_keywords, input_kind
from meit.encoders import build_encoder, encoder_names
from meit.encoders.registry import ENCODERS
from meit.fusion.registry import FUSIONS
from meit.llm.lora import LoRAConfig
from meit.llm.mllama import VisionLLMConfig
from meit.util.errors import UserFacingError


def run_config(**model) -> RunConfig:
    return RunConfig(model=ModelConfig(**model))


def test_the_default_config_passes_unchanged():
    cfg = RunConfig()
    checked, notes = check_run_config(cfg)
    assert checked is cfg and notes == []


@pytest.mark.parametrize("name", encoder_names())
def test_every_encoder_declares_its_keywords_and_input_kind(name):
    accepted, open_ended = factory_keywords(ENCODERS.get(name))
    assert not open_ended and "n_tokens" in accepted
    kind = input_kind(ENCODERS.get(name))
    assert kind in ("signal", "image")
    if name != "pretrained_vision":  # needs a path or config
        assert build_encoder(name, n_tokens=1).input_kind == kind


@pytest.mark.parametrize("name", sorted(FUSIONS.names()))
def test_every_fusion_declares_its_keywords(name):
    accepted, open_ended = factory_keywords(FUSIONS.get(name))
    assert not open_ended and {"projector", "normalize", "projector_mid_dim"} <= accepted


@pytest.mark.parametrize(("model", "flag", "match"), [
    ({"encoder_kwargs": {"n_tokenz": 8}}, "--model.encoder_kwargs", "takes no 'n_tokenz'; it takes: .*n_tokens"),
    ({"xattn": CrossAttentionConfig(every=2)}, "--model.xattn.every", "gated_xattn only"),
    ({"fusion": "gated_xattn", "xattn": CrossAttentionConfig(every=0)}, "--model.xattn.every", "integer >= 1"),
    ({"fusion": "gated_xattn", "xattn": CrossAttentionConfig(n_heads=0)}, "--model.xattn.n_heads", "integer >= 1"),
    ({"projector": ProjectorConfig(mid_dim=0)}, "--model.projector.mid_dim", "integer >= 1"),
    ({"encoder": "resnet_tiny_1d"}, "--model.encoder", "unknown encoder 'resnet_tiny_1d'; choose from"),
    ({"image_model": "mllama"}, "--model.image_model", "add --model.branch image"),
    ({"encoder": "vit_tiny"}, "--model.encoder", "vit_tiny reads images"),
    ({"branch": "image", "encoder": "resnet18_1d"}, "--model.encoder", "needs an image encoder"),
    ({"lora": LoRAConfig(r=0)}, "--model.lora.r", "integer >= 1"),
    ({"lora": LoRAConfig(dropout=1.0)}, "--model.lora.dropout", r"in \[0, 1\)"),
    ({"lora": LoRAConfig(targets=[])}, "--model.lora.targets", "non-empty list"),
    ({"branch": "image", "image_model": "mllama", "vision_llm": VisionLLMConfig(lora=LoRAConfig(r=0))},
     "--model.vision_llm.lora.r", "integer >= 1"),
    ({"branch": "image", "image_model": "mllama", "vision_llm": VisionLLMConfig(lora=LoRAConfig(targets=["text"]))},
     "--model.vision_llm.lora.targets", "unknown towers"),
    ({"recipe": "meit", "aux_label_loss_weight": 0.5}, "--model.aux_label_loss_weight", ""),
])
def test_bad_model_settings_name_their_flag(model, flag, match):
    with pytest.raises(UserFacingError, match=match) as error:
        check_run_config(run_config(**model))
    assert error.value.where == flag


@pytest.mark.parametrize(("group", "field", "value", "flag"), [
    ("data", "batch_size", 0, "--data.batch_size"),
    ("data", "sampling_rate", -100, "--data.sampling_rate"),
    ("data", "num_workers", -1, "--data.num_workers"),
    ("optim", "lr", 0.0, "--optim.lr"),
    ("optim", "warmup_ratio", 1.0, "--optim.warmup_ratio"),
    ("optim", "betas", (0.9, 1.5), "--optim.betas"),
    ("test", "limit", 0, "--test.limit"),
    ("test", "max_new_tokens", 0, "--test.max_new_tokens"),
])
def test_bad_data_optim_and_test_settings_name_their_flag(group, field, value, flag):
    groups = {"data": DataConfig(), "optim": OptimConfig(), "test": TestConfig()}
    groups[group] = replace(groups[group], **{field: value})
    with pytest.raises(UserFacingError, match="must be") as error:
        check_run_config(RunConfig(**groups))
    assert error.value.where == flag


def test_a_bad_image_size_is_refused_on_the_image_branch_only():
    cfg = RunConfig(model=ModelConfig(branch="image", encoder="cnn_small"),
                    data=DataConfig(image=ImageInputConfig(size=[8, 288])))
    with pytest.raises(UserFacingError, match=r"\[H, W\] with sides >= 16") as error:
        check_run_config(cfg)
    assert error.value.where == "--data.image.size"
    check_run_config(replace(cfg, model=ModelConfig()))  # the signal branch renders nothing


def test_the_image_branch_alone_picks_the_image_encoder():
    cfg = run_config(branch="image")
    checked, notes = check_run_config(cfg)
    assert checked.model.encoder == "cnn_small" and checked.model.encoder_kwargs == {"n_tokens": 8}
    assert cfg.model.encoder == "resnet_small_1d"  # the given config is not modified
    assert len(notes) == 1 and "cnn_small" in notes[0]
    named, notes = check_run_config(run_config(branch="image", encoder="vit_tiny"))
    assert named.model.encoder == "vit_tiny" and notes == []


def test_a_typo_fails_before_any_data_or_backbone_is_built(tmp_path, capsys):
    from meit.fit import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--model.encoder_kwargs", '{"n_tokenz": 8}', "--run_dir", str(tmp_path / "run"),
              "--data.cache_dir", str(tmp_path / "cache")])
    assert exit_info.value.code == 2
    assert "error: --model.encoder_kwargs: encoder resnet_small_1d takes no 'n_tokenz'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # no run directory, no data cache, no backbone


FIT_CONFIGS = sorted(p for p in (Path(__file__).parent.parent / "configs").glob("*.yaml")
                     if p.stem not in ("compare", "zeroshot"))  # those two are experiment files, not fit configs


@pytest.mark.parametrize("config", FIT_CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_fit_config_passes_the_checks(config, tmp_path):
    from meit.fit import MEITCLI

    cpu = ["--trainer.accelerator", "cpu", "--trainer.precision", "32", "--trainer.strategy", "auto",
           "--trainer.devices", "1"]  # the GPU presets' trainer settings cannot be built on a CPU-only machine
    cli = MEITCLI(["--config", str(config), "--run_dir", str(tmp_path / "run"), *cpu])
    assert cli.run_config == check_run_config(cli.run_config)[0]
    assert not any(tmp_path.iterdir())  # parsing and checking write nothing


def test_a_config_saved_before_the_lora_group_still_loads():
    saved = {"model": {"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.2,
                       "vision_llm": {"lora_r": 4, "lora_towers": ["language_model"]}}}
    cfg = run_config_from_dict(saved)
    assert (cfg.model.lora.r, cfg.model.lora.alpha, cfg.model.lora.dropout) == (8, 16, 0.2)
    assert (cfg.model.vision_llm.lora.r, cfg.model.vision_llm.lora.targets) == (4, ["language_model"])
    assert saved["model"]["lora_r"] == 8 and "lora" not in saved["model"]  # the caller's dict is left as it was


def test_a_config_saved_before_the_groups_loads_as_the_same_run(capsys):
    from test_fit import print_config

    saved = yaml.safe_load((Path(__file__).parent / "fixtures" / "config_before_groups.yaml").read_text())
    same = print_config(capsys, "--model.fusion", "gated_xattn", "--model.xattn.every", "2", "--model.projector.kind",
                        "linear", "--model.projector.normalize", "null", "--model.backbone.embedded.hidden_size", "128",
                        "--model.backbone.gradient_checkpointing", "true", "--data.cache_dir", "/tmp/old-cache",
                        "--data.max_report_tokens", "48", "--data.prompt.instruction", "describe:",
                        "--data.image.size", "[64, 80]", "--data.image.render", '{"dpi": 30}', "--model.lora.r", "8")
    assert run_config_from_dict(saved) == run_config_from_dict(same)
    assert run_config_from_dict(saved).model.fusion_kwargs() == {"projector": "linear", "every": 2, "gate_init": 0.0}


def test_an_old_mllama_report_limit_keeps_its_meaning():
    saved = {"model": {"branch": "image", "image_model": "mllama", "vision_llm": {"max_report_tokens": 16}},
             "data": {"max_length": 64}}
    assert run_config_from_dict(saved).data.max_report_tokens == 17  # 16 report tokens, then the end of turn


@pytest.mark.parametrize(("args", "where", "match"), [
    (["--model.cache_dir", "/x"], "--model.cache_dir", "is now --data.cache_dir"),
    (["--model.fusion_kwargs.normalize=true"], "--model.fusion_kwargs.normalize", "is now --model.projector.normalize"),
    (["--data.render", "{}"], "--data.render", "is now --data.image.render"),
])
def test_an_old_flag_names_its_new_place(args, where, match, tmp_path, capsys):
    from meit.fit import main

    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--run_dir", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {where}: {match}" in err and not any(tmp_path.iterdir())


def test_an_old_config_file_names_the_file_and_the_moves(tmp_path, capsys):
    from meit.fit import main

    old = tmp_path / "old.yaml"
    old.write_text("model:\n  gradient_checkpointing: true\n  fusion_kwargs:\n    normalize: true\n")
    with pytest.raises(SystemExit):
        main(["--config", str(old), "--run_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert f"error: {old}: uses keys of the older flat config" in err
    assert "model.gradient_checkpointing is now model.backbone.gradient_checkpointing" in err
    assert "model.fusion_kwargs.normalize is now model.projector.normalize" in err


@pytest.mark.parametrize(("data", "flag", "match"), [
    (DataConfig(image=ImageInputConfig(render={"dpii": 30})), "--data.image.render", "takes no 'dpii'"),
    (DataConfig(image=ImageInputConfig(render={"artefacts": {"smudge": 1.0}})), "--data.image.render", "smudge"),
    (DataConfig(max_report_tokens=1), "--data.max_report_tokens", "integer >= 2"),
    (DataConfig(prompt=PromptConfig(template="{instruction} {record}")), "--data.prompt.template", "{instruction}"),
])
def test_bad_data_options_are_refused_at_parse_time(data, flag, match):
    cfg = RunConfig(model=ModelConfig(branch="image", encoder="cnn_small"), data=data)
    with pytest.raises(UserFacingError, match=re.escape(match)) as error:
        check_run_config(cfg)
    assert error.value.where == flag


def test_the_label_loss_weight_defaults_to_the_recipes_own():
    assert ModelConfig().aux_label_loss_weight == 0.5  # the aligned recipe of the signal branch
    assert ModelConfig(recipe="meit").aux_label_loss_weight == 0.0  # MEIT's: the LM loss alone
    assert ModelConfig(branch="image", encoder="cnn_small").aux_label_loss_weight == 0.0  # trains as MEIT's recipe
    assert ModelConfig(aux_label_loss_weight=0.25).aux_label_loss_weight == 0.25
    check_run_config(run_config(recipe="meit"))  # `--model.recipe meit` alone is valid
