"""Physical and numerical facts of the strong-lens simulator (small images, few lenses)."""

from __future__ import annotations

import dataclasses
import math

import astropy.constants as const
import astropy.units as u
import numpy as np
import pytest
from astropy.cosmology import FlatLambdaCDM

from lit_sr.domains.lensing.sim import (
    BLOCK_LENSES,
    PARAM_FIELDS,
    LensSimConfig,
    LensSimulator,
    block_labels,
    concatenate_blocks,
    lr_from_hr,
    sample_power_law_masses,
    simulate_lenses,
)

PIX = 0.05


def _sim(n: int, seed: int, size: int = 40, **kw) -> dict[str, np.ndarray]:
    return concatenate_blocks(simulate_lenses(n, seed, image_size=size, **kw))


@pytest.fixture(scope="module")
def big() -> LensSimulator:
    """100x100 HR (5" field): rings of theta_E <= 1.6" and their outer images fit."""
    return LensSimulator(LensSimConfig(), image_size=100)


def _first_of_class(sim: LensSimulator, seed: int, label: int, n: int):
    out = []
    for b in range(20):
        for j in range(BLOCK_LENSES):
            p = sim.lens_params(seed, b, j)
            if p.label == label:
                out.append(p)
                if len(out) == n:
                    return out
    raise AssertionError("not enough lenses of the class")


# ---------------------------------------------------------------------------------------------- determinism


def test_determinism_and_chunking_independence():
    n = BLOCK_LENSES + 4
    a = _sim(n, seed=7, return_clean=True)
    b = _sim(n, seed=7, return_clean=True)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert a["hr"].shape == (n, 40, 40) and a["lr"].shape == (n, 20, 20)
    assert a["hr"].dtype == np.float32 and a["label"].dtype == np.int64 and a["n_subhalos"].dtype == np.int64
    assert set(PARAM_FIELDS) <= set(a)
    # a prefix is the same lenses; a block simulated alone equals the same block in the sequence
    prefix = _sim(5, seed=7)
    for k in prefix:
        np.testing.assert_array_equal(prefix[k], a[k][:5], err_msg=k)
    alone = LensSimulator(image_size=40).block(7, 1, 4)
    np.testing.assert_array_equal(alone["hr"], a["hr"][BLOCK_LENSES:])
    np.testing.assert_array_equal(alone["theta_e_arcsec"], a["theta_e_arcsec"][BLOCK_LENSES:])
    # rebuilding everything per lens (benchmark baseline) gives the same images
    naive = _sim(3, seed=7, reuse=False)
    np.testing.assert_array_equal(naive["hr"], a["hr"][:3])
    # noise has its own stream: the noiseless run reproduces hr_clean; another seed differs
    clean = _sim(6, seed=7, config=LensSimConfig(noise=False))
    np.testing.assert_array_equal(clean["hr"], a["hr_clean"][:6])
    assert not np.array_equal(_sim(3, seed=8)["hr"], a["hr"][:3])


def test_class_balance_and_shuffle():
    labels = np.concatenate([block_labels(11, b) for b in range(4)])
    triples = labels.reshape(-1, 3)
    assert (np.sort(triples, axis=1) == [0, 1, 2]).all()  # every consecutive triple holds each class once
    assert len({tuple(t) for t in triples}) > 3  # ... in varying orders
    out = _sim(30, seed=11, size=16)
    np.testing.assert_array_equal(np.bincount(out["label"]), [10, 10, 10])
    np.testing.assert_array_equal(out["label"], labels[:30])
    assert (out["n_subhalos"][out["label"] == 0] == 0).all()
    assert (out["n_subhalos"][out["label"] == 2] == LensSimConfig().vortex_n_masses).all()
    assert (out["substructure_mass_msun"][out["label"] > 0] > 0).all()


# ---------------------------------------------------------------------------------------------- lens mass


