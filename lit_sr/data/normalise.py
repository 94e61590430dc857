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
    qs = quantiles(flat, q)  # [2, ...]
    lo, hi = qs[0], torch.maximum(qs[1], qs[0] + eps)
    xn = apply_bounds(t, lo, hi, clip=clip)
    return xn, lo, hi


def quantiles(flat: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``torch.quantile(flat, q, dim=-1)`` for a 1-D ``q`` (linear interpolation; NaN where a row holds a NaN),
    bit for bit, from a partial sort: on the CPU ``numpy.partition`` puts only the few order statistics needed in
    place, ~15x faster than torch's full sort of every row (a SAXS batch, 16 patches of 1024 px, 1 thread:
    0.05 vs 0.8 ms). Other devices and dtypes, and inputs that need a gradient, use ``torch.quantile``."""
    cpu_float = flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64)
    if not cpu_float or flat.requires_grad or flat.shape[-1] == 0 or q.dim() != 1:
        return torch.quantile(flat, q, dim=-1)
    last = flat.shape[-1] - 1
    ranks = q * last  # torch.quantile's arithmetic: ranks in q's dtype, weights = ranks - floor(ranks)
    below, above = ranks.long(), ranks.ceil().long()
    weights = ranks - below
    kth = sorted({*below.tolist(), *above.tolist(), last})  # the last: NaN sorts there (torch: NaN result)
    part = torch.from_numpy(np.partition(flat.numpy(), kth, axis=-1))
    values = (
        part[..., below]
        .movedim(-1, 0)
        .lerp_(part[..., above].movedim(-1, 0), weights.view(-1, *[1] * (flat.dim() - 1)))
    )
    has_nan = part[..., last].isnan()
    return torch.where(has_nan, torch.full_like(values, float("nan")), values) if bool(has_nan.any()) else values


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
