"""What the lensing GANs (SRGAN, ESRGAN) need beyond the generic adversarial engine.

* :class:`FluxPositionFeatures`: the perceptual features. The substructure classifier's own ``features()`` divide
  each image by its peak and pool globally, so they are blind to absolute flux and to where on the ring a
  difference sits. These are the classifier's first feature maps on the polar image about the lens centre,
  **without** peak normalisation and **without** pooling (flux and position both change them), each channel
  divided by its standard deviation over the first HR batch seen (fixed from then on, saved with the model; at
  least 1 % of the median channel's, so a channel dead on HR cannot blow up), so
  the mean squared feature distance is in units of the HR feature variance: a weight ``w`` means "a feature
  error as large as the HR features' own spread costs ``w``".
* :class:`lit_sr.callbacks.init_from.InitNetFrom`: the GAN starts from the trained PSNR model of the same generator (the papers start
  SRGAN from SRResNet, ESRGAN from RRDB-PSNR); the setup stage finds or trains it (``lit_sr.setup_hooks``).
* :class:`StepDecayAdversarialLR`: the papers' step decay of the learning rate through the adversarial phase.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from lit_sr.callbacks.adversarial_phase import AdversarialPhaseLR


class FluxPositionFeatures(nn.Module):
    """Frozen feature maps of a polar :class:`~lit_sr.domains.lensing.nets.LensClassifier` that see flux and position.

    Args:
        classifier: the frozen lens classifier (``load_frozen_classifier``), polar.
        n_layers: conv layers of ``classifier.body`` used (3 = the stem and the first stride-2 stage).
        input_scale: physical images are multiplied by this before the polar resampling (1 / the data's
            physical maximum keeps the inputs near the [0, 1] the classifier saw after peak normalisation).
    """

    def __init__(self, classifier: nn.Module, n_layers: int = 3, input_scale: float = 0.1) -> None:
        super().__init__()
        if getattr(classifier, "polar", None) is None or not hasattr(classifier, "body"):
            raise ValueError("FluxPositionFeatures needs a polar LensClassifier (polar resampling and a conv body)")
        self.classifier = classifier.eval()
        for p in self.classifier.parameters():
            p.requires_grad_(False)
        self.n_layers = int(n_layers)
        self.input_scale = float(input_scale)
        self.input_transform = getattr(classifier, "input_transform", None)
        channels = self._maps(torch.zeros(1, 1, 16, 16)).shape[1]
        self.register_buffer("channel_std", torch.zeros(channels))  # 0 = not measured yet

    def train(self, mode: bool = True) -> "FluxPositionFeatures":
        super().train(mode)
        self.classifier.eval()
        return self

    def _maps(self, x: torch.Tensor) -> torch.Tensor:
        x = self.classifier.polar(x * self.input_scale)
        return self.classifier.body[: self.n_layers](x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps [B, C, R, A] in units of the per-channel HR standard deviation."""
        f = self._maps(x)
        if not bool((self.channel_std > 0).all()):  # the first call is on HR (PerceptualLoss: target first)
            std = f.detach().std(dim=(0, 2, 3))
            live = std[std > 0]
            floor = 0.01 * float(live.median()) if len(live) else 1.0  # a channel (nearly) dead on HR
            self.channel_std.copy_(std.clamp_min(floor))
        return f / self.channel_std.view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class StepDecayAdversarialLR(AdversarialPhaseLR):
    """The adversarial phase's learning rates, multiplied by ``gamma`` after each of ``milestones`` adversarial
    batches (SRGAN: 1e-4 then 1e-5 for the second half; ESRGAN: 1e-4 halved at 1/8, 1/4, 1/2, 3/4 of the run)."""

    def __init__(
        self, generator_lr: float, critic_lr: float | None = None, milestones: Sequence[int] = (), gamma: float = 0.1
    ) -> None:
        super().__init__(generator_lr, critic_lr)
        self.base = (self.generator_lr, self.critic_lr)
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.adversarial_batches = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if getattr(pl_module, "pretraining", False):
            return
        factor = self.gamma ** sum(self.adversarial_batches >= m for m in self.milestones)
        self.generator_lr = self.base[0] * factor
        self.critic_lr = None if self.base[1] is None else self.base[1] * factor
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        self.adversarial_batches += 1

    def state_dict(self) -> dict:
        return {"adversarial_batches": self.adversarial_batches}

    def load_state_dict(self, state_dict: dict) -> None:
        self.adversarial_batches = int(state_dict.get("adversarial_batches", 0))
