"""Small image-classifier CNN: binary (one logit) or multi-class (one logit per class).

Trained on HR images of a domain, it serves twice: its penultimate features are perceptual-loss
features Phi (L_p ~ |Phi(HR) - Phi(SR)|^2, instead of an ImageNet VGG we could not download), and its
scores on LR-upsampled / SR / HR images are the downstream-task verdict (e.g. photon vs pi0 in the
calorimeter, lens substructure classes).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from lit_sr.nets.layers import make_activation


class CNNClassifier(nn.Module):
    """Blocks of two 3x3 convs (+act) and 2x2 max-pooling, adaptive avg-pool, dense feature layer, logit(s).

    Args:
        in_channels: image channels.
        channels: channels of each conv block (each block halves the size with max-pooling).
        feature_dim: size of the feature vector Phi returned by :meth:`features`.
        activation: activation name.
        pooled_size: spatial size after the adaptive pooling (makes the net input-size agnostic).
        dropout: dropout before the output layer (training only).
        num_classes: 1 for a binary classifier (one logit of class 1), else one logit per class.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64),
        feature_dim: int = 128,
        activation: str = "swish",
        pooled_size: int = 3,
        dropout: float = 0.0,
        num_classes: int = 1,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"CNNClassifier num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        layers: list[nn.Module] = []
        c_in = in_channels
        for c in channels:
            layers += [
                nn.Conv2d(c_in, c, 3, padding=1),
                make_activation(activation),
                nn.Conv2d(c, c, 3, padding=1),
                make_activation(activation),
                nn.MaxPool2d(2),
            ]
            c_in = c
        layers += [
            nn.AdaptiveAvgPool2d(pooled_size),
            nn.Flatten(),
            nn.Linear(c_in * pooled_size * pooled_size, feature_dim),
            make_activation(activation),
        ]
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(feature_dim, self.num_classes)
        self.feature_dim = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate feature vector Phi, shape [B, feature_dim]."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logit of class 1, shape [B] (binary), or logits [B, num_classes]."""
        logits = self.out(self.dropout(self.features(x)))
        return logits.squeeze(-1) if self.num_classes == 1 else logits
