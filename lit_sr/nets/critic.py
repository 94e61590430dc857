"""Wasserstein critic for SR-GANs (SRGAN/ESRGAN-style discriminator adapted to WGAN-GP).

Calorimeter study: 6 convolutional layers each followed by layer normalisation and Swish, then two
dense layers, no sigmoid. Layer normalisation is per sample over (C, H, W) -- no batch statistics,
which the gradient penalty requires (the penalty is defined per sample). It is implemented as
``GroupNorm(1, C)``: identical normalisation to ``LayerNorm([C, H, W])`` but with a per-channel
affine, so the layer does not depend on the image size.

The dense head needs a fixed flatten size: it is computed from ``input_size`` at construction; with
``input_size=None`` an adaptive average pooling to ``pooled_size`` makes the critic size-agnostic.

A conditional critic (``condition_channels > 0``) judges ``x`` together with a condition image, e.g.
the LR input of super-resolution: the condition is upsampled (nearest, flux-conserving if
``condition_flux_conserving``) to x's size and concatenated as extra input channels, so the critic
can penalise outputs that do not fit their input.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from lit_sr.nets.layers import make_activation


def _conv_out(size: int, stride: int) -> int:
    # 3x3 conv, padding 1: out = floor((size + 2 - 3) / stride) + 1
    return (size - 1) // stride + 1


class Critic(nn.Module):
    """conv(3x3)+LayerNorm+act x len(channels) -> flatten -> dense(hidden)+act -> dense(1).

    Args:
        in_channels: image channels.
        channels: output channels of each conv layer (default 6 layers: 32, 32, 64, 64, 128, 128).
        strides: stride of each conv layer (same length as ``channels``; default 1, 2, 1, 2, 1, 2).
        hidden: width of the first dense layer.
        activation: activation name (``make_activation``), Swish by default.
        input_size: image size (int or (H, W)) the critic is built for; None (default) -> adaptive pooling.
        pooled_size: spatial size after adaptive pooling when ``input_size`` is None.
        norm: 'layer' (per-sample LayerNorm over C,H,W) or 'none'.
        condition_channels: channels of the condition image (0: unconditional).
        condition_flux_conserving: divide the upsampled condition by the area ratio (LR sums of HR pixels).
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 32, 64, 64, 128, 128),
        strides: Sequence[int] = (1, 2, 1, 2, 1, 2),
        hidden: int = 256,
        activation: str = "swish",
        input_size: int | Sequence[int] | None = None,
        pooled_size: int = 4,
        norm: str = "layer",
        condition_channels: int = 0,
        condition_flux_conserving: bool = False,
    ) -> None:
        super().__init__()
        self.condition_channels = int(condition_channels)
        self.condition_flux_conserving = bool(condition_flux_conserving)
        channels, strides = list(channels), list(strides)
        if len(channels) != len(strides):
            raise ValueError(f"Critic: channels ({len(channels)}) and strides ({len(strides)}) differ in length")
        if norm not in ("layer", "none"):
            raise ValueError(f"Critic norm must be 'layer' or 'none', got {norm!r}")
        layers: list[nn.Module] = []
        c_in = in_channels + self.condition_channels
        for c, s in zip(channels, strides):
            layers += [
                nn.Conv2d(c_in, c, 3, stride=s, padding=1),
                nn.GroupNorm(1, c) if norm == "layer" else nn.Identity(),
                make_activation(activation),
            ]
            c_in = c
        self.features = nn.Sequential(*layers)
        if input_size is None:
            self.pool: nn.Module = nn.AdaptiveAvgPool2d(pooled_size)
            h = w = pooled_size
        else:
            h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
            for s in strides:
                h, w = _conv_out(h, s), _conv_out(w, s)
            if h < 1 or w < 1:
                raise ValueError(f"Critic: input size {input_size} too small for strides {strides}")
            self.pool = nn.Identity()
        self.input_size = input_size
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c_in * h * w, hidden), make_activation(activation), nn.Linear(hidden, 1)
        )

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Unbounded critic score, shape [B] (no sigmoid)."""
        x = join_condition(x, condition, self.condition_channels, self.condition_flux_conserving)
        return self.head(self.pool(self.features(x))).squeeze(-1)


def join_condition(
    x: torch.Tensor, condition: torch.Tensor | None, condition_channels: int, flux_conserving: bool = False
) -> torch.Tensor:
    """``x`` with the condition image upsampled (nearest) to its size and concatenated as channels."""
    if condition_channels == 0:
        if condition is not None:
            raise ValueError("this critic is unconditional (condition_channels=0) but got a condition")
        return x
    if condition is None:
        raise ValueError(f"this critic is conditional (condition_channels={condition_channels}); pass condition=")
    if condition.shape[1] != condition_channels:
        raise ValueError(f"condition has {condition.shape[1]} channels, the critic expects {condition_channels}")
    factor = x.shape[-1] // condition.shape[-1]
    if factor > 1:
        condition = nn.functional.interpolate(condition, size=x.shape[-2:], mode="nearest")
        if flux_conserving:
            condition = condition / factor**2
    return torch.cat([x, condition.to(x.dtype)], dim=1)
