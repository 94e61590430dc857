"""Losses of the X-ray experiments: SSIM / MS-SSIM (torchmetrics functional), weighted sums, physical-space loss."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.image import MultiScaleStructuralSimilarityIndexMeasure, StructuralSimilarityIndexMeasure

from lit_sr.data.transforms import StretchTransform
from lit_sr.losses.combined import PhysicalSpaceLoss, WeightedSumLoss
from lit_sr.losses.pixel import PixelLoss
from lit_sr.losses.ssim import MSSSIMLoss, SSIMLoss


def _pair(seed: int = 0, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 1, size, size, generator=g)
    return x, (x + 0.1 * torch.randn(3, 1, size, size, generator=g)).clamp(0, 1)


def test_ssim_loss_is_one_minus_the_papers_ssim():
    a, b = _pair()
    ref = StructuralSimilarityIndexMeasure(
        gaussian_kernel=True, sigma=2.5, kernel_size=13, data_range=1.0, k1=0.01, k2=0.05
    )(a, b)
    loss = SSIMLoss()(a, b)
    assert loss.item() == pytest.approx(1.0 - ref.item(), abs=1e-6)
    assert SSIMLoss()(a, a).item() == pytest.approx(0.0, abs=1e-6)
    # the paper's K2 = 0.05 differs from the usual 0.03: the loss must see it
    assert abs(SSIMLoss(k2=0.03)(a, b).item() - loss.item()) > 1e-4


def test_ms_ssim_loss_scales_and_size_check():
    a, b = _pair()
    betas = (0.0448, 0.2856, 0.3001)
    ref = MultiScaleStructuralSimilarityIndexMeasure(
        gaussian_kernel=True, sigma=2.5, kernel_size=13, data_range=1.0, k1=0.01, k2=0.05, betas=betas
    )(a, b)
    assert MSSSIMLoss(betas=betas)(a, b).item() == pytest.approx(1.0 - ref.item(), abs=1e-5)
    assert MSSSIMLoss()(a, a).item() == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="too small"):  # 5 scales x 13-pixel window need > 192 pixels
        MSSSIMLoss(betas=(0.0448, 0.2856, 0.3001, 0.2363, 0.1333))(a, b)


def test_ssim_loss_has_gradients():
    a, b = _pair()
    a.requires_grad_(True)
    MSSSIMLoss()(a, b).backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_weighted_sum_is_the_sum_of_its_terms():
    a, b = _pair(1)
    terms = {"l1": PixelLoss("l1"), "ssim": SSIMLoss(), "mse": PixelLoss("mse")}
    loss = WeightedSumLoss(terms, {"l1": 0.16, "ssim": 0.84, "mse": 0.0})
    want = 0.16 * (a - b).abs().mean() + 0.84 * SSIMLoss()(a, b)
    assert loss(a, b).item() == pytest.approx(want.item(), rel=1e-6)
    assert set(loss.last_terms) == {"l1", "ssim"}  # weight 0: not evaluated
    with pytest.raises(ValueError, match="unknown term"):
        WeightedSumLoss(terms, {"perceptual": 1.0})


def test_physical_space_poisson_is_the_count_rate_likelihood():
    t = StretchTransform(2e-3, "sqrt")
    rate_pred = torch.tensor([1e-4, 5e-4, 1.5e-3])
    rate_true = torch.tensor([0.0, 1e-3, 1e-3])
    loss = PhysicalSpaceLoss(PixelLoss("poisson"), t)(t(rate_pred), t(rate_true))
    u, v = rate_pred / 2e-3, rate_true / 2e-3  # in units of max_value (the default unit)
    want = (u - v * torch.log(u + 1e-8)).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    # minimised by the true rate: the mean, not the median, of noisy targets
    x = torch.linspace(0.05, 0.95, 181)
    target = torch.tensor([0.0] * 3 + [0.5])  # rates 0, 0, 0, 0.25 (x max): mean 0.0625
    values = [PhysicalSpaceLoss(PixelLoss("poisson"), t)(xi.expand(4), target).item() for xi in x]
    best = x[int(torch.tensor(values).argmin())]
    assert (best**2).item() == pytest.approx(0.0625, abs=0.01)
    assert math.isclose(PhysicalSpaceLoss(PixelLoss("l1"), t, unit=1.0).unit, 1.0)


def test_adversarial_phase_lr_switches_after_pretraining():
    from types import SimpleNamespace

    from lit_sr.callbacks.adversarial_phase import AdversarialPhaseLR

    w = torch.nn.Parameter(torch.zeros(1))
    g, d = torch.optim.Adam([w], lr=1e-3), torch.optim.Adam([w], lr=5e-4)
    trainer = SimpleNamespace(optimizers=[g, d])
    cb = AdversarialPhaseLR(generator_lr=1e-4, critic_lr=2e-4)
    cb.on_train_batch_start(trainer, SimpleNamespace(pretraining=True), None, 0)
    assert g.param_groups[0]["lr"] == 1e-3 and d.param_groups[0]["lr"] == 5e-4
    cb.on_train_batch_start(trainer, SimpleNamespace(pretraining=False), None, 1)
    assert g.param_groups[0]["lr"] == 1e-4 and d.param_groups[0]["lr"] == 2e-4
