"""Morphology statistics against galsim profiles with known answers, and the W1-ratio report."""

from __future__ import annotations

import galsim
import numpy as np
import pytest
from scipy import special, stats

from lit_sr.domains.galaxy.morphology import (
    STATISTICS,
    adaptive_ellipticity,
    asymmetry,
    concentration,
    flux_weighted_centre,
    growth_curve_radii,
    half_light_radius,
    morphology_report,
    rotate_180,
    total_flux,
    wasserstein_ratio,
)


def draw(profile: galsim.GSObject, size: int = 64, method: str = "auto") -> np.ndarray:
    return profile.drawImage(nx=size, ny=size, scale=1.0, method=method).array.astype(np.float64)


def numeric_radii(profile: galsim.GSObject, fractions, r_total: float, r_max: float) -> np.ndarray:
    """Radii enclosing fractions of the flux inside r_total, from 2 pi r I(r) integrated on a fine log grid."""
    r = np.concatenate([[0.0], np.geomspace(1e-6, r_max, 40000)])
    integrand = 2 * np.pi * r * np.array([profile.xValue(x, 0.0) for x in r])
    enclosed = np.concatenate([[0.0], np.cumsum(0.5 * (integrand[1:] + integrand[:-1]) * np.diff(r))])
    total = np.interp(r_total, r, enclosed)
    return np.array([np.interp(f * total, enclosed, r) for f in fractions])


@pytest.mark.parametrize(
    "profile", [galsim.Gaussian(half_light_radius=4.0, flux=1e4), galsim.Exponential(half_light_radius=5.0, flux=1e4)]
)
def test_half_light_radius_matches_galsim(profile) -> None:
    img = draw(profile.shift(0.3, -0.2))
    centre = flux_weighted_centre(img)[0]
    assert centre == pytest.approx([31.5 - 0.2, 31.5 + 0.3], abs=5e-3)  # (row, col); window clips the wings
    hlr_pix = half_light_radius(img)[0]
    assert hlr_pix == pytest.approx(profile.half_light_radius, rel=0.02)
    assert half_light_radius(img, pixel_scale_arcsec=0.2)[0] == pytest.approx(0.2 * hlr_pix)
    assert total_flux(img)[0] == pytest.approx(1e4, rel=1e-3)
    assert total_flux(img, radius_pix=2 * hlr_pix)[0] < total_flux(img)[0]


def test_adaptive_ellipticity_recovers_applied_shear() -> None:
    g1, g2 = 0.3, -0.15
    imgs = np.stack(
        [
            draw(galsim.Gaussian(sigma=4.0, flux=1e4).shear(g1=g1, g2=g2)),
            draw(galsim.Exponential(half_light_radius=4.0, flux=1e4).shear(g1=g1, g2=g2)),
            np.zeros((64, 64)),
        ]
    )
    e1, e2, failures = adaptive_ellipticity(imgs)
    np.testing.assert_allclose(e1[:2], g1, atol=0.01)
    np.testing.assert_allclose(e2[:2], g2, atol=0.01)
    assert abs(e1[0] - g1) < 0.005 and abs(e2[0] - g2) < 0.005  # Gaussian: moments exact up to the pixel
    assert failures == 1 and np.isnan(e1[2]) and np.isnan(e2[2])


def test_concentration_reference_values_and_ordering() -> None:
    hlr, size = 16.0, 256
    exp = galsim.Exponential(half_light_radius=hlr, flux=1e4)
    dev = galsim.DeVaucouleurs(half_light_radius=hlr, flux=1e4)
    # Reference numbers from the numeric profiles, infinite aperture: C = 2.80 (n=1) and 5.27 (n=4),
    # equal to the closed form P(2n, b_n (r/re)^(1/n)) = f.
    c_inf = {}
    for n, prof in ((1, exp), (4, dev)):
        r20, r80 = numeric_radii(prof, [0.2, 0.8], r_total=1e5, r_max=1e5)
        c_inf[n] = 5 * np.log10(r80 / r20)
        b = special.gammaincinv(2 * n, 0.5)
        r_closed = [(special.gammaincinv(2 * n, f) / b) ** n for f in (0.2, 0.8)]
        assert c_inf[n] == pytest.approx(5 * np.log10(r_closed[1] / r_closed[0]), abs=5e-3)
    assert c_inf[1] == pytest.approx(2.80, abs=0.01) and c_inf[4] == pytest.approx(5.27, abs=0.01)
    # Measured on stamps: the total is the flux inside r = size/2 = 8 re, which matters for n = 4 (C = 4.98).
    imgs = np.stack([draw(exp, size, "no_pixel"), draw(dev, size, "no_pixel")])
    c = concentration(imgs)
    for i, prof in enumerate((exp, dev)):
        r20, r80 = numeric_radii(prof, [0.2, 0.8], r_total=size / 2, r_max=1e4)
        assert c[i] == pytest.approx(5 * np.log10(r80 / r20), rel=0.02)
    assert c[1] - c[0] > 2.0
    r = growth_curve_radii(imgs[:1], [0.2, 0.5, 0.8])[0]
    assert r[0] < r[1] < r[2]


