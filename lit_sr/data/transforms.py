"""Invertible intensity transforms between physical units (GeV, counts, keV) and the model's space.

The transform is an ``nn.Module`` without parameters but with buffers-free plain floats so that it
pickles into checkpoints via ``save_hyperparameters`` and ``predict`` can return physical units.
"""

from __future__ import annotations

import torch
from torch import nn


class IntensityTransform(nn.Module):
    """y = log1p(x / scale) if log else x / scale; inverse maps back to physical units.

    Args:
        scale: physical value mapped to 1 (e.g. beam energy in GeV for calorimeter images).
        log: compress the dynamic range with log1p (keeps 0 -> 0 and monotonicity).
    """

    def __init__(self, scale: float = 1.0, log: bool = False) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"IntensityTransform scale must be > 0, got {scale}")
        self.scale = float(scale)
        self.log = bool(log)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x / self.scale
        return torch.log1p(y) if self.log else y

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        x = torch.expm1(y) if self.log else y
        return x * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}, log={self.log}"
