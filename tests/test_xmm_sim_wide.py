"""Whole-detector EPIC-pn simulation (conf/data/xmm_wide.yaml) and the sim-to-real statistics: the v1 default is
untouched, the pn mask of the real images, backgrounds per arcmin^2, beta-model and shell profiles against their
analytic integrals, target draws, known answers of the comparison statistics."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from omegaconf import OmegaConf

from lit_sr.domains.xmm import sim as xsim
from lit_sr.domains.xmm import sim_real

ARCMIN2_PER_PIX = (4.0 / 60.0) ** 2


def wide(**kw) -> xsim.XMMSimConfig:
    """The options of conf/data/xmm_wide.yaml, on a smaller field unless lr_size is given."""
    y = OmegaConf.load("conf/data/xmm_wide.yaml")
    opts = {k: tuple(v) if isinstance(v, list) else v for k, v in OmegaConf.to_container(y.sim).items()}
    opts.update(lr_size=int(y.lr_size), pixel_arcsec=float(y.pixel_arcsec), psf_fwhm_arcsec=float(y.psf_fwhm_arcsec))
    opts.update(kw)
    return xsim.XMMSimConfig(**opts)


def no_sources(**kw) -> xsim.XMMSimConfig:
    return wide(
        agn_density_per_deg2=0.0,
        cluster_density_per_deg2=0.0,
        galaxy_density_per_deg2=0.0,
        target_probabilities=(0.0, 0.0, 0.0),
        cosmic_bkg_modulation=0.0,
        **kw,
    )


# ------------------------------------------------------------------------------------------------ v1 untouched


def test_default_config_json_and_cache_hash_unchanged():
    """The options added after v1 stay out of the marker / folder hash at their defaults: the default dataset
    (data/xmm/sim_v1_seed0_400-50-50_0692e947, the data module's config has write_expected) keeps its name."""
    d = xsim.XMMSimConfig(write_expected=True).to_json()
    assert not set(xsim.POST_V1_FIELDS) & set(d)
    assert hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8] == "0692e947"
    w = wide().to_json()
    assert w["detector_layout"] == "epn_detxy" and xsim.XMMSimConfig.from_json(w) == wide()


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="pixel_arcsec=4.1"):
        xsim.XMMSimConfig(detector_layout="epn_detxy", pixel_arcsec=4.1)
    with pytest.raises(ValueError, match="detector_layout"):
        xsim.XMMSimConfig(detector_layout="mos")
    with pytest.raises(ValueError, match="target_probabilities"):
        xsim.XMMSimConfig(target_probabilities=(0.6, 0.6, 0.0))


# ------------------------------------------------------------------------------------------------ detector


def test_epn_mask_is_the_real_layout():
    m = xsim.epn_detxy_mask(411)
    # 411 x 403 real grid centred: 4 unexposed columns each side; 143,013 exposed pixels (86.3 % of 411 x 403)
    assert m.sum() == 143013 and not m[:, :4].any() and not m[:, 407:].any()
    assert m[:, 4:407].mean() == pytest.approx(0.8634, abs=1e-4)
    assert not m[204:207].any() and not m[:11].any() and not m[400:].any()  # gap between the CCD rows, edges
    # the widest gap between CCD columns of the lower band: real columns 195-202 (8 px = 32")
    assert not m[11:204, 4 + 195 : 4 + 203].any() and m[11:204, 4 + 194].all() and m[11:204, 4 + 203].all()
    assert xsim.epn_detxy_mask(403).sum() == 143013  # a smaller square crops only dead rows


@pytest.mark.parametrize("flat", [False, True])
def test_chip_gaps_have_zero_exposure_and_counts_and_particles_reach_the_corners(flat):
    c = wide(flat_exposure=flat)
    f = xsim.simulate_field(c, 0, "val", 1)
    ccd = xsim.epn_detxy_mask(c.lr_size)
    ccd_hr = np.kron(ccd, np.ones((2, 2), bool))
    for p in ("input", "target"):
        assert (f.exposure[p][~ccd] == 0).all() and (f.counts[p][~ccd] == 0).all()
    assert (f.exposure["sr"][~ccd_hr] == 0).all() and (f.counts["sr"][~ccd_hr] == 0).all()
    # outside the FOV circle: no sky exposure, but particle counts on the CCDs
    n = c.lr_size
    yy, xx = np.mgrid[:n, :n]
    r_arcmin = np.hypot(yy - (n - 1) / 2, xx - (n - 1) / 2) * c.pixel_arcsec / 60
    corner = ccd & (r_arcmin > c.fov_radius_arcmin + 0.2)
    assert corner.sum() > 10000 and f.counts["input"][corner].sum() > 0
    if flat:  # T x CCD mask, as the real images are used
        assert np.array_equal(f.exposure["input"], c.exposure_input_ks * 1e3 * ccd)
    else:  # the sky exposure map: vignetted, nothing outside the FOV
        assert (f.exposure["input"][corner] == 0).all() and f.exposure["input"].max() < c.exposure_input_ks * 1e3


