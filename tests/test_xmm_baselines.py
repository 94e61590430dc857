"""Gaussian-smoothing baseline of the X-ray tasks: the operator and the tuning of its width."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage, special

from lit_sr.domains.xmm.baselines import (
    gaussian_smooth_rate,
    smoothing_matrix,
    tune_sigma,
)


def _field(n: int = 48, seed: int = 0) -> np.ndarray:
    """A smooth sky: flat 0.5 counts/pixel plus six Gaussian blobs (sigma 2.5 px, peak 8 counts)."""
    yy, xx = np.mgrid[:n, :n]
    rng = np.random.default_rng(seed)
    truth = np.full((n, n), 0.5)
    for cx, cy in rng.uniform(5, n - 5, (6, 2)):
        truth += 8.0 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 2.5**2))
    return truth


@pytest.mark.parametrize("sigma", [0.0, 0.4, 1.5, 7.0, 30.0])
def test_smoothing_conserves_sum_and_matches_scipy(sigma):
    """Sum conserved for any width (30 px > the image: the fold happens several times); equal to scipy's
    correlation with the same pixel-integrated kernel and the same 'reflect' boundary; numpy == torch."""
    rng = np.random.default_rng(1)
    x = rng.poisson(3.0, (2, 20, 24)).astype(np.float64)
    y = gaussian_smooth_rate(x, sigma)
    np.testing.assert_allclose(y.sum(axis=(-2, -1)), x.sum(axis=(-2, -1)), rtol=1e-12)
    a = smoothing_matrix(20, sigma)
    np.testing.assert_allclose(a, a.T, atol=1e-15)
    if 0 < sigma < 5:  # scipy's reflect mode folds once: the kernel must fit in the image
        r = int(np.ceil(4 * sigma))
        d = np.arange(-r, r + 1)
        k = special.ndtr((d + 0.5) / sigma) - special.ndtr((d - 0.5) / sigma)
        k /= k.sum()
        ref = ndimage.correlate1d(ndimage.correlate1d(x, k, axis=-1, mode="reflect"), k, axis=-2, mode="reflect")
        np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    yt = gaussian_smooth_rate(torch.from_numpy(x), sigma)
    assert isinstance(yt, torch.Tensor)
    np.testing.assert_allclose(yt.numpy(), y, rtol=1e-12, atol=1e-12)
    if sigma == 0.0:
        np.testing.assert_array_equal(y, x)


def test_exposure_corrected_smoothing_keeps_a_flat_sky_flat():
    """A flat rate seen through vignetting and a chip gap: S(rate x exposure) / S(exposure) returns the flat
    rate on every exposed pixel (the plain smoothing of the rate image dips at the gap), 0 in the gap;
    torch agrees with numpy; uniform exposure gives the plain smoothing."""
    n = 32
    yy, xx = np.mgrid[:n, :n]
    exposure = 2e4 * (1 - 0.3 * ((xx - 16) ** 2 + (yy - 16) ** 2) / 512.0)
    exposure[:, 14:16] = 0.0
    rate = np.where(exposure > 0, 1e-4, 0.0)
    out = gaussian_smooth_rate(rate, 1.5, exposure)
    live = exposure > 0
    np.testing.assert_allclose(out[live], 1e-4, rtol=1e-12)
    assert np.all(out[~live] == 0)
    plain = gaussian_smooth_rate(rate, 1.5)
    assert plain[5, 13] < 0.9e-4
    out_t = gaussian_smooth_rate(torch.from_numpy(rate), 1.5, torch.from_numpy(exposure))
    np.testing.assert_allclose(out_t.numpy(), out, rtol=1e-12, atol=1e-20)
    noisy = np.random.default_rng(2).poisson(3.0, (n, n)) / 2e4
    np.testing.assert_allclose(
        gaussian_smooth_rate(noisy, 2.0, np.full((n, n), 2e4)), gaussian_smooth_rate(noisy, 2.0), rtol=1e-12
    )


def test_sigma_tuning_finds_the_analytic_optimum_on_a_poisson_field():
    """Smoothing S of Poisson counts y ~ Poisson(lam) has the exact expected squared error per pixel
    E|S y - lam|^2 = |S lam - lam|^2 + sum_j lam_j |S e_j|^2 (bias + Poisson variance through S).
    On 8 realisations, tuning on the grid picks the grid point of the analytic minimum (1.0 px; continuous
    optimum 1.08 px), and the measured loss curve follows the analytic one."""
    truth = _field()
    n = truth.shape[0]

    def expected_mse(s: float) -> float:
        a = smoothing_matrix(n, s)
        c = (a**2).sum(axis=0)
        return float((np.sum((a @ truth @ a.T - truth) ** 2) + np.sum(truth * c[:, None] * c[None, :])) / truth.size)

    grid = np.round(np.arange(0.0, 4.01, 0.25), 2)
    analytic = {float(s): expected_mse(s) for s in grid}
    best_analytic = min(analytic, key=analytic.get)
    assert best_analytic == 1.0
    rng = np.random.default_rng(10)
    obs = [rng.poisson(truth).astype(np.float64) for _ in range(8)]
    sigma, tried = tune_sigma(obs, [truth] * 8, grid)
    assert sigma == best_analytic
    for s in (0.0, 1.0, 3.0):
        assert tried[s] == pytest.approx(analytic[s], rel=0.05)
    # the same answer in torch with a transform (here the identity) and an exposure map of ones
    sigma_t, _ = tune_sigma(
        [torch.from_numpy(o) for o in obs],
        [torch.from_numpy(truth)] * 8,
        grid,
        exposures=[torch.ones(n, n, dtype=torch.float64)] * 8,
        transform=lambda t: t,
    )
    assert sigma_t == sigma


def test_sigma_tuning_without_truth_on_thinned_counts():
    """Real data has no truth: binomial thinning splits counts into two independent Poisson images of half
    the rate; the Poisson deviance of one half against the smoothed other half is minimised near the
    truth-tuned width (here within one grid step), and is far from sigma = 0."""
    truth = 4.0 * _field(seed=3)  # counts in the full exposure
    rng = np.random.default_rng(4)
    full = [rng.poisson(truth) for _ in range(8)]
    half_a = [rng.binomial(f, 0.5) for f in full]
    half_b = [f - a for f, a in zip(full, half_a)]
    exposure = np.ones_like(truth)  # rate = counts of one half
    grid = np.round(np.arange(0.0, 4.01, 0.25), 2)
    s_truth, _ = tune_sigma([a.astype(float) for a in half_a], [truth / 2] * 8, grid)
    s_cv, tried = tune_sigma(
        [a.astype(float) for a in half_a],
        [b.astype(float) for b in half_b],
        grid,
        loss="poisson",
        reference_exposures=[exposure] * 8,
    )
    assert abs(s_cv - s_truth) <= 0.25
    assert s_cv >= 0.5 and tried[0.0] > tried[s_cv]


def test_bad_arguments():
    with pytest.raises(ValueError, match="sigma_px"):
        gaussian_smooth_rate(np.ones((4, 4)), -1.0)
    with pytest.raises(ValueError, match="same"):
        tune_sigma([np.ones((4, 4))], [], [0.0])
    with pytest.raises(ValueError, match="reference_exposures"):
        tune_sigma([np.ones((4, 4))], [np.ones((4, 4))], [0.0], loss="poisson")
