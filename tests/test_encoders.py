"""Shape contract of every registered encoder, and the 1-D ResNet presets."""

import pytest
import torch

from meit.encoders import build_encoder, encoder_names

SIGNAL_SIZE = (1000,)
IMAGE_SIZE = (64, 64)


@pytest.mark.parametrize("name", encoder_names())
def test_output_shape_matches_forward(name):
    encoder = build_encoder(name).eval()
    kind = encoder.input_kind
    assert kind in ("signal", "image")
    size = getattr(encoder, "example_input_size", SIGNAL_SIZE if kind == "signal" else IMAGE_SIZE)
    x = torch.randn(2, encoder.in_channels, *size)
    with torch.no_grad():
        out = encoder(x)
    n_tokens, dim = encoder.output_shape(size)
    assert tuple(out.shape) == (2, n_tokens, dim)
    assert dim == encoder.out_dim
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "dim"), [("resnet18_1d", 512), ("resnet34_1d", 512), ("resnet50_1d", 2048)])
def test_paper_presets_output_dims(name, dim):
    assert build_encoder(name).output_shape(5000) == (1, dim)


@pytest.mark.parametrize("n_tokens", [1, 4, 16])
def test_token_sequence_output(n_tokens):
    encoder = build_encoder("resnet_small_1d", n_tokens=n_tokens).eval()
    out = encoder(torch.randn(3, 12, 1000))
    assert tuple(out.shape) == (3, n_tokens, 128) == (3, *encoder.output_shape((1000,)))


def test_global_pool_alias_and_downsampling():
    encoder = build_encoder("resnet_small_1d", pool="global", n_tokens=8)
    assert encoder.output_shape(1000) == (1, 128)
    assert encoder.feature_length(1024) == 1024 // 32
    assert build_encoder("resnet_small_1d", stem_pool=False).feature_length(1024) == 1024 // 16


def test_encoder_bad_input_and_unknown_name():
    encoder = build_encoder("resnet_small_1d")
    with pytest.raises(ValueError, match=r"expected \(B, 12, T\)"):
        encoder(torch.randn(2, 8, 1000))
    with pytest.raises(ValueError, match="unknown encoder: nope; choose from"):
        build_encoder("nope")


def test_zero_signal_is_finite_and_gradients_reach_the_stem():
    encoder = build_encoder("resnet_small_1d", n_tokens=2)
    out = encoder(torch.zeros(2, 12, 500))
    assert torch.isfinite(out).all()
    encoder(torch.randn(2, 12, 500)).sum().backward()
    assert encoder.stem[0].weight.grad.abs().sum() > 0
