"""Perceptual loss on the features of a frozen network (Johnson et al., arXiv:1603.08155).

Calorimeter study: Phi = penultimate features of a CNN trained to separate photons from pions on
HR images (instead of VGG-19), L_p ~ |Phi(HR) - Phi(SR)|^2.
"""

from __future__ import annotations

import torch
from torch import nn


class PerceptualLoss(nn.Module):
    """Squared feature distance between SR and HR through a frozen ``feature_net``.

    ``feature_net.features(x)`` is used if the net defines it, else ``feature_net(x)``. The net is put
    in eval mode and its parameters get ``requires_grad=False`` (frozen for good: ``train()`` on a
    parent module does not switch it back), gradients still flow to ``sr``.

    Args:
        feature_net: pretrained network.
        reduction: 'mean' (over samples and features) or 'sum' (over features, mean over samples).
    """

    def __init__(self, feature_net: nn.Module, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"PerceptualLoss reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction
        self.feature_net = feature_net.eval()
        for p in self.feature_net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.feature_net.eval()  # never training mode (dropout/batch-norm statistics stay frozen)
        return self

    def _phi(self, x: torch.Tensor) -> torch.Tensor:
        f = (
            self.feature_net.features(x)
            if hasattr(self.feature_net, "features") and callable(self.feature_net.features)
            else self.feature_net(x)
        )
        return f.flatten(1)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self._phi(hr)
        d = (self._phi(sr) - target).pow(2)
        return d.mean() if self.reduction == "mean" else d.sum(1).mean()
