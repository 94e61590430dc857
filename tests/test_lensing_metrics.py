"""Lensing evaluator: AUC numerics, min-max PSNR, ring-fit errors per source, the evaluator contract; the classifier."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torchmetrics.classification import MulticlassAUROC

from lit_sr.domains.lensing.metrics import LensingEvaluator, class_aucs, psnr_minmax
from lit_sr.domains.lensing.nets import LensClassifier, PolarResample
from lit_sr.metrics.stats import frechet_distance

PIX = 0.05


# ---------------------------------------------------------------------------------------------- AUC


def test_class_aucs_perfect_inverted_uninformative_and_missing_class():
    labels = np.repeat([0, 1, 2], 5)
    perfect = np.eye(3)[labels]
    np.testing.assert_allclose(class_aucs(perfect, labels, 3), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(class_aucs(-perfect, labels, 3), [0.0, 0.0, 0.0])
    np.testing.assert_allclose(class_aucs(np.ones((15, 3)), labels, 3), [0.5, 0.5, 0.5])  # ties count half
    assert np.isnan(class_aucs(perfect[labels < 2], labels[labels < 2], 3)[2])


def test_class_aucs_match_torchmetrics():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 400)
    logits = rng.normal(size=(400, 3)) + 1.5 * np.eye(3)[labels]
    probs = torch.softmax(torch.from_numpy(logits), 1)
    ours = class_aucs(probs, labels, 3)
    ref = MulticlassAUROC(3, average=None, thresholds=None)(probs.float(), torch.from_numpy(labels)).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert 0.7 < ours.min() < 1.0


def test_psnr_minmax_known_value():
    target = torch.linspace(0, 2, 100).view(1, 1, 10, 10).repeat(2, 1, 1, 1)  # range 2
    pred = target + torch.tensor([0.2, 0.02]).view(2, 1, 1, 1)  # MSE 0.04 and 4e-4
    np.testing.assert_allclose(
        psnr_minmax(pred, target).numpy(), [10 * math.log10(4 / 0.04), 10 * math.log10(4 / 4e-4)], rtol=1e-5
    )


# ---------------------------------------------------------------------------------------------- evaluator


def _ring(radius_arcsec: float, size: int = 64, width_arcsec: float = 0.06, amp: float = 5.0) -> torch.Tensor:
    x = (np.arange(size) - (size - 1) / 2) * PIX
    r = np.hypot(x[None, :], x[:, None])
    return torch.from_numpy(amp * np.exp(-0.5 * ((r - radius_arcsec) / width_arcsec) ** 2)).float()[None]


class BrightnessClassifier(nn.Module):
    """Toy 'classifier': class k for total flux near (k + 1) x the unit ring's flux."""

    def __init__(self, unit_flux: float) -> None:
        super().__init__()
        self.unit_flux = unit_flux
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level = x.flatten(1).sum(1) / self.unit_flux - 1  # 0, 1, 2 for the three classes
        return -self.scale * (level[:, None] - torch.arange(3.0)[None]) ** 2


class SizeGate(nn.Module):
    """Toy LR judge: the brightness classifier's answer on images of one size, a constant (no information) on
    any other size -- so its AUC is 1 only when it is given the native-grid LR images."""

    def __init__(self, inner: nn.Module, size: int) -> None:
        super().__init__()
        self.inner, self.size = inner, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x * 4)  # LR pixels are 2x2 HR means: 4x the HR flux per pixel sum
        return out if x.shape[-1] == self.size else torch.zeros_like(out)


def _lenses():
    radii = torch.tensor([0.8, 1.0, 1.2, 0.9, 1.1, 1.3])
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    unit = float(_ring(1.0).sum())
    # HR: class k has (k + 1) x the flux of a ring with the unit flux (flux scaled to undo the radius dependence)
    hr = torch.stack([_ring(float(r)) * (k + 1) * unit / float(_ring(float(r)).sum()) for r, k in zip(radii, labels)])
    return radii, labels, unit, hr


