"""Plain UNet backbone of the SAXS study: 4 levels of 32/64/128/256 maps, two 3x3 conv + ReLU per
level, no batch norm, max-pool down, 2x2 transposed-conv up, concatenating skips, 16-channel latent.

The deepest level (256 maps) is the bottleneck, so there are len(features) - 1 = 3 poolings and the
input sides must be divisible by 8. The latent is linear (no activation): the heads follow.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.ReLU(inplace=True),
    )


def he_init_plain_(net: nn.Module, linear: tuple[nn.Module, ...] = ()) -> None:
    """He (Kaiming-normal, fan-in) weights and zero biases for every ``Conv2d`` / ``ConvTranspose2d`` of ``net``:
    gain sqrt(2) before a ReLU, 1 for the modules in ``linear`` and the 2x2 stride-2 transposed convolutions
    (fan_in = input channels: one tap per input channel reaches an output pixel). The C4 counterpart and the
    reason (bias-dominated deep pre-activations with the default init): :func:`lit_sr.nets.c4.he_init_`."""
    linear_ids = {id(m) for m in linear}
    for m in net.modules():
        if isinstance(m, nn.ConvTranspose2d):
            fan_in, gain = m.in_channels, 1.0
        elif isinstance(m, nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            gain = 1.0 if id(m) in linear_ids else math.sqrt(2.0)
        else:
            continue
        with torch.no_grad():
            m.weight.normal_(0.0, gain / math.sqrt(fan_in))
            if m.bias is not None:
                m.bias.zero_()


def check_divisible(x: torch.Tensor, factor: int, what: str) -> None:
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(
            f"{what}: input {h}x{w} must have sides divisible by {factor} (one factor 2 per pooling level)"
        )


class UNet(nn.Module):
    """x [B, in_channels, H, W] -> latent [B, latent_channels, H, W].

    ``init``: "torch" (default: PyTorch's conv init) or "he" (:func:`he_init_plain_`)."""

    equivariant = False

    def __init__(
        self,
        in_channels: int = 1,
        latent_channels: int = 16,
        features: Sequence[int] = (32, 64, 128, 256),
        init: str = "torch",
    ) -> None:
        super().__init__()
        if init not in ("torch", "he"):
            raise ValueError(f"UNet init must be one of torch, he, got {init!r}")
        features = list(features)
        self.factor = 2 ** (len(features) - 1)
        self.latent_channels = latent_channels
        self.down = nn.ModuleList()
        cin = in_channels
        for f in features:
            self.down.append(_double_conv(cin, f))
            cin = f
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for f_hi, f in zip(features[::-1][:-1], features[::-1][1:]):
            self.up.append(nn.ConvTranspose2d(f_hi, f, 2, stride=2))
            self.dec.append(_double_conv(2 * f, f))
        self.out = nn.Conv2d(features[0], latent_channels, 1)
        if init == "he":
            he_init_plain_(self, linear=(self.out,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible(x, self.factor, type(self).__name__)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.out(x)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
