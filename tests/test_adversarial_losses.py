"""Adversarial loss objects, gradient penalty and perceptual loss."""

import pytest
import torch
import torch.nn.functional as F

from lit_sr.losses.adversarial import (
    NonSaturatingBCELoss,
    RelativisticAverageLoss,
    WassersteinGPLoss,
    gradient_penalty,
    make_adversarial_loss,
    r1_penalty,
)
from lit_sr.losses.perceptual import PerceptualLoss
from lit_sr.nets.classifier import CNNClassifier


def test_factory_names():
    assert isinstance(make_adversarial_loss("wgan-gp"), WassersteinGPLoss)
    assert isinstance(make_adversarial_loss("BCE"), NonSaturatingBCELoss)
    assert isinstance(make_adversarial_loss("ragan"), RelativisticAverageLoss)
    with pytest.raises(ValueError, match="unknown adversarial loss"):
        make_adversarial_loss("least-squares")


def test_wgan_values():
    real, fake = torch.tensor([2.0, 4.0]), torch.tensor([1.0, -1.0])
    loss = WassersteinGPLoss()
    assert loss.critic_loss(real, fake).item() == pytest.approx(0.0 - 3.0)
    assert loss.generator_loss(None, fake).item() == pytest.approx(0.0)


def test_bce_values():
    real, fake = torch.tensor([0.0]), torch.tensor([0.0])
    loss = NonSaturatingBCELoss()
    assert loss.critic_loss(real, fake).item() == pytest.approx(2 * torch.log(torch.tensor(2.0)).item())
    # non-saturating: -log sigmoid(fake)
    assert loss.generator_loss(None, torch.tensor([3.0])).item() == pytest.approx(F.softplus(torch.tensor(-3.0)).item())
    assert not loss.uses_gradient_penalty


def test_hinge_values():
    loss = make_adversarial_loss("hinge")
    # real logits above 1 and fake below -1 cost the critic nothing; inside the margin they cost linearly
    assert loss.critic_loss(torch.tensor([2.0]), torch.tensor([-3.0])).item() == 0.0
    assert loss.critic_loss(torch.tensor([0.5]), torch.tensor([0.0])).item() == pytest.approx(0.5 + 1.0)
    assert loss.generator_loss(None, torch.tensor([1.5, 0.5])).item() == pytest.approx(-1.0)


def test_r1_penalty_analytic_linear_critic():
    w = torch.randn(1, 1, 5, 5)
    r1 = r1_penalty(lambda x: (x * w).flatten(1).sum(1), torch.rand(4, 1, 5, 5))
    assert r1.item() == pytest.approx(w.pow(2).sum().item(), rel=1e-5)  # ||grad_x D||^2 = ||w||^2


def test_penalties_see_the_condition():
    """A conditional critic D(x, c) = <x, c>: the gradient w.r.t. x is c, so the penalties measure c."""
    import functools

    def critic(x, condition):
        return (x * condition).flatten(1).sum(1)

    c = torch.full((3, 1, 4, 4), 0.5)  # ||c|| per sample = 0.5 * 4 = 2
    bound = functools.partial(critic, condition=c)
    assert gradient_penalty(bound, torch.rand(3, 1, 4, 4), torch.rand(3, 1, 4, 4)).item() == pytest.approx(1.0)
    assert r1_penalty(bound, torch.rand(3, 1, 4, 4)).item() == pytest.approx(4.0)


def test_relativistic_symmetry_and_gradients():
    loss = RelativisticAverageLoss()
    real = torch.tensor([3.0, 1.0], requires_grad=True)
    fake = torch.tensor([-1.0, 0.0], requires_grad=True)
    d = loss.critic_loss(real, fake)
    g = loss.generator_loss(real, fake)
    # generator loss is the critic loss with the roles swapped
    assert g.item() == pytest.approx(loss.critic_loss(fake.detach(), real.detach()).item())
    assert d.item() < g.item()  # the critic is winning here
    g.backward()
    assert real.grad is None and fake.grad is not None  # real logits detached in the generator loss
    with pytest.raises(ValueError):
        loss.generator_loss(None, fake)


def test_gradient_penalty_analytic_linear_critic():
    w = torch.randn(1, 1, 5, 5)
    critic = lambda x: (x * w).flatten(1).sum(1)  # noqa: E731 - gradient is w everywhere
    gp = gradient_penalty(critic, torch.rand(3, 1, 5, 5), torch.rand(3, 1, 5, 5))
    assert gp.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-5)
    w_unit = w / w.norm()
    gp = gradient_penalty(lambda x: (x * w_unit).flatten(1).sum(1), torch.rand(3, 1, 5, 5), torch.rand(3, 1, 5, 5))
    assert gp.item() == pytest.approx(0.0, abs=1e-10)


def test_perceptual_loss_frozen_with_gradient_to_sr():
    net = CNNClassifier(channels=(4,), feature_dim=8, dropout=0.5)
    loss = PerceptualLoss(net)
    loss.train()
    assert not net.training  # stays in eval mode
    hr = torch.rand(2, 1, 24, 24)
    assert loss(hr, hr).item() == 0.0
    sr = torch.rand(2, 1, 24, 24, requires_grad=True)
    val = loss(sr, hr)
    val.backward()
    assert val.item() > 0 and sr.grad is not None and sr.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in net.parameters())
    assert PerceptualLoss(net, "sum")(sr, hr).item() == pytest.approx(val.item() * 8, rel=1e-5)


def test_penalties_stay_fp32_under_bf16_autocast():
    """Under trainer.precision=bf16-mixed the penalties are still computed in fp32: the same value as
    without autocast, where a bf16 critic is off by bf16's resolution (the test can tell)."""
    torch.manual_seed(0)
    critic = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(8 * 9, 1)
    )
    real, fake = torch.rand(4, 1, 5, 5), torch.rand(4, 1, 5, 5)
    torch.manual_seed(1)
    ref = gradient_penalty(critic, real, fake)
    ref_r1 = r1_penalty(critic, real)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(1)
        gp = gradient_penalty(critic, real, fake)
        r1 = r1_penalty(critic, real)
        naive = critic(real)  # what the critic gives inside autocast
    assert gp.dtype == r1.dtype == torch.float32
    assert gp.item() == pytest.approx(ref.item(), rel=1e-6) and r1.item() == pytest.approx(ref_r1.item(), rel=1e-6)
    assert naive.dtype == torch.bfloat16 and not torch.equal(naive.float(), critic(real))