def test_einstein_radius_matches_astropy_and_range():
    out = _sim(BLOCK_LENSES, seed=3, size=16)
    cosmo = FlatLambdaCDM(H0=70, Om0=0.3)
    d_l = cosmo.angular_diameter_distance(0.5)
    d_s = cosmo.angular_diameter_distance(1.0)
    d_ls = (cosmo.comoving_distance(1.0) - cosmo.comoving_distance(0.5)) / 2.0  # flat: (chi_s - chi_l) / (1 + z_s)
    # M_E = pi Sigma_cr (D_l theta_E)^2 with Sigma_cr = c^2 D_s / (4 pi G D_l D_ls)
    sigma_cr = const.c**2 * d_s / (4 * math.pi * const.G * d_l * d_ls)
    theta_rad = np.sqrt(out["halo_mass_msun"].astype(np.float64) * u.Msun / (math.pi * sigma_cr * d_l**2))
    theta = (theta_rad.decompose() * u.rad).to_value(u.arcsec)
    np.testing.assert_allclose(out["theta_e_arcsec"], theta, rtol=1e-5)
    # isothermal sphere: theta_E = 4 pi (sigma_v / c)^2 D_ls / D_s
    sig = out["velocity_dispersion_kms"].astype(np.float64) * u.km / u.s
    theta_sis = (4 * math.pi * (sig / const.c) ** 2 * d_ls / d_s).decompose().value * 206264.80624709636
    np.testing.assert_allclose(out["theta_e_arcsec"], theta_sis, rtol=1e-5)
    # log-normal mass around 5e11 Msun (0.12 dex) -> theta_E ~ 0.8"-1.6"
    assert 0.75 < out["theta_e_arcsec"].min() and out["theta_e_arcsec"].max() < 1.7
    assert 1.0 < np.median(out["theta_e_arcsec"]) < 1.35
    assert abs(np.log10(out["halo_mass_msun"]).mean() - np.log10(5e11)) < 0.06


def test_subhalo_mass_function_slope():
    m = sample_power_law_masses(np.random.default_rng(0), 200_000, 1e8, 1e10, 1.9)
    assert m.min() >= 1e8 and m.max() <= 1e10
    # maximum-likelihood slope of a truncated power law: compare the mean of ln m with its analytic value
    a = 1 - 1.9
    lo, hi = np.log(1e8), np.log(1e10)
    norm = (np.exp(a * hi) - np.exp(a * lo)) / a
    mean_ln = ((hi * np.exp(a * hi) - lo * np.exp(a * lo)) / a - norm / a) / norm
    assert abs(np.log(m).mean() - mean_ln) < 0.01


# ---------------------------------------------------------------------------------------------- flux


