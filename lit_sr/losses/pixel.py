"""Pixel losses selectable by name from config: L1, MSE and Poisson negative log-likelihood."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PixelLoss(nn.Module):
    """``kind``: 'l1', 'mse' or 'poisson'.

    'poisson' treats the prediction as the expected count rate and the target as observed counts
    (X-ray exposures): NLL = pred - target * log(pred + eps), up to a target-only constant. It
    needs non-negative predictions (use a ReLU/softplus output) in count-like units.
    """

    def __init__(self, kind: str = "l1", eps: float = 1e-8) -> None:
        super().__init__()
        kind = kind.lower()
        if kind not in ("l1", "mse", "poisson"):
            raise ValueError(f"unknown pixel loss {kind!r}; expected 'l1', 'mse' or 'poisson'")
        self.kind = kind
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.kind == "l1":
            return F.l1_loss(pred, target)
        if self.kind == "mse":
            return F.mse_loss(pred, target)
        return F.poisson_nll_loss(pred, target, log_input=False, full=False, eps=self.eps)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


class RelativeFluxLoss(nn.Module):
    """Mean over samples of |sum(pred) / sum(target) - 1|: the relative error of each image's total flux.

    Sums run over all channels and pixels, in the units the caller passes (physical intensities, where totals add
    up). A term that pixel losses barely feel (a uniform 5 % deficit costs 0.05 x the mean intensity in L1) but
    that flux-blind terms (a peak-normalised classifier's) can move. ``eps`` guards an all-zero target.
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = float(eps)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = target.flatten(1).sum(1)
        return ((pred.flatten(1).sum(1) - total) / total.abs().clamp_min(self.eps)).abs().mean()
