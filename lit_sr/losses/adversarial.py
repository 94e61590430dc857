"""Adversarial losses with one interface, selectable by name from config.

Every loss object has
  * ``critic_loss(real_logits, fake_logits)`` -- minimised by the critic / discriminator,
  * ``generator_loss(real_logits, fake_logits)`` -- minimised by the generator (``real_logits`` may
    be None unless ``needs_real_for_generator``),
  * ``uses_gradient_penalty`` -- whether the loss is defined with the WGAN-GP penalty (the engine
    then applies :func:`gradient_penalty` unless told otherwise).
Penalties take a ``critic`` callable ``x -> scores``; a conditional critic is passed with its condition
bound (``functools.partial(critic, condition=c)``), so the penalty sees the same condition as the loss.
Loss weights (e.g. the study's 10 * L_WGAN + 10 * L_GP for the critic) live in the LightningModule.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor, target_norm: float = 1.0
) -> torch.Tensor:
    """WGAN-GP penalty (Gulrajani et al., arXiv:1704.00028): E[(||grad_x D(x_hat)||_2 - 1)^2].

    x_hat = eps * real + (1 - eps) * fake with one eps ~ U[0, 1] per sample. ``create_graph=True`` so
    the penalty can be back-propagated into the critic's parameters (double backward). ``fake``
    is detached: the penalty only trains the critic.
    """
    # fp32 even under bf16 autocast (trainer.precision=bf16-mixed): the penalty is a difference of gradient
    # norms near 1, which bf16's 8-bit mantissa cannot resolve; the critic runs in fp32 for the interpolates
    with torch.autocast(device_type=real.device.type, enabled=False):
        real = real.detach().float()
        fake = fake.detach().float()
        eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
        x_hat = (eps * real + (1.0 - eps) * fake).requires_grad_(True)
        scores = critic(x_hat).float()
        (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
        norm = grad.flatten(1).norm(2, dim=1)
        return (norm - target_norm).pow(2).mean()


def r1_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al., arXiv:1801.04406): E[||grad_x D(x)||^2] on real samples (weight gamma/2 outside)."""
    with torch.autocast(device_type=real.device.type, enabled=False):  # fp32, as gradient_penalty
        x = real.detach().float().requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x).float().sum(), x, create_graph=True)
        return grad.flatten(1).pow(2).sum(1).mean()


class AdversarialLoss(nn.Module):
    """Base class; see the module docstring for the interface."""

    uses_gradient_penalty: bool = False
    needs_real_for_generator: bool = False

    def critic_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def generator_loss(self, real_logits: torch.Tensor | None, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class WassersteinGPLoss(AdversarialLoss):
    """WGAN-GP: critic minimises D(fake) - D(real) (+ penalty), generator minimises -D(fake)."""

    uses_gradient_penalty = True

    def critic_loss(self, real_logits, fake_logits):
        return fake_logits.mean() - real_logits.mean()

    def generator_loss(self, real_logits, fake_logits):
        return -fake_logits.mean()


class NonSaturatingBCELoss(AdversarialLoss):
    """Standard GAN (SRGAN) with the non-saturating generator loss -log D(G(z))."""

    def critic_loss(self, real_logits, fake_logits):
        return F.binary_cross_entropy_with_logits(
            real_logits, torch.ones_like(real_logits)
        ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))

    def generator_loss(self, real_logits, fake_logits):
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


class RelativisticAverageLoss(AdversarialLoss):
    """Relativistic average GAN (ESRGAN, arXiv:1809.00219): D_Ra(a, b) = sigmoid(C(a) - E[C(b)]).

    Critic: -log D_Ra(real, fake) - log(1 - D_Ra(fake, real)); generator: the symmetric terms, so the
    generator also gets gradients from the real images' logits (``needs_real_for_generator``).
    Real logits in the generator loss are detached (the critic is not trained there).
    """

    needs_real_for_generator = True

    @staticmethod
    def _terms(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # a should look "more real" than b on average
        return (
            F.binary_cross_entropy_with_logits(a - b.mean(), torch.ones_like(a))
            + F.binary_cross_entropy_with_logits(b - a.mean(), torch.zeros_like(b))
        ) / 2

    def critic_loss(self, real_logits, fake_logits):
        return self._terms(real_logits, fake_logits)

    def generator_loss(self, real_logits, fake_logits):
        if real_logits is None:
            raise ValueError("RelativisticAverageLoss.generator_loss needs the real logits")
        return self._terms(fake_logits, real_logits.detach())


class HingeLoss(AdversarialLoss):
    """Hinge GAN (Lim & Ye 2017; SAGAN, BigGAN): critic E[relu(1 - D(real))] + E[relu(1 + D(fake))], generator -E[D(fake)]."""

    def critic_loss(self, real_logits, fake_logits):
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()

    def generator_loss(self, real_logits, fake_logits):
        return -fake_logits.mean()


_LOSSES = {
    "wgan-gp": WassersteinGPLoss,
    "wgan_gp": WassersteinGPLoss,
    "wgangp": WassersteinGPLoss,
    "bce": NonSaturatingBCELoss,
    "vanilla": NonSaturatingBCELoss,
    "gan": NonSaturatingBCELoss,
    "ragan": RelativisticAverageLoss,
    "relativistic": RelativisticAverageLoss,
    "relativistic_average": RelativisticAverageLoss,
    "hinge": HingeLoss,
}


def make_adversarial_loss(name: str | AdversarialLoss) -> AdversarialLoss:
    """Adversarial loss by name: 'wgan-gp', 'bce' (non-saturating), 'ragan' (relativistic average) or 'hinge'."""
    if isinstance(name, AdversarialLoss):
        return name
    try:
        return _LOSSES[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown adversarial loss {name!r}; expected 'wgan-gp', 'bce', 'ragan' or 'hinge'") from None