def test_evaluator_scores_sources_against_truth_with_the_judge_of_each_grid():
    radii, labels, unit, hr = _lenses()
    sr = hr.clone()
    lr = torch.nn.functional.avg_pool2d(hr, 2)  # native LR grid: 2x2 means
    lr_up = hr[torch.tensor([1, 2, 0, 4, 5, 3])]  # every lens given another class's flux
    bicubic = torch.stack([_ring(float(r) + 0.1) for r in radii])  # rings 0.1" too large
    hr_judge = BrightnessClassifier(unit)
    ev = LensingEvaluator(
        judge=hr_judge,
        lr_judge=SizeGate(BrightnessClassifier(unit), size=32),
        pixel_scale_arcsec=PIX,
        scale=2,
        sources=("lr", "lr_up", "bicubic", "sr", "hr"),
    )
    assert all(not p.requires_grad for p in ev.parameters()) and not ev.judges["hr"].training
    ev.train()
    assert not ev.judges["hr"].training and not ev.judges["lr"].training  # judges stay frozen
    batch = {"label": labels, "theta_e_arcsec": radii, "lens_x_arcsec": torch.zeros(6), "lens_y_arcsec": torch.zeros(6)}
    for half in (slice(0, 3), slice(3, 6)):  # two batches accumulate
        ev.update(
            {k: v[half] for k, v in batch.items()},
            {
                "input_up": lr_up[half],
                "bicubic": bicubic[half],
                "output": sr[half],
                "target": hr[half],
                "input": lr[half],
            },
        )
    out = ev.compute()
    assert out["acc/hr"] == 1.0 and out["auc/hr"] == 1.0 and out["acc/sr"] == 1.0
    assert out["auc_cdm/hr"] == out["auc_vortex/hr"] == out["auc_no_sub/hr"] == 1.0
    assert out["acc/lr_up"] == 0.0 and out["auc/lr_up"] < 0.5  # the HR judge on the wrong fluxes
    assert out["auc/lr"] == 1.0  # the LR judge saw the 32 px native grid
    assert out["theta_e_abs_err_arcsec/hr"] < PIX / 2  # the ring fit finds the ring radius
    assert out["theta_e_abs_err_arcsec/lr"] < PIX  # ... on the LR grid with 0.1" pixels
    assert out["theta_e_bias_arcsec/bicubic"] == pytest.approx(0.1, abs=PIX / 2)
    assert out["theta_e_vs_hr_abs_err_arcsec/bicubic"] == pytest.approx(0.1, abs=PIX / 2)  # label-free
    assert out["theta_e_vs_hr_abs_err_arcsec/sr"] == 0.0
    assert out["theta_e_fail_frac/hr"] == 0.0
    assert out["psnr_minmax/sr"] > 200 and "psnr_minmax/hr" not in out  # identical images: MSE 0
    assert "psnr_minmax/lr" not in out and "flux_ratio/lr" not in out  # another grid: no pixel comparison
    assert out["flux_ratio/sr"] == pytest.approx(1.0)
    assert ev.values["hr"].theta_fit[0].shape == (3,)
    figs = ev.figures()
    assert set(figs) == {"roc", "theta_e_error"}
    ev.reset()
    assert ev.compute() == {}


def test_evaluator_uses_the_lr_judge_only_for_lr():
    """Swapping the judges changes the HR-grid rows, not the LR row: each source has its own judge."""
    _, labels, unit, hr = _lenses()
    lr = torch.nn.functional.avg_pool2d(hr, 2)
    blind = SizeGate(BrightnessClassifier(unit), size=-1)  # constant logits everywhere
    ev = LensingEvaluator(
        judge=blind, lr_judge=SizeGate(BrightnessClassifier(unit), size=32), fit_rings=False, sources=("lr", "sr", "hr")
    )
    ev.update({"label": labels}, {"input": lr, "output": hr, "target": hr})
    out = ev.compute()
    assert out["auc/lr"] == 1.0 and out["auc/sr"] == 0.5 and out["auc/hr"] == 0.5
    with pytest.raises(ValueError, match="two networks"):
        LensingEvaluator(judge=blind, lr_judge=blind)


