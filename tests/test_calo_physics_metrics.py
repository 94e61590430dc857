"""Analytic checks of the calorimeter physics metrics."""

import matplotlib.figure
import pytest
import torch
import torch.nn.functional as F

from lit_sr.domains.calo.evaluator import CaloPhysicsEvaluator
from lit_sr.domains.calo.metrics import (
    BarycentreResolution,
    EnergyConservation,
    PhotonPionSeparation,
    ShowerWidth,
    ShowerWidthDistance,
    barycentre,
    conserve_energy,
    energy_violation,
    pion_rejection,
    pixel_centres,
    shower_width,
    sum_pool,
)
from lit_sr.metrics.stats import roc_auc


def _centre(i: int, n: int) -> float:
    return (i + 0.5) * 13.2 / n - 6.6


@pytest.mark.parametrize("n", [6, 24, 64])
@pytest.mark.parametrize("weighting", ["energy", "log"])
def test_single_crystal_barycentre_is_crystal_centre(n, weighting):
    img = torch.zeros(2, 1, n, n)
    img[0, 0, 1, n - 2] = 7.0  # row 1 -> y, col n-2 -> x
    img[1, 0, n // 2, 0] = 0.3
    b = barycentre(img, weighting)
    assert b[0].tolist() == pytest.approx([_centre(n - 2, n), _centre(1, n)], abs=1e-5)
    assert b[1].tolist() == pytest.approx([_centre(0, n), _centre(n // 2, n)], abs=1e-5)


def test_pixel_centres_convention():
    c = pixel_centres(24)
    assert c[0].item() == pytest.approx(0.275 - 6.6)
    assert c[-1].item() == pytest.approx(6.6 - 0.275)


@pytest.mark.parametrize("weighting", ["energy", "log"])
def test_two_equal_deposits_give_midpoint(weighting):
    img = torch.zeros(1, 1, 24, 24)
    img[0, 0, 3, 5] = 4.0
    img[0, 0, 11, 17] = 4.0
    b = barycentre(img, weighting)[0]
    assert b[0].item() == pytest.approx((_centre(5, 24) + _centre(17, 24)) / 2, abs=1e-5)
    assert b[1].item() == pytest.approx((_centre(3, 24) + _centre(11, 24)) / 2, abs=1e-5)


def test_log_weighting_suppresses_small_deposits():
    img = torch.zeros(1, 1, 24, 24)
    img[0, 0, 12, 12] = 10.0
    img[0, 0, 0, 0] = 1e-4  # ln(1e-5) + 4.7 < 0 -> weight 0
    assert barycentre(img, "log")[0].tolist() == pytest.approx([_centre(12, 24)] * 2, abs=1e-6)
    assert barycentre(img, "energy")[0, 0].item() != pytest.approx(_centre(12, 24), abs=1e-6)


def test_empty_image_barycentre_and_width_are_zero():
    img = torch.zeros(1, 1, 6, 6)
    assert barycentre(img).tolist() == [[0.0, 0.0]]
    assert shower_width(img).tolist() == [0.0]


def test_width_single_crystal_zero_and_two_deposits():
    img = torch.zeros(2, 1, 24, 24)
    img[0, 0, 7, 9] = 3.0
    img[1, 0, 10, 4] = 1.0
    img[1, 0, 10, 8] = 1.0  # 4 pixels apart in x -> radial RMS = half distance
    w = shower_width(img)
    assert w[0].item() == pytest.approx(0.0, abs=1e-6)
    assert w[1].item() == pytest.approx(2 * 0.55, abs=1e-5)


def test_barycentre_resolution_metric():
    m = BarycentreResolution("energy")
    img = torch.zeros(4, 1, 24, 24)
    img[:, 0, 12, 12] = 1.0
    impact = torch.tensor([[_centre(12, 24) - 0.1, _centre(12, 24)], [_centre(12, 24) + 0.1, _centre(12, 24)]] * 2)
    m.update(img[:2], impact[:2])
    m.update(img[2:], impact[2:])
    r = m.compute()
    assert r["std_y"].item() == pytest.approx(0.0, abs=1e-6)
    assert r["std_x"].item() == pytest.approx(torch.tensor([0.1, -0.1, 0.1, -0.1]).std().item(), rel=1e-4)
    assert r["mean_x"].item() == pytest.approx(0.0, abs=1e-6)
    assert r["q68_x"].item() == pytest.approx(0.1, rel=1e-3)


def test_separation_perfect_and_random():
    labels = torch.tensor([0] * 50 + [1] * 50)
    perfect = torch.cat([torch.zeros(50) - 1, torch.ones(50)])
    assert roc_auc(perfect, labels) == 1.0
    # no pion passes the photon selection: not a measurement but a lower limit, "> 50"
    r = pion_rejection(perfect, labels)
    assert (r.value, r.lower_limit, str(r)) == (50.0, True, "> 50")
    m = PhotonPionSeparation()
    m.update(perfect, labels)
    assert m.compute()["rejection_lower_limit"].item() == 1.0 and m.compute()["rejection"].item() == 50.0
    # one pion of 50 passes: a measured rejection of 50
    one_passes = perfect.clone()
    one_passes[50] = -1.0
    r = pion_rejection(one_passes, labels)
    assert (r.value, r.lower_limit) == (50.0, False)
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (20000,), generator=g)
    scores = torch.rand(20000, generator=g)
    assert roc_auc(scores, labels) == pytest.approx(0.5, abs=0.02)
    # random scores: 90 % of the photons pass the cut and so do ~90 % of the pions
    assert pion_rejection(scores, labels).value == pytest.approx(1 / 0.9, rel=0.03)
    m = PhotonPionSeparation()
    m.update(scores[:10000], labels[:10000])
    m.update(scores[10000:], labels[10000:])
    r = m.compute()
    assert r["auc"].item() == pytest.approx(roc_auc(scores, labels), abs=1e-6)
    assert r["rejection_lower_limit"].item() == 0.0


def test_auc_matches_torchmetrics():
    from torchmetrics.functional.classification import binary_auroc

    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 2, (500,), generator=g)
    scores = torch.randn(500, generator=g) + labels
    assert roc_auc(scores, labels) == pytest.approx(binary_auroc(scores, labels).item(), abs=1e-6)


def test_energy_conservation_and_conserve_energy():
    g = torch.Generator().manual_seed(0)
    lr = torch.rand(3, 1, 6, 6, generator=g) * 5
    lr[0, 0, 2, 3] = 0.0
    nearest = F.interpolate(lr, scale_factor=4, mode="nearest") / 16
    assert torch.allclose(sum_pool(nearest, 4), lr, atol=1e-6)
    assert energy_violation(nearest, lr).abs().max().item() < 1e-6
    sr = torch.rand(3, 1, 24, 24, generator=g)
    sr[1, 0, :4, :4] = 0.0  # empty SR block under a positive LR crystal -> uniform fill
    fixed = conserve_energy(sr, lr, 4)
    assert torch.allclose(sum_pool(fixed, 4), lr, atol=1e-5)
    assert (fixed[0, 0, 8:12, 12:16] == 0).all()  # LR = 0 -> zero block
    assert torch.allclose(fixed[1, 0, :4, :4], (lr[1, 0, 0, 0] / 16).expand(4, 4))
    m = EnergyConservation(4)
    m.update(fixed, lr)
    assert m.compute().item() < 1e-5
    m.reset()
    m.update(sr, lr)
    assert m.compute().item() == pytest.approx(energy_violation(sr, lr).mean().item(), rel=1e-5)


def test_width_distance():
    img = torch.zeros(2, 1, 24, 24)
    img[:, 0, 12, 12] = 1.0
    wide = img.clone()
    wide[:, 0, 12, 16] = 1.0
    m = ShowerWidthDistance()
    m.update(wide, img)
    assert m.compute().item() == pytest.approx(1.1, abs=1e-5)
    w = ShowerWidth()
    w.update(wide)
    assert w.compute().item() == pytest.approx(1.1, abs=1e-5)


class _EnergyClassifier(torch.nn.Module):
    """'Pion' score = width proxy: fraction of energy outside the hottest pixel."""

    def forward(self, x):
        flat = x.flatten(1)
        return 1 - flat.max(1).values / flat.sum(1).clamp_min(1e-9)


def _showers(n: int, seed: int) -> dict[str, torch.Tensor]:
    """Toy events: photons = one Gaussian spot, pions = two spots 2 cm apart; GeV, 24x24 and 6x6."""
    g = torch.Generator().manual_seed(seed)
    c = pixel_centres(24)
    labels = torch.arange(n) % 2
    impact = (torch.rand(n, 2, generator=g) - 0.5) * 2.2
    phi = torch.rand(n, generator=g) * 6.283
    d = torch.stack([torch.cos(phi), torch.sin(phi)], 1) * labels[:, None] * 1.0
    hr = torch.zeros(n, 1, 24, 24)
    for p in (impact + d, impact - d):
        r2 = (c.view(1, 1, -1) - p[:, 0].view(-1, 1, 1)) ** 2 + (c.view(1, -1, 1) - p[:, 1].view(-1, 1, 1)) ** 2
        hr[:, 0] += torch.exp(-r2 / (2 * 0.8**2))
    hr = hr / hr.sum((2, 3), keepdim=True) * 20.0
    return {"hr": hr, "lr": sum_pool(hr, 4), "impact_cm": impact, "label": labels}


def _evaluate(ev: CaloPhysicsEvaluator, events: dict[str, torch.Tensor], sr: torch.Tensor | None = None) -> dict:
    lr_up = F.interpolate(events["lr"], scale_factor=4, mode="nearest") / 16
    batch = {"impact_cm": events["impact_cm"], "label": events["label"]}
    images = {
        "input": events["lr"],
        "input_up": lr_up,
        "output": events["hr"] if sr is None else sr,
        "target": events["hr"],
    }
    for i in range(0, len(events["label"]), 100):
        ev.update({k: v[i : i + 100] for k, v in batch.items()}, {k: v[i : i + 100] for k, v in images.items()})
    return ev.compute()


def test_evaluator_baselines_keys_and_figures():
    val, test = _showers(600, 0), _showers(400, 1)
    ev = CaloPhysicsEvaluator(
        judge=_EnergyClassifier(),
        lr_classifier=_EnergyClassifier(),
        judge_transform=lambda t: t / 20,
        lr_classifier_transform=lambda t: t / 20,
    )
    ev.prepare([({"impact_cm": val["impact_cm"], "label": val["label"]}, {"input": val["lr"]})])
    assert set(ev.tuned) == {"lr_native_w0", "lr_native_val_res_cm", "lr_fit_val_res_cm", "lr_shape_val_auc"}
    out = _evaluate(ev, test)
    for src in ("sr", "hr", "lr_native", "lr_fit"):
        for k in ("barycentre_res_cm/{}", "barycentre_q68_cm/{}", "barycentre_bias_cm/{}_x"):
            assert isinstance(out[k.format(src)], float), k.format(src)
    for src in ("sr", "hr", "lr_cnn", "lr_shape"):
        assert 0.0 <= out[f"auc/{src}"] <= 1.0 and f"pion_rejection_lower_limit/{src}" in out
    # the two-spot pions are well separated by their LR shape: better than chance
    assert out["auc/lr_shape"] > 0.9
    # the pixel fit knows at least what the tuned barycentre knows (it contains it as a feature)
    assert out["barycentre_res_cm/lr_fit"] <= out["barycentre_res_cm/lr_native"] + 1e-3
    assert out["width_w1/sr_vs_hr"] == 0.0 and out["energy_violation/sr"] < 1e-5
    results, _ = ev.results()
    assert results["tuned/lr_native_w0"] == ev.lr_w0
    figs = ev.figures()
    assert set(figs) == {"barycentre_residuals", "shower_width", "roc"}
    assert all(isinstance(f, matplotlib.figure.Figure) for f in figs.values())
    ev.reset()
    ev.update({}, {"output": test["hr"], "target": test["hr"]})  # no impact, no labels
    out = ev.compute()
    assert not any(k.startswith(("barycentre", "auc")) for k in out)
    assert "width_w1/sr_vs_hr" in out
    # without judges and before tuning: no separation rows, no LR baseline rows (nothing untuned is reported)
    bare = CaloPhysicsEvaluator()
    out = _evaluate(bare, test)
    assert not any(k.startswith("auc") for k in out)
    assert "barycentre_res_cm/lr_native" not in out and "barycentre_res_cm/sr" in out


def test_evaluator_judges_stay_frozen_and_are_not_the_perceptual_net():
    from lit_sr.nets.classifier import CNNClassifier

    judge, perceptual = CNNClassifier(channels=(4,), feature_dim=8), CNNClassifier(channels=(4,), feature_dim=8)
    ev = CaloPhysicsEvaluator(judge=judge, baselines=())
    ev.train()
    assert not ev.judges["hr"].training and not any(p.requires_grad for p in judge.parameters())
    assert ev.judges["hr"] is judge and ev.judges["hr"] is not perceptual


def test_wasserstein_and_q68_against_analytic_values():
    import numpy as np
    from scipy.stats import wasserstein_distance

    from lit_sr.domains.calo.metrics import half_width_68
    from lit_sr.metrics.stats import wasserstein_1d

    rng = np.random.default_rng(3)
    a = rng.normal(1.0, 0.3, 500)
    # W1 between a sample and its copy shifted by c is |c| (the width-distribution distance in cm).
    assert wasserstein_1d(torch.from_numpy(a), torch.from_numpy(a + 0.25)) == pytest.approx(0.25, rel=1e-9)
    b = rng.normal(1.4, 0.5, 700)
    assert wasserstein_1d(a, b) == pytest.approx(wasserstein_distance(a, b), rel=1e-9)
    # For a Gaussian the central-68 % half-width equals sigma.
    x = torch.from_numpy(rng.normal(0.0, 0.5, 200_000))
    assert float(half_width_68(x)) == pytest.approx(0.5, rel=0.01)
