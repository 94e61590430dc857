"""SRResNet, the SRGAN generator (C. Ledig et al., "Photo-Realistic Single Image Super-Resolution Using a Generative
Adversarial Network", CVPR 2017).

Plain ``nn.Module``:

    x -> conv9x9 + PReLU (F_0) -> B x residual block [conv3x3-BN-PReLU-conv3x3-BN, + input]
      -> conv3x3 + BN, + F_0 (long skip) -> log2(scale) x [conv3x3 to 4F, pixel shuffle x2, PReLU] -> conv9x9

PReLU has one learnable slope per layer (``nn.PReLU()``). BatchNorm is optional (``batch_norm=False`` drops it,
as EDSR-style SR nets do; convs followed by BatchNorm have no bias since BN's shift replaces it). The paper's
configuration is num_features 64, num_blocks 16, scale 4, batch_norm True.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_norm(channels_in: int, channels_out: int, batch_norm: bool) -> list[nn.Module]:
    return [
        nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=not batch_norm),
        nn.BatchNorm2d(channels_out) if batch_norm else nn.Identity(),
    ]


class SRResidualBlock(nn.Module):
    """conv3x3-BN-PReLU-conv3x3-BN plus the identity."""

    def __init__(self, num_features: int, batch_norm: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_norm(num_features, num_features, batch_norm),
            nn.PReLU(),
            *_conv_norm(num_features, num_features, batch_norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRResNet(nn.Module):
    """SRResNet generator; output size = ``scale`` x input size (scale 1, 2, 4 or 8).

    Args:
        in_channels / out_channels: image channels.
        num_features: channels of the trunk (64 in the paper).
        num_blocks: residual blocks (16 in the paper).
        scale: upsampling factor, one pixel-shuffle x2 block per factor 2; 1 = same size.
        batch_norm: BatchNorm after the trunk convs (paper: True).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        num_features: int = 64,
        num_blocks: int = 16,
        scale: int = 4,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if scale not in (1, 2, 4, 8):
            raise ValueError(f"SRResNet scale must be 1, 2, 4 or 8, got {scale}")
        self.scale = scale
        self.head = nn.Sequential(nn.Conv2d(in_channels, num_features, 9, padding=4), nn.PReLU())
        self.blocks = nn.Sequential(*(SRResidualBlock(num_features, batch_norm) for _ in range(num_blocks)))
        self.trunk_end = nn.Sequential(*_conv_norm(num_features, num_features, batch_norm))
        steps = []
        for _ in range(scale.bit_length() - 1):
            steps += [nn.Conv2d(num_features, 4 * num_features, 3, padding=1), nn.PixelShuffle(2), nn.PReLU()]
        self.upsample = nn.Sequential(*steps)
        self.tail = nn.Conv2d(num_features, out_channels, 9, padding=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f0 = self.head(x)
        f = self.trunk_end(self.blocks(f0)) + f0  # long skip connection
        return self.tail(self.upsample(f))
