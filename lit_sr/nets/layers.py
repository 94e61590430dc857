"""Small shared layer helpers for the nets package."""

from __future__ import annotations

import torch
from torch import nn


def make_activation(name: str | None, negative_slope: float = 0.2) -> nn.Module:
    """Activation by name: 'lrelu' (slope 0.2, ESRGAN), 'swish'/'silu', 'relu', 'softplus', 'sigmoid', None."""
    if name is None or name == "none" or name == "identity":
        return nn.Identity()
    name = name.lower()
    if name in ("lrelu", "leaky_relu", "leakyrelu"):
        return nn.LeakyReLU(negative_slope, inplace=True)
    if name in ("swish", "silu"):
        return nn.SiLU(inplace=True)
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "softplus":
        return nn.Softplus()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "tanh":
        return nn.Tanh()
    raise ValueError(f"unknown activation {name!r}; expected one of lrelu, swish, relu, softplus, sigmoid, tanh, none")


class _ClampTowardRange(torch.autograd.Function):
    """clamp(x, lo, hi) whose gradient still flows where gradient descent moves x back toward the range."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lo: float, hi: float | None) -> torch.Tensor:  # noqa: ANN001
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        (x,) = ctx.saved_tensors
        # descent moves x by -grad: below the range only a negative gradient moves it back up, above only a
        # positive one moves it down; the other direction is blocked as by a plain clamp
        outward = (x < ctx.lo) & (grad > 0)
        if ctx.hi is not None:
            outward = outward | ((x > ctx.hi) & (grad < 0))
        return grad.masked_fill(outward, 0.0), None, None


def clamp_toward_range(x: torch.Tensor, lo: float, hi: float | None = None) -> torch.Tensor:
    """``x.clamp(lo, hi)`` in the forward pass. Its gradient is kept wherever a descent step would move
    ``x`` back into [lo, hi]. A plain clamp's gradient is zero outside the range, so a net whose outputs
    all start below ``lo`` never learns: it stays a constant image."""
    return _ClampTowardRange.apply(x, lo, hi)
