"""Lensing GAN pieces: perceptual features that see flux and position, the start from the PSNR model, the step decay."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lit_sr.callbacks.init_from import InitNetFrom
from lit_sr.domains.lensing.gan import FluxPositionFeatures, StepDecayAdversarialLR
from lit_sr.domains.lensing.nets import LensClassifier
from lit_sr.losses.perceptual import PerceptualLoss


def _classifier() -> LensClassifier:
    torch.manual_seed(0)
    net = LensClassifier(channels=(4, 8, 8), feature_dim=8, n_radius=24, n_angle=64)
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _lens(shift_px: int = 0) -> torch.Tensor:
    """An arc (part of a ring) on a 48 px image, optionally rotated by a quarter turn."""
    y, x = torch.meshgrid(torch.arange(48.0) - 23.5, torch.arange(48.0) - 23.5, indexing="ij")
    r, phi = torch.hypot(x, y), torch.atan2(y, x)
    arc = 5 * torch.exp(-0.5 * ((r - 12) / 1.5) ** 2) * torch.exp(-0.5 * (phi / 0.6) ** 2)
    return torch.rot90(arc, shift_px, (0, 1))[None, None]


def test_features_see_flux_and_position_where_the_classifier_features_do_not():
    clf = _classifier()
    feats = FluxPositionFeatures(clf, n_layers=3, input_scale=0.1)
    hr = _lens()
    with torch.no_grad():
        ref = feats.features(hr)
        # the classifier's own features: blind to flux (peak normalisation) ...
        torch.testing.assert_close(clf.features(1.5 * hr), clf.features(hr))
        # ... these are not: 50 % more flux, a different feature map
        assert (feats.features(1.5 * hr) - ref).pow(2).mean() > 1e-3
        # and they see where the arc sits (a quarter turn moves it along the angle axis of the polar maps)
        assert (feats.features(_lens(1)) - ref).pow(2).mean() > 1e-2
        # every parameter frozen; the scale of each channel was fixed on the first (HR) batch: unit std there
    assert not any(p.requires_grad for p in feats.parameters())
    live = ref.std(dim=(0, 2, 3)) > 1e-3  # channels alive on HR: unit std there
    assert live.sum() >= ref.shape[1] // 2
    torch.testing.assert_close(ref.std(dim=(0, 2, 3))[live], torch.ones(int(live.sum())), atol=1e-4, rtol=1e-4)
    std = feats.channel_std.clone()
    with torch.no_grad():
        feats.features(3 * hr)
    assert torch.equal(feats.channel_std, std)  # measured once, then fixed


def test_perceptual_distance_is_in_units_of_the_hr_feature_variance():
    """PerceptualLoss on these features: an SR equal to HR costs 0, one whose features differ by the HR features'
    own spread costs ~1 (a dark image: its features sit at the BN offsets, ~1-2 HR standard deviations away)."""
    feats = FluxPositionFeatures(_classifier())
    loss = PerceptualLoss(feats)
    hr = _lens().repeat(2, 1, 1, 1)
    assert float(loss(hr, hr)) == 0.0
    assert 0.1 < float(loss(torch.zeros_like(hr), hr)) < 10.0


def test_step_decay_of_the_adversarial_learning_rate():
    gen = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=1.0)
    crit = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=1.0)
    trainer = SimpleNamespace(optimizers=[gen, crit])
    cb = StepDecayAdversarialLR(1e-4, 2e-4, milestones=[2, 4], gamma=0.5)
    module = SimpleNamespace(pretraining=True)
    cb.on_train_batch_start(trainer, module, None, 0)  # pre-training: untouched
    assert gen.param_groups[0]["lr"] == 1.0
    module.pretraining = False
    seen = []
    for i in range(6):
        cb.on_train_batch_start(trainer, module, None, i)
        seen.append((gen.param_groups[0]["lr"], crit.param_groups[0]["lr"]))
    assert seen == [(1e-4, 2e-4)] * 2 + [(5e-5, 1e-4)] * 2 + [(2.5e-5, 5e-5)] * 2
    restored = StepDecayAdversarialLR(1e-4, 2e-4, milestones=[2, 4], gamma=0.5)
    restored.load_state_dict(cb.state_dict())  # a resumed run continues the schedule
    restored.on_train_batch_start(trainer, module, None, 0)
    assert gen.param_groups[0]["lr"] == 2.5e-5


def test_generator_starts_from_the_psnr_model(tmp_path):
    torch.manual_seed(1)
    trained, fresh = nn.Conv2d(1, 2, 3), nn.Conv2d(1, 2, 3)
    ckpt = tmp_path / "psnr.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in trained.state_dict().items()}}, ckpt)
    module = SimpleNamespace(net=fresh)
    InitNetFrom(str(ckpt)).on_fit_start(SimpleNamespace(ckpt_path=None), module)
    torch.testing.assert_close(fresh.weight, trained.weight)
    resumed = nn.Conv2d(1, 2, 3)
    before = resumed.weight.clone()
    InitNetFrom(str(ckpt)).on_fit_start(SimpleNamespace(ckpt_path="last.ckpt"), SimpleNamespace(net=resumed))
    assert torch.equal(resumed.weight, before)  # a resumed run keeps its own weights
    with pytest.raises(ValueError, match="do not match"):
        InitNetFrom(str(ckpt)).on_fit_start(SimpleNamespace(ckpt_path=None), SimpleNamespace(net=nn.Conv2d(1, 3, 3)))
