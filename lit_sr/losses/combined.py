"""Loss combinators configurable from yaml: weighted sums, and a loss evaluated in physical units.

``WeightedSumLoss`` adds named terms, e.g. ``0.84 * MS-SSIM + 0.16 * L1``. ``PhysicalSpaceLoss`` maps
prediction and target back through the data's invertible transform before its loss: a Poisson
likelihood, for instance, is meaningful for count rates, not for square-root-stretched values.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn


class WeightedSumLoss(nn.Module):
    """sum_k weights[k] * losses[k](pred, target); terms of weight 0 are not evaluated.

    ``last_terms`` keeps the (detached) value of every term of the latest call, for logging.
    """

    def __init__(self, losses: Mapping[str, nn.Module], weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        if not losses:
            raise ValueError("WeightedSumLoss needs at least one loss")
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(losses))
        if unknown:
            raise ValueError(f"WeightedSumLoss: weights for unknown term(s) {unknown}; terms are {sorted(losses)}")
        self.losses = nn.ModuleDict(dict(losses))
        self.weights = {k: float(weights.get(k, 1.0)) for k in losses}
        self.last_terms: dict[str, torch.Tensor] = {}

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = pred.new_zeros(())
        self.last_terms = {}
        for name, loss in self.losses.items():
            w = self.weights[name]
            if w == 0.0:
                continue
            value = loss(pred, target)
            self.last_terms[name] = value.detach()
            total = total + w * value
        return total

    def extra_repr(self) -> str:
        return ", ".join(f"{k}: {w:g}" for k, w in self.weights.items())


class PhysicalSpaceLoss(nn.Module):
    """``loss(inverse(pred) / unit, inverse(target) / unit)`` with ``inverse`` the data transform's inverse.

    ``unit`` (physical units) keeps the values O(1); None takes the transform's ``max_value`` if it has
    one (the stretch transform maps [0, max_value] to [0, 1]), else 1. ``kind`` instead of ``loss``: a
    :class:`~lit_sr.losses.pixel.PixelLoss` of that kind (so a config can turn ``{kind: poisson}`` of the
    default pixel loss into ``{_target_: PhysicalSpaceLoss, kind: poisson, transform: ...}``).

    ``pool`` > 1: both physical images are summed over ``pool`` x ``pool`` blocks before the loss, for a
    reference known only on a coarser grid (e.g. counts measured on the input grid, scoring an x2 super-
    resolved prediction whose pixels must add up to them). Sums, not means: the pixels of an intensive
    quantity per pixel (counts, counts/s, energy) add up to the coarse pixel.

    ``pred_operator``: a fixed physical forward operator applied to the prediction only, before pooling
    (e.g. a PSF-matching blur: an SR prediction has sharper optics than a reference measured through the
    telescope's own; the reference already went through them).
    """

    def __init__(
        self,
        loss: nn.Module | None = None,
        transform: nn.Module | None = None,
        unit: float | None = None,
        kind: str | None = None,
        pool: int = 1,
        pred_operator: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if (loss is None) == (kind is None):
            raise ValueError("PhysicalSpaceLoss: give either a loss module or a PixelLoss kind, not both or neither")
        if loss is None:
            from lit_sr.losses.pixel import PixelLoss

            loss = PixelLoss(kind)
        if not hasattr(transform, "inverse"):
            raise ValueError(f"PhysicalSpaceLoss needs an invertible transform, got {type(transform).__name__}")
        self.loss = loss
        self.transform = transform
        self.unit = float(unit if unit is not None else getattr(transform, "max_value", 1.0))
        if not self.unit > 0:
            raise ValueError(f"PhysicalSpaceLoss unit must be > 0, got {self.unit}")
        self.pool = int(pool)
        if self.pool < 1:
            raise ValueError(f"PhysicalSpaceLoss pool must be an integer >= 1, got {pool}")
        self.pred_operator = pred_operator

    def _physical(self, x: torch.Tensor, operator: nn.Module | None = None) -> torch.Tensor:
        x = self.transform.inverse(x) / self.unit
        if operator is not None:
            x = operator(x)
        if self.pool == 1:
            return x
        h, w = x.shape[-2:]
        if h % self.pool or w % self.pool:
            raise ValueError(f"PhysicalSpaceLoss pool={self.pool}: image {h} x {w} is not a multiple of it")
        return torch.nn.functional.avg_pool2d(x, self.pool) * self.pool**2

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(self._physical(pred, self.pred_operator), self._physical(target))

    def extra_repr(self) -> str:
        return f"unit={self.unit:g}" + (f", pool={self.pool}" if self.pool > 1 else "")
