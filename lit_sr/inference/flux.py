"""Flux-conserving rescaling of a prediction: its total over a region made equal to the input's.

For counting data (photons, counts/s per pixel) the total of the input over a large region is an unbiased
estimate of the total of the true intensity there, with a relative Poisson error 1 / sqrt(N) for N counts
(0.3 % for 1e5 counts). A denoiser or super-resolver that moves flux around without creating or destroying it
keeps that total; a network trained on other data can add or remove a near-uniform level (e.g. a background
excess on a field fainter than its training fields), which the total exposes. :func:`match_total` multiplies
the prediction by one factor so that its total over the region (summed over ``scale`` x ``scale`` blocks
back to the input grid, so a super-resolved output counts the same flux) equals the input's. It changes
nothing else: relative structure, and the ratio of any two pixels, are kept.
"""

from __future__ import annotations

import torch


def match_total(
    output: torch.Tensor,
    reference: torch.Tensor,
    weight: torch.Tensor | None = None,
    scale: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(output * f, f)`` with ``f = sum(reference * weight) / sum(pool(output) * weight)`` per image.

    Args:
        output: [..., s*H, s*W] non-negative intensities per output pixel (physical units, summable).
        reference: [..., H, W] the input in the same units per input pixel (e.g. the observed count rate).
        weight: [..., H, W] region / weights on the input grid (e.g. the detector mask; None: every pixel).
        scale: s, output pixels per input pixel along each axis; ``pool`` sums s x s blocks.

    The sums run over the last two axes; the factor has the leading shape of ``output`` (one per image and
    channel). An output whose weighted total is 0 is returned unchanged (factor 1).
    """
    s = int(scale)
    h, w = reference.shape[-2:]
    if tuple(output.shape[-2:]) != (s * h, s * w):
        raise ValueError(
            f"match_total: output {tuple(output.shape[-2:])} is not scale={s} x reference {tuple(reference.shape[-2:])}"
        )
    pooled = output.reshape(*output.shape[:-2], h, s, w, s).sum(dim=(-3, -1)) if s > 1 else output
    wgt = torch.ones_like(reference) if weight is None else weight.to(reference.dtype)
    num = (reference * wgt).sum(dim=(-2, -1))
    den = (pooled * wgt).sum(dim=(-2, -1))
    factor = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.ones_like(den))
    return output * factor[..., None, None], factor
