"""Progressive-growing GAN nets (Karras et al., "Progressive Growing of GANs", ICLR 2018), CPU-small.

Building blocks:

* ``EqualizedConv2d`` / ``EqualizedLinear``: weights stored ~ N(0, 1) and multiplied at run time by
  the He constant ``gain / sqrt(fan_in)`` (gain sqrt(2) before LeakyReLU, 1 for linear outputs), so
  every layer learns at the same effective rate under Adam; biases start at 0.
* ``PixelNorm``: x / sqrt(mean_c x^2 + 1e-8) per pixel (generator only).
* ``MinibatchStdDev``: per group of ``group_size`` samples, the std over the group of every feature,
  averaged over (C, H, W), appended as one constant feature map (critic only, before its 4x4 block).

Resolutions: depth d works at 4 * 2**d pixels; ``channels_per_resolution`` lists the feature
channels from 4x4 upwards (a list, or a dict {4: c, 8: c, ...}), so ``max_depth = len - 1``.

Fade-in (alpha in [0, 1]) of the newest block at depth d >= 1:
generator  out = (1 - alpha) * upsample(toRGB_{d-1}(h_{d-1})) + alpha * toRGB_d(h_d);
critic     h   = (1 - alpha) * fromRGB_{d-1}(avgpool(x)) + alpha * block_d(fromRGB_d(x)).
At alpha = 0 both equal the depth d-1 nets exactly (upsampled output / downsampled input).

Class conditioning: the generator concatenates a learned label embedding (``embed_dim``) to the
pixel-normalised latent; the critic adds a projection term <embed(y), phi(x)> (Miyato & Koyama 2018)
to its score, phi being the features feeding the final dense layer. Note that MinibatchStdDev couples
the samples of a group, so the critic score (and the WGAN-GP gradient) is not strictly per sample;
this is the ProGAN design.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.2


class EqualizedConv2d(nn.Module):
    """Conv2d with weights ~ N(0, 1) scaled at run time by gain / sqrt(in_channels * k * k) ('same' padding)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, gain: float = math.sqrt(2.0), bias: bool = True
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel_size={k}, scale={self.scale:.4g}"


class EqualizedLinear(nn.Module):
    """Linear layer with weights ~ N(0, 1) scaled at run time by gain / sqrt(in_features)."""

    def __init__(self, in_features: int, out_features: int, gain: float = math.sqrt(2.0), bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)

    def extra_repr(self) -> str:
        o, i = self.weight.shape
        return f"{i}, {o}, scale={self.scale:.4g}"


