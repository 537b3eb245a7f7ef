"""The `aligned` recipe (meit.tasks.align): stage 1 trains the encoder on the labels, resumes, and `--model.recipe meit`
skips it; the auxiliary label loss trains during instruction tuning."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_fit import tiny_args
from test_fusion import tiny_llm

from meit.config import DataConfig, ModelConfig
from meit.encoders import build_encoder
from meit.fit import main
from meit.fusion import build_fusion
from meit.tasks.align import STAGE1_FILE, LabelHead, label_space, label_targets, pretrain_encoder, record_labels


class SignDataset:
    """Records whose label `POS`/`NEG` is the sign of lead I's offset (learnable from the signal), one without
    codes whose report names a finding (labelled by `extract_labels`)."""

    def __init__(self, n: int = 64) -> None:
        gen = torch.Generator().manual_seed(0)
        self.signals = torch.randn(n, 12, 200, generator=gen) * 0.3
        sign = torch.arange(n) % 2 == 0
        self.signals[:, 0] += torch.where(sign, 1.0, -1.0)[:, None]
        self.records = [SimpleNamespace(labels={"POS": 100.0} if s else {"NEG": 100.0}, report="x") for s in sign]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        r = self.records[i]
        return {"ecg": self.signals[i], "labels": sorted(r.labels), "report": r.report, "id": i}


def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    encoder = build_encoder("resnet_small_1d", widths=[8, 8, 16, 16], n_tokens=2)
    return build_fusion("prefix_kv", tiny_llm(), encoder, normalize=False)


def stage1_config(epochs: int) -> tuple[ModelConfig, DataConfig]:
    return ModelConfig(encoder_pretrain_epochs=epochs, encoder_pretrain_lr=3e-3), DataConfig(batch_size=16)


def test_labels_come_from_codes_or_from_the_report():
    assert record_labels(["IMI", "NORM"], "sinus rhythm. normal ecg.") == {"IMI", "NORM"}
    assert record_labels([], "sinus rhythm. left bundle branch block.") >= {"CLBBB"}
    assert label_targets([{"B"}, {"A", "C"}, set()], ["A", "B"]).tolist() == [[0, 1], [1, 0], [0, 0]]
    assert label_space(SignDataset(4)) == ["NEG", "POS"]


def test_stage1_trains_the_encoder_and_resumes(tmp_path):
    data = SignDataset()
    model_cfg, data_cfg = stage1_config(8)
    net = tiny_net()
    head = LabelHead(net.backbone.hidden_size, label_space(data))
    before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    summary = pretrain_encoder(net, head, data, model_cfg, data_cfg, tmp_path, seed=0)
    assert summary["resumed_from_epoch"] == 0 and len(summary["losses"]) == 8
    assert summary["losses"][-1] < 0.5 * summary["losses"][0]  # the BCE drops: the encoder learns the sign
    assert any(not torch.equal(before[k], v) for k, v in net.encoder.state_dict().items())
    with torch.no_grad():
        net.eval()
        pred = head(net.encode_ecg(data.signals)).argmax(dim=1)  # space ["NEG", "POS"]
    truth = torch.tensor([int("POS" in r.labels) for r in data.records])
    assert (pred == truth).float().mean() > 0.9
    assert (tmp_path / STAGE1_FILE).is_file()

    model_cfg, data_cfg = stage1_config(3)  # other settings: the saved state is not reused
    fresh = tiny_net()
    again = pretrain_encoder(fresh, LabelHead(fresh.backbone.hidden_size, label_space(data)), data, model_cfg,
                             data_cfg, tmp_path, seed=0)
    assert again["resumed_from_epoch"] == 0
    resumed_net = tiny_net()  # the same settings again: stage 1 is done, nothing is trained
    resumed = pretrain_encoder(resumed_net, LabelHead(resumed_net.backbone.hidden_size, label_space(data)), data,
                               model_cfg, data_cfg, tmp_path, seed=0)
    assert resumed["resumed_from_epoch"] == 3 and resumed["losses"] == again["losses"]
    for k, v in fresh.encoder.state_dict().items():
        assert torch.equal(v, resumed_net.encoder.state_dict()[k]), k


def test_stage1_resumes_after_an_interrupted_epoch(tmp_path):
    data = SignDataset()
    model_cfg, data_cfg = stage1_config(3)
    whole = tiny_net()
    pretrain_encoder(whole, LabelHead(whole.backbone.hidden_size, label_space(data)), data, model_cfg, data_cfg,
                     tmp_path / "whole", seed=1)
    calls = {"n": 0}
    interrupted = tiny_net()
    head = LabelHead(interrupted.backbone.hidden_size, label_space(data))
    original = head.forward

    def fail_in_epoch_two(tokens):
        calls["n"] += 1
        if calls["n"] > len(data) // data_cfg.batch_size + 1:
            raise KeyboardInterrupt
        return original(tokens)

    head.forward = fail_in_epoch_two
    with pytest.raises(KeyboardInterrupt):
        pretrain_encoder(interrupted, head, data, model_cfg, data_cfg, tmp_path / "cut", seed=1)
    second = tiny_net()
    summary = pretrain_encoder(second, LabelHead(second.backbone.hidden_size, label_space(data)), data, model_cfg,
                               data_cfg, tmp_path / "cut", seed=1)
    assert summary["resumed_from_epoch"] == 1
    for k, v in whole.encoder.state_dict().items():  # the resumed stage 1 ends where the uninterrupted one did
        torch.testing.assert_close(second.encoder.state_dict()[k], v, rtol=1e-5, atol=1e-6)


def test_recipe_flags_are_validated_before_any_work(tmp_path, capsys):
    for flags, message in (
            (["--model.recipe", "meit", "--model.aux_label_loss_weight", "0.5"],
             "--model.aux_label_loss_weight: needs --model.recipe aligned"),
            (["--model.encoder_pretrain_epochs", "-1"], "--model.encoder_pretrain_epochs: must be an integer >= 0"),
            (["--model.encoder_pretrain_lr", "0"], "--model.encoder_pretrain_lr: must be a positive number")):
        with pytest.raises(SystemExit) as exit_info:
            main(tiny_args(tmp_path / "cache", tmp_path / "run", *flags))
        assert exit_info.value.code == 2 and f"error: {message}" in capsys.readouterr().err
        assert not (tmp_path / "cache").exists()  # failed before the data were written
    with pytest.raises(SystemExit):
        main(tiny_args(tmp_path / "cache", tmp_path / "run", "--model.recipe", "contrastive"))
    assert "aligned" in capsys.readouterr().err  # jsonargparse names the choices


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("align") / "cache"


def test_aligned_fit_runs_stage1_and_the_aux_loss(cache, tmp_path, capsys):
    run = main(tiny_args(cache, tmp_path / "aligned", "--model.encoder_pretrain_epochs", "3",
                         "--model.aux_label_loss_weight", "1.0"))
    out = capsys.readouterr().out
    assert "[meit] stage 1 epoch 3/3: label loss" in out
    info = json.loads((run / "run.json").read_text())
    assert info["stage1"]["epochs"] == 3 and info["stage1"]["losses"][-1] < info["stage1"]["losses"][0]
    assert "stage1_s" in info["timings"] and (run / STAGE1_FILE).is_file()
    rows = [row for f in (run / "lightning_logs").rglob("metrics.csv") for row in csv.DictReader(f.open())]
    assert any(row.get("train/label_loss") for row in rows)  # the auxiliary loss trained in stage 2
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert any(k.startswith("label_head.") for k in ckpt["state_dict"])  # the head resumes with the run


def test_meit_recipe_skips_stage1(cache, tmp_path, capsys):
    run = main(tiny_args(cache, tmp_path / "meit", "--model.recipe", "meit"))
    assert "stage 1" not in capsys.readouterr().out
    info = json.loads((run / "run.json").read_text())
    assert "stage1" not in info and "stage1_s" not in info["timings"] and not (run / STAGE1_FILE).exists()


def test_stage1_leaves_the_global_rng_alone():
    data = SignDataset(32)
    net = tiny_net()
    head = LabelHead(net.backbone.hidden_size, label_space(data))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    pretrain_encoder(net, head, data, *stage1_config(1), None, seed=0)
    assert torch.equal(torch.get_rng_state(), state)  # stage 2's dropout draws are those of a run without stage 1
