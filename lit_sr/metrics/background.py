"""Background-removal metrics and the classical baseline of the SAXS domain.

* :class:`HitPrecision` / :class:`HitRecall`: a pixel is a true background *hit* where the true noise
  exceeds ``threshold`` (normalised units); a predicted hit where the predicted noise exceeds it.
  Counts (tp, fp, fn) are summed over batches and devices (``dist_reduce_fx="sum"``).
* :func:`median_hit_filter`: 3x3 median filter with hit clipping, the classical baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric


class _HitCounts(Metric):
    is_differentiable = False
    full_state_update = False

    def __init__(self, threshold: float = 0.05, zero_division: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.threshold = float(threshold)
        self.zero_division = float(zero_division)
        for name in ("tp", "fp", "fn"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred_noise: torch.Tensor, true_noise: torch.Tensor) -> None:
        if pred_noise.shape != true_noise.shape:
            raise ValueError(f"pred {tuple(pred_noise.shape)} and target {tuple(true_noise.shape)} differ in shape")
        p = pred_noise > self.threshold
        t = true_noise > self.threshold
        self.tp += (p & t).sum()
        self.fp += (p & ~t).sum()
        self.fn += (~p & t).sum()

    @staticmethod
    def _ratio(num: torch.Tensor, den: torch.Tensor, zero_division: float) -> torch.Tensor:
        if den == 0:
            return torch.tensor(zero_division)
        return num.float() / den.float()


class HitPrecision(_HitCounts):
    """tp / (tp + fp) of background hits (``zero_division`` when nothing is predicted)."""

    higher_is_better = True

    def compute(self) -> torch.Tensor:
        return self._ratio(self.tp, self.tp + self.fp, self.zero_division)


class HitRecall(_HitCounts):
    """tp / (tp + fn) of background hits (``zero_division`` when there is no true hit)."""

    higher_is_better = True

    def compute(self) -> torch.Tensor:
        return self._ratio(self.tp, self.tp + self.fn, self.zero_division)


def _neighbourhood(x: torch.Tensor, size: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, H, W, size*size] edge-replicated neighbourhoods."""
    r = size // 2
    xp = F.pad(x, (r, r, r, r), mode="replicate")
    return xp.unfold(-2, size, 1).unfold(-2, size, 1).reshape(*x.shape, size * size)


def median_hit_filter(x: torch.Tensor, k: float = 5.0, size: int = 3, floor: float = 0.0):
    """Classical baseline: pixels exceeding the local median by more than k * 1.4826 * MAD + floor
    are replaced by the median. Returns (signal_estimate, noise_estimate = x - signal_estimate >= 0)."""
    nb = _neighbourhood(x, size)
    med = nb.median(dim=-1).values
    mad = (nb - med[..., None]).abs().median(dim=-1).values
    hit = (x - med) > k * 1.4826 * mad + floor
    signal = torch.where(hit, med, x)
    return signal, (x - signal).clamp_min(0.0)
