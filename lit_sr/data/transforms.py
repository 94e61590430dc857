"""Invertible intensity transforms between physical units (GeV, counts, keV) and the model's space.

The transform is an ``nn.Module`` without parameters but with buffers-free plain floats so that it
pickles into checkpoints via ``save_hyperparameters`` and ``predict`` can return physical units.
"""

from __future__ import annotations

import math

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


STRETCHES = ("linear", "sqrt", "asinh", "log")


class StretchTransform(nn.Module):
    """Clip to [0, max_value], divide by ``max_value``, stretch to [0, 1] (invertible on that range).

    The image scaling of Sweere et al. (MNRAS 517, 4054) for X-ray count rates, usable for any
    non-negative intensity: u = clip(x, 0, max_value) / max_value, then

    * ``linear``: y = u
    * ``sqrt``:   y = sqrt(u)
    * ``asinh``:  y = asinh(u / a) / asinh(1 / a)   (a = 0.02 in the paper)
    * ``log``:    y = log(a u + 1) / log(a + 1)     (a = 1000 in the paper)

    and a final clip of y to [0, 1]. ``inverse`` maps [0, 1] back to [0, max_value]; values above
    ``max_value`` are not recoverable (that is the clip), so choose ``max_value`` above the brightest
    pixel that matters. ``a`` is ignored by ``linear`` and ``sqrt``; ``a=None`` takes the paper's value.

    ``clip=False`` drops the upper clip: values above ``max_value`` continue the same stretch (y > 1) and
    ``inverse`` maps them back exactly (only negative values are still set to 0). The map below
    ``max_value`` is unchanged, so a network trained with the clip sees the same inputs there.
    """

    DEFAULT_A = {"linear": 1.0, "sqrt": 1.0, "asinh": 0.02, "log": 1000.0}

    def __init__(
        self, max_value: float = 1.0, stretch: str = "sqrt", a: float | None = None, clip: bool = True
    ) -> None:
        super().__init__()
        if stretch not in STRETCHES:
            raise ValueError(f"StretchTransform stretch must be one of {', '.join(STRETCHES)}, got {stretch!r}")
        if max_value <= 0:
            raise ValueError(f"StretchTransform max_value must be > 0, got {max_value}")
        a = self.DEFAULT_A[stretch] if a is None else float(a)
        if a <= 0:
            raise ValueError(f"StretchTransform a must be > 0, got {a}")
        self.max_value = float(max_value)
        self.stretch = stretch
        self.a = a
        self.clip = bool(clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.clamp(0.0, self.max_value if self.clip else None) / self.max_value
        if self.stretch == "linear":
            y = u
        elif self.stretch == "sqrt":
            y = u.sqrt()
        elif self.stretch == "asinh":
            y = torch.asinh(u / self.a) / math.asinh(1.0 / self.a)
        else:
            y = torch.log1p(self.a * u) / math.log1p(self.a)
        return y.clamp(0.0, 1.0 if self.clip else None)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y = y.clamp(0.0, 1.0 if self.clip else None)
        if self.stretch == "linear":
            u = y
        elif self.stretch == "sqrt":
            u = y * y
        elif self.stretch == "asinh":
            u = torch.sinh(y * math.asinh(1.0 / self.a)) * self.a
        else:
            u = torch.expm1(y * math.log1p(self.a)) / self.a
        return u * self.max_value

    def extra_repr(self) -> str:
        return f"max_value={self.max_value}, stretch={self.stretch!r}, a={self.a}, clip={self.clip}"
