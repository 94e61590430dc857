"""Substructure classifier for lens images: the downstream probe and the perceptual-feature net of the lensing GANs.

    x -> x / peak(x) (per image) -> [polar resampling about the image centre] -> conv3x3(C0) + BN + ReLU
      -> stages s = 1..S: conv3x3 stride 2 (C_s) + BN + ReLU, conv3x3 (C_s) + BN + ReLU
      -> [global mean pool, global max pool] -> dense(feature_dim) + ReLU -> dense(K)

Why this shape rather than the generic ``CNNClassifier``:

* lens brightness spans more than a decade (source surface brightness, exposure time) while the classes differ by
  small distortions of the arcs: each image is divided by its peak;
* the lens sits at the image centre and its arcs lie near the Einstein ring. With ``polar=True`` the image is
  resampled (bilinear, differentiable) onto a grid of radius x position angle about the centre, with circular
  padding along the angle, so a ring becomes a horizontal band and a rotation of the lens a circular shift: the
  convolutions' translation symmetry then matches the lens's rotation symmetry, and a subhalo's dent is a
  local break of a smooth band wherever it sits on the ring;
* BatchNorm, so a CPU-length run (hundreds of batches) learns at all; global max pooling keeps a local defect
  visible after pooling.
The peak is the per-image maximum, clamped below at ``min_peak`` (model-space units).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class PolarResample(nn.Module):
    """Bilinear resampling of [B, C, H, W] images onto ``n_radius`` x ``n_angle`` (radius along rows, position
    angle along columns) about the image centre, radii from ``r_min`` to ``r_max`` in units of the half-width
    of the image (1 = the edge midpoints). Points outside the image read 0."""

    def __init__(self, n_radius: int = 32, n_angle: int = 128, r_min: float = 0.1, r_max: float = 1.0) -> None:
        super().__init__()
        if not 0 <= r_min < r_max or n_radius < 2 or n_angle < 4:
            raise ValueError(
                f"PolarResample needs 0 <= r_min < r_max, n_radius >= 2, n_angle >= 4; got {r_min}, "
                f"{r_max}, {n_radius}, {n_angle}"
            )
        r = torch.linspace(r_min, r_max, n_radius)
        phi = torch.arange(n_angle) * (2 * math.pi / n_angle)
        # grid_sample's (x, y) in [-1, 1] with align_corners=False: -1/+1 are the outer pixel edges
        grid = torch.stack([r[:, None] * torch.cos(phi)[None, :], r[:, None] * torch.sin(phi)[None, :]], -1)
        self.register_buffer("grid", grid[None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.grid.to(x.dtype).expand(x.shape[0], -1, -1, -1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class CircularConvBN(nn.Sequential):
    """conv3x3 (zero padding along rows; circular along columns when ``circular``) + BatchNorm + ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, circular: bool = False) -> None:
        self.circular = circular
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=0 if circular else 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.circular:  # the angle wraps round: columns padded circularly, rows (radius) with zeros
            x = F.pad(F.pad(x, (1, 1, 0, 0), mode="circular"), (0, 0, 1, 1))
        return super().forward(x)


class LensClassifier(nn.Module):
    """Peak-normalised BN CNN, optionally on the polar image; one logit per class (one for two classes).

    Args:
        in_channels: image channels.
        channels: C0 of the stem followed by the channels of each stride-2 stage.
        feature_dim: size of the feature vector returned by :meth:`features` (perceptual features).
        num_classes: K logits (1 = binary).
        polar: resample about the image centre first (see the module doc); any input size.
        n_radius / n_angle / r_min / r_max: the polar grid (radii in units of the image half-width).
        min_peak: lower clamp of the per-image normalising peak (model-space units).
        dropout: dropout before the output layer (training only).
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 96),
        feature_dim: int = 64,
        num_classes: int = 3,
        polar: bool = True,
        n_radius: int = 32,
        n_angle: int = 128,
        r_min: float = 0.1,
        r_max: float = 1.0,
        min_peak: float = 1e-3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(channels) < 2 or num_classes < 1:
            raise ValueError(
                f"LensClassifier needs >= 2 channel entries and num_classes >= 1, got {list(channels)}, {num_classes}"
            )
        self.num_classes = int(num_classes)
        self.min_peak = float(min_peak)
        self.polar = PolarResample(n_radius, n_angle, r_min, r_max) if polar else None
        layers: list[nn.Module] = [CircularConvBN(in_channels, channels[0], circular=polar)]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [
                CircularConvBN(c_in, c_out, stride=2, circular=polar),
                CircularConvBN(c_out, c_out, circular=polar),
            ]
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(2 * channels[-1], feature_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(feature_dim, self.num_classes)
        self.feature_dim = feature_dim

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Each image divided by its peak (clamped at ``min_peak``)."""
        peak = x.flatten(1).amax(1).clamp_min(self.min_peak)
        return x / peak.view(-1, *([1] * (x.dim() - 1)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature vector [B, feature_dim] of the peak-normalised (polar) image."""
        x = self.normalise(x)
        if self.polar is not None:
            x = self.polar(x)
        f = self.body(x)
        return self.head(torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, K] (or [B] for one logit)."""
        logits = self.out(self.dropout(self.features(x)))
        return logits.squeeze(-1) if self.num_classes == 1 else logits
