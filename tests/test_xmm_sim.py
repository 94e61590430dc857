"""XMM-Newton EPIC-pn simulator and King PSF: analytic PSF facts, Poisson statistics, flux conservation,
exposure/vignetting/chip gaps, determinism, WCS agreement between LR and HR files."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from scipy.signal import fftconvolve

from lit_sr.domains.xmm import sim as xsim
from lit_sr.domains.xmm.fits_io import read_observation
from lit_sr.domains.xmm.photometry import point_source_fwhm
from lit_sr.domains.xmm.psf import (
    KingPSF,
    king_core_radius,
    king_fwhm,
    matching_kernel,
    phase_stamps,
)

CFG = xsim.XMMSimConfig()


# ------------------------------------------------------------------------------------------------ PSF


def test_king_fwhm_formula_and_kernel_normalisation():
    psf = KingPSF.from_fwhm(6.0, 1.5)
    # r_c = 3 / sqrt(2^(2/3) - 1) for FWHM 6 arcsec, beta 1.5
    assert psf.core_radius_arcsec == pytest.approx(3.0 / math.sqrt(2 ** (2 / 3) - 1), rel=1e-12)
    assert king_fwhm(king_core_radius(4.2, 1.3), 1.3) == pytest.approx(4.2, rel=1e-12)
    # the analytic profile really is at half maximum at r = FWHM / 2
    assert psf.profile(np.array([psf.fwhm_arcsec / 2]))[0] == pytest.approx(0.5, rel=1e-12)
    for pix in (4.1, 2.05, 0.5):
        assert psf.kernel(pix).sum() == pytest.approx(1.0, abs=1e-12)
    hr = psf.narrower(2)
    assert hr.fwhm_arcsec == pytest.approx(3.0, rel=1e-12)


@pytest.mark.parametrize(
    "pix, fwhm, offset",
    [(4.1, 6.0, (0.0, 0.0)), (4.1, 6.0, (0.3, -0.2)), (2.05, 3.0, (0.25, 0.1)), (0.5, 6.0, (0.0, 0.0))],
)
def test_measured_fwhm_of_rendered_king_matches_analytic(pix, fwhm, offset):
    psf = KingPSF.from_fwhm(fwhm, 1.5)
    k = psf.kernel(pix, offset_pix=offset)
    h = k.shape[0] // 2
    box = 11 if pix > 1 else 41
    got = point_source_fwhm(k, [(h + offset[1], h + offset[0])], box=box, pixel_arcsec=pix)[0]
    assert got == pytest.approx(fwhm, rel=0.01)  # measured: within 0.05 %


def test_kernel_pixel_integrals_match_exact_cauchy_integral():
    """For beta = 1.5 the pixel integral has a closed form: rc^2 arctan(xy / (rc sqrt(rc^2 + x^2 + y^2)))."""
    psf = KingPSF.from_fwhm(6.0, 1.5)
    rc = psf.core_radius_arcsec

    def prim(x, y):
        return rc**2 * np.arctan(x * y / (rc * np.sqrt(rc**2 + x**2 + y**2)))

    # integral of (1 + r^2/rc^2)^-1.5 over the disc of the truncation radius
    total_truncated = math.pi * rc**2 / 0.5 * (1 - 1 / math.sqrt(1 + (psf.truncation_arcsec / rc) ** 2))
    for pix, (dy, dx) in ((4.1, (0.0, 0.0)), (4.1, (0.3, -0.2)), (2.05, (0.25, 0.1))):
        k = psf.kernel(pix, offset_pix=(dy, dx))
        h = k.shape[0] // 2
        for j in range(-2, 3):
            for i in range(-2, 3):
                y0, y1 = (j - 0.5 - dy) * pix, (j + 0.5 - dy) * pix
                x0, x1 = (i - 0.5 - dx) * pix, (i + 0.5 - dx) * pix
                exact = (prim(x1, y1) - prim(x0, y1) - prim(x1, y0) + prim(x0, y0)) / total_truncated
                assert k[h + j, h + i] == pytest.approx(exact, rel=5e-3)  # measured <= 0.2 %


def test_encircled_energy_analytic_vs_kernel():
    psf = KingPSF.from_fwhm(6.0, 1.5)
    from photutils.aperture import CircularAperture

    k = psf.kernel(0.5, oversample=4)
    h = k.shape[0] // 2
    for radius in (3.0, 6.0, 12.0, 30.0):
        ee = CircularAperture((h, h), r=radius / 0.5).do_photometry(k, method="exact")[0][0]
        assert ee == pytest.approx(float(psf.encircled_energy(radius)), abs=2e-3)
    assert float(psf.encircled_energy(psf.truncation_arcsec)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("pix, phases", [(4.1, 16), (2.05, 8)])
def test_phase_stamps_sum_to_one_and_are_centred_on_their_phase(pix, phases):
    psf = CFG.psf_lr if phases == 16 else CFG.psf_hr
    stamps = phase_stamps(psf, pix, phases)
    h = stamps.shape[-1] // 2
    o = np.arange(-h, h + 1)
    np.testing.assert_allclose(stamps.sum(axis=(2, 3)), 1.0, atol=1e-12)
    for py in (0, 5, phases - 1):
        for px in (0, 3, phases - 1):
            s = stamps[py, px]
            # the pixel centroid of a symmetric, fully contained PSF is the source position up to a
            # pixelisation term (measured <= 2e-4 pixel), far below the lattice step 1/phases
            assert (s.sum(1) * o).sum() == pytest.approx(-0.5 + (py + 0.5) / phases, abs=2e-3)
            assert (s.sum(0) * o).sum() == pytest.approx(-0.5 + (px + 0.5) / phases, abs=2e-3)


def _lr_vs_hr_through_kernel(kernel: np.ndarray | None, phase: int) -> tuple[float, float]:
    """L1 difference (fraction of flux) and max difference (fraction of the peak) between the LR PSF and
    sum2x2(HR PSF ⊛ K) for a source at LR lattice phase (phase, phase)."""
    lr = phase_stamps(CFG.psf_lr, CFG.pixel_arcsec, 16)[phase, phase]
    hrs = phase_stamps(CFG.psf_hr, CFG.hr_pixel_arcsec, 8)
    x_lr = -0.5 + (phase + 0.5) / 16  # relative to LR pixel cl
    x_hr = 2 * x_lr + 0.5  # relative to HR pixel 2 cl
    p_hr = math.floor(x_hr + 0.5)
    ph_hr = round((x_hr - p_hr + 0.5) * 8 - 0.5)
    n = 2 * lr.shape[0] + 70
    n += n % 4
    cl = n // 4
    c = 2 * cl
    hh = hrs.shape[-1] // 2
    img = np.zeros((n, n))
    img[c + p_hr - hh : c + p_hr + hh + 1, c + p_hr - hh : c + p_hr + hh + 1] = hrs[ph_hr, ph_hr]
    if kernel is not None:
        img = fftconvolve(img, kernel, mode="same")
    down = img.reshape(n // 2, 2, n // 2, 2).sum(axis=(1, 3))
    ref = np.zeros_like(down)
    hl = lr.shape[0] // 2
    ref[cl - hl : cl + hl + 1, cl - hl : cl + hl + 1] = lr
    d = down - ref
    return float(np.abs(d).sum()), float(np.abs(d).max() / ref.max())


@pytest.mark.parametrize("method", ["fourier", "cauchy"])
def test_matching_kernel_turns_hr_psf_into_lr_psf(method):
    k = matching_kernel(CFG.psf_lr, CFG.psf_hr, CFG.hr_pixel_arcsec, method=method)
    assert k.sum() == pytest.approx(1.0, abs=1e-12) and k.min() >= 0
    for phase in (0, 3, 8, 15):
        l1, peak = _lr_vs_hr_through_kernel(k, phase)
        assert l1 < 0.015  # measured 1.0-1.2 % of the flux (pixelisation + truncation)
        assert peak < 0.03  # measured 0.5-2.4 % of the peak
    # without the kernel the HR PSF is far too sharp: the check above can fail
    l1, peak = _lr_vs_hr_through_kernel(None, 3)
    assert l1 > 0.3 and peak > 0.5


def test_matching_kernel_fourier_for_other_beta():
    lr = KingPSF.from_fwhm(6.0, 1.8)
    hr = lr.narrower(2)
    k = matching_kernel(lr, hr, 2.05)
    t = lr.kernel(2.05)
    p = hr.kernel(2.05)
    assert t.shape == p.shape
    assert np.abs(fftconvolve(p, k, mode="same") - t).sum() < 0.02
    assert np.abs(p - t).sum() > 0.3
    with pytest.raises(ValueError, match="beta = 1.5"):
        matching_kernel(lr, hr, 2.05, method="cauchy")


# ------------------------------------------------------------------------------------------------ simulator


@pytest.fixture(scope="module")
def fields():
    return [xsim.simulate_field(CFG, 7, "train", k) for k in range(4)]


def test_sky_has_faint_sources_and_realistic_background(fields):
    f = fields[0]
    src = f.sky.sources
    pts = src.in_field(CFG.lr_size) & (src.kind == xsim.KIND_CODES["point"])
    counts_20ks = src.rate[pts] * CFG.exposure_input_ks * 1e3
    assert np.median(counts_20ks) < 10 and counts_20ks.min() >= 2.0 - 1e-9  # faint sources matter
    assert pts.sum() > 20
    # background: (3e-3 + 1.5e-3) counts/s/arcmin^2 * (4.1/60)^2 arcmin^2 * 20 ks = 0.42 counts on axis
    bkg = f.background["input"][f.geometry.live_lr == 1]
    assert 0.15 < np.median(bkg) < 0.45


def test_poisson_statistics_of_counts(fields):
    """Pooled over fields and products: mean, variance and P(0) of counts agree with Poisson(expected)."""
    for p in xsim.PRODUCTS:
        n = np.concatenate([f.counts[p].ravel() for f in fields]).astype(np.float64)
        mu = np.concatenate([f.expected[p].ravel() for f in fields])
        use = mu > 0
        n, mu = n[use], mu[use]
        z_mean = (n - mu).sum() / math.sqrt(mu.sum())
        z_var = ((n - mu) ** 2 - mu).sum() / math.sqrt((mu + 2 * mu**2).sum())
        p0 = np.exp(-mu)
        z_p0 = ((n == 0) - p0).sum() / math.sqrt((p0 * (1 - p0)).sum())
        assert abs(z_mean) < 4 and abs(z_var) < 4 and abs(z_p0) < 4, (p, z_mean, z_var, z_p0)
        assert np.all(n == np.round(n)) and n.min() >= 0
    # a Gaussian approximation of the same means would fail the zero-count test
    rng = np.random.default_rng(0)
    mu = fields[0].expected["input"].ravel()
    g = np.clip(np.round(rng.normal(mu, np.sqrt(mu))), 0, None)
    p0 = np.exp(-mu)
    assert abs(((g == 0) - p0).sum() / math.sqrt((p0 * (1 - p0)).sum())) > 4


def test_flux_conserved_per_source_between_lr_hr_and_catalogue():
    xs = xsim.snap_to_lattice(np.array([31.3, 30.07, 33.9, 32.0, 31.5, 32.2]))
    ys = xsim.snap_to_lattice(np.array([32.6, 31.2, 30.5, 33.3, 32.0, 31.8]))
    kinds = np.array([0, 0, 1, 1, 2, 2], np.int8)
    cat = xsim.SourceCatalog(
        kinds,
        xs,
        ys,
        np.array([1e-3, 4e-4, 5e-3, 2e-3, 8e-4, 3e-4]),
        np.array([0, 0, 10.0, 12.0, 3.0, 6.0]),
        np.array([0, 0, 2 / 3, 0.6, 4.0, 1.0]),
        np.array([1, 1, 0.8, 1.0, 0.5, 0.9]),
        np.array([0, 0, 30.0, 0, 120.0, 60.0]),
    )
    for i in range(len(cat)):
        one = cat.select(np.arange(len(cat)) == i)
        if kinds[i] == 0:
            lr, hr = xsim.render_points(CFG, one, "lr"), xsim.render_points(CFG, one, "hr")
        else:
            lr, hr = xsim.render_extended(CFG, one)
        # every source is fully inside (extent + PSF truncation < 32 LR pixels): all its light is in the image
        assert lr.sum() == pytest.approx(one.rate[0], rel=1e-6), i
        assert hr.sum() == pytest.approx(one.rate[0], rel=1e-6), i
    # a source near the edge loses light outside the image; the narrower HR PSF loses less
    edge = cat.select(np.arange(len(cat)) == 0)
    edge.x_lr = xsim.snap_to_lattice(np.array([0.2]))
    lr, hr = xsim.render_points(CFG, edge, "lr"), xsim.render_points(CFG, edge, "hr")
    assert 0.5 * edge.rate[0] < lr.sum() < hr.sum() < edge.rate[0]


def test_hr_sum_2x2_equals_lr_rendered_with_hr_psf(fields):
    """sum2x2(HR source image) is the LR image of the same sky *through the HR PSF*; the cosmic background
    obeys sum2x2(HR) = LR exactly."""
    f = fields[1]
    pts = f.sky.sources.select(f.sky.sources.kind == 0)
    cfg_narrow = dataclasses.replace(CFG, psf_fwhm_arcsec=CFG.psf_fwhm_arcsec / 2)  # LR grid, HR optics
    lr_narrow = xsim.render_points(cfg_narrow, pts, "lr")
    hr = xsim.render_points(CFG, pts, "hr")
    down = hr.reshape(CFG.lr_size, 2, CFG.lr_size, 2).sum(axis=(1, 3))
    np.testing.assert_allclose(down, lr_narrow, rtol=0, atol=1e-12 * hr.max())
    lr_broad = xsim.render_points(CFG, pts, "lr")
    assert np.abs(down - lr_broad).max() > 0.05 * lr_broad.max()  # the PSFs do differ
    np.testing.assert_allclose(
        f.rates.cosmic_hr.reshape(CFG.lr_size, 2, CFG.lr_size, 2).sum(axis=(1, 3)), f.rates.cosmic_lr, rtol=1e-12
    )
    assert f.rates.particle_hr * 4 == pytest.approx(f.rates.particle_lr, rel=1e-12)


def test_exposure_ratio_in_expected_counts(fields):
    f = fields[2]
    live = f.expected["input"] > 0
    np.testing.assert_allclose(f.expected["target"][live] / f.expected["input"][live], 50 / 20, rtol=1e-12)
    assert np.all(f.expected["target"][~live] == 0)
    # HR exposure map (100 ks): its 2x2 mean equals the LR map at equal exposure time
    hr_mean = f.exposure["sr"].reshape(CFG.lr_size, 2, CFG.lr_size, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(hr_mean / 100e3, f.exposure["input"] / 20e3, rtol=1e-12, atol=1e-15)
    assert f.exposure["input"].max() <= 20e3 and f.exposure["sr"].max() <= 100e3


def test_vignetting_falls_off_axis(fields):
    assert float(xsim.vignetting(np.array([0.0]), CFG)[0]) == 1.0
    assert float(xsim.vignetting(np.array([10.0]), CFG)[0]) == pytest.approx(0.73, abs=1e-12)
    for f in fields:
        u, v = [
            np.asarray(a)
            for a in np.meshgrid(
                (np.arange(CFG.lr_size) - (CFG.lr_size - 1) / 2) * CFG.pixel_arcsec / 60,
                (np.arange(CFG.lr_size) - (CFG.lr_size - 1) / 2) * CFG.pixel_arcsec / 60,
            )
        ]
        theta = np.hypot(u - f.sky.axis_offset_arcmin[0], v - f.sky.axis_offset_arcmin[1])
        full = f.geometry.live_lr == 1
        rel = f.exposure["input"][full] / 20e3
        np.testing.assert_allclose(rel, xsim.vignetting(theta[full], CFG), atol=1e-4)
        order = np.argsort(theta[full])
        assert np.all(np.diff(rel[order]) <= 1e-4)  # non-increasing with off-axis angle
        if np.ptp(theta[full]) > 1.0:
            assert rel[order][0] - rel[order][-1] > 1e-3


def test_chip_gaps_have_zero_exposure_and_zero_counts():
    cfg = dataclasses.replace(CFG, random_roll=False, max_offaxis_arcmin=0.0, aimpoint_arcmin=(1.0, 1.0))
    f = xsim.simulate_field(cfg, 3, "test", 0)
    # roll 0, axis at the field centre: detector x = u + 1 arcmin, gaps at x = k * 4.373 arcmin and y = 0
    pix = cfg.pixel_arcsec
    c = (np.arange(cfg.lr_size) - (cfg.lr_size - 1) / 2) * pix / 60 + 1.0  # detector coords of pixel centres
    gap_dist_x = np.min(np.abs(c[:, None] - cfg.ccd_width_arcmin * np.arange(-2, 3)[None, :]), axis=1) * 60  # arcsec
    gap_dist_y = np.abs(c) * 60
    g = cfg.chip_gap_arcsec / 2
    inside = (gap_dist_y[:, None] < g - pix / 2) | (gap_dist_x[None, :] < g - pix / 2)
    clear = (gap_dist_y[:, None] > g + pix / 2) & (gap_dist_x[None, :] > g + pix / 2)
    assert inside.sum() >= 2 * cfg.lr_size - 1  # one column and one row
    for p in ("input", "target"):
        assert np.all(f.exposure[p][inside] == 0) and np.all(f.counts[p][inside] == 0)
        assert np.all(f.exposure[p][clear] > 0)
    hr_inside = np.repeat(np.repeat(inside, 2, 0), 2, 1)
    assert np.all(f.exposure["sr"][hr_inside] == 0) and np.all(f.counts["sr"][hr_inside] == 0)
    # with random rolls too: zero exposure always means zero counts, in every product
    for k in range(3):
        r = xsim.simulate_field(CFG, 11, "train", k)
        for p in xsim.PRODUCTS:
            assert np.all(r.counts[p][r.exposure[p] == 0] == 0)


# ------------------------------------------------------------------------------------------------ files


def _files(root, split="val"):
    return sorted(p.relative_to(root) for p in (root / split).rglob("*.fits"))


def test_dataset_is_deterministic_per_field(tmp_path):
    a = xsim.write_xmm_dataset(tmp_path / "a", {"val": 3}, seed=5, progress=False)
    b = xsim.write_xmm_dataset(tmp_path / "b", {"val": 5}, seed=5, progress=False)
    c = xsim.write_xmm_dataset(tmp_path / "c", {"val": 3}, seed=5, progress=False)
    d = xsim.write_xmm_dataset(tmp_path / "d", {"val": 3}, seed=6, progress=False)
    assert len(_files(a)) == 12 and len(_files(b)) == 20
    for rel in _files(a):
        assert (a / rel).read_bytes() == (c / rel).read_bytes()  # same seed, same bytes
        assert (a / rel).read_bytes() == (b / rel).read_bytes()  # field k independent of n_fields
    assert (a / "val/input_20ks/field_000002.fits").read_bytes() != (
        d / "val/input_20ks/field_000002.fits"
    ).read_bytes()


def test_dataset_layout_marker_and_atomicity(tmp_path, capsys):
    root = tmp_path / "xmm"
    n = {"train": 10, "val": 2, "test": 2}
    assert not xsim.is_complete_xmm_dataset(root)
    xsim.write_xmm_dataset(root, n, seed=1, progress=True)
    out = capsys.readouterr().out.strip().splitlines()  # not a TTY: plain lines every ~10 %
    assert 8 <= len(out) <= 14 and out[-1].startswith("xmm sim: 14/14 fields (100 %)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["xmm"]  # no temporary folder left
    for split, k in n.items():
        for tag in ("input_20ks", "target_50ks", "target_100ks_x2", "sources"):
            assert sorted(p.name for p in (root / split / tag).iterdir()) == [f"field_{i:06d}.fits" for i in range(k)]
    meta = json.loads((root / "xmm_dataset.json").read_text())
    assert meta["complete"] and meta["seed"] == 1 and meta["n_fields"] == n and meta["version"] == xsim.XMM_SIM_VERSION
    assert xsim.XMMSimConfig.from_json(meta["config"]) == CFG
    assert xsim.is_complete_xmm_dataset(root, CFG, 1, n)
    assert not xsim.is_complete_xmm_dataset(root, CFG, 2, n)
    mtime = (root / "train/input_20ks/field_000000.fits").stat().st_mtime_ns
    xsim.write_xmm_dataset(root, n, seed=1, progress=False)  # complete: nothing rewritten
    assert (root / "train/input_20ks/field_000000.fits").stat().st_mtime_ns == mtime
    with pytest.raises(FileExistsError, match="not a complete XMM dataset"):
        xsim.write_xmm_dataset(root, n, seed=2, progress=False)
    (root / "val/sources/field_000001.fits").unlink()  # damaged dataset is not complete
    assert not xsim.is_complete_xmm_dataset(root)


@pytest.fixture(scope="module")
def one_field_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("xmm_one")
    cfg = dataclasses.replace(CFG, write_expected=True)
    xsim.write_xmm_dataset(root / "ds", {"test": 1}, config=cfg, seed=3, progress=False)
    return root / "ds" / "test", cfg


def test_fits_headers_and_wcs_lr_hr_agree(one_field_files):
    base, _ = one_field_files
    name = "field_000000.fits"
    with (
        fits.open(base / "input_20ks" / name) as lr_f,
        fits.open(base / "target_100ks_x2" / name) as hr_f,
        fits.open(base / "sources" / name) as src_f,
    ):
        h = lr_f[0].header
        assert h["BUNIT"] == "count" and h["EXPOSURE"] == 20000.0 and h["TELESCOP"] == "XMM" and h["INSTRUME"] == "EPN"
        assert h["CTYPE1"] == "RA---TAN" and h["CTYPE2"] == "DEC--TAN" and h["CDELT1"] < 0 < h["CDELT2"]
        assert h["CUNIT1"].strip() == "deg" and "seed=3" in str(h["HISTORY"])
        assert lr_f["EXPOSURE"].header["BUNIT"] == "s" and lr_f["EXPOSURE"].data.shape == (64, 64)
        assert lr_f[0].data.dtype.kind == "i"
        hh = hr_f[0].header
        assert hh["EXPOSURE"] == 100000.0 and hr_f[0].data.shape == (128, 128)
        assert hh["CDELT1"] == pytest.approx(h["CDELT1"] / 2, rel=1e-12)
        assert hh["CRPIX1"] == pytest.approx(2 * h["CRPIX1"] - 0.5, rel=1e-12)
        w_lr, w_hr = WCS(h), WCS(hh)
        np.testing.assert_array_equal(WCS(lr_f["EXPOSURE"].header).wcs.crpix, w_lr.wcs.crpix)
        tab = src_f["SOURCES"].data
        assert set(np.char.strip(tab["KIND"].astype(str))) <= {"point", "cluster", "galaxy"}
        ra, dec = w_lr.pixel_to_world_values(tab["X_LR"], tab["Y_LR"])
        np.testing.assert_allclose(ra, tab["RA"], atol=1e-10)
        np.testing.assert_allclose(dec, tab["DEC"], atol=1e-10)
        x_hr, y_hr = w_hr.world_to_pixel_values(tab["RA"], tab["DEC"])
        assert np.abs(x_hr - tab["X_HR"]).max() < 0.01 and np.abs(y_hr - tab["Y_HR"]).max() < 0.01
        # the catalogue's HR positions are the LR ones mapped by x_hr = 2 x_lr + 0.5
        np.testing.assert_allclose(tab["X_HR"], 2 * tab["X_LR"] + 0.5)
        # expected-count extensions (write_expected=True) and counts are consistent
        assert np.all(lr_f[0].data[lr_f["EXPECTED"].data == 0] == 0)
        assert np.all(lr_f["BACKGROUND"].data <= lr_f["EXPECTED"].data + 1e-6)


def test_simulated_file_reads_back(one_field_files):
    base, _ = one_field_files
    obs = read_observation(base / "target_50ks" / "field_000000.fits")
    sim = xsim.simulate_field(dataclasses.replace(CFG, write_expected=True), 3, "test", 0)
    np.testing.assert_array_equal(obs.counts, sim.counts["target"].astype(np.float32))
    np.testing.assert_allclose(obs.exposure_s, sim.exposure["target"], rtol=1e-6)
    assert obs.wcs.has_celestial and obs.exposure_source == "extension EXPOSURE"


def test_particle_background_is_not_vignetted_and_cosmic_is():
    """With a flat sky, background / T in fully live pixels is linear in the vignetting V:
    slope = cosmic rate per pixel, intercept = particle rate per pixel."""
    cfg = dataclasses.replace(CFG, cosmic_bkg_modulation=0.0, max_offaxis_arcmin=8.0)
    f = xsim.simulate_field(cfg, 21, "train", 0)
    full = f.geometry.live_lr == 1
    vig = f.geometry.vign_live_lr[full]
    assert np.ptp(vig) > 0.02
    slope, intercept = np.polyfit(vig, f.background["input"][full] / 20e3, 1)
    area = (cfg.pixel_arcsec / 60) ** 2
    assert slope == pytest.approx(cfg.cosmic_bkg_rate * area, rel=1e-6)
    assert intercept == pytest.approx(cfg.particle_bkg_rate * area, rel=1e-6)


def test_psf_matching_blur_is_the_numpy_forward_model_and_makes_the_lr_psf():
    """The torch operator (used in the real-data SR loss and score) turns a point source rendered with the
    HR PSF into the LR PSF on the same grid, conserves flux away from edges, and equals the numpy forward
    model (:func:`forward_model_to_input`, mirror-padded) in the interior."""
    import torch

    from lit_sr.domains.xmm.hallucination import forward_model_to_input
    from lit_sr.domains.xmm.psf import PSFMatchingBlur

    blur = PSFMatchingBlur(CFG.pixel_arcsec, 2, CFG.psf_fwhm_arcsec, CFG.psf_beta)
    hr_pix = CFG.pixel_arcsec / 2
    n, c = 160, 80
    hr_psf, lr_psf = CFG.psf_hr.kernel(hr_pix), CFG.psf_lr.kernel(hr_pix)
    img = np.zeros((n, n))
    hh = hr_psf.shape[0] // 2
    img[c - hh : c + hh + 1, c - hh : c + hh + 1] = hr_psf
    out = blur(torch.from_numpy(img)).numpy()
    want = np.zeros((n, n))
    lh = lr_psf.shape[0] // 2
    want[c - lh : c + lh + 1, c - lh : c + lh + 1] = lr_psf
    inner = (slice(c - 20, c + 21),) * 2
    assert np.abs(out[inner] - want[inner]).sum() < 0.02  # of the unit flux: the LR PSF's core, reproduced
    assert np.abs(img[inner] - want[inner]).sum() > 0.3  # the HR PSF is far too sharp: the check can fail
    assert out.sum() == pytest.approx(img.sum(), rel=0.02)  # mirror padding: flux kept up to the edge wings
    rng = np.random.default_rng(0)
    sky = rng.gamma(1.0, 1e-3, (2, 96, 96))
    mine = blur(torch.from_numpy(sky)).numpy().reshape(2, 48, 2, 48, 2).sum(axis=(2, 4))
    ref = forward_model_to_input(sky, 2, 1.0, blur.kernel.double().numpy())
    core = (slice(None), slice(16, 32), slice(16, 32))
    np.testing.assert_allclose(mine[core], ref[core], rtol=1e-4)


def test_physical_loss_with_psf_operator_prefers_the_sharp_prediction():
    """With the PSF-matching blur as the prediction's forward operator, the pooled Poisson loss against
    LR-optics target sums is lower for the HR-optics truth than for the LR-optics image itself."""
    import torch

    from lit_sr.data.transforms import StretchTransform
    from lit_sr.domains.xmm.psf import PSFMatchingBlur
    from lit_sr.losses.combined import PhysicalSpaceLoss

    blur = PSFMatchingBlur(CFG.pixel_arcsec, 2)
    free = StretchTransform(2e-3, "sqrt", clip=False)
    rng = np.random.default_rng(1)
    sharp = torch.from_numpy(rng.gamma(0.3, 2e-3, (1, 1, 64, 64)))
    blurred = blur(sharp)
    lr = blurred.reshape(1, 1, 32, 2, 32, 2).sum(dim=(3, 5))
    target = lr.repeat_interleave(2, 2).repeat_interleave(2, 3) / 4  # the held-out rate spread over 2 x 2
    with_op = PhysicalSpaceLoss(kind="poisson", transform=free, pool=2, pred_operator=blur)
    without = PhysicalSpaceLoss(kind="poisson", transform=free, pool=2)
    t = free(target)
    assert float(with_op(free(sharp), t)) < float(with_op(free(blurred), t)) - 1e-3
    assert float(without(free(blurred), t)) < float(without(free(sharp), t)) - 1e-3
