"""Structural-similarity losses, 1 - SSIM and 1 - MS-SSIM, on torchmetrics' functional measures.

The window is configurable because small astronomical images need other settings than photographs:
the X-ray SR study (Sweere et al., MNRAS 517, 4054) used a Gaussian window of 13 pixels with sigma 2.5
and K = (0.01, 0.05) instead of the usual 11 / 1.5 / (0.01, 0.03).

MS-SSIM downsamples by 2 between scales, so the image side must exceed (kernel_size - 1) * 2^(scales - 1)
(torchmetrics' condition): with a 13-pixel window, 3 scales need > 48 pixels and the usual 5 need > 192.
``betas`` sets the number of scales; the default keeps the first three weights of the standard five,
which suits 64 x 64 patches.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    structural_similarity_index_measure,
)

STANDARD_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


class SSIMLoss(nn.Module):
    """1 - SSIM(pred, target), averaged over the batch.

    Args:
        data_range: value range of the images (1 for images scaled to [0, 1]).
        kernel_size: side of the Gaussian window (odd).
        sigma: its standard deviation (pixels).
        k1, k2: stabilising constants C1 = (k1 L)^2, C2 = (k2 L)^2.
    """

    def __init__(
        self, data_range: float = 1.0, kernel_size: int = 13, sigma: float = 2.5, k1: float = 0.01, k2: float = 0.05
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0 or kernel_size < 3:
            raise ValueError(f"SSIMLoss kernel_size must be odd and >= 3, got {kernel_size}")
        self.data_range, self.kernel_size, self.sigma, self.k1, self.k2 = (
            float(data_range),
            int(kernel_size),
            float(sigma),
            float(k1),
            float(k2),
        )

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ssim = structural_similarity_index_measure(
            pred,
            target,
            gaussian_kernel=True,
            sigma=self.sigma,
            kernel_size=self.kernel_size,
            data_range=self.data_range,
            k1=self.k1,
            k2=self.k2,
        )
        return 1.0 - ssim

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, sigma={self.sigma}, k=({self.k1}, {self.k2})"


class MSSSIMLoss(SSIMLoss):
    """1 - MS-SSIM(pred, target); ``betas`` are the weights of the scales (their number = scales).

    ``normalize='relu'`` (torchmetrics' default) clamps negative contrast-structure terms so that their
    fractional powers stay defined early in training.
    """

    def __init__(
        self,
        data_range: float = 1.0,
        kernel_size: int = 13,
        sigma: float = 2.5,
        k1: float = 0.01,
        k2: float = 0.05,
        betas: Sequence[float] = STANDARD_BETAS[:3],
        normalize: str | None = "relu",
    ) -> None:
        super().__init__(data_range, kernel_size, sigma, k1, k2)
        if len(betas) < 1:
            raise ValueError("MSSSIMLoss needs at least one beta (one scale)")
        self.betas = tuple(float(b) for b in betas)
        self.normalize = normalize

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        need = (self.kernel_size - 1) * 2 ** (len(self.betas) - 1)
        if min(pred.shape[-2:]) <= need:
            raise ValueError(
                f"MSSSIMLoss: images of {tuple(pred.shape[-2:])} pixels are too small for "
                f"{len(self.betas)} scales with a {self.kernel_size}-pixel window (need > {need}); "
                "use fewer betas or a smaller kernel_size"
            )
        ms = multiscale_structural_similarity_index_measure(
            pred,
            target,
            gaussian_kernel=True,
            sigma=self.sigma,
            kernel_size=self.kernel_size,
            data_range=self.data_range,
            k1=self.k1,
            k2=self.k2,
            betas=self.betas,
            normalize=self.normalize,
        )
        return 1.0 - ms

    def extra_repr(self) -> str:
        return super().extra_repr() + f", betas={self.betas}"
