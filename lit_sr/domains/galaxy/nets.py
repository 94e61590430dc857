"""The galaxy morphology classifier whose features give the evaluator its Frechet distance.

A small strided CNN (our own, trained on the real stamps with
:class:`~lit_sr.models.classifier.ClassifierModule`; no downloaded Inception). Chosen over the generic
:class:`~lit_sr.nets.classifier.CNNClassifier` for CPU budgets: on the default set (1536 training
stamps, batch 32, Adam 1e-3, one CPU thread on a loaded 2-core machine) it reached 59 % validation
accuracy (3 classes) after 5 epochs in 13 s, the generic net (16, 32 channels) 56 % in 109 s.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class GalaxyClassifierNet(nn.Module):
    """2x2 average pooling, then per stage conv 3x3 + SiLU + strided conv 3x3 + SiLU, adaptive pooling
    to ``pooled_size``^2 (keeps where the light is: concentration, not only how much), a dense feature
    layer Phi and the logits.

    Args:
        in_channels: image channels.
        channels: channels per stage (each halves the size).
        feature_dim: size of the feature vector returned by :meth:`features`.
        pooled_size: spatial size kept before the dense layer.
        num_classes: logits (1 for a binary classifier).
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64),
        feature_dim: int = 64,
        pooled_size: int = 4,
        num_classes: int = 3,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.AvgPool2d(2)]
        c = in_channels
        for o in channels:
            layers += [nn.Conv2d(c, o, 3, padding=1), nn.SiLU(), nn.Conv2d(o, o, 3, stride=2, padding=1), nn.SiLU()]
            c = o
        layers += [
            nn.AdaptiveAvgPool2d(pooled_size),
            nn.Flatten(),
            nn.Linear(c * pooled_size**2, feature_dim),
            nn.SiLU(),
        ]
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(feature_dim, num_classes)
        self.num_classes = int(num_classes)
        self.feature_dim = int(feature_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features Phi [B, feature_dim] of model-space stamps [B, C, H, W]."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.out(self.features(x))
        return logits.squeeze(-1) if self.num_classes == 1 else logits
