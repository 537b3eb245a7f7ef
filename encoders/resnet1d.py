"""MEIT's temporal-convolution ECG encoder: a 1-D ResNet over (B, leads, T) signals.

Stem conv (k=7, s=2) + max-pool, four stages (widths 64/128/256/512 for the paper presets, stride 2 from the
second stage on), basic or bottleneck blocks, then average pooling of the time axis into 1 token (MEIT's global
pooling) or `n_tokens` tokens (adaptive pooling).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from meit.encoders.registry import register


class BasicBlock1d(nn.Module):
    """Two 3-tap convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv1d(in_ch, width, 3, stride, 1, bias=False),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
            nn.Conv1d(width, out_ch, 3, 1, 1, bias=False),
            nn.BatchNorm1d(out_ch),
        )
        self.shortcut = _shortcut(in_ch, out_ch, stride)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class Bottleneck1d(nn.Module):
    """1x1 reduce, 3-tap (strided) conv, 1x1 expand (x4), with a residual connection (ResNet-50)."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv1d(in_ch, width, 1, bias=False),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
            nn.Conv1d(width, width, 3, stride, 1, bias=False),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
            nn.Conv1d(width, out_ch, 1, bias=False),
            nn.BatchNorm1d(out_ch),
        )
        self.shortcut = _shortcut(in_ch, out_ch, stride)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def _shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Module:
    if in_ch == out_ch and stride == 1:
        return nn.Identity()
    return nn.Sequential(nn.Conv1d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm1d(out_ch))


BLOCKS: dict[str, type[nn.Module]] = {"basic": BasicBlock1d, "bottleneck": Bottleneck1d}


class ResNet1d(nn.Module):
    """1-D ResNet mapping an ECG (B, in_channels, T) to (B, n_tokens, out_dim).

    Args:
        block: "basic" or "bottleneck".
        layers: number of blocks per stage.
        widths: block width per stage (the output has `widths[-1] * expansion` channels).
        in_channels: number of leads.
        n_tokens: 1 = global average pooling over time (MEIT); k > 1 = adaptive average pooling into k tokens.
        pool: optional alias: "global" forces one token, "adaptive" uses `n_tokens`.
        stem_pool: max-pool (k=3, s=2) after the stem, as in the reference ResNet (32x downsampling; 16x without).
    """

    input_kind = "signal"

    def __init__(
        self,
        block: str = "basic",
        layers: Sequence[int] = (2, 2, 2, 2),
        widths: Sequence[int] = (64, 128, 256, 512),
        in_channels: int = 12,
        n_tokens: int = 1,
        pool: str | None = None,
        stem_pool: bool = True,
    ) -> None:
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"unknown block: {block}; choose from {', '.join(sorted(BLOCKS))}")
        if len(layers) != len(widths):
            raise ValueError(f"layers {tuple(layers)} and widths {tuple(widths)} must have the same length")
        if pool not in (None, "global", "adaptive"):
            raise ValueError(f"unknown pool: {pool}; choose from global, adaptive")
        self.n_tokens = 1 if pool == "global" else int(n_tokens)
        if self.n_tokens < 1:
            raise ValueError(f"n_tokens must be >= 1, got {n_tokens}")
        block_cls = BLOCKS[block]
        self.in_channels = in_channels
        self.stem_pool = stem_pool
        self.strides = [1] + [2] * (len(widths) - 1)
        stem_ch = widths[0]
        self.stem = nn.Sequential(
            nn.Conv1d(in_channels, stem_ch, 7, 2, 3, bias=False),
            nn.BatchNorm1d(stem_ch),
            nn.ReLU(inplace=True),
            nn.MaxPool1d(3, 2, 1) if stem_pool else nn.Identity(),
        )
        stages, ch = [], stem_ch
        for n_blocks, width, stride in zip(layers, widths, self.strides):
            blocks = []
            for i in range(n_blocks):
                blocks.append(block_cls(ch, width, stride if i == 0 else 1))
                ch = width * block_cls.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.out_dim = ch
        self.pool = nn.AdaptiveAvgPool1d(self.n_tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encodes (B, in_channels, T) into (B, n_tokens, out_dim)."""
        if x.ndim != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, T), got {tuple(x.shape)}")
        feats = self.stages(self.stem(x))
        return self.pool(feats).transpose(1, 2)

    def feature_length(self, t: int) -> int:
        """Length of the time axis after the stem and the stages, for an input of `t` samples."""
        t = _conv_len(t, 7, 2, 3)
        if self.stem_pool:
            t = _conv_len(t, 3, 2, 1)
        for stride in self.strides:
            t = _conv_len(t, 3, stride, 1)
        return t

    def output_shape(self, input_size: int | Sequence[int]) -> tuple[int, int]:
        """(n_tokens, out_dim) for an input of `input_size` = T or (T,) samples."""
        t = input_size if isinstance(input_size, int) else int(input_size[0])
        if self.feature_length(t) < 1:
            raise ValueError(f"input of {t} samples is too short for this encoder")
        return self.n_tokens, self.out_dim


def _conv_len(t: int, kernel: int, stride: int, padding: int) -> int:
    return (t + 2 * padding - kernel) // stride + 1


@register("resnet18_1d")
def resnet18_1d(**kwargs) -> ResNet1d:
    """ResNet-18 (basic blocks 2-2-2-2, widths 64..512, 512-d output)."""
    return ResNet1d("basic", (2, 2, 2, 2), **kwargs)


@register("resnet34_1d")
def resnet34_1d(**kwargs) -> ResNet1d:
    """ResNet-34 (basic blocks 3-4-6-3, widths 64..512, 512-d output)."""
    return ResNet1d("basic", (3, 4, 6, 3), **kwargs)


@register("resnet50_1d")
def resnet50_1d(**kwargs) -> ResNet1d:
    """ResNet-50 (bottleneck blocks 3-4-6-3, widths 64..512, 2048-d output), MEIT's default."""
    return ResNet1d("bottleneck", (3, 4, 6, 3), **kwargs)


@register("resnet_small_1d")
def resnet_small_1d(**kwargs) -> ResNet1d:
    """A small CPU preset: basic blocks 1-1-1-1, widths 16/32/64/128 (128-d output)."""
    kwargs.setdefault("widths", (16, 32, 64, 128))
    return ResNet1d("basic", (1, 1, 1, 1), **kwargs)
