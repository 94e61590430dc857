"""Exponential moving average of a network's weights (as BasicSR's ``net_g_ema``).

Evaluation with the averaged weights is smoother than with the last iterate, notably for GANs.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """Keeps ``shadow`` = decay * shadow + (1 - decay) * weights after each ``update(net)``.

    Buffers (e.g. normalisation statistics) are copied, not averaged. The shadow network is a
    submodule, so it is saved in checkpoints and moved between devices with the LightningModule.
    """

    def __init__(self, net: nn.Module, decay: float = 0.999) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(net).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        for s, p in zip(self.shadow.parameters(), net.parameters()):
            s.lerp_(p.detach(), 1.0 - self.decay)
        for s, b in zip(self.shadow.buffers(), net.buffers()):
            s.copy_(b)

    def forward(self, *args, **kwargs):
        return self.shadow(*args, **kwargs)