class PixelNorm(nn.Module):
    """Normalise the feature vector of every pixel (dim 1) to unit mean square."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)


class MinibatchStdDev(nn.Module):
    """Append the mean (over C, H, W) of the per-group feature std as one extra channel.

    Sample i belongs to group i mod (N / G) (Karras' layout: reshape to [G, N/G, ...]); G is the
    largest divisor of N not above ``group_size``, so odd last batches still work. The std is the
    population std (divide by G) with 1e-8 added to the variance.
    """

    def __init__(self, group_size: int = 4, eps: float = 1e-8) -> None:
        super().__init__()
        if group_size < 1:
            raise ValueError(f"MinibatchStdDev group_size must be >= 1, got {group_size}")
        self.group_size = int(group_size)
        self.eps = eps

    def group_size_for(self, batch: int) -> int:
        g = min(self.group_size, batch)
        while batch % g:
            g -= 1
        return g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = self.group_size_for(n)
        y = x.reshape(g, n // g, c, h, w)
        std = (y.var(dim=0, unbiased=False) + self.eps).sqrt()  # [n/g, c, h, w]
        stat = std.mean(dim=(1, 2, 3))  # [n/g]
        stat = stat.repeat(g).reshape(n, 1, 1, 1).expand(n, 1, h, w)  # sample i -> group i mod n/g
        return torch.cat([x, stat], dim=1)


def _channel_list(channels_per_resolution: Sequence[int] | Mapping[int, int]) -> list[int]:
    if isinstance(channels_per_resolution, Mapping):
        res = sorted(int(r) for r in channels_per_resolution)
        expected = [4 * 2**d for d in range(len(res))]
        if res != expected:
            raise ValueError(f"channels_per_resolution keys must be 4, 8, 16, ... without gaps, got {res}")
        chans = [int(channels_per_resolution[r]) for r in res]
    else:
        chans = [int(c) for c in channels_per_resolution]
    if not chans or any(c < 1 for c in chans):
        raise ValueError(f"channels_per_resolution must list >= 1 positive channel counts from 4x4 up, got {chans}")
    return chans


def _check_depth_alpha(name: str, depth: int, alpha: float, max_depth: int) -> None:
    if not 0 <= depth <= max_depth:
        raise ValueError(
            f"{name}: depth must be in [0, {max_depth}] (4x4 .. {4 * 2**max_depth}x{4 * 2**max_depth}), got {depth}"
        )
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"{name}: alpha must be in [0, 1], got {alpha}")


def _check_labels(name: str, labels: torch.Tensor | None, num_classes: int, batch: int, arg: str) -> None:
    if num_classes == 0:
        if labels is not None:
            raise ValueError(f"{name} is unconditional (num_classes=0) but got {arg}=")
        return
    if labels is None:
        raise ValueError(f"{name} is conditional (num_classes={num_classes}); pass {arg}= (class indices [B])")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"{name}: {arg} must be integer class indices, got dtype {labels.dtype}")
    if labels.shape != (batch,):
        raise ValueError(f"{name}: {arg} must have shape [{batch}], got {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{name}: {arg} must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]"
        )


class ProGenerator(nn.Module):
    """Latent (+ label embedding) -> 4x4 -> x2 per depth -> toRGB; ``forward(z, labels, depth, alpha)``.

    Args:
        latent_dim: size of z.
        channels_per_resolution: feature channels at 4x4, 8x8, ... (list or {resolution: channels}).
        out_channels: image channels.
        num_classes: 0 for unconditional, else the number of labels.
        embed_dim: label-embedding size (default latent_dim) concatenated to the normalised z.
    """

    def __init__(
        self,
        latent_dim: int = 64,
        channels_per_resolution: Sequence[int] | Mapping[int, int] = (64, 64, 32, 32, 16),
        out_channels: int = 1,
        num_classes: int = 0,
        embed_dim: int | None = None,
    ) -> None:
        super().__init__()
        chans = _channel_list(channels_per_resolution)
        self.latent_dim = int(latent_dim)
        self.num_classes = int(num_classes)
        self.max_depth = len(chans) - 1
        self.max_resolution = 4 * 2**self.max_depth
        self.channels = chans
        self.norm = PixelNorm()
        self.embed = None
        in_dim = self.latent_dim
        if self.num_classes > 0:
            self.embed_dim = int(embed_dim or latent_dim)
            self.embed = nn.Embedding(self.num_classes, self.embed_dim)
            nn.init.normal_(self.embed.weight)
            in_dim += self.embed_dim
        c0 = chans[0]
        # Dense to 4x4 (gain sqrt(2)/4 as in Karras: the 16 outputs per channel share the fan-in).
        self.dense = EqualizedLinear(in_dim, c0 * 16, gain=math.sqrt(2.0) / 4)
        self.initial = EqualizedConv2d(c0, c0, 3)
        self.blocks = nn.ModuleList()
        for c_prev, c in itertools.pairwise(chans):
            self.blocks.append(nn.ModuleList([EqualizedConv2d(c_prev, c, 3), EqualizedConv2d(c, c, 3)]))
        self.to_rgb = nn.ModuleList([EqualizedConv2d(c, out_channels, 1, gain=1.0) for c in chans])

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.leaky_relu(x, LEAKY_SLOPE))

    def features(self, z: torch.Tensor, labels: torch.Tensor | None, depth: int) -> list[torch.Tensor]:
        """Feature maps h_0 .. h_depth (4x4 .. 4*2**depth)."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"ProGenerator: z must have shape [B, {self.latent_dim}], got {tuple(z.shape)}")
        _check_labels("ProGenerator", labels, self.num_classes, z.shape[0], "labels")
        x = self.norm(z)
        if self.embed is not None:
            x = torch.cat([x, self.embed(labels.long())], dim=1)
        h = self._act(self.dense(x).view(z.shape[0], self.channels[0], 4, 4))
        h = self._act(self.initial(h))
        hs = [h]
        for conv1, conv2 in self.blocks[:depth]:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = self._act(conv2(self._act(conv1(h))))
            hs.append(h)
        return hs

    def forward(
        self, z: torch.Tensor, labels: torch.Tensor | None = None, depth: int | None = None, alpha: float = 1.0
    ) -> torch.Tensor:
        """Images [B, out_channels, 4*2**depth, 4*2**depth]; depth defaults to the maximum."""
        depth = self.max_depth if depth is None else int(depth)
        _check_depth_alpha("ProGenerator", depth, alpha, self.max_depth)
        hs = self.features(z, labels, depth)
        new = self.to_rgb[depth](hs[depth])
        if depth == 0 or alpha == 1.0:
            return new
        old = F.interpolate(self.to_rgb[depth - 1](hs[depth - 1]), scale_factor=2, mode="nearest")
        return (1.0 - alpha) * old + alpha * new


class ProCritic(nn.Module):
    """fromRGB -> (2 convs + avg-pool) per depth -> MinibatchStdDev -> 4x4 block -> dense score [B].

    Args:
        channels_per_resolution: feature channels at 4x4, 8x8, ... (same convention as the generator).
        in_channels: image channels.
        num_classes: 0 for unconditional, else projection conditioning on class labels.
        mbstd_group: MinibatchStdDev group size (0 disables the layer).
    """

    def __init__(
        self,
        channels_per_resolution: Sequence[int] | Mapping[int, int] = (64, 64, 32, 32, 16),
        in_channels: int = 1,
        num_classes: int = 0,
        mbstd_group: int = 4,
    ) -> None:
        super().__init__()
        chans = _channel_list(channels_per_resolution)
        self.channels = chans
        self.max_depth = len(chans) - 1
        self.max_resolution = 4 * 2**self.max_depth
        self.num_classes = int(num_classes)
        self.from_rgb = nn.ModuleList([EqualizedConv2d(in_channels, c, 1) for c in chans])
        # blocks[d - 1] takes depth d (channels[d]) down to depth d - 1 (channels[d - 1]).
        self.blocks = nn.ModuleList(
            [
                nn.ModuleList([EqualizedConv2d(c, c, 3), EqualizedConv2d(c, c_prev, 3)])
                for c_prev, c in itertools.pairwise(chans)
            ]
        )
        c0 = chans[0]
        self.mbstd = MinibatchStdDev(mbstd_group) if mbstd_group > 0 else None
        self.final_conv = EqualizedConv2d(c0 + (1 if self.mbstd is not None else 0), c0, 3)
        self.final_dense = EqualizedLinear(c0 * 16, c0)
        self.out = EqualizedLinear(c0, 1, gain=1.0)
        self.embed = None
        if self.num_classes > 0:
            self.embed = nn.Embedding(self.num_classes, c0)
            nn.init.normal_(self.embed.weight, std=1.0 / math.sqrt(c0))  # projection term ~ O(1) at start

    @staticmethod
    def _act(x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, LEAKY_SLOPE)

    def _from_rgb(self, x: torch.Tensor, depth: int) -> torch.Tensor:
        return self._act(self.from_rgb[depth](x))

    def _block(self, h: torch.Tensor, depth: int) -> torch.Tensor:
        conv1, conv2 = self.blocks[depth - 1]
        return F.avg_pool2d(self._act(conv2(self._act(conv1(h)))), 2)

    def phi(self, h0: torch.Tensor) -> torch.Tensor:
        """Features [B, channels[0]] of the final block from the 4x4 feature map."""
        if self.mbstd is not None:
            h0 = self.mbstd(h0)
        h0 = self._act(self.final_conv(h0))
        return self._act(self.final_dense(h0.flatten(1)))

    def forward(
        self, x: torch.Tensor, condition: torch.Tensor | None = None, depth: int | None = None, alpha: float = 1.0
    ) -> torch.Tensor:
        """Unbounded critic score [B]; depth defaults to the one matching the input size."""
        if x.dim() != 4 or x.shape[1] != self.from_rgb[0].weight.shape[1]:
            raise ValueError(
                f"ProCritic: x must be [B, {self.from_rgb[0].weight.shape[1]}, S, S], got {tuple(x.shape)}"
            )
        size = x.shape[-1]
        if depth is None:
            depth = max(0, round(math.log2(max(size, 1) / 4)))
        depth = int(depth)
        _check_depth_alpha("ProCritic", depth, alpha, self.max_depth)
        expected = 4 * 2**depth
        if x.shape[-2] != expected or size != expected:
            raise ValueError(f"ProCritic: depth {depth} needs {expected}x{expected} inputs, got {x.shape[-2]}x{size}")
        _check_labels("ProCritic", condition, self.num_classes, x.shape[0], "condition")
        h = self._from_rgb(x, depth)
        if depth > 0:
            h = self._block(h, depth)
            if alpha != 1.0:
                h = (1.0 - alpha) * self._from_rgb(F.avg_pool2d(x, 2), depth - 1) + alpha * h
            for d in range(depth - 1, 0, -1):
                h = self._block(h, d)
        feats = self.phi(h)
        score = self.out(feats).squeeze(-1)
        if self.embed is not None:
            score = score + (self.embed(condition.long()) * feats).sum(dim=1)
        return score
