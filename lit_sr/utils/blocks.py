"""Sums over and spreads onto s x s pixel blocks: the map between a x s output grid and its input grid (flux per
input pixel). Here, below nets, losses and inference, so that each of them can use it. Generic: no domain import."""

from __future__ import annotations

import torch


def block_sum(y: torch.Tensor, scale: int) -> torch.Tensor:
    """Sum of ``scale`` x ``scale`` blocks over the last two axes: [..., s*H, s*W] -> [..., H, W]."""
    s = int(scale)
    if s < 1:
        raise ValueError(f"block_sum: scale={scale}; expected an integer >= 1")
    h, w = y.shape[-2] // s, y.shape[-1] // s
    if (h * s, w * s) != tuple(y.shape[-2:]):
        raise ValueError(f"block_sum: image {tuple(y.shape[-2:])} is not a multiple of scale={s}")
    return y.reshape(*y.shape[:-2], h, s, w, s).sum(dim=(-3, -1)) if s > 1 else y


def block_spread(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Adjoint of :func:`block_sum`: each input pixel's value copied to its ``scale`` x ``scale`` block."""
    s = int(scale)
    return x.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1) if s > 1 else x
