"""MEIT's paper presets build MEIT's encoder and projector widths (ResNet-50 1-D, 2048-d; Linear(2048, 2048) ...)."""

from __future__ import annotations

import pytest
import yaml
from test_fit import REPO
from test_fusion import tiny_llm
from torch import nn

from meit.config import ModelConfig, ProjectorConfig
from meit.encoders import build_encoder
from meit.fusion import build_fusion

PAPER_PRESETS = sorted((REPO / "configs").glob("meit_*.yaml"))


@pytest.mark.parametrize("preset", PAPER_PRESETS, ids=lambda p: p.stem)
def test_paper_preset_encoder_and_projector_match_meit(preset):
    model = yaml.safe_load(preset.read_text())["model"]
    encoder = build_encoder(model["encoder"], **model.get("encoder_kwargs", {}))
    assert encoder.out_dim == 2048 and encoder.n_tokens == 1
    options = ModelConfig(fusion=model["fusion"], projector=ProjectorConfig(**model["projector"])).fusion_kwargs()
    net = build_fusion(model["fusion"], tiny_llm(), encoder, **options)  # hidden 64, head 16
    linears = [m for m in net.projector.net if isinstance(m, nn.Linear)]
    norms = [m for m in net.projector.net if not isinstance(m, (nn.Linear, nn.ReLU))]
    assert [(m.in_features, m.out_features) for m in linears] == [(2048, 2048), (2048, 16)]
    assert len(norms) == 2 and net.projector.normalize and net.projector.repeats == 4


def test_there_are_paper_presets():
    assert len(PAPER_PRESETS) == 3


@pytest.mark.parametrize("preset", PAPER_PRESETS, ids=lambda p: p.stem)
def test_paper_presets_name_meits_recipe(preset, capsys):
    from test_fit import print_config

    assert yaml.safe_load(preset.read_text())["model"]["recipe"] == "meit"  # explicit, whatever the CPU default
    model = print_config(capsys, "--config", str(preset))["model"]
    assert (model["recipe"], model["aux_label_loss_weight"]) == ("meit", 0.0)  # the LM loss alone trains the encoder
