"""Physics, statistics and determinism checks of the galsim galaxy simulator (tens of galaxies, seconds)."""

from __future__ import annotations

import dataclasses

import galsim
import numpy as np
import pytest
from scipy.signal import fftconvolve

from lit_sr.domains.galaxy.sim import (
    BLOCK_GALAXIES,
    FIELDS,
    GalaxySimConfig,
    composite_half_light_radius,
    moffat_kernel,
    sample_parameters,
    simulate_galaxies,
    simulate_galaxy_set,
)

CFG = GalaxySimConfig()
N = 48
SEED = 7


@pytest.fixture(scope="module")
def clean() -> dict[str, np.ndarray]:
    return simulate_galaxy_set(N, SEED, dataclasses.replace(CFG, add_noise=False))


@pytest.fixture(scope="module")
def noisy() -> dict[str, np.ndarray]:
    return simulate_galaxy_set(N, SEED, CFG)


def _numeric_hlr(profile: galsim.GSObject, r_max: float) -> float:
    """Half-light radius of a round galsim profile by trapezoid integration of 2 pi r I(r) on a log grid."""
    r = np.concatenate([[0.0], np.geomspace(1e-7 * r_max, r_max, 40000)])
    intensity = np.array([profile.xValue(x, 0.0) for x in r])
    integrand = 2 * np.pi * r * intensity
    enclosed = np.concatenate([[0.0], np.cumsum(0.5 * (integrand[1:] + integrand[:-1]) * np.diff(r))])
    return float(np.interp(0.5 * enclosed[-1], enclosed, r))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="power of 2"):
        GalaxySimConfig(stamp_size=48)
    with pytest.raises(ValueError, match="odd"):
        GalaxySimConfig(psf_size=24)
    with pytest.raises(ValueError, match="psf_beta"):
        GalaxySimConfig(psf_beta=1.0)
    with pytest.raises(ValueError, match="centre_jitter_pixels"):
        GalaxySimConfig(centre_jitter_pixels=1.5)  # the cusp could leave the finely integrated core
    bad = dataclasses.replace(CFG.classes[0], sersic_n_probs=(0.5, 0.5))
    with pytest.raises(ValueError, match="sersic_n_probs"):
        GalaxySimConfig(classes=(bad, *CFG.classes[1:]))
    with pytest.raises(ValueError, match="seed"):
        simulate_galaxies(3, -1)  # checked eagerly, before iterating
    assert GalaxySimConfig.from_json(CFG.to_json()) == CFG


@pytest.mark.parametrize("bt, n, rho", [(0.3, 4.0, 0.3), (0.8, 2.5, 0.6), (0.5, 1.5, 1.7)])
def test_composite_half_light_radius_matches_numeric_profile(bt, n, rho) -> None:
    disk_hlr = 1.0
    x = float(composite_half_light_radius(bt, n, rho))
    profile = galsim.Exponential(half_light_radius=disk_hlr, flux=1 - bt) + galsim.Sersic(
        n, half_light_radius=rho * disk_hlr, flux=bt
    )
    assert x == pytest.approx(_numeric_hlr(profile, 2000.0), rel=2e-3)
    assert min(1.0, rho) <= x <= max(1.0, rho)
    assert float(composite_half_light_radius(0.0, n, rho)) == pytest.approx(1.0, abs=1e-9)


