"""Signal/noise decomposition net of the SAXS study: a UNet backbone and two heads.

    l = backbone(x);  n = ReLU(conv3x3(l));  s = ReLU(x - n)

``forward`` returns ``{"signal": s, "noise": n}``. With an equivariant backbone (``backbone.equivariant``)
the head filter is symmetrised under rot90 so both outputs are exactly C4-equivariant.

Backends: ``"c4"`` (default, :class:`lit_sr.nets.c4.C4UNet`, pure PyTorch), ``"plain"``
(:class:`lit_sr.nets.unet.UNet`), ``"escnn"`` (:mod:`lit_sr.nets.escnn_unet`, needs the optional
extra ``pip install lit_sr[equivariant]``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lit_sr.nets.c4 import C4UNet, SymmetricConv2d
from lit_sr.nets.unet import UNet


def build_backbone(backend: str = "c4", in_channels: int = 1, latent_channels: int = 16,
                   features: Sequence[int] | None = None, group_pool: str = "max") -> nn.Module:
    """UNet backbone by name. ``features``: maps per level (plain) or regular fields per level (c4, escnn)."""
    if backend == "plain":
        return UNet(in_channels, latent_channels, features or (32, 64, 128, 256))
    if backend == "c4":
        return C4UNet(in_channels, latent_channels, features or (28, 56, 112, 224), group_pool)
    if backend == "escnn":
        from lit_sr.nets.escnn_unet import EscnnC4UNet
        return EscnnC4UNet(in_channels, latent_channels, features or (32, 64, 128, 256))
    raise ValueError(f"unknown backend {backend!r}; expected 'c4', 'plain' or 'escnn'")


class DecompositionNet(nn.Module):
    """x [B, C, H, W] -> {"signal": [B, C, H, W], "noise": [B, C, H, W]} (both non-negative)."""

    def __init__(self, backend: str = "c4", in_channels: int = 1, latent_channels: int = 16,
                 features: Sequence[int] | None = None, group_pool: str = "max", head_kernel: int = 3,
                 backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone if backbone is not None else build_backbone(
            backend, in_channels, latent_channels, features, group_pool)
        latent = getattr(self.backbone, "latent_channels", latent_channels)
        self.equivariant = bool(getattr(self.backbone, "equivariant", False))
        if self.equivariant:
            self.head = SymmetricConv2d(latent, in_channels, head_kernel)
        else:
            self.head = nn.Conv2d(latent, in_channels, head_kernel, padding=head_kernel // 2)

    def forward(self, x: torch.Tensor, return_latent: bool = False) -> dict[str, torch.Tensor]:
        latent = self.backbone(x)
        noise = F.relu(self.head(latent))
        out = {"signal": F.relu(x - noise), "noise": noise}
        if return_latent:
            out["latent"] = latent
        return out