def test_out_of_time_events_spread_along_the_ccd_column_and_conserve_counts():
    """A bright point source: with f = 0.063, (1 - f) of its counts stay, f x its column sum is spread evenly over
    the rows of its CCD band in each column, nothing reaches the other band or the dead columns."""
    c0 = no_sources(oot_fraction=0.0)
    c1 = no_sources(oot_fraction=0.063)
    sky = xsim.draw_field(c0, xsim.field_streams(0, "val", 0)["sky"])
    one = np.ones(1)
    sky.sources = xsim.SourceCatalog(
        np.zeros(1, np.int8), 240.0 * one, 300.0 * one, 5.0 * one, 0 * one, 0 * one, one, 0 * one
    )
    sky.cosmic_modes = sky.cosmic_modes * 0
    geom = xsim.exposure_geometry(c0, sky)
    for c, name in ((c0, "off"), (c1, "on")):
        rates = xsim.expected_rates(c, sky)
        rates.cosmic_lr = rates.cosmic_lr * 0
        rates.particle_lr = 0.0
        if name == "off":
            e0 = xsim.expected_counts(c, rates, geom, "input")
        else:
            e1 = xsim.expected_counts(c, rates, geom, "input")
    assert e1.sum() == pytest.approx(e0.sum(), rel=1e-12)  # 5 counts/s x 20 ks x vignetting
    ox = (411 - 403) // 2
    top = slice(207, 400)
    col = e0[top, 240]
    expected_far = 0.063 * col.sum() / (400 - 207)
    assert e1[210, 240] == pytest.approx(expected_far, rel=1e-9)  # far from the source, same column
    assert e1[300, 240] == pytest.approx(0.937 * e0[300, 240] + expected_far, rel=1e-9)
    assert np.array_equal(e1[11:204], e0[11:204])  # the other band: no streak
    ccd = xsim.epn_detxy_mask(411)
    assert (e1[~ccd] == 0).all() and (e1[top, ox + 289 : ox + 292] == 0).all()  # dead columns stay empty


def test_background_counts_per_arcmin2_match_the_configured_rates():
    """No sources: counts per arcmin^2 outside the FOV = particle rate x T, inside near the optical axis =
    (particle + cosmic x vignetting) x T, within 4 Poisson sigma."""
    c = no_sources(oot_fraction=0.0)  # out-of-time events would move 6.3 % of the cosmic counts along the columns
    f = xsim.simulate_field(c, 3, "val", 0)
    t = c.exposure_input_ks * 1e3
    n = c.lr_size
    ccd = xsim.epn_detxy_mask(n)
    yy, xx = np.mgrid[:n, :n]
    r_arcmin = np.hypot(yy - (n - 1) / 2, xx - (n - 1) / 2) * c.pixel_arcsec / 60
    corner = ccd & (r_arcmin > c.fov_radius_arcmin + 0.5)
    expected = c.particle_bkg_rate * t * corner.sum() * ARCMIN2_PER_PIX
    got = f.counts["input"][corner].sum()
    assert abs(got - expected) < 4 * math.sqrt(expected)
    # within 2' of the optical axis (inside every CCD pixel's FOV): V = 1 - c theta^2 per sub-sample
    ax, ay = (n - 1) / 2 + np.array(c.aimpoint_arcmin) * 60 / c.pixel_arcsec
    theta = np.hypot(yy - ay, xx - ax) * c.pixel_arcsec / 60
    core = ccd & (theta < 2.0)
    vign = 1 - c.vignetting_per_arcmin2 * theta[core] ** 2
    expected = ((c.particle_bkg_rate + c.cosmic_bkg_rate * vign) * t * ARCMIN2_PER_PIX).sum()
    got = f.counts["input"][core].sum()
    assert abs(got - expected) < 4 * math.sqrt(expected)
    assert abs(got - expected) / expected < 0.05


