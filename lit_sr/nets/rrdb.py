"""ESRGAN-style generator built from residual-in-residual dense blocks (Wang et al., arXiv:1809.00219).

Plain ``nn.Module``: usable from a notebook without Lightning or Hydra. The options cover the
variants used across lit_sr: LeakyReLU (ESRGAN) or Swish (calorimeter study), scale 1 (denoising)
2 or 4, upsampling by nearest-neighbour + conv or by pixel shuffle, and an optional output
activation (ReLU keeps calorimeter energies non-negative).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from lit_sr.nets.layers import clamp_toward_range, make_activation


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; the output is scaled by ``res_scale`` and added to the input."""

    def __init__(
        self, num_features: int = 64, growth_channels: int = 32, activation: str = "lrelu", res_scale: float = 0.2
    ) -> None:
        super().__init__()
        self.res_scale = res_scale
        self.convs = nn.ModuleList(
            nn.Conv2d(num_features + i * growth_channels, growth_channels if i < 4 else num_features, 3, padding=1)
            for i in range(5)
        )
        self.act = make_activation(activation)
        for conv in self.convs:  # small init keeps the deep residual stack near identity at start (ESRGAN)
            nn.init.kaiming_normal_(conv.weight, a=0.2 if activation == "lrelu" else 0.0)
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in self.convs[:-1]:
            features.append(self.act(conv(torch.cat(features, dim=1))))
        out = self.convs[-1](torch.cat(features, dim=1))
        return x + self.res_scale * out


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks inside one more scaled residual."""

    def __init__(
        self, num_features: int = 64, growth_channels: int = 32, activation: str = "lrelu", res_scale: float = 0.2
    ) -> None:
        super().__init__()
        self.res_scale = res_scale
        self.blocks = nn.Sequential(
            *(ResidualDenseBlock(num_features, growth_channels, activation, res_scale) for _ in range(3))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.blocks(x)


class UpsampleBlock(nn.Module):
    """x2 upsampling: nearest-neighbour then conv (no checkerboard) or conv then pixel shuffle."""

    def __init__(self, num_features: int, mode: str = "nearest", activation: str = "lrelu") -> None:
        super().__init__()
        if mode == "nearest":
            self.body = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(num_features, num_features, 3, padding=1)
            )
        elif mode == "pixelshuffle":
            self.body = nn.Sequential(nn.Conv2d(num_features, 4 * num_features, 3, padding=1), nn.PixelShuffle(2))
        else:
            raise ValueError(f"unknown upsampling mode {mode!r}; expected 'nearest' or 'pixelshuffle'")
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x))


class RRDBNet(nn.Module):
    """conv -> N x RRDB -> conv (+ global residual) -> log2(scale) x2-upsampling blocks -> conv+act -> conv [-> act].

    With ``input_skip`` the net predicts a correction of the upsampled input: out = act(conv(...) +
    up(x[:, :out_channels])), ``up`` repeating every input pixel over its scale x scale block divided by
    scale**2 (the block sums to the input value: flux-conserving for intensities that add up, such as
    energies or counts; at scale 1 the identity, i.e. a residual denoiser). The last conv then starts at
    zero, so the net starts as that upsampling: never an all-zero ("dead") ReLU output.

    Args:
        in_channels / out_channels: image channels.
        num_features: feature maps of every conv in the trunk (ESRGAN 64, calorimeter study 32).
        num_blocks: number of RRDBs (ESRGAN 23, calorimeter study 5).
        growth_channels: channels added by each conv inside a dense block.
        activation: activation inside the blocks and after upsampling ('lrelu' or 'swish', ...).
        scale: 1, 2 or 4 (output size = scale * input size).
        upsample: 'nearest' (NN + conv) or 'pixelshuffle'.
        output_activation: applied to the final conv, e.g. 'relu' for non-negative energies.
        res_scale: residual scaling of the dense blocks and RRDBs (0.2 in ESRGAN).
        input_skip: add the flux-conserving upsampled input (see above).
        output_range: (lo, hi) clamp of the output, e.g. (0, 1) for images scaled to [0, 1]; hi None: no upper
            bound (images scaled without an upper clip). The gradient flows where descent moves an output back
            into the range (:func:`clamp_toward_range`), so a net whose outputs all start below lo still learns.
        hr_conv: the conv + activation between the upsampling and the last conv (ESRGAN); false leaves it
            out (the X-ray study's denoiser: trunk conv + skip -> last conv).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        num_features: int = 64,
        num_blocks: int = 23,
        growth_channels: int = 32,
        activation: str = "lrelu",
        scale: int = 4,
        upsample: str = "nearest",
        output_activation: str | None = None,
        res_scale: float = 0.2,
        input_skip: bool = False,
        output_range: Sequence[float] | None = None,
        hr_conv: bool = True,
    ) -> None:
        super().__init__()
        if scale not in (1, 2, 4, 8):
            raise ValueError(f"RRDBNet scale must be 1, 2, 4 or 8, got {scale}")
        if input_skip and in_channels < out_channels:
            raise ValueError(
                f"RRDBNet input_skip needs in_channels >= out_channels, got {in_channels} < {out_channels}"
            )
        if output_range is not None and (
            len(output_range) != 2
            or output_range[0] is None
            or (output_range[1] is not None and output_range[0] >= output_range[1])
        ):
            raise ValueError(f"RRDBNet output_range must be [lo, hi] with lo < hi (hi may be null), got {output_range}")
        self.scale = scale
        self.out_channels = out_channels
        self.input_skip = bool(input_skip)
        self.output_range = (
            tuple(None if v is None else float(v) for v in output_range) if output_range is not None else None
        )
        self.conv_first = nn.Conv2d(in_channels, num_features, 3, padding=1)
        self.trunk = nn.Sequential(
            *(RRDB(num_features, growth_channels, activation, res_scale) for _ in range(num_blocks))
        )
        self.conv_trunk = nn.Conv2d(num_features, num_features, 3, padding=1)
        self.upsampling = nn.Sequential(
            *(UpsampleBlock(num_features, upsample, activation) for _ in range(scale.bit_length() - 1))
        )
        self.conv_hr = nn.Conv2d(num_features, num_features, 3, padding=1) if hr_conv else None
        self.act_hr = make_activation(activation) if hr_conv else None
        self.conv_last = nn.Conv2d(num_features, out_channels, 3, padding=1)
        self.output_activation = make_activation(output_activation)
        if self.input_skip:
            with torch.no_grad():
                self.conv_last.weight.zero_()
                self.conv_last.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_trunk(self.trunk(feat))  # global residual: the trunk learns a correction
        feat = self.upsampling(feat)
        if self.conv_hr is not None:
            feat = self.act_hr(self.conv_hr(feat))
        out = self.conv_last(feat)
        if self.input_skip:
            skip = x[:, : self.out_channels]
            if self.scale > 1:
                skip = nn.functional.interpolate(skip, scale_factor=self.scale, mode="nearest") / self.scale**2
            out = out + skip
        out = self.output_activation(out)
        return clamp_toward_range(out, *self.output_range) if self.output_range is not None else out
