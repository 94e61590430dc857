"""X-ray science metrics: Poisson deviance, aperture photometry, detection, FWHM; hallucination maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lit_sr.domains.xmm import sim as xsim
from lit_sr.domains.xmm.hallucination import (
    forward_model_to_input,
    lr_consistency_map,
    self_ensemble,
)
from lit_sr.domains.xmm.photometry import (
    aperture_flux_ratio,
    detection_stats,
    estimate_background_rate,
    point_source_fwhm,
    poisson_deviance,
    poisson_deviance_reference,
    significance_map,
    summarize_ratios,
)
from lit_sr.domains.xmm.psf import matching_kernel

CFG = xsim.XMMSimConfig()


def _catalog(x, y, rate) -> xsim.SourceCatalog:
    n = len(x)
    z = np.zeros(n)
    return xsim.SourceCatalog(
        np.zeros(n, np.int8),
        xsim.snap_to_lattice(np.asarray(x, float)),
        xsim.snap_to_lattice(np.asarray(y, float)),
        np.asarray(rate, float),
        z,
        z,
        z + 1,
        z,
    )


# ------------------------------------------------------------------------------------------------ deviance


def test_poisson_deviance_values_and_limits():
    d = poisson_deviance(np.array([0, 0, 3, 5, 2]), np.array([0.7, 0.0, 3.0, 2.0, 0.0]))
    assert d[0] == pytest.approx(1.4)  # o = 0: 2 e
    assert d[1] == 0.0 and d[2] == pytest.approx(0.0, abs=1e-15)
    assert d[3] == pytest.approx(2 * (5 * math.log(5 / 2) - 3))
    assert np.isinf(d[4])
    with pytest.raises(ValueError):
        poisson_deviance(np.array([1.0]), np.array([-1.0]))


@pytest.mark.parametrize("mu", [0.01, 0.4, 3.0, 50.0, 500.0])
def test_expected_deviance_matches_monte_carlo(mu):
    rng = np.random.default_rng(1)
    o = rng.poisson(mu, 400_000)
    d = poisson_deviance(o, np.full(o.shape, mu))
    ed, p9 = poisson_deviance_reference(np.array([mu]), threshold=9.0)
    assert d.mean() == pytest.approx(ed[0], rel=0.01, abs=1e-3)
    assert (d > 9).mean() == pytest.approx(p9[0], abs=4e-4)
    # E[D] is far from 1 at low counts: the reference is needed
    if mu == 0.01:
        assert ed[0] < 0.1


# ------------------------------------------------------------------------------------------------ photometry


def test_aperture_photometry_recovers_isolated_sources():
    """Noiseless LR images, one source each (neighbours' King wings would bias the annulus), sub-pixel
    positions, flat background. With the PSF correction the ratio is 1 to the pixelisation of the
    encircled-energy correction (kernel centred on a pixel vs the source's sub-pixel offset: measured
    <= 0.4 %); without it the ratio equals the analytic King factor EE(r) - A_ap/A_ann EE(annulus)."""
    rng = np.random.default_rng(3)
    psf = CFG.psf_lr
    k = psf.kernel(CFG.pixel_arcsec)
    ratios, raw = [], []
    for _ in range(8):
        cat = _catalog(rng.uniform(20, 44, 1), rng.uniform(20, 44, 1), [2e-3])
        img = xsim.render_points(CFG, cat, "lr") + 2.1e-5
        pos = np.c_[cat.x_lr, cat.y_lr]
        ratios.append(aperture_flux_ratio(img, pos, cat.rate, 3.0, (6.0, 9.0), psf=k)[0])
        raw.append(aperture_flux_ratio(img, pos, cat.rate, 3.0, (6.0, 9.0))[0])
    s = summarize_ratios(np.array(ratios))
    assert abs(s["median"] - 1) < 0.005 and s["scatter"] < 0.005 and s["n"] == 8
    assert np.all(np.abs(np.array(ratios) - 1) < 0.01)
    p = CFG.pixel_arcsec
    ee = psf.encircled_energy
    analytic = float(ee(3 * p) - 9.0 / (81.0 - 36.0) * (ee(9 * p) - ee(6 * p)))
    # pixel integration broadens the profile (4.1 arcsec pixels, 6 arcsec FWHM): measured 1.1 % below the
    # continuous-profile value
    assert np.median(raw) == pytest.approx(analytic, rel=0.03)
    assert analytic < 0.8  # the correction matters for King wings


def test_aperture_photometry_on_hr_and_summary():
    cat = _catalog([30.3], [33.7], [1e-3])
    img = xsim.render_points(CFG, cat, "hr") + 5e-6
    r = aperture_flux_ratio(
        img, np.c_[cat.x_hr, cat.y_hr], cat.rate, 4.0, (12.0, 18.0), psf=CFG.psf_hr.kernel(CFG.hr_pixel_arcsec)
    )
    assert r[0] == pytest.approx(1.0, abs=0.005)
    s = summarize_ratios(np.array([0.9, 1.0, 1.1, np.nan, np.inf]))
    assert s["median"] == pytest.approx(1.0) and s["n"] == 3 and s["scatter"] == pytest.approx(0.068, abs=1e-9)


# ------------------------------------------------------------------------------------------------ FWHM


def test_fwhm_of_point_sources_lr_and_hr():
    rng = np.random.default_rng(4)
    cat = _catalog(rng.uniform(10, 54, 6), rng.uniform(10, 54, 6), np.full(6, 1e-3))
    # keep them apart so neighbours do not enter the fit box
    cat.x_lr = xsim.snap_to_lattice(np.array([10.2, 30.4, 50.1, 10.7, 30.9, 50.3]))
    cat.y_lr = xsim.snap_to_lattice(np.array([12.3, 12.8, 12.1, 45.6, 45.2, 45.9]))
    lr = xsim.render_points(CFG, cat, "lr") + 2e-5
    hr = xsim.render_points(CFG, cat, "hr") + 5e-6
    f_lr = point_source_fwhm(lr, np.c_[cat.x_lr, cat.y_lr], box=9, pixel_arcsec=CFG.pixel_arcsec)
    f_hr = point_source_fwhm(hr, np.c_[cat.x_hr, cat.y_hr], box=15, pixel_arcsec=CFG.hr_pixel_arcsec)
    np.testing.assert_allclose(f_lr, 6.0, rtol=0.02)  # measured within 0.1 %
    np.testing.assert_allclose(f_hr, 3.0, rtol=0.02)
    f_free = point_source_fwhm(lr, np.c_[cat.x_lr, cat.y_lr][:2], box=9, pixel_arcsec=CFG.pixel_arcsec, beta=None)
    np.testing.assert_allclose(f_free, 6.0, rtol=0.03)
    assert np.isnan(point_source_fwhm(lr, [(1.0, 1.0)], box=9)[0])  # box leaves the image


# ------------------------------------------------------------------------------------------------ detection


def test_detection_completeness_for_bright_sources():
    rng = np.random.default_rng(5)
    xs = np.array([8.3, 24.6, 40.2, 56.1] * 4)
    ys = np.repeat([8.7, 24.1, 40.5, 56.3], 4)
    cat = _catalog(xs, ys, np.full(16, 3e-3))  # ~60 counts each in 20 ks
    bkg = np.full((64, 64), 0.42)
    mu = xsim.render_points(CFG, cat, "lr") * 2e4 + bkg
    for trial in range(3):
        counts = rng.poisson(mu)
        res = detection_stats(
            counts,
            bkg,
            np.c_[cat.x_lr, cat.y_lr],
            cat.rate,
            significance=5.0,
            match_radius_pix=2.0,
            min_rate=1e-3,
            pixel_arcsec=CFG.pixel_arcsec,
        )
        assert res.completeness == 1.0 and res.n_considered == 16
        assert res.n_false == 0
        matched = res.matched_true >= 0
        err = np.hypot(*(res.positions_xy[matched] - np.c_[cat.x_lr, cat.y_lr][res.matched_true[matched]]).T)
        assert np.median(err) < 0.5  # centroids within half an LR pixel
    # rates as input (rate image, background rate, exposure) give the same answer
    res_rate = detection_stats(counts / 2e4, bkg / 2e4, np.c_[cat.x_lr, cat.y_lr], cat.rate, exposure_s=2e4)
    assert res_rate.completeness == 1.0


def test_no_false_detections_on_pure_background_and_calibrated_tail():
    rng = np.random.default_rng(6)
    n_false, frac3 = 0, []
    for _ in range(30):
        b = np.full((64, 64), 0.42)
        counts = rng.poisson(b)
        res = detection_stats(counts, b, np.zeros((0, 2)), np.zeros(0), significance=5.0, pixel_arcsec=4.1)
        n_false += res.n_false
        frac3.append((significance_map(counts, b) >= 3).mean())
    assert n_false == 0
    # the cell test is calibrated: pixel fraction above 3 sigma close to (not above) the Gaussian tail 1.35e-3
    assert 0.5e-3 < np.mean(frac3) < 1.6e-3
    # a Gaussian k-sigma cut on the same cells would not be: sqrt(b) errors give many more 3-sigma cells
    cell_b = 0.42 * 9
    from scipy import stats

    assert stats.poisson.sf(math.ceil(cell_b + 3 * math.sqrt(cell_b)) - 1, cell_b) > 2 * 1.35e-3


def test_detection_on_simulated_fields_completeness_by_flux():
    comp_bright, comp_faint, false = [], [], 0
    for k in range(4):
        f = xsim.simulate_field(CFG, 2, "test", k)
        s = f.sky.sources
        res = detection_stats(
            f.counts["input"],
            f.background["input"],
            np.c_[s.x_lr, s.y_lr],
            s.rate,
            significance=5.0,
            rate_bins=np.array([1e-4, 3e-4, 2e-3, 1.0]),
        )
        inside = s.in_field(CFG.lr_size) & (s.kind == 0) & (f.exposure["input"].max() > 0)
        comp_faint.extend(res.true_detected[inside & (s.rate < 3e-4)])
        comp_bright.extend(res.true_detected[inside & (s.rate >= 2e-3)])
        false += res.n_false
    assert np.mean(comp_faint) < 0.1  # 2-6 counts sources are not detected at 5 sigma in 20 ks
    assert len(comp_bright) == 0 or np.mean(comp_bright) > 0.8
    assert false <= 4


def test_background_rate_estimate():
    rng = np.random.default_rng(7)
    exp = np.full((64, 64), 2e4)
    exp[:, 30:32] = 0
    cat = _catalog([15.2, 45.1], [20.3, 40.8], [5e-3, 5e-3])
    mu = (xsim.render_points(CFG, cat, "lr") + 2.1e-5) * exp
    est = estimate_background_rate(rng.poisson(mu), exp)
    assert est == pytest.approx(2.1e-5, rel=0.06)  # 4000 pixels x 0.42 counts: 2.4 % Poisson error


# ------------------------------------------------------------------------------------------------ hallucination


@pytest.fixture(scope="module")
def field():
    return xsim.simulate_field(CFG, 9, "val", 1)


def _pseudo_rate(expected, exposure):
    return np.divide(expected, exposure, out=np.zeros_like(expected), where=exposure > 0)


def test_true_rate_as_prediction_is_consistent_denoising(field):
    rate = _pseudo_rate(field.expected["target"], field.exposure["target"])
    exp_counts = forward_model_to_input(rate, 1, field.exposure["input"])
    np.testing.assert_allclose(exp_counts, field.expected["input"], rtol=1e-12, atol=1e-12)
    _, summary = lr_consistency_map(field.counts["input"], exp_counts)
    # mean deviance over ~4000 pixels with sd(D) ~ 1.4: statistical error ~ 2 %
    assert summary["ratio"] == pytest.approx(1.0, abs=0.08)
    assert 0.3 < summary["expected_mean"] < 1.1
    assert summary["frac_above"] < 5 * summary["expected_frac_above"] + 2e-3


def test_true_rate_as_prediction_is_consistent_sr(field):
    k = matching_kernel(CFG.psf_lr, CFG.psf_hr, CFG.hr_pixel_arcsec)
    rate_hr = _pseudo_rate(field.expected["sr"], field.exposure["sr"])
    exp_counts = forward_model_to_input(rate_hr, 2, field.exposure["input"], k)
    live = field.expected["input"] > 0
    rel = exp_counts[live] / field.expected["input"][live] - 1
    assert np.median(np.abs(rel)) < 0.02 and abs(exp_counts.sum() / field.expected["input"].sum() - 1) < 0.02
    _, summary = lr_consistency_map(field.counts["input"], exp_counts)
    assert summary["ratio"] == pytest.approx(1.0, abs=0.08)
    # a batch [B, H, W] gives the same per image
    both = forward_model_to_input(np.stack([rate_hr, rate_hr]), 2, field.exposure["input"], k)
    np.testing.assert_allclose(both[1], exp_counts, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="matching_kernel"):
        forward_model_to_input(rate_hr, 2, field.exposure["input"])


def test_invented_point_source_shows_deviance_excess(field):
    rate = _pseudo_rate(field.expected["target"], field.exposure["target"])
    s = field.sky.sources
    # a place with no true source within 6 pixels and full exposure
    cand = [
        (x, y)
        for x in range(10, 54, 3)
        for y in range(10, 54, 3)
        if np.min(np.hypot(s.x_lr - x, s.y_lr - y)) > 6
        and field.geometry.live_lr[y - 2 : y + 3, x - 2 : x + 3].min() == 1
    ]
    x0, y0 = cand[0]
    fake = xsim.render_points(CFG, _catalog([x0], [y0], [1e-3]), "lr")  # ~20 invented counts in 20 ks
    exp_fake = forward_model_to_input(rate + fake, 1, field.exposure["input"])
    exp_true = forward_model_to_input(rate, 1, field.exposure["input"])
    d_fake, s_fake = lr_consistency_map(field.counts["input"], exp_fake, cell=3)
    d_true, s_true = lr_consistency_map(field.counts["input"], exp_true, cell=3)
    assert d_fake[y0, x0] > 9.0 and d_fake[y0, x0] > 5 * d_true[y0, x0] + 1
    assert s_fake["mean_deviance"] > s_true["mean_deviance"]
    # away from the invention the maps agree
    far = np.hypot(*np.meshgrid(np.arange(64) - x0, np.arange(64) - y0)) > 12
    np.testing.assert_allclose(d_fake[far], d_true[far], rtol=0.05, atol=0.05)


def test_self_ensemble_equivariant_and_not():
    x = torch.zeros(2, 1, 16, 16)
    x[0, 0, 5, 9] = 4.0
    x[1, 0] = torch.rand(16, 16, generator=torch.Generator().manual_seed(0))
    blur = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]).view(1, 1, 3, 3) / 16

    def equivariant(t):  # symmetric blur + x2 nearest upsampling (SR-like)
        y = torch.nn.functional.conv2d(t, blur, padding=1)
        return y.repeat_interleave(2, -1).repeat_interleave(2, -2)

    mean, std = self_ensemble(equivariant, x)
    assert mean.shape == (2, 1, 32, 32)
    assert std.abs().max() < 1e-6
    torch.testing.assert_close(mean, equivariant(x))

    def shift_right(t):  # not equivariant: translation along the last axis
        return torch.roll(t, 1, dims=-1)

    mean, std = self_ensemble(shift_right, x)
    img_std = std[0, 0]
    # each transform moves the source to one of the 4 neighbours (2 of 8 transforms each): mean 1 and
    # std sqrt(16 * 2/8 - 1) = sqrt(3) there; all transforms agree elsewhere (std 0)
    for yx in ((5, 10), (5, 8), (4, 9), (6, 9)):
        assert mean[0, 0][yx] == pytest.approx(1.0) and img_std[yx] == pytest.approx(math.sqrt(3.0), rel=1e-5)
    assert img_std[5, 9] == 0 and img_std[12, 2] == 0
    assert (img_std > 0).sum() == 4
    assert std[1].abs().max() > 0.05  # a textured image differs almost everywhere


# ------------------------------------------------------------------------------------------------ evaluator


def _synthetic_batch(scale: int, n: int = 2, size: int = 24, seed: int = 0):
    """Fields without sources (image-quality metrics only): a smooth truth, an exposure map with a chip gap,
    Poisson counts of input and target."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: size * scale, : size * scale] / scale
    truth = np.stack([2e-5 + 8e-4 * np.exp(-((xx - c) ** 2 + (yy - c) ** 2) / 8.0) for c in rng.uniform(6, 18, n)])
    expo_t = np.full(truth.shape, 5e4)
    expo_t[:, :, 10 * scale : 11 * scale] = 0.0
    truth_lr = truth.reshape(n, size, scale, size, scale).sum(axis=(2, 4))
    expo_in = np.full(truth_lr.shape, 2e4)
    expo_in[:, :, 10] = 0.0
    counts_in = rng.poisson(truth_lr * expo_in)
    counts_t = rng.poisson(truth * expo_t)
    rate = lambda c, e: np.divide(c, e, out=np.zeros(c.shape), where=e > 0)
    t = lambda a: torch.tensor(a[:, None], dtype=torch.float32)
    batch = {
        "counts_in": t(counts_in),
        "exposure_in": t(expo_in),
        "counts_target": t(counts_t),
        "exposure_target": t(expo_t),
        "rate_true": t(np.where(expo_t > 0, truth, 0.0)),
    }
    images = {"input": t(rate(counts_in, expo_in)), "target": t(rate(counts_t, expo_t))}
    return batch, images


@pytest.mark.parametrize("scale", [1, 2])
def test_psnr_against_truth_equals_skimage(scale):
    """The primary PSNR (model space, exposed target pixels, accumulated over the split) equals
    skimage.metrics.peak_signal_noise_ratio on the same pixels, for the model and for the tuned
    smoothing baseline the evaluator computes itself; SSIM of the truth against itself is 1."""
    skm = pytest.importorskip("skimage.metrics")
    from lit_sr.data.transforms import StretchTransform
    from lit_sr.domains.xmm.baselines import gaussian_smooth_rate
    from lit_sr.domains.xmm.metrics import XMMEvaluator
    from lit_sr.metrics.image import upsample_baseline

    tr = StretchTransform(2e-3, "sqrt")
    smooth = "smooth" if scale == 1 else "bicubic_smooth"
    ev = XMMEvaluator(scale=scale, transform=tr, baselines=["input", smooth])
    val = [_synthetic_batch(scale, seed=s) for s in (1, 2)]
    ev.prepare(iter(val))
    sigma = ev.tuned[f"{smooth}_sigma_px"]
    assert sigma > 0
    batches = [_synthetic_batch(scale, seed=s) for s in (3, 4)]
    outputs = []
    for b, im in batches:
        out = torch.rand_like(b["rate_true"]) * 1e-3 + b["rate_true"]
        outputs.append(out)
        ev.update(b, {**im, "output": out})
    res, _ = ev.results()
    assert res[f"tuned/{smooth}_sigma_px"] == sigma
    live = np.concatenate([b["exposure_target"].numpy().ravel() > 0 for b, _ in batches])
    truth = np.concatenate([tr(b["rate_true"]).numpy().ravel() for b, _ in batches])[live]
    model = np.concatenate([tr(o).numpy().ravel() for o in outputs])[live]
    assert res["psnr_truth/model"] == pytest.approx(skm.peak_signal_noise_ratio(truth, model, data_range=1.0), abs=1e-6)
    ests = []
    for b, im in batches:
        est = gaussian_smooth_rate(im["input"].double(), sigma, b["exposure_in"].double())
        if scale > 1:
            est = upsample_baseline(est, scale, "bicubic", flux_conserving=True)
        ests.append(tr(est.float()).numpy().ravel())
    base = np.concatenate(ests)[live]
    assert res[f"psnr_truth/{smooth}"] == pytest.approx(
        skm.peak_signal_noise_ratio(truth, base, data_range=1.0), abs=1e-6
    )
    # the noisy target against the truth: a reference row, below the smoothing on these smooth fields
    assert res["psnr_truth/target"] < res[f"psnr_truth/{smooth}"]
    ev.reset()
    for b, im in batches:
        ev.update(b, {**im, "output": b["rate_true"]})
    res, skipped = ev.results()
    assert res["ssim_truth/model"] == pytest.approx(1.0, abs=1e-6) and "psnr_truth/model" in skipped


def test_unknown_or_untuned_baseline_is_an_error():
    from lit_sr.domains.xmm.metrics import XMMEvaluator

    with pytest.raises(ValueError, match="bicubic"):
        XMMEvaluator(scale=1, baselines=["bicubic"])
    ev = XMMEvaluator(scale=1, baselines=["smooth"])
    b, im = _synthetic_batch(1)
    with pytest.raises(RuntimeError, match="prepare"):
        ev.update(b, {**im, "output": im["input"]})


def test_broadened_source_is_not_read_as_flux_loss():
    """Point sources blurred flux-conservingly (Gaussian sigma 0.75 px: measured FWHM ~10.6", the CPU models'
    width; 2 px: ~25", a heavy smoothing): the old aperture (2 input pixels, corrected for the nominal 6" PSF)
    reads them as flux losses (< 0.85, < 0.45); the evaluator's aperture (1.5 x the measured FWHM, corrected
    for the nominal PSF broadened to that FWHM) reads 1 within 2 %, as it does for the unblurred source."""
    from lit_sr.domains.xmm.baselines import gaussian_smooth_rate
    from lit_sr.domains.xmm.metrics import XMMEvaluator
    from lit_sr.domains.xmm.photometry import aperture_net_ratios

    ev = XMMEvaluator(scale=1, baselines=["input"])
    cat = _catalog([32.3], [31.6], [2e-3])
    sharp = xsim.render_points(CFG, cat, "lr")
    pos = np.c_[cat.x_lr, cat.y_lr]
    k = CFG.psf_lr.kernel(CFG.pixel_arcsec, half_size=10)
    for sigma_px, old_below, fwhm_expected in ((0.0, 1.01, 6.0), (0.75, 0.85, 10.6), (2.0, 0.45, 25.4)):
        img = gaussian_smooth_rate(sharp, sigma_px) + 2e-5
        fwhm = float(point_source_fwhm(img, pos, box=9, pixel_arcsec=CFG.pixel_arcsec, oversample=4)[0])
        assert fwhm == pytest.approx(fwhm_expected, rel=0.05)
        old = aperture_flux_ratio(img, pos, cat.rate, 2.0, (5.0, 8.0), psf=k)[0]
        assert old < old_below
        radius, fraction = ev.flux_correction("model", fwhm)
        raw = aperture_net_ratios(img, pos, cat.rate, ev.aperture_radii_lr, ev.annulus_lr)[0]
        assert raw[ev.aperture_radii_lr.index(radius)] / fraction == pytest.approx(1.0, abs=0.02)


def test_completeness_at_a_matched_false_detection_rate():
    """Hand-made significances over 2 fields: at the nominal 5 sigma product B (a smooth image, over-significant)
    finds more sources but with 4 false detections; at the input's rate of 0.5 per field its threshold rises
    to 7 sigma and its completeness is read off the curve, interpolated between 6 and 7."""
    from lit_sr.domains.xmm.photometry import (
        completeness_at_false_rate,
        detection_curve,
    )

    inp = detection_curve(np.array([9.0, 6.0, 5.5, 4.0, -np.inf]), np.array([5.2, 3.5]), n_fields=2, floor=3.0)
    b = detection_curve(np.array([12.0, 10.0, 8.0, 6.5, 5.9]), np.array([7.0, 6.0, 5.8, 5.1]), n_fields=2, floor=3.0)
    at5 = lambda c: c.completeness[np.searchsorted(-c.thresholds, -5.0, side="right") - 1]
    at5_false = lambda c: c.false_per_field[np.searchsorted(-c.thresholds, -5.0, side="right") - 1]
    assert at5(inp) == pytest.approx(0.6) and at5(b) == pytest.approx(1.0)
    assert at5_false(inp) == pytest.approx(0.5) and at5_false(b) == pytest.approx(2.0)
    f0 = 0.5  # input: 1 false detection above 5 sigma in 2 fields
    comp_in, thr_in = completeness_at_false_rate(inp, f0)
    assert comp_in == pytest.approx(0.8) and thr_in == pytest.approx(4.0)  # loosest threshold with <= 1 false
    # curve of B: (false/field, completeness) = (0.5, 3/5) at t = 7, (0.5, 4/5) at 6.5, (1.0, 4/5) at 6,
    # (1.0, 1) at 5.9, (1.5, 1) at 5.8
    comp_b, thr_b = completeness_at_false_rate(b, f0)
    assert thr_b == pytest.approx(6.5) and comp_b == pytest.approx(0.8)
    comp_b, _ = completeness_at_false_rate(b, 0.75)
    assert comp_b == pytest.approx(0.9)  # halfway between 4/5 and 1
    comp_b, _ = completeness_at_false_rate(b, 0.0)
    assert comp_b == pytest.approx(0.6)  # t just above 7: 12, 10, 8 found
