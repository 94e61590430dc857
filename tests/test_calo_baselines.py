"""Known answers of the LR calorimeter baselines: the tuned w0, the position fit, the shape-variable logistic."""

import numpy as np
import pytest
import torch

from lit_sr.domains.calo.baselines import PositionFit, ShapeLogistic, shape_variable_names, shape_variables, tune_w0
from lit_sr.domains.calo.evaluator import CaloPhysicsEvaluator
from lit_sr.domains.calo.metrics import barycentre, pixel_centres


def _two_crystal_events(w0_true: float, n: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Analytic LR deposits: each event shares 20 GeV between two neighbouring crystals of a row (fractions
    f and 1 - f, f in [0.55, 0.95]); its true impact is the log-weighted barycentre with ``w0_true``:
    x = (w1 c1 + w2 c2) / (w1 + w2), w_i = w0_true + ln f_i. Only that w0 reconstructs every event
    exactly; any other gives residuals that change with f, so the resolution has its minimum (0) there."""
    g = torch.Generator().manual_seed(seed)
    c = pixel_centres(6).double()
    f = 0.55 + 0.4 * torch.rand(n, generator=g, dtype=torch.float64)
    col = torch.randint(1, 4, (n,), generator=g)
    row = torch.randint(0, 6, (n,), generator=g)
    lr = torch.zeros(n, 1, 6, 6, dtype=torch.float64)
    idx = torch.arange(n)
    lr[idx, 0, row, col] = 20.0 * f
    lr[idx, 0, row, col + 1] = 20.0 * (1 - f)
    w1, w2 = w0_true + torch.log(f), w0_true + torch.log(1 - f)
    x = (w1 * c[col] + w2 * c[col + 1]) / (w1 + w2)
    return lr, torch.stack([x, c[row]], 1)


@pytest.mark.parametrize("w0_true", [3.6, 4.3, 5.2])
def test_w0_tuning_finds_the_analytic_optimum(w0_true):
    lr, impact = _two_crystal_events(w0_true)
    w0, tried = tune_w0(lr, impact)
    assert w0 == pytest.approx(w0_true, abs=1e-9)
    assert tried[w0] < 1e-6  # exact reconstruction at the optimum
    assert tried[round(w0_true + 0.5, 1)] > 1e-3 and tried[round(w0_true - 0.5, 1)] > 1e-3
    # the barycentre reproduces the constructed impact points
    assert torch.allclose(barycentre(lr, "log", w0_true).double(), impact, atol=1e-4)


def test_evaluator_tunes_lr_w0_on_validation_only():
    """prepare() sees the validation split: the tuned w0 is that split's optimum, whatever the test split
    holds (here test events built with another w0)."""
    val_lr, val_impact = _two_crystal_events(4.3, seed=1)
    test_lr, test_impact = _two_crystal_events(5.8, seed=2)
    ev = CaloPhysicsEvaluator(baselines=("lr_native",))
    ev.prepare([({"impact_cm": val_impact}, {"input": val_lr})])
    assert ev.tuned["lr_native_w0"] == pytest.approx(4.3)
    ev.update({"impact_cm": test_impact}, {"input": test_lr})
    out, _ = ev.results()
    assert out["tuned/lr_native_w0"] == pytest.approx(4.3)
    assert out["barycentre_res_cm/lr_native"] > 1e-3  # 4.3 is not the test events' optimum


def test_position_fit_recovers_a_linear_truth():
    """A truth that is a linear function of the LR fractions is fitted exactly (least squares)."""
    g = torch.Generator().manual_seed(0)
    lr = torch.rand(300, 1, 6, 6, generator=g, dtype=torch.float64) ** 4 * 5
    fit = PositionFit(w0=4.7, degree=2)
    x = fit.features(lr)
    coef = np.random.default_rng(0).normal(size=(x.shape[1], 2))
    truth = torch.from_numpy(x @ coef)
    fit.fit(lr, truth)
    assert torch.allclose(fit.predict(lr).double(), truth, atol=1e-3)
    with pytest.raises(ValueError, match="need more events"):
        PositionFit().fit(lr[:10], truth[:10])


def test_shape_variables_known_values_and_logistic():
    lr = torch.zeros(2, 1, 6, 6)
    lr[0, 0, 2, 2] = 10.0  # one crystal: fraction 1, no spread
    lr[1, 0, 2, 2] = lr[1, 0, 2, 3] = 5.0  # two crystals 2.2 cm apart in x
    v = shape_variables(lr)
    names = shape_variable_names()
    assert v.shape == (2, len(names))
    assert v[0, 0] == pytest.approx(1.0) and v[0, names.index("r2_cm2")] == pytest.approx(0.0, abs=1e-9)
    assert v[1, :2] == pytest.approx([0.5, 0.5])
    # <dx^2> = 1.1^2, all along x: major eigenvalue 1.21 cm^2, minor 0
    assert v[1, names.index("lambda_major_cm2")] == pytest.approx(1.21, rel=1e-6)
    assert v[1, names.index("lambda_minor_cm2")] == pytest.approx(0.0, abs=1e-9)
    # the logistic separates events that differ in their shape; features are named, quadratic terms too
    g = torch.Generator().manual_seed(0)
    n = 200
    y = torch.arange(n) % 2
    imgs = torch.zeros(n, 1, 6, 6)
    imgs[:, 0, 2, 2] = 10.0
    imgs[:, 0, 2, 3] = torch.where(y == 1, 4.0, 0.5) + torch.rand(n, generator=g)
    clf = ShapeLogistic().fit(imgs, y)
    s = clf.score(imgs)
    assert (s[y == 1].min() > s[y == 0].max()).item()
    assert "frac_sorted_1*r2_cm2" in clf.feature_names and len(clf.feature_names) == clf.weights.shape[0]
