"""Image-quality metrics with an explicit data range (torchmetrics, synchronised across devices)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure


def image_quality(data_range: float, prefix: str = "") -> MetricCollection:
    """PSNR and SSIM over a fixed ``data_range`` (in the units of the tensors compared).

    A fixed range (not the per-batch min/max) makes values comparable between runs and models.
    PSNR is accumulated over the whole epoch (sum of squared errors / number of pixels).
    SSIM uses the standard Gaussian window of Wang et al. (2004): sigma = 1.5 px, truncated to 11x11 px
    (torchmetrics sizes a Gaussian window from sigma, 2 * int(3.5 sigma + 0.5) + 1 px; its ``kernel_size``
    only applies to a uniform window), averaged over the pixels whose window lies inside the image.
    """
    return MetricCollection(
        {
            "psnr": PeakSignalNoiseRatio(data_range=data_range),
            "ssim": StructuralSimilarityIndexMeasure(data_range=data_range),
        },
        prefix=prefix,
    )


def upsample_baseline(lr: torch.Tensor, scale: int, mode: str, flux_conserving: bool = False) -> torch.Tensor:
    """Classical upsampling baseline: 'nearest', 'bilinear' or 'bicubic' (bicubic clamped at zero for intensities).

    ``flux_conserving``: the LR pixel holds the *sum* over scale x scale HR pixels (calorimeter
    energies, photon counts), so the upsampled value is divided by scale**2 to stay per HR pixel.
    """
    if scale == 1:
        return lr
    if mode == "nearest":
        up = F.interpolate(lr, scale_factor=scale, mode="nearest")
    elif mode == "bilinear":  # a convex combination of neighbours: no negative lobes to clamp
        up = F.interpolate(lr, scale_factor=scale, mode="bilinear", align_corners=False)
    elif mode == "bicubic":
        up = F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp_min(0.0)
    else:
        raise ValueError(f"unknown baseline {mode!r}; expected 'nearest', 'bilinear' or 'bicubic'")
    return up / scale**2 if flux_conserving else up