# ------------------------------------------------------------------------------------------------ targets


def _lone_source(kind: str, rate: float, extent: float, shape: float) -> xsim.SourceCatalog:
    one = np.ones(1)
    return xsim.SourceCatalog(
        np.full(1, xsim.KIND_CODES[kind], np.int8),
        0 * one,
        0 * one,
        rate * one,
        extent * one,
        shape * one,
        one,
        0 * one,
    )


@pytest.mark.parametrize("rc, beta", [(40.0, 2 / 3), (90.0, 0.55)])
def test_beta_model_encircled_counts_equal_the_analytic_integral(rc, beta):
    """Sum of the stamp inside r over its total = int_0^r (1 + x^2/rc^2)^(1/2 - 3 beta) x dx over the same
    integral to the truncation R = 5 rc: [1 - (1 + r^2/rc^2)^(3/2 - 3 beta)] / [1 - (1 + R^2/rc^2)^(3/2 - 3 beta)]."""
    c = wide()
    src = _lone_source("cluster", 12.0, rc, beta)
    stamp, top, left = xsim.extended_stamp(c, src, 0, 1.0, 0.0, 0.0)
    assert stamp.sum() == pytest.approx(12.0, rel=1e-12)
    h, w = stamp.shape
    yy, xx = np.mgrid[top : top + h, left : left + w]
    r = np.hypot(xx, yy)  # 1 arcsec pixels centred on the source
    big_r = c.cluster_truncation_rc * rc
    a = 1.5 - 3 * beta
    for r0 in (0.5 * rc, rc, 2 * rc, 4 * rc):
        analytic = (1 - (1 + r0**2 / rc**2) ** a) / (1 - (1 + big_r**2 / rc**2) ** a)
        assert stamp[r <= r0].sum() / 12.0 == pytest.approx(analytic, rel=0.01)


def test_smooth_shell_encircled_counts_equal_the_projected_shell():
    """Uniform emissivity between R_in and R: the fraction inside projected radius r is
    [R^3 (1 - (1 - r^2/R^2)^1.5) - R_in^3 (1 - (1 - r^2/R_in^2)_+^1.5)] / (R^3 - R_in^3)."""
    c = wide(target_snr_filament_sigma=0.0)
    big_r, f = 150.0, 0.25
    src = _lone_source("snr", 5.0, big_r, f)
    stamp, top, left = xsim.extended_stamp(c, src, 0, 1.0, 0.0, 0.0)
    h, w = stamp.shape
    yy, xx = np.mgrid[top : top + h, left : left + w]
    r = np.hypot(xx, yy)
    r_in = (1 - f) * big_r

    def frac(x: float) -> float:
        inner = r_in**3 * (1 - max(1 - x**2 / r_in**2, 0.0) ** 1.5)
        return (big_r**3 * (1 - (1 - x**2 / big_r**2) ** 1.5) - inner) / (big_r**3 - r_in**3)

    for r0 in (50.0, 100.0, 120.0, 140.0):
        assert stamp[r <= r0].sum() / 5.0 == pytest.approx(frac(r0), abs=0.01)

    # limb brightening: the path length through the shell, sqrt(R^2 - r^2) - sqrt(max(R_in^2 - r^2, 0)), peaks at
    # r = R_in (sqrt(R^2 - R_in^2) = 2.65 x the centre's R - R_in); compared at the same pixel centres
    def path(x: np.ndarray) -> np.ndarray:
        return np.sqrt(np.clip(big_r**2 - x**2, 0, None)) - np.sqrt(np.clip(r_in**2 - x**2, 0, None))

    rim, centre = np.abs(r - r_in) < 2.0, r < 3.0
    want = path(r[rim]).mean() / path(r[centre]).mean()
    assert want > 2.0
    assert stamp[rim].mean() / stamp[centre].mean() == pytest.approx(want, rel=1e-6)


def test_textured_shell_keeps_its_rate_and_texture_statistics():
    c = wide()
    src = _lone_source("snr", 5.0, 150.0, 0.25)
    smooth = xsim.extended_stamp(wide(target_snr_filament_sigma=0.0), src, 0, 1.0, 0.0, 0.0)[0]
    textured = xsim.extended_stamp(c, src, 0, 1.0, 0.0, 0.0, texture_seed=7)[0]
    assert textured.sum() == pytest.approx(5.0, rel=1e-12)
    assert not np.allclose(textured, smooth)
    tex = xsim.snr_texture(c, (600, 600), 1.0, 3)
    assert np.log(tex).std() == pytest.approx(c.target_snr_filament_sigma, rel=1e-6)
    assert tex.mean() == pytest.approx(1.0, abs=0.1)  # E exp(s g - s^2/2) = 1; correlated field: ~10 % scatter


