"""The task term of the GANs (ClassifierTaskLoss: a frozen classifier's cross-entropy on SR) and the flux term that
keeps it from dimming the images (RelativeFluxLoss)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_sr.domains.lensing.nets import LensClassifier
from lit_sr.losses.pixel import RelativeFluxLoss
from lit_sr.losses.task import ClassifierTaskLoss


def _lens_classifier() -> LensClassifier:
    """A polar lens classifier whose BatchNorm statistics are those of lens images (as after training), so its
    posterior depends on the image."""
    torch.manual_seed(0)
    net = LensClassifier(channels=(4, 8, 8), feature_dim=8, n_radius=24, n_angle=64)
    calibration = _lenses(16)
    calibration[8:, ..., 24:] = 0  # half rings too
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batch
    with torch.no_grad():
        net.train()(calibration)
    return net.eval()


def _lenses(n: int = 4, seed: int = 1) -> torch.Tensor:
    """Rings of radius 12 px on 48 px images plus uniform noise."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(48.0) - 23.5, torch.arange(48.0) - 23.5, indexing="ij")
    r = torch.hypot(x, y)
    ring = 5 * torch.exp(-0.5 * ((r - 12) / 1.5) ** 2)
    return (ring + 0.5 * torch.rand(n, 1, 48, 48, generator=g)).clamp_min(0)


def test_label_target_is_the_cross_entropy_of_the_true_class_and_falls_along_its_gradient():
    """A linear 3-class classifier: the term equals -log softmax(W x)[y] by hand, is lower for the class the
    classifier favours than for another, and a small step of SR against its gradient lowers it."""
    torch.manual_seed(0)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    loss = ClassifierTaskLoss(clf, target="label")
    assert not any(p.requires_grad for p in clf.parameters())
    sr = torch.randn(5, 1, 4, 4, requires_grad=True)
    y = torch.tensor([0, 1, 2, 1, 0])
    value = loss(sr, y)
    logits = clf(sr.detach())
    by_hand = -(logits - logits.logsumexp(1, keepdim=True)).gather(1, y[:, None]).mean()
    torch.testing.assert_close(value.detach(), by_hand)
    best, worst = logits.argmax(1), logits.argmin(1)
    assert float(loss(sr.detach(), best)) < float(loss(sr.detach(), worst))
    value.backward()
    stepped = sr.detach() - 1e-2 * sr.grad / sr.grad.norm()
    assert float(loss(stepped, y)) < float(value.detach())


def test_one_logit_classifier_is_binary_cross_entropy():
    torch.manual_seed(0)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(16, 1), nn.Flatten(0))  # logits [B]
    sr = torch.randn(6, 1, 4, 4)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    ref = F.binary_cross_entropy_with_logits(clf(sr), y.float())
    torch.testing.assert_close(ClassifierTaskLoss(clf)(sr, y), ref)


def test_hr_target_costs_the_hr_entropy_and_has_no_gradient_when_sr_equals_hr():
    """target='hr' on the polar lens classifier: at SR = HR the cross-entropy is the entropy of the HR posterior
    (its minimum over SR posteriors) and its gradient with respect to SR vanishes; a perturbed SR costs more."""
    clf = _lens_classifier()
    with torch.no_grad():  # confident posteriors, as after training
        clf.out.weight.mul_(30.0)
    loss = ClassifierTaskLoss(clf, target="hr")
    hr = _lenses()
    sr = hr.clone().requires_grad_(True)
    value = loss(sr, hr=hr)
    with torch.no_grad():
        p = torch.softmax(clf(hr), 1)
    entropy = -(p * p.log()).sum(1).mean()
    torch.testing.assert_close(value.detach(), entropy)
    value.backward()
    assert float(sr.grad.abs().max()) < 1e-6
    # a different image moves the posterior: cross-entropy above the entropy (Gibbs' inequality)
    other = hr.clone()
    other[..., 24:] = 0  # half of each ring gone
    other.requires_grad_(True)
    moved = loss(other, hr=hr)
    assert float(moved.detach()) > float(entropy) + 1e-4
    moved.backward()
    assert float(other.grad.abs().max()) > 1e-2  # a gradient there (0.08 measured), none at SR = HR
    assert float(entropy) <= math.log(3) + 1e-6


def test_missing_label_or_hr_and_bad_target_are_refused():
    clf = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with pytest.raises(ValueError, match="target must be"):
        ClassifierTaskLoss(clf, target="judge")
    with pytest.raises(ValueError, match="'label'"):
        ClassifierTaskLoss(clf, target="label")(torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="HR"):
        ClassifierTaskLoss(clf, target="hr")(torch.zeros(2, 1, 4, 4))


def test_gan_generator_terms_include_the_weighted_task_term_and_keep_the_classifier_frozen():
    from lit_sr.models.gan_sr import GANSRModule
    from lit_sr.nets.critic import Critic

    torch.manual_seed(0)
    clf = _lens_classifier()
    gen = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(1, 1, 3, padding=1))
    module = GANSRModule(
        net=gen,
        critic=Critic(channels=(4, 4, 4, 4, 4, 4), hidden=8, input_size=48),
        adversarial_loss="ragan",
        scale=2,
        physical_range=(0.0, 10.0),
        task_net=clf,
        task_weight=0.1,
        pixel_weight=1.0,
        flux_weight=1.0,
    )
    module.train()
    assert not clf.training
    hr = _lenses()
    batch = {"input": F.avg_pool2d(hr, 2), "target": hr, "label": torch.tensor([0, 1, 2, 0])}
    fake = module.net(batch["input"])
    terms = module.generator_terms(batch, fake)
    weight, value = terms["task"]
    assert weight == 0.1
    torch.testing.assert_close(terms["flux"][1], RelativeFluxLoss()(fake, hr))
    torch.testing.assert_close(value, F.cross_entropy(clf(fake), batch["label"]))
    # a batch without labels (a user's folder): the HR posterior is the target
    unlabelled = {k: v for k, v in batch.items() if k != "label"}
    _, value = module.generator_terms(unlabelled, fake)["task"]
    torch.testing.assert_close(value, ClassifierTaskLoss(clf, "hr")(fake, hr=hr))
    with pytest.raises(ValueError, match="task_net"):
        GANSRModule(
            net=gen, critic=Critic(channels=(4, 4, 4, 4, 4, 4), hidden=8, input_size=48), scale=2, task_weight=0.1
        )


def test_relative_flux_loss_is_the_mean_relative_error_of_the_totals():
    """Moving light around costs nothing; a uniform 5 % deficit in one image of two and a 10 % excess in the other
    cost (0.05 + 0.10) / 2; the gradient is the same for every pixel of an image (only the total counts)."""
    hr = _lenses(2)
    loss = RelativeFluxLoss()
    assert float(loss(torch.flip(hr, (-1,)), hr)) == pytest.approx(0.0, abs=1e-6)
    sr = (hr * torch.tensor([0.95, 1.10]).view(2, 1, 1, 1)).requires_grad_(True)
    value = loss(sr, hr)
    assert float(value.detach()) == pytest.approx(0.075, rel=1e-4)
    value.backward()
    for i, sign in enumerate((-1.0, 1.0)):  # d/dSR of |sum SR / sum HR - 1| / 2 = sign / (2 sum HR), every pixel
        torch.testing.assert_close(sr.grad[i], torch.full_like(sr.grad[i], sign / (2 * float(hr[i].sum()))))
