"""Signal/noise decomposition net of the SAXS study: a UNet backbone and two heads.

    l = backbone(x);  n = ReLU(conv3x3(l));  s = ReLU(x - n)

``noise_activation="relu_st"`` keeps the forward pass (n = ReLU(conv3x3(l)), so outputs and
equivariance are the study's) but passes the gradient straight through the ReLU. With the plain ReLU
the head can die: most normalised noise targets are exactly 0, so early steps push every
pre-activation below 0, after which no pixel (hits included) gets a gradient and n == 0 for good
(seen on CPU within ~50 steps at lr 1e-4 and 1e-3; softplus dies the same way, z -> -inf). With the
straight-through gradient a zero-target pixel predicted 0 gets no gradient (L1 at 0), while a missed
hit (n > 0, predicted 0) still pulls its pre-activation up.

``out_channels`` (default ``in_channels``): the heads' channels. With fewer outputs than inputs the
first ``out_channels`` input channels are the image that is decomposed (s = ReLU(x[:, :out] - n)) and
the others are conditioning the backbone sees but the heads do not decompose (e.g. SAXS's absolute
energy beside the percentile-normalised patch, ``lit_sr/domains/saxs/normalise.py``).

``init="he"`` (C4 and plain backbones): He-normal weights and zero biases (:func:`lit_sr.nets.c4.he_init_`). With the
default init a narrow backbone can start with its last ReLU off at every pixel; the straight-through head
gradient cannot revive it, because the dead ReLU sits below the head.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lit_sr.nets.c4 import C4UNet, SymmetricConv2d
from lit_sr.nets.unet import UNet


def build_backbone(
    backend: str = "c4",
    in_channels: int = 1,
    latent_channels: int = 16,
    features: Sequence[int] | None = None,
    group_pool: str = "mean",
    init: str = "torch",
) -> nn.Module:
    """UNet backbone by name. ``features``: maps per level (plain) or regular fields per level (c4, escnn).
    ``init``: "torch" (each layer's default) or "he" (c4 and plain: :func:`lit_sr.nets.c4.he_init_`)."""
    if init != "torch" and backend == "escnn":
        raise ValueError(f"backbone init {init!r} is implemented for backends 'c4' and 'plain', not 'escnn'")
    if backend == "plain":
        return UNet(in_channels, latent_channels, features or (32, 64, 128, 256), init)
    if backend == "c4":
        return C4UNet(in_channels, latent_channels, features or (28, 56, 112, 224), group_pool, init)
    if backend == "escnn":
        from lit_sr.nets.escnn_unet import EscnnC4UNet

        return EscnnC4UNet(in_channels, latent_channels, features or (32, 64, 128, 256), group_pool)
    raise ValueError(f"unknown backend {backend!r}; expected 'c4', 'plain' or 'escnn'")


class DecompositionNet(nn.Module):
    """x [B, C, H, W] -> {"signal": [B, C', H, W], "noise": [B, C', H, W]} (both non-negative), C' =
    ``out_channels`` (default C); the signal is ReLU(x[:, :C'] - noise)."""

    def __init__(
        self,
        backend: str = "c4",
        in_channels: int = 1,
        latent_channels: int = 16,
        features: Sequence[int] | None = None,
        group_pool: str = "mean",
        head_kernel: int = 3,
        backbone: nn.Module | None = None,
        noise_activation: str = "relu",
        out_channels: int | None = None,
        init: str = "torch",
    ) -> None:
        super().__init__()
        if noise_activation not in ("relu", "relu_st"):
            raise ValueError(f"noise_activation must be 'relu' or 'relu_st', got {noise_activation!r}")
        self.noise_activation = noise_activation
        out_channels = in_channels if out_channels is None else int(out_channels)
        if not 1 <= out_channels <= in_channels:
            raise ValueError(f"out_channels must be between 1 and in_channels={in_channels}, got {out_channels}")
        self.out_channels = out_channels
        self.backbone = (
            backbone
            if backbone is not None
            else build_backbone(backend, in_channels, latent_channels, features, group_pool, init)
        )
        latent = getattr(self.backbone, "latent_channels", latent_channels)
        self.equivariant = bool(getattr(self.backbone, "equivariant", False))
        if self.equivariant:
            self.head = SymmetricConv2d(latent, out_channels, head_kernel)
        else:
            self.head = nn.Conv2d(latent, out_channels, head_kernel, padding=head_kernel // 2)

    def forward(self, x: torch.Tensor, return_latent: bool = False) -> dict[str, torch.Tensor]:
        latent = self.backbone(x)
        z = self.head(latent)
        if self.noise_activation == "relu_st" and z.requires_grad:
            noise = z + (F.relu(z) - z).detach()  # forward ReLU, gradient of the identity
        else:
            noise = F.relu(z)
        out = {"signal": F.relu(x[:, : self.out_channels] - noise), "noise": noise}
        if return_latent:
            out["latent"] = latent
        return out
