"""Small image encoders for rendered ECG pages: a tiny ViT, a small 2-D ResNet, and any HF vision tower.

All map (B, 3, H, W) images in [0, 1] to (B, n_tokens, out_dim) tokens for the same fusions as the
signal encoders (`input_kind = "image"`). One token is the [CLS] token (ViT) or global average
pooling (CNN); k > 1 tokens pool the feature map adaptively onto a rows x cols grid with
rows * cols = k (`token_grid`), which keeps the page's row structure (the lead rows) visible.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from meit.encoders.registry import register

POOLS = ("cls", "global", "adaptive", "all")


def token_grid(n_tokens: int) -> tuple[int, int]:
    """(rows, cols) with rows * cols = n_tokens and rows <= cols as close as possible (8 -> (2, 4), 12 -> (3, 4))."""
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be >= 1, got {n_tokens}")
    rows = max(d for d in range(1, math.isqrt(n_tokens) + 1) if n_tokens % d == 0)
    return rows, n_tokens // rows


def _resolve_pool(pool: str | None, n_tokens: int, single: str) -> tuple[str, int]:
    """The pooling mode and token count; `single` is the mode used for one token when `pool` is None."""
    if pool is not None and pool not in POOLS:
        raise ValueError(f"unknown pool: {pool}; choose from {', '.join(POOLS)}")
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be >= 1, got {n_tokens}")
    mode = pool or (single if n_tokens == 1 else "adaptive")
    return mode, 1 if mode in ("cls", "global") else int(n_tokens)


def _check_image(x: torch.Tensor, in_channels: int, min_size: int) -> None:
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"expected (B, {in_channels}, H, W) images, got {tuple(x.shape)}")
    if min(x.shape[-2:]) < min_size:
        raise ValueError(f"image {tuple(x.shape[-2:])} is smaller than this encoder's minimum {min_size} px")


def _pool_grid(feats: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """(B, D, h, w) feature map -> (B, n_tokens, D) by adaptive average pooling onto `token_grid(n_tokens)`."""
    return F.adaptive_avg_pool2d(feats, token_grid(n_tokens)).flatten(2).transpose(1, 2)


def sincos_2d(rows: int, cols: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings (rows * cols, dim), as in MAE; any grid size works."""
    if dim % 4:
        raise ValueError(f"embedding dim must be divisible by 4 for 2-D sin-cos positions, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    ys, xs = torch.meshgrid(
        torch.arange(rows, dtype=torch.float32), torch.arange(cols, dtype=torch.float32), indexing="ij"
    )
    parts = [f(c.reshape(-1, 1) * omega) for c in (ys, xs) for f in (torch.sin, torch.cos)]
    return torch.cat(parts, dim=1)