def test_targets_are_drawn_with_their_probabilities_at_the_aimpoint():
    c = wide(lr_size=96)
    kinds, xy = [], []
    for k in range(400):
        s = xsim.draw_field(c, xsim.field_streams(1, "train", k)["sky"]).sources
        last_is_target = s.kind[-1] != xsim.KIND_CODES["galaxy"]  # targets are appended after the galaxies
        kinds.append(xsim.KIND_NAMES[int(s.kind[-1])] if last_is_target else "none")
        if last_is_target:
            xy.append((s.x_lr[-1], s.y_lr[-1]))
    p = dict(zip(("cluster", "snr", "point"), c.target_probabilities))
    p["none"] = 1 - sum(c.target_probabilities)
    for kind, prob in p.items():
        n = kinds.count(kind)
        assert abs(n - 400 * prob) < 4 * math.sqrt(400 * prob * (1 - prob)) + 1, (kind, n)
    xy = np.array(xy)
    aim = (c.lr_size - 1) / 2 + np.array(c.aimpoint_arcmin) * 60 / c.pixel_arcsec
    sd = c.target_offset_arcmin * 60 / c.pixel_arcsec
    assert np.abs(xy.mean(0) - aim).max() < 4 * sd / math.sqrt(len(xy))
    assert xy.std(0) == pytest.approx([sd, sd], rel=0.15)


# ------------------------------------------------------------------------------------------------ sim_real


def test_comparison_statistics_on_a_known_image():
    """Flat Poisson background of known rate on the pn mask plus three bright point sources."""
    rng = np.random.default_rng(0)
    n, t, rate = 411, 20e3, 5e-3  # counts/s/arcmin^2
    live = xsim.epn_detxy_mask(n)
    counts = rng.poisson(rate * t * ARCMIN2_PER_PIX, (n, n)) * live
    from lit_sr.domains.xmm.psf import KingPSF

    k = KingPSF.from_fwhm(8.0, 1.5, 60.0).kernel(4.0)
    h = k.shape[0] // 2
    for x, y in ((100, 100), (300, 120), (150, 300)):
        counts[y - h : y + h + 1, x - h : x + h + 1] += rng.poisson(400 * k)
    st = sim_real.statistics([counts.astype(float)], [live], t, 4.0)
    assert st["unexposed_fraction"] == pytest.approx(1 - 143013 / n**2, abs=1e-9)
    assert st["outside_fov_rate"] == pytest.approx(rate, rel=0.05)
    assert st["background_per_arcmin2_s"] == pytest.approx(rate, rel=0.05)
    area_deg2 = live.sum() * ARCMIN2_PER_PIX / 3600
    assert st["n_above_200_per_deg2"] * area_deg2 == pytest.approx(3, abs=0.01)
    assert st["compact_fwhm_arcsec"] == pytest.approx(8.0, rel=0.15)
    assert sum(st["histogram"]) == pytest.approx(1.0)


def test_wide_data_config_gets_its_own_cache_folder(tmp_path):
    """data=xmm_wide composes onto the xmm experiments and simulates into its own folder whose name carries the
    version, seed, split sizes and the config hash (never the default's)."""
    from hydra.utils import instantiate

    from tests.conftest import compose_config

    cfg = compose_config(["experiment=xmm_dn", "data=xmm_wide"], tmp_path)
    dm = instantiate(cfg.data)
    default = instantiate(compose_config(["experiment=xmm_dn"], tmp_path).data)
    sc = dm.sim_config()
    assert sc.detector_layout == "epn_detxy" and sc.lr_size == 411 and sc.pixel_arcsec == 4.0
    assert sc.aimpoint_arcmin == (2.0, 1.0) and sum(sc.target_probabilities) == pytest.approx(0.95)
    assert dm.default_root.parent.name == "xmm_wide" and dm.default_root.name.startswith("sim_v1_seed0_64-16-8_")
    assert default.default_root.name == "sim_v1_seed0_400-50-50_0692e947"
    assert not dm.transform.clip  # real-like targets exceed max_rate: no upper clip