def test_evaluator_without_labels_or_truth_reports_label_free_metrics_only():
    _, _, unit, hr = _lenses()
    ev = LensingEvaluator(
        judge=BrightnessClassifier(unit), lr_judge=None, pixel_scale_arcsec=PIX, sources=("lr", "bicubic", "sr", "hr")
    )
    ev.update({}, {"input": torch.nn.functional.avg_pool2d(hr, 2), "output": hr * 1.1, "bicubic": hr, "target": hr})
    out = ev.compute()
    assert set(out) == {
        "psnr_minmax/sr",
        "psnr_minmax/bicubic",
        "flux_ratio/sr",
        "flux_ratio/bicubic",
        "theta_e_vs_hr_abs_err_arcsec/sr",
        "theta_e_vs_hr_abs_err_arcsec/bicubic",
        "theta_e_vs_hr_abs_err_arcsec/lr",
    }
    assert out["flux_ratio/sr"] == pytest.approx(1.1)
    with pytest.raises(ValueError, match="unknown"):
        LensingEvaluator(sources=("lr_native",))


def test_judge_feature_frechet_distance_is_zero_for_hr_itself_and_matches_the_formula():
    """``fd_judge``: the Fréchet distance of the HR judge's features of a source to those of HR, with or without
    labels; 0 when the source is HR, the closed form on the judge's features otherwise."""

    class FeatureJudge(BrightnessClassifier):
        def features(self, x: torch.Tensor) -> torch.Tensor:  # total flux and peak per lens
            return torch.stack([x.flatten(1).sum(1), x.flatten(1).amax(1)], 1)

    radii, _, unit, hr = _lenses()
    bicubic = torch.stack([_ring(float(r) + 0.1) for r in radii])
    ev = LensingEvaluator(judge=FeatureJudge(unit), fit_rings=False, sources=("bicubic", "sr", "hr"))
    ev.update({}, {"output": hr.clone(), "bicubic": bicubic, "target": hr})
    out = ev.compute()
    assert out["fd_judge/sr"] == pytest.approx(0.0, abs=1e-6) and "fd_judge/hr" not in out
    f = FeatureJudge(unit).features
    assert out["fd_judge/bicubic"] == pytest.approx(
        frechet_distance(f(bicubic).double().numpy(), f(hr).double().numpy()), rel=1e-5
    )
    assert out["fd_judge/bicubic"] > 1.0


# ---------------------------------------------------------------------------------------------- classifier net


def test_classifier_is_brightness_invariant_and_any_size():
    net = LensClassifier(channels=(4, 8, 8), feature_dim=8).eval()
    x = torch.rand(3, 1, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(7.5 * x))  # peak normalisation
        assert net(torch.rand(2, 1, 64, 48)).shape == (2, 3)
        assert net.features(x).shape == (3, 8)
    assert LensClassifier(num_classes=1, channels=(4, 8), polar=False).eval()(x).shape == (3,)


def test_polar_resampling_maps_a_ring_to_a_band_and_rotation_to_a_shift():
    polar = PolarResample(n_radius=19, n_angle=64, r_min=0.1, r_max=1.0)
    size = 64
    ring = _ring(0.55 * size / 2 * PIX, size=size, width_arcsec=0.1)[None]  # radius 0.55 half-widths
    p = polar(ring)[0, 0]
    assert p.shape == (19, 64)
    peak_rows = p.argmax(0)
    assert (peak_rows == 9).all()  # r = 0.1 + 9 * 0.05 = 0.55: the ring's radius
    assert float(p.std(1)[9] / p.mean(1)[9]) < 0.02  # and uniform along the angle
    blob = torch.rand(1, 1, size, size)
    shifts = {
        k: torch.allclose(polar(torch.rot90(blob, 1, (-2, -1))), polar(blob).roll(k, -1), atol=1e-5) for k in (16, -16)
    }
    assert sum(shifts.values()) == 1, shifts  # a quarter turn is a shift by a quarter of the angles


def test_polar_classifier_is_invariant_to_quarter_turns():
    """Circular padding along the angle and shifts by multiples of the strides: exact invariance under rot90."""
    torch.manual_seed(0)
    net = LensClassifier(channels=(4, 8, 8, 8), feature_dim=8, n_radius=24, n_angle=64).eval()
    x = torch.rand(2, 1, 48, 48)
    with torch.no_grad():
        ref = net(x)
        for k in (1, 2, 3):
            torch.testing.assert_close(net(torch.rot90(x, k, (-2, -1))), ref, atol=1e-5, rtol=1e-5)
