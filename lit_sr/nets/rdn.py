"""Residual dense network (RDN; Y. Zhang et al., "Residual Dense Network for Image Super-Resolution", CVPR 2018).

Plain ``nn.Module``:

    x -> conv3x3 (F_-1) -> conv3x3 (F_0) -> D residual dense blocks (F_1..F_D)
      -> global feature fusion: concat(F_1..F_D) -> conv1x1 -> conv3x3, + F_-1 (global residual)
      -> log2(scale) x [conv3x3 to 4 x features, pixel shuffle x2]  (none for scale 1)
      -> conv3x3 to out_channels

A residual dense block holds C densely connected conv3x3+ReLU layers, each adding ``growth`` channels, then local
feature fusion (conv1x1 back to ``num_features``) and a local residual. The paper's configuration is
num_features = growth = 64, num_blocks D = 16, num_layers C = 8; the lensing default is the small 32/32/6/4.
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualDenseBlock(nn.Module):
    """C densely connected conv3x3+ReLU layers -> conv1x1 local feature fusion -> + input."""

    def __init__(self, num_features: int, growth: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(num_features + i * growth, growth, 3, padding=1), nn.ReLU(inplace=True))
            for i in range(num_layers)
        )
        self.local_fusion = nn.Conv2d(num_features + num_layers * growth, num_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return x + self.local_fusion(torch.cat(features, dim=1))


class RDN(nn.Module):
    """Residual dense network; output size = ``scale`` x input size (scale 1, 2, 4 or 8).

    Args:
        in_channels / out_channels: image channels.
        num_features: G0, channels of the shallow features and of every block's input/output.
        growth: G, channels added by each conv inside a dense block.
        num_blocks: D, residual dense blocks.
        num_layers: C, conv layers per block.
        scale: upsampling factor (pixel shuffle x2 steps); 1 = same size (denoising / deconvolution).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        num_features: int = 32,
        growth: int = 32,
        num_blocks: int = 6,
        num_layers: int = 4,
        scale: int = 2,
    ) -> None:
        super().__init__()
        if scale not in (1, 2, 4, 8):
            raise ValueError(f"RDN scale must be 1, 2, 4 or 8, got {scale}")
        if min(num_features, growth, num_blocks, num_layers) < 1:
            raise ValueError(
                "RDN num_features, growth, num_blocks and num_layers must be >= 1, got "
                f"{num_features}, {growth}, {num_blocks}, {num_layers}"
            )
        self.scale = scale
        self.shallow1 = nn.Conv2d(in_channels, num_features, 3, padding=1)
        self.shallow2 = nn.Conv2d(num_features, num_features, 3, padding=1)
        self.blocks = nn.ModuleList(ResidualDenseBlock(num_features, growth, num_layers) for _ in range(num_blocks))
        self.global_fusion = nn.Sequential(
            nn.Conv2d(num_blocks * num_features, num_features, 1), nn.Conv2d(num_features, num_features, 3, padding=1)
        )
        steps = []
        for _ in range(scale.bit_length() - 1):
            steps += [nn.Conv2d(num_features, 4 * num_features, 3, padding=1), nn.PixelShuffle(2)]
        self.upsample = nn.Sequential(*steps)
        self.last = nn.Conv2d(num_features, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f_minus1 = self.shallow1(x)
        f = self.shallow2(f_minus1)
        block_outputs = []
        for block in self.blocks:
            f = block(f)
            block_outputs.append(f)
        f = self.global_fusion(torch.cat(block_outputs, dim=1)) + f_minus1  # global residual learning
        return self.last(self.upsample(f))
