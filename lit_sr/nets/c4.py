"""C4 (rotations by multiples of 90 degrees) group convolutions with rotated filter copies.

Feature layout: a *regular field* is 4 channels indexed by the rotation g in {0, 1, 2, 3}; a tensor
of F fields has 4F channels ordered (field, g), channel = 4 * field + g. The rotation r (``torch.rot90``
by one quarter turn over dims (-2, -1)) acts on a regular feature map by rotating every channel
spatially and shifting the group index g -> g + 1 (mod 4); on scalar (trivial) maps it only rotates.

* :class:`LiftingConv2d` trivial -> regular: output (o, g) uses the filter rot^g(W_o).
* :class:`GroupConv2d` regular -> regular: output (o, g) from input (c, h) uses rot^g(W[o, c, h - g]),
  i.e. the 4 rotated copies of the filter also cyclically permute the input group channels.
* :class:`GroupConvTranspose2d` (2x2, stride 2) regular -> regular with the same weight tying.
* Pointwise ReLU, 2x2 max-pooling and nearest upsampling commute with r on even-sized grids.
* :func:`group_pool` (max or mean over g) gives rotation-*invariant* scalar channels per field.
* :class:`SymmetricConv2d` scalar -> scalar with a filter averaged over the four rotations.

Equivariance is exact up to float round-off for square odd kernels with zero 'same' padding and for
2x2 pooling / stride-2 transposed convs when every pooled grid has even sides.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def rotate_regular(x: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Action of rot90^k on a regular feature map [B, 4F, H, W] (spatial rotation + group shift)."""
    b, c, h, w = x.shape
    y = torch.rot90(x, k, dims=(-2, -1)).reshape(b, c // 4, 4, w if k % 2 else h, h if k % 2 else w)
    return torch.roll(y, shifts=k, dims=2).reshape(b, c, *y.shape[-2:])


def _expand(weight: torch.Tensor) -> torch.Tensor:
    """Base weight [O, C, 4, k, k] -> full weight [4O, 4C, k, k] with rot^g(W[o, c, h - g])."""
    o, c, _, k1, k2 = weight.shape
    copies = [torch.rot90(torch.roll(weight, shifts=g, dims=2), g, dims=(-2, -1)) for g in range(4)]
    return torch.stack(copies, dim=1).reshape(4 * o, 4 * c, k1, k2)


class LiftingConv2d(nn.Module):
    """Scalar input channels -> ``out_fields`` regular fields (odd square kernel, 'same' padding)."""

    def __init__(self, in_channels: int, out_fields: int, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError("C4 convolutions need an odd kernel size for exact equivariance")
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.empty(out_fields, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_fields)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def full_weight(self) -> torch.Tensor:
        w = torch.stack([torch.rot90(self.weight, g, dims=(-2, -1)) for g in range(4)], dim=1)
        return w.reshape(-1, *self.weight.shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias.repeat_interleave(4) if self.bias is not None else None
        return F.conv2d(x, self.full_weight(), b, padding=self.padding)


class GroupConv2d(nn.Module):
    """``in_fields`` -> ``out_fields`` regular fields (odd square kernel, 'same' padding)."""

    def __init__(self, in_fields: int, out_fields: int, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError("C4 convolutions need an odd kernel size for exact equivariance")
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.empty(out_fields, in_fields, 4, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_fields)) if bias else None
        fan_in = in_fields * 4 * kernel_size**2
        nn.init.kaiming_uniform_(self.weight.view(out_fields, -1), a=math.sqrt(5))
        if self.bias is not None:
            nn.init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias.repeat_interleave(4) if self.bias is not None else None
        return F.conv2d(x, _expand(self.weight), b, padding=self.padding)


class GroupConvTranspose2d(nn.Module):
    """2x upsampling by a 2x2 stride-2 transposed group convolution (regular -> regular)."""

    def __init__(self, in_fields: int, out_fields: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_fields, in_fields, 4, 2, 2))
        self.bias = nn.Parameter(torch.zeros(out_fields)) if bias else None
        nn.init.kaiming_uniform_(self.weight.view(out_fields, -1), a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias.repeat_interleave(4) if self.bias is not None else None
        # conv_transpose2d takes [in, out, k, k]; the tied full weight transposed keeps the tying
        return F.conv_transpose2d(x, _expand(self.weight).transpose(0, 1), b, stride=2)


def group_pool(x: torch.Tensor, mode: str = "max") -> torch.Tensor:
    """Regular fields [B, 4F, H, W] -> invariant scalars [B, F, H, W] (max or mean over the group)."""
    b, c, h, w = x.shape
    y = x.reshape(b, c // 4, 4, h, w)
    if mode == "max":
        return y.amax(dim=2)
    if mode == "mean":
        return y.mean(dim=2)
    raise ValueError(f"group pooling mode must be 'max' or 'mean', got {mode!r}")


class SymmetricConv2d(nn.Module):
    """Scalar -> scalar convolution with a filter averaged over rot90^g (commutes with rot90)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError("an odd kernel size is needed for exact rot90 equivariance")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)

    def symmetric_weight(self) -> torch.Tensor:
        w = self.conv.weight
        return sum(torch.rot90(w, g, dims=(-2, -1)) for g in range(4)) / 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.symmetric_weight(), self.conv.bias, padding=self.conv.padding)


BACKBONE_INITS = ("torch", "he")


def he_init_(net: nn.Module, linear: tuple[nn.Module, ...] = ()) -> None:
    """He (Kaiming-normal, fan-in) initialisation of every C4 convolution in ``net``, biases zero.

    The default (``kaiming_uniform_(a=sqrt(5))``, PyTorch's ``nn.Conv2d`` rule) gives each layer a weight variance
    of 1 / (3 fan_in): through the 14 ReLU convolutions of the UNet the input-dependent part of the activations
    shrinks by about 1/sqrt(6) per layer while the biases (uniform within 1/sqrt(fan_in)) do not, so the sign of a
    deep pre-activation is set by its bias. With the CPU recipe's 4 fields in the last decoder block, all 4 biases
    are negative in 1 of 16 initialisations: that ReLU is then off for every pixel, the latent is a constant, no
    gradient reaches the backbone and the noise head can only learn a constant (SAXS seed 1, docs/saxs.md).
    Here std = gain / sqrt(fan_in) with gain sqrt(2) for a convolution followed by a ReLU and 1 for those in
    ``linear``; fan_in counts the taps that reach one output pixel: C k^2 (lifting), 4 C k^2 (group), 4 C for the
    2x2 stride-2 transposed group convolution (each output pixel sees one tap per input channel).
    """
    linear_ids = {id(m) for m in linear}
    for m in net.modules():
        if isinstance(m, (LiftingConv2d, GroupConv2d, GroupConvTranspose2d)):
            w = m.weight
            if isinstance(m, LiftingConv2d):
                fan_in = w.shape[1] * w.shape[2] * w.shape[3]
            elif isinstance(m, GroupConv2d):
                fan_in = w.shape[1] * 4 * w.shape[3] * w.shape[4]
            else:
                fan_in = w.shape[1] * 4
            gain = 1.0 if (id(m) in linear_ids or isinstance(m, GroupConvTranspose2d)) else math.sqrt(2.0)
            with torch.no_grad():
                w.normal_(0.0, gain / math.sqrt(fan_in))
                if m.bias is not None:
                    m.bias.zero_()


def _double_gconv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(GroupConv2d(cin, cout), nn.ReLU(inplace=True), GroupConv2d(cout, cout), nn.ReLU(inplace=True))


class C4UNet(nn.Module):
    """C4-equivariant UNet: x [B, in_channels, H, W] (scalars) -> invariant latent [B, latent, H, W].

    Same topology as :class:`lit_sr.nets.unet.UNet` with ``fields`` regular fields per level (each
    4 channels): lifting conv, group convs, max-pool, transposed group conv, concatenated skips,
    1x1 group conv to ``latent_channels`` fields and group pooling to scalars, so
    ``net(rot90(x)) == rot90(net(x))``. Sides must be divisible by 2**(levels-1) (8 by default).
    Default fields (28, 56, 112, 224): 5.89 M parameters, close to the study's escnn model (5.88 M).

    ``group_pool="mean"`` (default) makes the latent a linear invariant map of the last regular fields,
    like an escnn convolution to trivial fields. With ``"max"`` the SAXS decomposition did not train:
    29.6 dB signal PSNR after 2,000 steps (input 29.5) against 37.2 dB after 1,000 steps with the mean
    (32 px patches, 0.12 M parameters, squared-error loss, lr 1e-3; measured on CPU).

    ``init``: ``"torch"`` (default, PyTorch's conv rule; the existing checkpoints' runs) or ``"he"``
    (:func:`he_init_`: He-normal weights, zero biases), which keeps every ReLU of a narrow net alive at the start.
    """

    equivariant = True

    def __init__(
        self,
        in_channels: int = 1,
        latent_channels: int = 16,
        fields: tuple[int, ...] | list[int] = (28, 56, 112, 224),
        group_pool: str = "mean",
        init: str = "torch",
    ) -> None:
        super().__init__()
        if init not in BACKBONE_INITS:
            raise ValueError(f"C4UNet init must be one of {', '.join(BACKBONE_INITS)}, got {init!r}")
        fields = list(fields)
        self.factor = 2 ** (len(fields) - 1)
        self.latent_channels = latent_channels
        self.group_pool_mode = group_pool
        self.lift = LiftingConv2d(in_channels, fields[0])
        self.down = nn.ModuleList()
        self.down.append(nn.Sequential(nn.ReLU(inplace=True), GroupConv2d(fields[0], fields[0]), nn.ReLU(inplace=True)))
        for cin, cout in zip(fields[:-1], fields[1:]):
            self.down.append(_double_gconv(cin, cout))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for f_hi, f in zip(fields[::-1][:-1], fields[::-1][1:]):
            self.up.append(GroupConvTranspose2d(f_hi, f))
            self.dec.append(_double_gconv(2 * f, f))
        self.out = GroupConv2d(fields[0], latent_channels, kernel_size=1)
        if init == "he":
            he_init_(self, linear=(self.out,))

    @staticmethod
    def _cat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Concatenate along the field axis (whole regular fields stay together)."""
        return torch.cat([a, b], dim=1)

    def regular_latent(self, x: torch.Tensor) -> torch.Tensor:
        from lit_sr.nets.unet import check_divisible

        check_divisible(x, self.factor, type(self).__name__)
        skips = []
        for i, block in enumerate(self.down):
            x = block(self.lift(x) if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = dec(self._cat(up(x), skips.pop()))
        return self.out(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return group_pool(self.regular_latent(x), self.group_pool_mode)
