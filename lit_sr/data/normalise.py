"""Per-image percentile normalisation of patches (training and blended inference share it).

``normalise_patch`` maps each image's ``lower``/``upper`` percentiles to 0/1 (the SAXS study's 1st and
99.95th); the bounds are kept so predictions return to physical units. :class:`PercentileNormaliser`
is the same as the ``normalise(x) -> (xn, state)`` / ``denormalise(yn, state)`` pair that
:func:`lit_sr.inference.blend.blend_predict` takes.
"""

from __future__ import annotations

import numpy as np
import torch

LOWER_PERCENTILE = 1.0
UPPER_PERCENTILE = 99.95


def normalise_patch(
    x: torch.Tensor | np.ndarray,
    lower: float = LOWER_PERCENTILE,
    upper: float = UPPER_PERCENTILE,
    eps: float = 1e-6,
    clip: bool = True,
):
    """Percentile normalisation over the last two dims: returns (xn, lo, hi).

    lo/hi are the ``lower``/``upper`` percentiles (linear interpolation, as numpy) of each image;
    xn = (x - lo) / (hi - lo), clipped to [0, 1] when ``clip``. lo, hi have the shape of x without its
    last two dims. If hi - lo < eps (a flat patch) hi is set to lo + eps so the mapping stays invertible.
    """
    t = torch.as_tensor(x)
    if not t.is_floating_point():
        t = t.float()
    flat = t.reshape(*t.shape[:-2], -1)
    q = torch.tensor([lower / 100.0, upper / 100.0], dtype=flat.dtype, device=flat.device)
    qs = torch.quantile(flat, q, dim=-1)  # [2, ...]
    lo, hi = qs[0], torch.maximum(qs[1], qs[0] + eps)
    xn = apply_bounds(t, lo, hi, clip=clip)
    return xn, lo, hi


def apply_bounds(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """(x - lo) / (hi - lo), clipped to [0, 1] when ``clip``; lo/hi broadcast over the last two dims."""
    lo_, hi_ = torch.as_tensor(lo)[..., None, None], torch.as_tensor(hi)[..., None, None]
    y = (torch.as_tensor(x) - lo_) / (hi_ - lo_)
    return y.clamp(0.0, 1.0) if clip else y


def denormalise(xn: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Inverse of the (unclipped) normalisation: xn * (hi - lo) + lo, bounds over the last two dims."""
    lo_, hi_ = torch.as_tensor(lo)[..., None, None], torch.as_tensor(hi)[..., None, None]
    return xn * (hi_ - lo_) + lo_


class PercentileNormaliser:
    """Patch batches [B, C, P, P] normalised per image and channel; ``state`` = (lo, hi) per image and channel.

    ``denormalise`` maps outputs back with the bounds of their input; an output with another number of
    channels than the input uses the channel-mean bounds.
    """

    def __init__(self, lower: float = LOWER_PERCENTILE, upper: float = UPPER_PERCENTILE, clip: bool = True) -> None:
        self.lower, self.upper, self.clip = float(lower), float(upper), bool(clip)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        xn, lo, hi = normalise_patch(x, self.lower, self.upper, clip=self.clip)
        return xn, (lo, hi)

    def denormalise(self, yn: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        lo, hi = state
        if yn.shape[1] != lo.shape[1]:
            lo, hi = lo.mean(1, keepdim=True), hi.mean(1, keepdim=True)
        return denormalise(yn, lo, hi)

    def __repr__(self) -> str:
        return f"PercentileNormaliser(lower={self.lower}, upper={self.upper}, clip={self.clip})"