def test_parameter_distributions() -> None:
    labels = np.tile(np.arange(3), 20000)
    p = sample_parameters(labels, np.random.default_rng(0), CFG)
    # Size bins: the stored edges are the tertiles of the default mixture.
    frac = np.bincount(p["size_bin"], minlength=3) / labels.size
    np.testing.assert_allclose(frac, 1 / 3, atol=0.01)
    np.testing.assert_array_equal(p["size_bin"], np.digitize(p["hlr_arcsec"], CFG.size_bin_edges_arcsec))
    for c, prior in enumerate(CFG.classes):
        m = labels == c
        lo, hi = prior.hlr_range_arcsec
        assert lo <= p["hlr_arcsec"][m].min() and p["hlr_arcsec"][m].max() <= hi
        assert np.median(p["hlr_arcsec"][m]) == pytest.approx(prior.hlr_median_arcsec, rel=0.03)
        b_lo, b_hi = prior.bulge_fraction_range
        assert b_lo <= p["bulge_fraction"][m].min() and p["bulge_fraction"][m].max() <= b_hi
        # Randomly inclined oblate system: P(q <= x) = sqrt((x^2 - q0^2) / (1 - q0^2)).
        q0 = prior.min_axis_ratio
        assert p["q"][m].min() >= q0 - 1e-12 and p["q"][m].max() <= 1.0
        x = 0.5 * (1 + q0)
        assert np.mean(p["q"][m] <= x) == pytest.approx(np.sqrt((x**2 - q0**2) / (1 - q0**2)), abs=0.015)
        freq = [np.mean(p["sersic_n"][m] == n) for n in CFG.sersic_n_grid]
        np.testing.assert_allclose(freq, prior.sersic_n_probs, atol=0.015)
        knotty = p["n_knots"][m] > 0
        assert np.mean(knotty) == pytest.approx(prior.knot_probability, abs=0.015)
    assert np.median(p["flux"]) == pytest.approx(CFG.flux_median_adu, rel=0.03)
    # Component radii reproduce the composite half-light radius.
    x = composite_half_light_radius(
        p["bulge_fraction"][:50], p["sersic_n"][:50], p["bulge_hlr_arcsec"][:50] / p["disk_hlr_arcsec"][:50]
    )
    np.testing.assert_allclose(x * p["disk_hlr_arcsec"][:50], p["hlr_arcsec"][:50], rtol=1e-9)


