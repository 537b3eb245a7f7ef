"""Small image encoders: token shapes, pooling modes, gradients, and an HF vision tower loaded by path."""

from __future__ import annotations

import json

import pytest
import torch

from meit.encoders import build_encoder, encoder_names
from meit.encoders.image import sincos_2d, token_grid

SIZE = (224, 290)  # a letter-landscape page at encoder resolution


def test_image_encoders_are_registered():
    assert {"vit_tiny", "cnn_small", "resnet18_2d", "pretrained_vision"} <= set(encoder_names())
    for name in ("vit_tiny", "cnn_small"):
        encoder = build_encoder(name)
        assert encoder.input_kind == "image" and encoder.in_channels == 3


@pytest.mark.parametrize(("k", "grid"), [(1, (1, 1)), (4, (2, 2)), (8, (2, 4)), (12, (3, 4)), (7, (1, 7))])
def test_token_grid(k, grid):
    assert token_grid(k) == grid


@pytest.mark.parametrize("name", ["vit_tiny", "cnn_small"])
@pytest.mark.parametrize("n_tokens", [1, 8])
def test_token_counts_on_page_sized_inputs(name, n_tokens):
    encoder = build_encoder(name, n_tokens=n_tokens).eval()
    with torch.no_grad():
        out = encoder(torch.rand(2, 3, *SIZE))
    assert tuple(out.shape) == (2, *encoder.output_shape(SIZE)) == (2, n_tokens, encoder.out_dim)


def test_all_tokens_and_global_pooling():
    vit = build_encoder("vit_tiny", pool="all", dim=64, depth=1, heads=2).eval()
    assert vit.output_shape(SIZE) == (14 * 18, 64) == tuple(vit(torch.rand(1, 3, *SIZE)).shape[1:])
    cnn = build_encoder("cnn_small", pool="all").eval()
    assert cnn.output_shape(SIZE) == (7 * 10, 256) == tuple(cnn(torch.rand(1, 3, *SIZE)).shape[1:])
    assert build_encoder("vit_tiny", pool="global", n_tokens=8).output_shape(SIZE) == (1, 192)


def test_bad_inputs_and_options_fail_clearly():
    vit, cnn = build_encoder("vit_tiny"), build_encoder("cnn_small")
    with pytest.raises(ValueError, match=r"expected \(B, 3, H, W\)"):
        vit(torch.rand(2, 12, 500))
    with pytest.raises(ValueError, match="smaller than"):
        vit(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="smaller than"):
        cnn.output_shape((4, 4))
    with pytest.raises(ValueError, match="unknown pool: max; choose from"):
        build_encoder("cnn_small", pool="max")
    with pytest.raises(ValueError, match="no \\[CLS\\] token"):
        build_encoder("cnn_small", pool="cls")


@pytest.mark.parametrize("name", ["vit_tiny", "cnn_small"])
def test_gradients_reach_the_first_layer_and_outputs_depend_on_the_image(name):
    encoder = build_encoder(name, n_tokens=4)
    x = torch.rand(2, 3, 96, 128)
    out = encoder(x)
    out.sum().backward()
    first = encoder.patch_embed.weight if name == "vit_tiny" else encoder.stem[0].weight
    assert first.grad is not None and first.grad.abs().sum() > 0
    encoder.eval()
    with torch.no_grad():
        assert not torch.allclose(encoder(x)[0], encoder(x)[1])


def test_sincos_positions_differ_per_cell():
    pos = sincos_2d(3, 5, 16)
    assert pos.shape == (15, 16)
    assert torch.cdist(pos, pos).add(torch.eye(15)).min() > 0.1


def test_pretrained_vision_tower_loads_by_path(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, image_size=32, patch_size=8)
    tower = transformers.ViTModel(config, add_pooling_layer=False)
    tower.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.1, 0.2, 0.3],
                                                                   "image_std": [0.5, 0.6, 0.7]}))
    encoder = build_encoder("pretrained_vision", path=str(tmp_path), n_tokens=4)
    assert encoder.out_dim == 32 and encoder.frozen
    assert torch.equal(encoder.tower.embeddings.patch_embeddings.projection.weight,
                       tower.embeddings.patch_embeddings.projection.weight)
    assert encoder.mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.tower.training  # a frozen tower keeps dropout / norms fixed
    out = encoder(torch.rand(2, 3, 48, 64))  # not the checkpoint's 32x32: positions are interpolated
    assert tuple(out.shape) == (2, *encoder.output_shape((48, 64))) == (2, 4, 32)
    every = build_encoder("pretrained_vision", path=str(tmp_path), pool="all")
    assert every.output_shape((48, 64)) == (1 + 6 * 8, 32)
    trainable = build_encoder("pretrained_vision", path=str(tmp_path), freeze=False)
    assert all(p.requires_grad for p in trainable.parameters())