class ViTTiny(nn.Module):
    """A small Vision Transformer: patch embedding, 2-D sin-cos positions, pre-norm transformer layers.

    Args:
        patch_size: square patch side in pixels (inputs need not be multiples: the remainder is cropped).
        dim: token width (`out_dim`); divisible by 4 and by `heads`.
        depth: transformer layers.
        heads: attention heads.
        mlp_ratio: hidden width of the MLP relative to `dim`.
        dropout: dropout in attention and MLP.
        in_channels: image channels.
        n_tokens: 1 = the [CLS] token; k > 1 = patch tokens pooled onto a `token_grid(k)`.
        pool: "cls", "global" (mean of patch tokens), "adaptive" (k tokens) or "all" (every patch
            token; the count then depends on the input size); None picks "cls" / "adaptive" by `n_tokens`.
    """

    input_kind = "image"
    example_input_size = (224, 288)

    def __init__(
        self,
        patch_size: int = 16,
        dim: int = 192,
        depth: int = 4,
        heads: int = 3,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        in_channels: int = 3,
        n_tokens: int = 1,
        pool: str | None = None,
    ) -> None:
        super().__init__()
        self.pool_mode, self.n_tokens = _resolve_pool(pool, n_tokens, single="cls")
        self.in_channels, self.patch_size, self.out_dim = in_channels, patch_size, dim
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, int(dim * mlp_ratio), dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self._positions: dict[tuple[int, int], torch.Tensor] = {}

    def grid(self, input_size: Sequence[int]) -> tuple[int, int]:
        """Patch grid (rows, cols) for an (H, W) input."""
        return int(input_size[0]) // self.patch_size, int(input_size[1]) // self.patch_size

    def _position(self, rows: int, cols: int, device: torch.device) -> torch.Tensor:
        if (rows, cols) not in self._positions:
            self._positions[(rows, cols)] = sincos_2d(rows, cols, self.out_dim)
        return self._positions[(rows, cols)].to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encodes (B, 3, H, W) images in [0, 1] into (B, n_tokens, dim)."""
        _check_image(x, self.in_channels, self.patch_size)
        feats = self.patch_embed(x * 2.0 - 1.0)  # (B, D, rows, cols)
        b, d, rows, cols = feats.shape
        tokens = feats.flatten(2).transpose(1, 2) + self._position(rows, cols, x.device).to(feats.dtype)
        tokens = self.norm(self.blocks(torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)))
        cls, patches = tokens[:, :1], tokens[:, 1:]
        if self.pool_mode == "cls":
            return cls
        if self.pool_mode == "global":
            return patches.mean(dim=1, keepdim=True)
        if self.pool_mode == "all":
            return patches
        return _pool_grid(patches.transpose(1, 2).reshape(b, d, rows, cols), self.n_tokens)

    def output_shape(self, input_size: Sequence[int]) -> tuple[int, int]:
        """(n_tokens, dim) for an (H, W) input."""
        rows, cols = self.grid(input_size)
        if rows < 1 or cols < 1:
            raise ValueError(f"input {tuple(input_size)} is smaller than one {self.patch_size}-px patch")
        return (rows * cols if self.pool_mode == "all" else self.n_tokens), self.out_dim


class BasicBlock2d(nn.Module):
    """Two 3x3 convolutions with a residual connection."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        self.shortcut = (
            nn.Identity()
            if in_ch == out_ch and stride == 1
            else nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResNet2d(nn.Module):
    """A ResNet-style 2-D CNN: stem conv (7x7, s2) + max-pool, stages of basic blocks, 32x downsampling.

    Args:
        layers: blocks per stage.
        widths: channels per stage (`out_dim` = widths[-1]).
        in_channels: image channels.
        n_tokens: 1 = global average pooling; k > 1 = adaptive pooling onto a `token_grid(k)`.
        pool: "global", "adaptive" (k tokens) or "all" (every feature-map cell); None picks by `n_tokens`.
    """

    input_kind = "image"
    example_input_size = (224, 288)

    def __init__(
        self,
        layers: Sequence[int] = (1, 1, 1, 1),
        widths: Sequence[int] = (32, 64, 128, 256),
        in_channels: int = 3,
        n_tokens: int = 1,
        pool: str | None = None,
    ) -> None:
        super().__init__()
        if len(layers) != len(widths):
            raise ValueError(f"layers {tuple(layers)} and widths {tuple(widths)} must have the same length")
        if pool == "cls":
            raise ValueError("a CNN has no [CLS] token; choose from global, adaptive, all")
        self.pool_mode, self.n_tokens = _resolve_pool(pool, n_tokens, single="global")
        self.in_channels, self.out_dim = in_channels, int(widths[-1])
        self.strides = [1] + [2] * (len(widths) - 1)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages, ch = [], widths[0]
        for n_blocks, width, stride in zip(layers, widths, self.strides, strict=True):
            stages.append(
                nn.Sequential(
                    *(BasicBlock2d(ch if i == 0 else width, width, stride if i == 0 else 1) for i in range(n_blocks))
                )
            )
            ch = width
        self.stages = nn.Sequential(*stages)

    def feature_size(self, input_size: Sequence[int]) -> tuple[int, int]:
        """(h, w) of the final feature map for an (H, W) input."""

        def shrink(n: int) -> int:
            n = (n + 6 - 7) // 2 + 1
            n = (n + 2 - 3) // 2 + 1
            for stride in self.strides:
                n = (n + 2 - 3) // stride + 1
            return n

        return shrink(int(input_size[0])), shrink(int(input_size[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encodes (B, 3, H, W) images in [0, 1] into (B, n_tokens, out_dim)."""
        _check_image(x, self.in_channels, 8)
        feats = self.stages(self.stem(x * 2.0 - 1.0))
        if self.pool_mode == "all":
            return feats.flatten(2).transpose(1, 2)
        return _pool_grid(feats, self.n_tokens)

    def output_shape(self, input_size: Sequence[int]) -> tuple[int, int]:
        """(n_tokens, out_dim) for an (H, W) input."""
        if min(int(input_size[0]), int(input_size[1])) < 8:
            raise ValueError(f"input {tuple(input_size)} is smaller than this encoder's minimum 8 px")
        h, w = self.feature_size(input_size)
        return (h * w if self.pool_mode == "all" else self.n_tokens), self.out_dim


class PretrainedVision(nn.Module):
    """A Hugging Face vision tower (ViT, CLIP / SigLIP vision, DINOv2, ...) loaded by local path or hub id.

    Args:
        path: directory or hub id for `AutoModel.from_pretrained`; None builds a randomly
            initialised ViT from `config` (an architecture trained from scratch).
        config: `ViTConfig` keyword arguments used when `path` is None.
        n_tokens: 1 = the first ([CLS]) token; k > 1 = the token sequence average-pooled to k tokens.
        pool: "cls", "global" (mean token), "adaptive" (k tokens) or "all" (every token).
        freeze: keep the tower's weights fixed and in eval mode (default: frozen when loaded from `path`).
        image_mean: per-channel mean for normalisation (default: the checkpoint's
            `preprocessor_config.json`, else 0.5).
        image_std: per-channel std (same defaults).
    """

    input_kind = "image"
    in_channels = 3
    example_input_size = (64, 64)

    def __init__(
        self,
        path: str | None = None,
        config: dict[str, Any] | None = None,
        n_tokens: int = 1,
        pool: str | None = None,
        freeze: bool | None = None,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        from transformers import AutoModel, ViTConfig, ViTModel

        self.pool_mode, self.n_tokens = _resolve_pool(pool, n_tokens, single="cls")
        if path is not None:
            model = AutoModel.from_pretrained(path)
        else:
            defaults = dict(
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=128,
                image_size=224,
                patch_size=16,
            )
            model = ViTModel(ViTConfig(**{**defaults, **(config or {})}), add_pooling_layer=False)
        self.tower = getattr(model, "vision_model", model)
        tower_config = getattr(self.tower, "config", model.config)
        self.out_dim = int(getattr(tower_config, "hidden_size"))
        self.frozen = path is not None if freeze is None else freeze
        if self.frozen:
            self.tower.requires_grad_(False)
            self.tower.eval()
        mean, std = _preprocessing(path, image_mean, image_std)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self._interpolate = "interpolate_pos_encoding" in inspect.signature(self.tower.forward).parameters

    def train(self, mode: bool = True) -> PretrainedVision:
        """Sets train/eval mode; a frozen tower stays in eval mode (no dropout, fixed norms)."""
        super().train(mode)
        if self.frozen:
            self.tower.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encodes (B, 3, H, W) images in [0, 1] into (B, n_tokens, hidden_size)."""
        _check_image(x, 3, 1)
        kwargs = {"interpolate_pos_encoding": True} if self._interpolate else {}
        pixels = ((x - self.mean) / self.std).to(next(self.tower.parameters()).dtype)
        tokens = self.tower(pixel_values=pixels, **kwargs).last_hidden_state
        if self.pool_mode == "cls":
            return tokens[:, :1]
        if self.pool_mode == "global":
            return tokens.mean(dim=1, keepdim=True)
        if self.pool_mode == "all":
            return tokens
        return F.adaptive_avg_pool1d(tokens.transpose(1, 2), self.n_tokens).transpose(1, 2)

    def output_shape(self, input_size: Sequence[int]) -> tuple[int, int]:
        """(n_tokens, hidden_size) for an (H, W) input ("all": measured with one zero image)."""
        if self.pool_mode != "all":
            return self.n_tokens, self.out_dim
        with torch.no_grad():
            probe = torch.zeros(1, 3, int(input_size[0]), int(input_size[1]), device=self.mean.device)
            return int(self(probe).shape[1]), self.out_dim


def _preprocessing(
    path: str | None, mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[list[float], list[float]]:
    """Normalisation constants: explicit values, else the checkpoint's preprocessor_config.json, else 0.5."""
    saved: dict[str, Any] = {}
    config_file = Path(path) / "preprocessor_config.json" if path is not None else None
    if config_file is not None and config_file.is_file():
        saved = json.loads(config_file.read_text())
    mean = list(mean if mean is not None else saved.get("image_mean", [0.5, 0.5, 0.5]))
    std = list(std if std is not None else saved.get("image_std", [0.5, 0.5, 0.5]))
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"image_mean and image_std need 3 values, got {mean} and {std}")
    return mean, std


@register("vit_tiny")
def vit_tiny(**kwargs: Any) -> ViTTiny:
    """ViT: 16-px patches, dim 192, 4 layers, 3 heads (about 1.9 M parameters)."""
    return ViTTiny(**kwargs)


@register("cnn_small")
def cnn_small(**kwargs: Any) -> ResNet2d:
    """2-D ResNet: basic blocks 1-1-1-1, widths 32/64/128/256 (about 1.2 M parameters, 256-d output)."""
    return ResNet2d(**kwargs)


@register("resnet18_2d")
def resnet18_2d(**kwargs: Any) -> ResNet2d:
    """2-D ResNet-18 layout: basic blocks 2-2-2-2, widths 64/128/256/512 (512-d output)."""
    kwargs.setdefault("layers", (2, 2, 2, 2))
    kwargs.setdefault("widths", (64, 128, 256, 512))
    return ResNet2d(**kwargs)


@register("pretrained_vision")
def pretrained_vision(**kwargs: Any) -> PretrainedVision:
    """Any HF vision tower by `path` (frozen by default), or a fresh tiny ViT from `config`."""
    return PretrainedVision(**kwargs)
