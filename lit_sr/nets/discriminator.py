"""VGG-style SRGAN discriminator (Ledig et al., CVPR 2017), size-agnostic and optionally conditional.

    [x, upsample(condition)] -> conv3x3(C0) + LeakyReLU(0.2)
      -> conv3x3 stride 2 (C0) -> then per stage s = 1..S-1: conv3x3 (C0 2^s), conv3x3 stride 2 (C0 2^s),
         each conv followed by the norm and LeakyReLU(0.2)
      -> adaptive average pooling to pooled_size x pooled_size -> dense(hidden) + LeakyReLU(0.2) -> dense(1)

With the defaults (base_channels 64, 4 stages: 64, 128, 256, 512 channels, 4 stride-2 convs, hidden 1024) and a
96x96 input the features are 6x6, which ``pooled_size=6`` leaves unchanged: the paper's discriminator. The
adaptive pooling lets any input size through. The output is a logit per image, shape [B] (no sigmoid): use it with
BCE-with-logits, hinge or Wasserstein losses.

``norm``: 'batch' (paper; not for WGAN-GP, whose penalty is per sample), 'layer' (per-sample normalisation over
(C, H, W), implemented as ``GroupNorm(1, C)`` so it does not depend on the image size) or 'none'.

Conditioning: with ``condition_channels > 0`` the forward takes ``condition`` (e.g. the LR image), resizes it to
x's spatial size (``condition_mode``: 'nearest' or 'bilinear') and concatenates it to x as extra input channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


class VGGDiscriminator(nn.Module):
    """SRGAN discriminator returning one logit per image (shape [B]).

    Args:
        in_channels: channels of the judged image x.
        condition_channels: channels of the optional condition (0 = unconditional).
        base_channels: channels of the first stage, doubled at every stage.
        num_stages: stages (each ends with a stride-2 conv); 4 -> 64..512 channels.
        norm: 'batch', 'layer' or 'none' (no norm after the first conv in any case).
        pooled_size: spatial size after adaptive average pooling.
        hidden: width of the first dense layer.
        condition_mode: 'nearest' or 'bilinear' resizing of the condition to x's size.
    """

    def __init__(
        self,
        in_channels: int = 1,
        condition_channels: int = 0,
        base_channels: int = 64,
        num_stages: int = 4,
        norm: str = "batch",
        pooled_size: int = 6,
        hidden: int = 1024,
        condition_mode: str = "bilinear",
    ) -> None:
        super().__init__()
        if norm not in ("batch", "layer", "none"):
            raise ValueError(f"VGGDiscriminator norm must be 'batch', 'layer' or 'none', got {norm!r}")
        if condition_mode not in ("nearest", "bilinear"):
            raise ValueError(f"VGGDiscriminator condition_mode must be 'nearest' or 'bilinear', got {condition_mode!r}")
        if num_stages < 1 or condition_channels < 0:
            raise ValueError(
                f"VGGDiscriminator needs num_stages >= 1 and condition_channels >= 0, got "
                f"{num_stages}, {condition_channels}"
            )
        self.in_channels = in_channels
        self.condition_channels = condition_channels
        self.condition_mode = condition_mode
        act = lambda: nn.LeakyReLU(0.2, inplace=True)
        layers: list[nn.Module] = [nn.Conv2d(in_channels + condition_channels, base_channels, 3, padding=1), act()]
        c_in = base_channels
        for s in range(num_stages):
            c = base_channels * 2**s
            if s > 0:  # the first stage's stride-1 conv is the input conv above
                layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=norm != "batch"), _norm(norm, c), act()]
            layers += [nn.Conv2d(c, c, 3, stride=2, padding=1, bias=norm != "batch"), _norm(norm, c), act()]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pooled_size)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * pooled_size**2, hidden), act(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Logit per image, shape [B]."""
        if self.condition_channels > 0:
            if condition is None:
                raise ValueError(
                    f"VGGDiscriminator was built with condition_channels={self.condition_channels}: "
                    "forward needs a condition tensor (e.g. the LR image), got None"
                )
            if condition.ndim != 4 or condition.shape[1] != self.condition_channels or condition.shape[0] != x.shape[0]:
                raise ValueError(
                    f"VGGDiscriminator condition must be [B={x.shape[0]}, {self.condition_channels}, "
                    f"h, w], got shape {tuple(condition.shape)}"
                )
            if condition.shape[-2:] != x.shape[-2:]:
                kw = {"align_corners": False} if self.condition_mode == "bilinear" else {}
                condition = F.interpolate(condition, size=x.shape[-2:], mode=self.condition_mode, **kw)
            x = torch.cat([x, condition.to(x.dtype)], dim=1)
        elif condition is not None:
            raise ValueError(
                "VGGDiscriminator was built with condition_channels=0 but forward got a condition; "
                "build it with condition_channels > 0 to use one"
            )
        return self.head(self.pool(self.features(x))).squeeze(-1)
