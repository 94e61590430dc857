"""SAXS patches with a second input channel: the pixel's absolute energy on a fixed scale.

The study normalises every patch to its own 1st/99.95th percentiles (0 / 1) and clips to [0, 1]. Inside a
32 px patch a Bragg-like spot then *sets* the upper percentile and looks exactly like a saturated hit or
charge-sharing cluster of the bremsstrahlung background: the net cannot know that the spot holds
~1e4-1e5 keV, far above any background deposit (single hits and clusters are at most 1,000 keV in the
simulator, track pixels a few times 40 keV).

:class:`AbsoluteEnergyNormaliser` is the study's :class:`~lit_sr.data.normalise.PercentileNormaliser`
(channel 0, unchanged, and the ``(lo, hi)`` state that maps outputs back to keV) plus channel 1,

    a(E) = log1p(max(E, 0) / E_photon) / log1p(E_ref / E_photon)        (E in keV)

with the photon energy E_photon (8 keV) and a reference E_ref (default 1e5 keV = 12,500 photons of 8 keV):
one photon is a = 0.073, the brightest background hit (1,000 keV) 0.51, a pixel of E_ref 1.0; not
patch-normalised and not clipped (the beam's neighbourhood, ~1e6 photons, reaches ~1.5). It is a
pointwise function of the pixel, a scalar field, so a C4 net stays rot90-equivariant. The net's
outputs (``out_channels=1``) are in channel 0's normalised units; ``denormalise`` is the parent's.
"""

from __future__ import annotations

import math

import torch

from lit_sr.data.normalise import LOWER_PERCENTILE, UPPER_PERCENTILE, PercentileNormaliser

DEFAULT_REFERENCE_KEV = 1.0e5


def absolute_energy_channel(
    x_kev: torch.Tensor, photon_energy_keV: float = 8.0, reference_keV: float = DEFAULT_REFERENCE_KEV
) -> torch.Tensor:
    """log1p(max(E, 0) / E_photon) / log1p(E_ref / E_photon) of every pixel (E in keV; 1 at E_ref)."""
    t = torch.as_tensor(x_kev)
    if not t.is_floating_point():
        t = t.float()
    return torch.log1p(t.clamp_min(0.0) / photon_energy_keV) / math.log1p(reference_keV / photon_energy_keV)


class AbsoluteEnergyNormaliser(PercentileNormaliser):
    """x [B, 1, P, P] keV -> ([B, 2, P, P], (lo, hi)): channel 0 the percentile-normalised patch (clipped to
    [0, 1] when ``clip``), channel 1 :func:`absolute_energy_channel` of the keV values; (lo, hi) [B, 1] are
    channel 0's bounds, so ``denormalise`` maps 1-channel outputs back to keV."""

    def __init__(
        self,
        lower: float = LOWER_PERCENTILE,
        upper: float = UPPER_PERCENTILE,
        clip: bool = True,
        photon_energy_keV: float = 8.0,
        reference_keV: float = DEFAULT_REFERENCE_KEV,
    ) -> None:
        super().__init__(lower, upper, clip)
        if not photon_energy_keV > 0 or not reference_keV > 0:
            raise ValueError(
                f"photon_energy_keV and reference_keV must be > 0 keV, got {photon_energy_keV} and {reference_keV}"
            )
        self.photon_energy_keV, self.reference_keV = float(photon_energy_keV), float(reference_keV)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"AbsoluteEnergyNormaliser takes keV patches [B, 1, P, P], got shape {tuple(x.shape)}")
        xn, state = super().__call__(x)
        a = absolute_energy_channel(x, self.photon_energy_keV, self.reference_keV).to(xn.dtype)
        return torch.cat([xn, a], dim=1), state

    def __repr__(self) -> str:
        return (
            f"AbsoluteEnergyNormaliser(lower={self.lower}, upper={self.upper}, clip={self.clip}, "
            f"photon_energy_keV={self.photon_energy_keV}, reference_keV={self.reference_keV})"
        )