def test_outputs_labels_and_psf(clean) -> None:
    assert set(clean) == set(FIELDS)
    s, k = CFG.stamp_size, CFG.psf_size
    assert clean["image"].shape == clean["image_psf_free"].shape == (N, s, s)
    assert clean["image"].dtype == np.float32 and clean["label"].dtype == np.int64
    assert clean["psf"].shape == (N, k, k)
    assert all(clean[f].shape == (N,) for f in FIELDS[3:])
    # Stratified balance: every consecutive triple holds each class once.
    assert (np.sort(clean["label"].reshape(-1, 3), axis=1) == np.arange(3)).all()
    np.testing.assert_allclose(clean["psf"].sum(axis=(1, 2)), 1.0, atol=1e-5)
    assert np.unravel_index(clean["psf"][0].argmax(), (k, k)) == (k // 2, k // 2)
    # The stored PSF is galsim's Moffat sampled at pixel centres, normalised.
    ref = (
        galsim.Moffat(beta=CFG.psf_beta, fwhm=CFG.psf_fwhm_arcsec)
        .drawImage(nx=k, ny=k, scale=CFG.pixel_scale_arcsec, method="no_pixel")
        .array
    )
    np.testing.assert_allclose(clean["psf"][0], ref / ref.sum(), atol=1e-6)
    np.testing.assert_allclose(clean["psf_fwhm_arcsec"], CFG.psf_fwhm_arcsec, rtol=1e-6)
    np.testing.assert_array_equal(clean["size_bin"], np.digitize(clean["hlr_arcsec"], CFG.size_bin_edges_arcsec))
    assert (clean["n_knots"][clean["label"] == 1] == 0).all() and (clean["n_knots"][clean["label"] == 2] >= 8).all()


def test_flux_conservation(clean) -> None:
    img = clean["image"].sum(axis=(1, 2)).astype(np.float64)
    free = clean["image_psf_free"].sum(axis=(1, 2)).astype(np.float64)
    flux = clean["flux"].astype(np.float64)
    # The PSF only redistributes light: both images lose the same few tenths of a per cent at the edges.
    np.testing.assert_allclose(img, free, rtol=0.005)
    # Exponential-dominated classes are contained in the 12.8" stamp; de Vaucouleurs wings leak a little.
    disky = clean["label"] != 1
    assert (free[disky] / flux[disky] > 0.985).all() and (free / flux <= 1.001).all()
    assert (free[~disky] / flux[~disky] > 0.94).all()


def test_forward_model_psf_free_convolved_with_psf(clean) -> None:
    """image ~= conv(image_psf_free, psf): the GAN's fixed-PSF-layer forward model."""
    err = []
    for free, psf, img in zip(clean["image_psf_free"], clean["psf"], clean["image"]):
        model = fftconvolve(free.astype(np.float64), psf.astype(np.float64), mode="same")
        err.append(np.abs(model - img).max() / img.max())
    err = np.asarray(err)
    assert np.median(err) < 0.012 and err.max() < 0.05, err


def test_centre_and_shape(clean) -> None:
    scale = CFG.pixel_scale_arcsec
    half = CFG.stamp_size / 2 - 0.5
    rows, cols = np.mgrid[: CFG.stamp_size, : CFG.stamp_size]
    smooth = np.flatnonzero(clean["n_knots"] == 0)  # point-symmetric profiles
    for i in smooth:
        img = clean["image_psf_free"][i].astype(np.float64)
        cy, cx = (img * rows).sum() / img.sum(), (img * cols).sum() / img.sum()
        assert cy == pytest.approx(half + clean["offset_y_arcsec"][i] / scale, abs=0.05)
        assert cx == pytest.approx(half + clean["offset_x_arcsec"][i] / scale, abs=0.05)
    # Adaptive moments of the PSF-free image recover the applied axis ratio (HSM reduced shear |g|).
    dg = []
    for i in smooth:
        res = galsim.hsm.FindAdaptiveMom(
            galsim.Image(clean["image_psf_free"][i].astype(np.float64), scale=1.0), strict=False
        )
        if res.moments_status == 0 and not res.error_message:
            q = clean["q"][i]
            dg.append(res.observed_shape.g - (1 - q) / (1 + q))
    assert len(dg) >= 10
    assert np.median(np.abs(dg)) < 0.02


def test_noise_model(clean, noisy) -> None:
    """Noise stream is separate: noisy - clean has variance (galaxy + sky) / gain per pixel."""
    np.testing.assert_array_equal(clean["image_psf_free"], noisy["image_psf_free"])
    gain, sky = CFG.gain_e_per_adu, CFG.sky_level_adu
    var = (np.clip(clean["image"].astype(np.float64), 0, None) + sky) / gain
    z = (noisy["image"] - clean["image"]) / np.sqrt(var)
    assert abs(z.mean()) < 0.01
    assert z.std() == pytest.approx(1.0, abs=0.01)
    # The galaxy's Poisson term matters: bright pixels are noisier than the sky, by the predicted amount.
    bright = clean["image"] > 0.5 * sky
    assert bright.sum() > 200
    assert var[bright].mean() > 1.5 * sky / gain
    assert (noisy["image"] - clean["image"])[bright].var() == pytest.approx(var[bright].mean(), rel=0.1)


def test_deterministic_and_prefix_stable(noisy) -> None:
    again = simulate_galaxy_set(10, SEED, CFG)
    for key in FIELDS:
        np.testing.assert_array_equal(again[key], noisy[key][:10])
    other = simulate_galaxy_set(3, SEED + 1, CFG)
    assert not np.array_equal(other["image"], noisy["image"][:3])


def test_blocks_do_not_depend_on_n() -> None:
    """Across a block boundary: n = BLOCK + 4 and n = BLOCK + 1 agree on their common galaxies."""
    small = GalaxySimConfig(stamp_size=16, psf_size=7, oversample=2, core_oversample=4)
    blocks = list(simulate_galaxies(BLOCK_GALAXIES + 4, 3, small))
    assert [b["label"].size for b in blocks] == [BLOCK_GALAXIES, 4]
    ref = simulate_galaxy_set(BLOCK_GALAXIES + 1, 3, small)
    for key in ("image", "label", "flux", "hlr_arcsec"):
        np.testing.assert_array_equal(np.concatenate([b[key] for b in blocks])[: BLOCK_GALAXIES + 1], ref[key])
    counts = np.bincount(ref["label"], minlength=3)
    assert counts.max() - counts.min() <= 1


def test_knots_make_irregulars_asymmetric(clean) -> None:
    from lit_sr.domains.galaxy.morphology import asymmetry

    a = asymmetry(clean["image"])
    lab = clean["label"]
    assert np.median(a[lab == 2]) > 3 * np.median(a[lab == 1])
    assert np.median(a[lab == 1]) < 0.01  # noiseless, PSF-convolved, point-symmetric


def test_moffat_kernel_validation() -> None:
    with pytest.raises(ValueError, match="odd"):
        moffat_kernel(0.6, 3.5, 24, 0.2)