def test_lr_is_binned_hr_flux_consistent():
    out = _sim(6, seed=2, return_clean=True)
    hr = out["hr_clean"].astype(np.float64)
    binned = hr.reshape(6, 20, 2, 20, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(out["lr_clean"], binned, rtol=1e-5, atol=1e-9)
    # counts/s per LR pixel = 4 x LR value: totals agree
    np.testing.assert_allclose(4 * out["lr_clean"].sum(axis=(1, 2)), hr.sum(axis=(1, 2)), rtol=1e-5)
    # a broader LR PSF moves flux around but conserves it
    cfg = LensSimConfig(lr_psf_fwhm_arcsec=0.2)
    lr_wide = lr_from_hr(hr, cfg)
    np.testing.assert_allclose(lr_wide.sum(axis=(1, 2)), binned.sum(axis=(1, 2)), rtol=1e-9)
    assert (lr_wide.max(axis=(1, 2)) < 0.9 * binned.max(axis=(1, 2))).all()


def test_magnification_and_surface_brightness_conservation(big):
    r = big.renderer
    p = big.lens_params(0, 0, 0).without_substructure()
    # SIS (no ellipticity, no shear), compact round source at beta: two images, total magnification 2 theta_E / beta
    beta = 0.4
    q = dataclasses.replace(
        p,
        lens_e1=0.0,
        lens_e2=0.0,
        shear_gamma1=0.0,
        shear_gamma2=0.0,
        source_e1=0.0,
        source_e2=0.0,
        source_r_eff_arcsec=0.04,
        source_n_sersic=1.0,
        source_x_arcsec=beta,
        source_y_arcsec=0.0,
    )
    mu = r.render(q).sum() / r.render(q, lensed=False).sum()
    assert mu == pytest.approx(2 * q.theta_e_arcsec / beta, rel=0.04)
    # sampled lenses (sources within 0.5 theta_E): the total lensed flux exceeds the unlensed flux
    for j in range(6):
        s = big.lens_params(1, 0, j).without_substructure()
        assert r.render(s).sum() > 2.0 * r.render(s, lensed=False).sum()
    # lensing conserves surface brightness: no pixel of the lensed (unconvolved) image exceeds the source's
    # central surface brightness I_e exp(b_n) x pixel area; a large source's image reaches close to it
    for r_eff in (0.04, 0.3):
        s = dataclasses.replace(q, source_r_eff_arcsec=r_eff, source_x_arcsec=0.1)
        peak = s.source_amp * math.exp(1.6783469900166612) * PIX**2  # b_n(n=1)
        lensed_max = r.render(s, with_psf=False).max()
        assert lensed_max <= peak
    assert lensed_max > 0.8 * peak


def test_psf_fwhm(big):
    """Convolution adds the PSF variance to the image's second moments: FWHM = 2.3548 sqrt(var_psf - var_none)."""
    p = dataclasses.replace(big.lens_params(0, 0, 0).without_substructure(), source_x_arcsec=0.3, source_y_arcsec=-0.2)

    def second_moments(img):
        y, x = np.mgrid[: img.shape[0], : img.shape[1]]
        f = img / img.sum()
        return np.array([(f * (x - (f * x).sum()) ** 2).sum(), (f * (y - (f * y).sum()) ** 2).sum()])

    for lensed in (False, True):
        d = second_moments(big.renderer.render(p, lensed=lensed)) - second_moments(
            big.renderer.render(p, lensed=lensed, with_psf=False)
        )
        fwhm = 2 * math.sqrt(2 * math.log(2)) * np.sqrt(d) * PIX
        np.testing.assert_allclose(fwhm, 0.09, rtol=0.02)
    # LR PSF: the extra blur brings the LR FWHM to lr_psf_fwhm_arcsec
    img = big.renderer.render(p, lensed=False)
    cfg = LensSimConfig(lr_psf_fwhm_arcsec=0.2)
    d = second_moments(lr_from_hr(img, cfg)) - second_moments(lr_from_hr(img, LensSimConfig()))
    fwhm_lr = math.sqrt(0.09**2 + (2.3548200450309493 * math.sqrt(d.mean()) * 2 * PIX) ** 2)
    assert fwhm_lr == pytest.approx(0.2, rel=0.02)


# ---------------------------------------------------------------------------------------------- substructure


@pytest.mark.parametrize("label", [1, 2])
def test_substructure_perturbs_arcs_beyond_noise(big, label):
    cfg = big.config
    x = (np.arange(100) - 49.5) * PIX
    radius = np.hypot(x[None, :], x[:, None])
    ratios = []
    for p in _first_of_class(big, 5, label, 5):
        with_sub = big.renderer.render(p)
        without = big.renderer.render(p.without_substructure())
        sigma = np.sqrt(without / p.exposure_s + cfg.background_rms**2)  # per-pixel noise of the HR image
        near_ring = (radius > 0.5 * p.theta_e_arcsec) & (radius < 1.5 * p.theta_e_arcsec)
        ratios.append(float((np.abs(with_sub - without) / sigma)[near_ring].max()))
        # point masses add mass: they change the image but the unperturbed model is the same lens
        assert p.n_subhalos > 0
    assert min(ratios) > 2.0 and np.median(ratios) > 4.0, ratios


# ---------------------------------------------------------------------------------------------- noise


def test_noise_statistics():
    cfg = LensSimConfig(exposure_range_s=(100.0, 400.0))  # short exposures: Poisson and sky both matter
    out = _sim(12, seed=4, size=64, config=cfg, return_clean=True)
    t = out["exposure_s"].astype(np.float64)[:, None, None]
    hr_clean = out["hr_clean"].astype(np.float64)
    var = hr_clean / t + cfg.background_rms**2
    z = (out["hr"] - hr_clean) / np.sqrt(var)
    assert abs(z.mean()) < 0.02 and z.var() == pytest.approx(1.0, abs=0.03)
    bright = hr_clean / t > 3 * cfg.background_rms**2  # Poisson-dominated pixels
    assert bright.sum() > 2000
    assert z[bright].var() == pytest.approx(1.0, abs=0.06)
    dark = hr_clean < 1e-4  # sky only
    assert (out["hr"] - hr_clean)[dark].std() == pytest.approx(cfg.background_rms, rel=0.03)
    lr_clean = out["lr_clean"].astype(np.float64)
    var_lr = lr_clean / (4 * t * cfg.lr_exposure_factor) + cfg.lr_background_rms**2
    z_lr = (out["lr"] - lr_clean) / np.sqrt(var_lr)
    assert z_lr.var() == pytest.approx(1.0, abs=0.05)
    # HR and LR noise are independent
    hr_binned_noise = (out["hr"] - hr_clean).reshape(12, 32, 2, 32, 2).mean(axis=(2, 4))
    corr = np.corrcoef(hr_binned_noise.ravel(), (out["lr"] - lr_clean).ravel())[0, 1]
    assert abs(corr) < 0.03
    # ... and so are the noise fields of different lenses
    res = (out["hr"] - hr_clean).reshape(12, -1) / np.sqrt(var).reshape(12, -1)
    assert np.abs(np.corrcoef(res)[np.triu_indices(12, 1)]).max() < 0.06


def test_lens_light_flag_and_config_errors():
    p_off = _sim(3, seed=9, return_clean=True)
    p_on = _sim(3, seed=9, config=LensSimConfig(lens_light=True), return_clean=True)
    centre = (slice(18, 22), slice(18, 22))
    assert (
        p_on["hr_clean"][:, centre[0], centre[1]].mean(axis=(1, 2))
        > p_off["hr_clean"][:, centre[0], centre[1]].mean(axis=(1, 2)) + 0.05
    ).all()
    np.testing.assert_array_equal(p_on["theta_e_arcsec"], p_off["theta_e_arcsec"])  # same lenses
    with pytest.raises(ValueError, match="image_size"):
        LensSimConfig(image_size=41)
    with pytest.raises(ValueError, match="lr_psf_fwhm_arcsec"):
        LensSimConfig(lr_psf_fwhm_arcsec=0.05)
    with pytest.raises(ValueError, match="exposure_range_s"):
        LensSimConfig(exposure_range_s=(10.0, 1.0))
    assert LensSimConfig.from_json(LensSimConfig(lens_light=True).to_json()) == LensSimConfig(lens_light=True)


# ---------------------------------------------------------------------------------------------- ring fit


def test_ring_fit_on_analytic_rings():
    from lit_sr.domains.lensing.ring_fit import einstein_radius_from_image

    x = (np.arange(100) - 49.5) * PIX
    xx, yy = np.meshgrid(x, x)
    ring = np.exp(-0.5 * ((np.hypot(xx - 0.3, yy + 0.1) - 1.1) / 0.06) ** 2)  # radius 1.1" about (0.3, -0.1)
    assert einstein_radius_from_image(ring, PIX, fit_center=True) == pytest.approx(1.1, abs=0.005)
    assert einstein_radius_from_image(ring, PIX, center_arcsec=(0.3, -0.1)) == pytest.approx(1.1, abs=0.005)
    # about the wrong centre the azimuthal mean is off only at second order in the offset
    assert abs(einstein_radius_from_image(ring, PIX) - 1.1) < 0.05
    assert math.isnan(einstein_radius_from_image(np.zeros((20, 20)), PIX))


def test_ring_fit_recovers_theta_e_of_simulated_lenses(big):
    """50 noiseless no_sub lenses at 100x100 HR: median |error| 0.034" (HR) and 0.040" (LR, binned), cf. report."""
    from lit_sr.domains.lensing.ring_fit import einstein_radii_from_images

    lenses = [p.without_substructure() for p in _first_of_class(big, 3, 0, 50)]
    hr = np.stack([big.renderer.render(p) for p in lenses])
    lr = lr_from_hr(hr, big.config)
    truth = np.array([p.theta_e_arcsec for p in lenses])
    err_hr = np.abs(einstein_radii_from_images(hr, PIX) - truth)
    err_lr = np.abs(einstein_radii_from_images(lr, 2 * PIX) - truth)
    assert np.median(err_hr) < 0.05 and np.median(err_lr) < 0.06
    assert np.median(err_lr) > 0.9 * np.median(err_hr)  # LR: larger or comparable error
    # a full Einstein ring (SIS, source on the axis) is recovered to a fraction of a pixel
    p = dataclasses.replace(
        lenses[0],
        lens_e1=0.0,
        lens_e2=0.0,
        shear_gamma1=0.0,
        shear_gamma2=0.0,
        source_x_arcsec=0.0,
        source_y_arcsec=0.0,
    )
    assert einstein_radii_from_images(big.renderer.render(p)[None], PIX)[0] == pytest.approx(p.theta_e_arcsec, abs=0.01)


def test_ring_fit_lens_light_subtraction_helps():
    from lit_sr.domains.lensing.ring_fit import einstein_radii_from_images

    sim = LensSimulator(LensSimConfig(lens_light=True), image_size=100)
    lenses = [p.without_substructure() for p in _first_of_class(sim, 3, 0, 12)]
    img = np.stack([sim.renderer.render(p) for p in lenses])
    truth = np.array([p.theta_e_arcsec for p in lenses])
    raw = np.median(np.abs(einstein_radii_from_images(img, PIX) - truth))
    sub = np.median(
        np.abs(einstein_radii_from_images(img, PIX, lens_light_percentile=20, min_radius_arcsec=0.5) - truth)
    )
    assert sub < 0.5 * raw and sub < 0.3, (raw, sub)
