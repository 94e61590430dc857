"""Physics and I/O checks of the calorimeter shower simulator (a few hundred events, seconds on CPU)."""

from __future__ import annotations

import dataclasses
import math

import h5py
import numpy as np
import pytest
from scipy import stats

from lit_sr.data.h5store import is_complete
from lit_sr.domains.calo.data import CaloDataModule, calo_schema
from lit_sr.domains.calo.sim import (
    PI0_MASS_GEV,
    SIMULATOR_VERSION,
    CaloGeometry,
    CaloSimConfig,
    lr_from_hr,
    radial_containment,
    sample_pion_decays,
    shower_deposits,
    simulate_showers,
)


def is_complete_calo_file(path) -> bool:
    return is_complete(path, calo_schema())


CFG = CaloSimConfig()
GEO = CFG.geometry
E = CFG.energy_gev
# Pixel centres along one axis (cm from the window centre): x = (j + 0.5) * 0.55 - 6.6.
CENTRES = (np.arange(GEO.hr_pixels) + 0.5) * GEO.hr_cell_cm - 0.5 * GEO.window_cm


@pytest.fixture(scope="module")
def clean() -> dict[str, np.ndarray]:
    return simulate_showers(300, 300, seed=11, noise=False)


@pytest.fixture(scope="module")
def noisy() -> dict[str, np.ndarray]:
    return simulate_showers(300, 300, seed=11, noise=True)