def test_asymmetry() -> None:
    gal = galsim.Gaussian(sigma=3.0, flux=2e4).shear(g1=0.2, g2=0.1)
    centred = draw(gal)
    offset = draw(gal.shift(0.3, -0.2))
    knot = draw(gal + galsim.Gaussian(sigma=1.0, flux=2e3).shift(4.0, 3.0))
    bigger_knot = draw(gal + galsim.Gaussian(sigma=1.0, flux=6e3).shift(4.0, 3.0))
    a = asymmetry(np.stack([centred, offset, knot, bigger_knot]))
    assert a[0] < 1e-6  # rotation about a grid-symmetric centre is a pixel permutation
    assert a[1] < 1e-4  # sub-pixel centre: exact Fourier shift of a band-limited image
    assert a[2] > 0.1 and a[3] > a[2]
    # Rotating twice about the same centre is the identity.
    c = flux_weighted_centre(offset)
    np.testing.assert_allclose(rotate_180(rotate_180(offset, c), c)[0], offset, atol=1e-6 * offset.max())
    # Noise correction removes most of the pure-noise asymmetry.
    rng = np.random.default_rng(0)
    noisy = centred + rng.normal(0.0, 10.0, (20, 64, 64))
    raw, corrected = asymmetry(noisy).mean(), asymmetry(noisy, noise_sigma=10.0).mean()
    assert raw > 0.05 and abs(corrected) < 0.3 * raw


def test_wasserstein_ratio() -> None:
    rng = np.random.default_rng(1)
    a, b, c = (rng.normal(size=2000) for _ in range(3))
    # scipy's W1 equals the mean gap of the sorted samples for equal sizes.
    assert stats.wasserstein_distance(a, b) == pytest.approx(np.abs(np.sort(a) - np.sort(b)).mean())
    assert 0.5 < wasserstein_ratio(c, a, b) < 2.0
    assert wasserstein_ratio(c + 0.5, a, b) > 5.0
    assert wasserstein_ratio(2.0 * c, a, b) > 5.0
    with_nan = np.concatenate([c, [np.nan] * 10])
    assert wasserstein_ratio(with_nan, a, b) == pytest.approx(wasserstein_ratio(c, a, b))


def _galaxies(n: int, seed: int, size_factor: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy PSF-convolved toy galaxies: class 0 exponential, class 1 de Vaucouleurs, log-normal sizes."""
    rng = np.random.default_rng(seed)
    psf = galsim.Moffat(beta=3.5, fwhm=3.0)
    labels = np.arange(n) % 2
    imgs = []
    for lab in labels:
        hlr = size_factor * np.exp(rng.normal(np.log(4.0), 0.3))
        prof = (galsim.Exponential if lab == 0 else galsim.DeVaucouleurs)(half_light_radius=hlr, flux=2e4)
        prof = prof.shear(q=rng.uniform(0.4, 1.0), beta=rng.uniform(0, 180) * galsim.degrees)
        img = galsim.Convolve(prof, psf).drawImage(nx=48, ny=48, scale=1.0).array.astype(np.float64)
        imgs.append(img + rng.normal(0.0, 5.0, img.shape))
    return np.stack(imgs), labels


def test_morphology_report() -> None:
    real, real_labels = _galaxies(160, 0)
    fake, fake_labels = _galaxies(60, 1)
    big, _ = _galaxies(60, 2, size_factor=2.0)
    good = morphology_report(fake, real, 0.2, fake_labels, real_labels, seed=0)
    bad = morphology_report(big, real, 0.2, fake_labels, real_labels, seed=0)
    for s in STATISTICS:
        for prefix in ("w1", "w1_real", "w1_ratio"):
            assert f"{prefix}/{s}" in good and f"{prefix}/{s}/class0" in good and f"{prefix}/{s}/class1" in good
        assert np.isfinite(good[f"w1_ratio/{s}"])
    assert good["n_pairs"] == 60 and good["n_pairs/class1"] == 30
    assert good["hsm_failures/fake"] == 0 and good["hsm_failures/real"] == 0
    assert all(isinstance(v, float) for v in good.values())
    # Same generator: about as close as a real split (W1 of 60 vs 60 is noisy: 0.5-2.8 over 6 split
    # seeds for the statistics here); 2x larger galaxies: far off (hlr ratio 4.7-14 over those seeds).
    assert good["w1_ratio/hlr"] < 3.5 and good["w1_ratio/flux"] < 3.5
    assert bad["w1_ratio/hlr"] > 4.0 and bad["w1_ratio/hlr"] > 3 * good["w1_ratio/hlr"]
    assert bad["w1_ratio/hlr/class0"] > 2.0
    assert bad["mean/hlr/fake"] > 1.3 * bad["mean/hlr/real"]  # PSF and 48-px stamp: measured sizes grow < 2x
    # HSM failures are counted (blank fakes).
    blank = morphology_report(np.concatenate([fake, np.zeros((2, 48, 48))]), real, 0.2)
    assert blank["hsm_failures/fake"] == 2
    with pytest.raises(ValueError, match="both"):
        morphology_report(fake, real, 0.2, labels_fake=fake_labels)
