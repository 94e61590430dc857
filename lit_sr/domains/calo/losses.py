"""Shower-shape terms for the calorimeter generator's pixel loss.

A per-pixel loss (L1 in log1p(E / 0.1 GeV) space) rewards the per-pixel median; the physics metrics
look at the whole shower: its log-weighted barycentre and its energy-weighted width. ``ShowerLoss``
adds those two (in cm, computed in GeV through the data transform) to the pixel loss, comparing SR
with its HR target (never with the true impact point, which a real detector does not know), and
optionally a feature distance through a frozen photon/pion classifier (the GAN's perceptual term,
here usable in the pixel pre-training as well).
"""

from __future__ import annotations

import torch
from torch import nn

from lit_sr.domains.calo.metrics import barycentre, shower_width
from lit_sr.losses.pixel import PixelLoss


class ShowerLoss(nn.Module):
    """pixel(SR, HR) + barycentre_weight * mean |b(SR) - b(HR)| + width_weight * mean |w(SR) - w(HR)|
    + feature_weight * mean (phi(SR) - phi(HR))^2.

    Args:
        transform: the data's GeV -> model-space transform (the shower terms are computed in GeV);
            None if the images are in GeV already.
        kind: pixel loss ('l1', 'mse', ... as :class:`~lit_sr.losses.pixel.PixelLoss`).
        barycentre_weight: weight of the barycentre distance (cm, log weighting with ``w0``, x and y).
        width_weight: weight of the shower-width difference (cm).
        w0: log-weighting parameter of the barycentre (the evaluator's).
        feature_net: frozen classifier (``load_frozen_classifier``): ``features(x)`` are compared, with
            ``x`` in its own ``input_transform`` space of the GeV images if it has one.
        feature_weight: weight of the feature distance (0: off).
    """

    def __init__(
        self,
        transform: nn.Module | None = None,
        kind: str = "l1",
        barycentre_weight: float = 0.0,
        width_weight: float = 0.0,
        w0: float = 4.7,
        feature_net: nn.Module | None = None,
        feature_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if barycentre_weight < 0 or width_weight < 0 or feature_weight < 0:
            raise ValueError(
                f"ShowerLoss weights must be >= 0, got barycentre_weight={barycentre_weight}, "
                f"width_weight={width_weight}, feature_weight={feature_weight}"
            )
        if feature_weight and feature_net is None:
            raise ValueError("ShowerLoss feature_weight > 0 needs a feature_net (a frozen classifier)")
        self.feature_net = feature_net
        if feature_net is not None:
            feature_net.eval()
            for p in feature_net.parameters():
                p.requires_grad_(False)
        self.feature_weight = float(feature_weight)
        self.pixel = PixelLoss(kind)
        self.transform = transform
        self.barycentre_weight, self.width_weight, self.w0 = float(barycentre_weight), float(width_weight), float(w0)

    def train(self, mode: bool = True) -> "ShowerLoss":
        super().train(mode)
        if self.feature_net is not None:
            self.feature_net.eval()  # frozen for good
        return self

    def _features(self, e_gev: torch.Tensor, model_space: torch.Tensor) -> torch.Tensor:
        tr = getattr(self.feature_net, "input_transform", None)
        x = tr(e_gev) if tr is not None else model_space
        f = self.feature_net.features(x) if hasattr(self.feature_net, "features") else self.feature_net(x)
        return f.flatten(1)

    def shower_terms(self, sr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        """Barycentre distance and width difference (cm) and the feature distance, batch means."""
        to_gev = self.transform.inverse if self.transform is not None else (lambda t: t)
        e_sr, e_hr = to_gev(sr).clamp_min(0.0), to_gev(hr).clamp_min(0.0)
        terms = {}
        if self.barycentre_weight:
            terms["barycentre_cm"] = (
                (barycentre(e_sr, "log", self.w0) - barycentre(e_hr, "log", self.w0)).abs().sum(1).mean()
            )
        if self.width_weight:
            terms["width_cm"] = (shower_width(e_sr) - shower_width(e_hr)).abs().mean()
        if self.feature_weight:
            with torch.no_grad():
                target = self._features(e_hr, hr)
            terms["features"] = (self._features(e_sr, sr) - target).pow(2).mean()
        return terms

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        loss = self.pixel(sr, hr)
        weights = {
            "barycentre_cm": self.barycentre_weight,
            "width_cm": self.width_weight,
            "features": self.feature_weight,
        }
        for name, value in self.shower_terms(sr, hr).items():
            loss = loss + weights[name] * value
        return loss