def barycentre(hr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energy-weighted (x, y) in cm; x from the column profile, y from the row profile."""
    hr = hr.astype(np.float64)
    tot = hr.sum(axis=(1, 2))
    x = (hr.sum(axis=1) * CENTRES).sum(axis=1) / tot
    y = (hr.sum(axis=2) * CENTRES).sum(axis=1) / tot
    return x, y


def radial_width_cm(hr: np.ndarray) -> np.ndarray:
    hr = hr.astype(np.float64)
    x, y = barycentre(hr)
    dx2 = (CENTRES[None, None, :] - x[:, None, None]) ** 2
    dy2 = (CENTRES[None, :, None] - y[:, None, None]) ** 2
    return np.sqrt((hr * (dx2 + dy2)).sum(axis=(1, 2)) / hr.sum(axis=(1, 2)))


def test_geometry_defaults() -> None:
    assert GEO.factor == 4
    assert GEO.window_cm == pytest.approx(13.2)
    assert (GEO.hr_pixels, GEO.lr_pixels) == (24, 6)
    with pytest.raises(ValueError):
        CaloGeometry(hr_pixels=20)  # 20 x 0.55 cm no longer matches 6 x 2.2 cm


def test_moliere_containment() -> None:
    # Textbook: ~90 % of the energy within 1 R_M, ~95 % within 2 R_M (laterally unbounded, noiseless).
    f1, f2, f3 = radial_containment([1.0, 2.0, 3.5], n_showers=200, seed=3)
    assert 0.86 <= f1 <= 0.94
    assert 0.93 <= f2 <= 0.98
    assert f2 < f3 <= 1.0


def test_mean_energy_and_resolution(clean) -> None:
    tot = clean["hr"][clean["label"] == 0].sum(axis=(1, 2)).astype(np.float64)
    # Only longitudinal (23 cm = 25.8 X0) and lateral (13.2 cm window) leakage: a few per cent.
    assert 0.93 * E <= tot.mean() <= 1.0 * E
    # Realistic resolution at 20 GeV: 2.5 %/sqrt(E) stochastic + leakage -> roughly 0.5-1.5 %.
    assert 0.004 <= tot.std() / tot.mean() <= 0.015
    assert np.all(clean["energy_gev"] == np.float32(E))


def test_lr_is_4x4_sum_of_hr_noiseless(clean) -> None:
    np.testing.assert_allclose(clean["lr"], lr_from_hr(clean["hr"].astype(np.float64), 4), rtol=0, atol=1e-5)
    assert clean["hr"].dtype == np.float32 and clean["lr"].dtype == np.float32


def test_noise_is_unbiased_and_of_the_right_size() -> None:
    # Without zero suppression the noisy totals scatter around the noiseless ones by sigma * sqrt(pixels).
    cfg = dataclasses.replace(CFG, hr_threshold_mev=-1e9, lr_threshold_mev=-1e9)
    a = simulate_showers(200, 200, seed=4, config=cfg, noise=False)
    b = simulate_showers(200, 200, seed=4, config=cfg, noise=True)
    for key, sigma_mev, npix in (("hr", CFG.hr_noise_mev, 576), ("lr", CFG.lr_noise_mev, 36)):
        diff = b[key].sum(axis=(1, 2)).astype(np.float64) - a[key].sum(axis=(1, 2))
        expected = sigma_mev * 1e-3 * math.sqrt(npix)
        assert abs(diff.mean()) < 4 * expected / math.sqrt(diff.size)
        assert 0.85 * expected < diff.std() < 1.15 * expected


def test_noisy_totals_agree_within_noise(clean, noisy) -> None:
    assert np.array_equal(clean["label"], noisy["label"])
    assert np.array_equal(clean["impact_cm"], noisy["impact_cm"])
    hr = noisy["hr"].sum(axis=(1, 2)).astype(np.float64)
    lr = noisy["lr"].sum(axis=(1, 2)).astype(np.float64)
    true = clean["hr"].sum(axis=(1, 2)).astype(np.float64)
    # Zero suppression removes the low-energy fringe: a few per cent, never a gain beyond noise.
    for tot in (hr, lr):
        assert 0.0 < (true - tot).mean() < 0.05 * E
    assert np.abs(hr - lr).max() < 1.5  # GeV, a few sigma of the summed noise + suppression loss
    assert np.all(noisy["hr"][noisy["hr"] != 0] >= CFG.hr_threshold_mev * 1e-3)
    assert np.all(noisy["lr"][noisy["lr"] != 0] >= CFG.lr_threshold_mev * 1e-3)


def test_photon_barycentre_matches_impact(clean) -> None:
    ph = clean["label"] == 0
    x, y = barycentre(clean["hr"][ph])
    dx, dy = x - clean["impact_cm"][ph, 0], y - clean["impact_cm"][ph, 1]
    assert abs(dx.mean()) < 0.05 and abs(dy.mean()) < 0.05  # no bias
    assert np.abs(dx).mean() < 0.15 and np.abs(dy).mean() < 0.15
    # Conventions: x follows the column axis and y the row axis (strong correlation, not swapped).
    assert np.corrcoef(x, clean["impact_cm"][ph, 0])[0, 1] > 0.95
    assert np.corrcoef(y, clean["impact_cm"][ph, 1])[0, 1] > 0.95


def test_shifting_impact_moves_barycentre_along_the_right_axis() -> None:
    rng = np.random.default_rng(0)
    n = 40
    dep_x = shower_deposits(np.full(n, E), np.tile([1.5, 0.0], (n, 1)), rng)
    dep_y = shower_deposits(np.full(n, E), np.tile([0.0, -1.5], (n, 1)), rng)
    x, y = barycentre(dep_x)
    assert x.mean() == pytest.approx(1.5, abs=0.1) and y.mean() == pytest.approx(0.0, abs=0.1)
    x, y = barycentre(dep_y)
    assert x.mean() == pytest.approx(0.0, abs=0.1) and y.mean() == pytest.approx(-1.5, abs=0.1)
    # Hottest pixel: x = +1.5 cm lies in column (1.5 + 6.6) / 0.55 = 14.7 -> 14; y = -1.5 -> row 9.
    assert np.unravel_index(dep_x.mean(0).argmax(), (24, 24))[1] == 14
    assert np.unravel_index(dep_y.mean(0).argmax(), (24, 24))[0] == 9


def test_photon_impacts_uniform_over_one_lr_crystal() -> None:
    d = simulate_showers(1500, 0, seed=9, config=dataclasses.replace(CFG, spot_fraction=0.02, min_spots=1), noise=False)
    half = 0.5 * GEO.lr_cell_cm
    for k in range(2):
        v = d["impact_cm"][:, k].astype(np.float64)
        assert v.min() >= -half and v.max() <= half
        assert stats.kstest(v, stats.uniform(loc=-half, scale=2 * half).cdf).pvalue > 1e-3
    assert abs(np.corrcoef(d["impact_cm"].T)[0, 1]) < 0.1


def test_pion_decay_kinematics() -> None:
    d = sample_pion_decays(20000, E, np.random.default_rng(1), max_opening_angle_deg=2.0)
    assert np.all(d.opening_angle < math.radians(2.0))
    assert d.opening_angle.min() >= 2 * PI0_MASS_GEV / E * 0.999  # kinematic minimum 2m/E
    np.testing.assert_allclose(d.e1_gev + d.e2_gev, E, rtol=1e-12)
    np.testing.assert_allclose(d.invariant_mass_gev(), PI0_MASS_GEV, rtol=1e-6)
    # Reconstruct the mass from where the photons hit the face, as an analysis would.
    dist = CFG.pion_distance_cm
    u = np.stack([np.cos(d.phi), np.sin(d.phi)], 1)
    p1 = np.concatenate([dist * np.tan(d.theta1)[:, None] * u, np.full((len(u), 1), dist)], 1)
    p2 = np.concatenate([-dist * np.tan(d.theta2)[:, None] * u, np.full((len(u), 1), dist)], 1)
    cos12 = (p1 * p2).sum(1) / np.linalg.norm(p1, axis=1) / np.linalg.norm(p2, axis=1)
    mass = np.sqrt(2 * d.e1_gev * d.e2_gev * (1 - cos12))
    np.testing.assert_allclose(mass, PI0_MASS_GEV, rtol=1e-4)
    # Isotropic decay -> energy sharing uniform (within the opening-angle cut).
    asym = (d.e1_gev - d.e2_gev) / E
    assert abs(asym.mean()) < 0.02


def test_pion_truth_and_width(clean) -> None:
    pi = clean["label"] == 1
    # Energy-weighted photon impacts follow the pi0 line of flight (pT balance), so they stay in the square.
    assert np.abs(clean["impact_cm"][pi]).max() <= 0.5 * GEO.lr_cell_cm + 0.01
    x, y = barycentre(clean["hr"][pi])
    assert np.abs(x - clean["impact_cm"][pi, 0]).mean() < 0.3
    # Two showers 1.7-4.5 cm apart: the mean pion shower is wider than the mean photon shower.
    w_pi = radial_width_cm(clean["hr"][pi]).mean()
    w_ph = radial_width_cm(clean["hr"][~pi]).mean()
    assert w_pi > w_ph + 0.1


def test_determinism_and_shuffling() -> None:
    a = simulate_showers(40, 40, seed=5)
    b = simulate_showers(40, 40, seed=5)
    c = simulate_showers(40, 40, seed=6)
    for k in a:
        assert np.array_equal(a[k], b[k])
    assert not np.array_equal(a["hr"], c["hr"])
    assert (a["label"] == 0).sum() == 40 and (a["label"] == 1).sum() == 40
    assert 0 < np.abs(np.diff(a["label"].astype(int))).sum()  # classes interleaved, not blocked
    assert a["label"].dtype == np.int8


def test_h5_round_trip(tmp_path) -> None:
    cfg = dataclasses.replace(CFG, spot_fraction=0.1)
    dm = CaloDataModule(data_dir=str(tmp_path), n_per_class=150, sim_seed=2, sim={"spot_fraction": 0.1})
    dm.prepare_data()
    path = dm.path
    assert is_complete_calo_file(path) and "spot_fraction0.1" in path.name
    ref = simulate_showers(150, 150, seed=2, config=cfg)  # same blocks -> identical events
    with h5py.File(path, "r") as f:
        for k, v in ref.items():
            assert f[k].dtype == v.dtype
            np.testing.assert_array_equal(f[k][...], v)
        assert f["hr"].compression == "gzip" and f["hr"].chunks is not None
        assert f.attrs["simulator_version"] == SIMULATOR_VERSION
        assert f.attrs["seed"] == 2 and f.attrs["n_per_class"] == 150
        assert f.attrs["x0_cm"] == pytest.approx(0.89) and f.attrs["hr_pixels"] == 24
        assert CaloSimConfig.from_json(f.attrs["config"]) == cfg
        assert bool(f.attrs["complete"])
    assert not list(tmp_path.glob("*.partial"))


def test_incomplete_files_are_detected(tmp_path) -> None:
    assert not is_complete_calo_file(tmp_path / "missing.h5")
    (tmp_path / "garbage.h5").write_bytes(b"not hdf5")
    assert not is_complete_calo_file(tmp_path / "garbage.h5")
    killed = tmp_path / "killed.h5"  # what a run killed before its last line leaves behind
    with h5py.File(killed, "w") as f:
        for k, shape in (
            ("hr", (4, 24, 24)),
            ("lr", (4, 6, 6)),
            ("label", (4,)),
            ("impact_cm", (4, 2)),
            ("energy_gev", (4,)),
        ):
            f.create_dataset(k, shape=shape, dtype=np.float32)
    assert not is_complete_calo_file(killed)
    with h5py.File(killed, "a") as f:
        f.attrs["complete"] = True
    assert is_complete_calo_file(killed)
    with h5py.File(killed, "a") as f:
        del f["lr"]
        f.create_dataset("lr", shape=(3, 6, 6), dtype=np.float32)
    assert not is_complete_calo_file(killed)  # mismatched lengths


def test_60gev_config_opening_angles_follow_the_analytic_distribution() -> None:
    """data=calo_60gev: pi0 photons open by at least 2 arcsin(m / E) (~ 2 m / E = 4.5 mrad, 0.58 cm at 129 cm,
    inside one 2.2 cm LR crystal), and the opening-angle CDF is the isotropic-decay one: with x = E1 / E
    uniform on [(1 - b) / 2, (1 + b) / 2], cos(theta) = 1 - m^2 / (2 E^2 x (1 - x)), so
    P(theta < t) = sqrt(1 - 4 q(t)) / b with q(t) = m^2 / (2 E^2 (1 - cos t)), conditioned on the 2 deg cut."""
    from pathlib import Path

    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[1] / "conf" / "data" / "calo_60gev.yaml"
    energy = float(OmegaConf.load(conf).energy_gev)
    assert energy == 60.0
    m = PI0_MASS_GEV
    d = sample_pion_decays(50_000, energy, np.random.default_rng(5), 2.0)
    theta = d.opening_angle
    theta_min = 2 * math.asin(m / energy)
    assert theta_min == pytest.approx(2 * m / energy, rel=1e-4)
    assert theta.min() >= theta_min * (1 - 1e-9)
    assert theta.min() < theta_min * 1.001  # the distribution piles up at the minimum
    assert 129.0 * math.tan(theta_min) < 0.6 < 2.2  # merged in one LR crystal
    b = math.sqrt(1 - (m / energy) ** 2)

    def cdf(t: float) -> float:
        q = m**2 / (2 * energy**2 * (1 - math.cos(t)))
        return math.sqrt(max(0.0, 1 - 4 * q)) / b

    cut = math.radians(2.0)
    for factor in (1.05, 1.2, 2.0, 4.0):
        t = factor * theta_min
        assert (theta < t).mean() == pytest.approx(cdf(t) / cdf(cut), abs=0.01), factor
    assert d.invariant_mass_gev() == pytest.approx(np.full(len(theta), m), rel=1e-6)
