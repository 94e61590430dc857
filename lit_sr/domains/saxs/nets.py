"""SAXS decomposition net that keeps intensities above a patch's percentile range.

Patches are normalised to their 1st/99.95th percentiles (0 / 1). Training clips them to [0, 1], so
the backbone has only ever seen values in that range, and the study's signal head s = ReLU(x - n)
then caps everything brighter than the patch's 99.95th percentile at 1: a Bragg-like spot 100 times
brighter than its surroundings came back at a few per cent of its value.

:class:`SAXSDecompositionNet` is :class:`~lit_sr.nets.decomposition.DecompositionNet` (same
parameters, same checkpoints) with one change at inference: it accepts *unclipped* normalised patches
(``PercentileNormaliser(clip=False)``), shows the backbone the clipped patch it was trained on, and
forms the outputs from the unclipped input. On a clipped input (training, the patch metrics) its
outputs are exactly the study's. Two rules for a pixel above the range (x > 1, clipped to 1):

* ``excess="signal"``: noise n as predicted on the clipped patch (so at most about 1), signal
  s = ReLU(x - n): the part of the pixel above the percentile range stays in the signal;
* ``excess="ratio"``: the net's noise fraction f = n / 1 of the clipped pixel is applied to the
  unclipped value: n' = f x, s = x - n' (a pixel the net calls a hit goes to the background whole),
  with n' at most ``max_noise`` (normalised units, i.e. times the patch's percentile range) if given.

On the simulated test frames the pixels above their patch's range are hits (background) up to 2x
the range (32 px patches) and 5.3x (128 px), signal up to 2.5x (``docs/figures/saxs_frames.md`` and
``docs/saxs.md`` have the measured rules). A Bragg-like peak is far brighter; ``ratio`` with
``max_noise=10`` removes the hits above the range as the net decides and keeps such a peak, which
``ratio`` alone sends to the background whenever the net calls the clipped pixel a hit.

With an absolute-energy channel (``out_channels=1`` of ``in_channels=2``,
:class:`lit_sr.domains.saxs.normalise.AbsoluteEnergyNormaliser`) only the first channel, the
percentile-normalised patch, is clipped and decomposed; the absolute energy reaches the backbone
unclipped.

Both rules are pointwise, so the C4 equivariance of the backbone is kept, and s + n = x wherever
the net does not predict more noise than the pixel holds (as for the study's head).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from lit_sr.nets.decomposition import DecompositionNet

EXCESS_RULES = ("signal", "ratio")


class SAXSDecompositionNet(DecompositionNet):
    """``DecompositionNet`` whose outputs keep the part of an unclipped input outside ``input_range``.

    Args (beyond :class:`~lit_sr.nets.decomposition.DecompositionNet`'s):
        input_range: (lo, hi) range of the training inputs in normalised units (the percentile
            normaliser's clip range, (0, 1)); the backbone sees the input clamped to it.
        excess: 'signal' or 'ratio': where the part of a pixel above ``hi`` goes (module docstring).
        max_noise: with 'ratio', the most background a pixel above ``hi`` can get (normalised units,
            at least ``hi``); None: no limit.
    """

    def __init__(
        self,
        *args: Any,
        input_range: Sequence[float] = (0.0, 1.0),
        excess: str = "ratio",
        max_noise: float | None = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if excess not in EXCESS_RULES:
            raise ValueError(f"excess must be one of {', '.join(EXCESS_RULES)}, got {excess!r}")
        lo, hi = (float(v) for v in input_range)
        if not lo < hi:
            raise ValueError(f"input_range must be (lo, hi) with lo < hi, got {tuple(input_range)}")
        if max_noise is not None and not max_noise >= hi:
            raise ValueError(f"max_noise must be >= the input range's upper end {hi} (or null), got {max_noise}")
        self.input_range = (lo, hi)
        self.excess = excess
        self.max_noise = None if max_noise is None else float(max_noise)

    def forward(self, x: torch.Tensor, return_latent: bool = False) -> dict[str, torch.Tensor]:
        lo, hi = self.input_range
        c = self.out_channels  # the normalised image; further channels (absolute energy) are not clipped
        clipped = torch.cat([x[:, :c].clamp(lo, hi), x[:, c:]], dim=1) if x.shape[1] > c else x.clamp(lo, hi)
        out = super().forward(clipped, return_latent)
        if torch.equal(clipped, x):  # training and the patch metrics: the study's outputs unchanged
            return out
        x = x[:, :c]
        noise = out["noise"]
        if self.excess == "ratio":
            scaled = (noise / hi).clamp(0.0, 1.0) * x
            if self.max_noise is not None:
                scaled = torch.minimum(scaled, noise.clamp_min(self.max_noise))
            noise = torch.where(x > hi, scaled, noise)
        out["noise"] = noise
        out["signal"] = F.relu(x - noise)
        return out
