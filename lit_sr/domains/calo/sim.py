"""Fast calorimeter shower simulator: the project's default super-resolution dataset.

Physics
-------
Geometry follows the reference study (M. Erdmann et al., "Super-resolution for calorimetry",
EPJC 83 (2023) 1001): a homogeneous PbWO4 calorimeter (X0 = 0.89 cm, Molière radius 2.19 cm,
crystals 23 cm deep) read out either with 0.55 cm (high-resolution, HR) or 2.2 cm (low-resolution,
LR) crystals. Each event is cut to a 13.2 cm window: 24x24 HR pixels or 6x6 LR pixels.

Showers use the GFLASH parameterisation for homogeneous media (G. Grindhammer and S. Peters,
hep-ex/0001020):

* longitudinal: Gamma profile in t = depth/X0; each shower draws its own (ln T, ln alpha) from a
  correlated bivariate normal whose means, widths and correlation depend on ln y, y = E/Ec;
* energy spots: N_spot = 93 ln(Z) E[GeV]^0.876, depths drawn from the spot profile
  (T_spot = T (0.698 + 0.00212 Z), alpha_spot = alpha (0.639 + 0.00334 Z)); each spot carries E/N;
* radial: f(r) = p(tau) core(r; R_C) + (1 - p(tau)) tail(r; R_T), core/tail = 2 r R^2/(r^2+R^2)^2,
  r in Molière radii, tau = t/T with the paper's R_C(tau), R_T(tau), p(tau); azimuth uniform.

Material constants: Z_eff = 68.4 is the mass-fraction-weighted mean Z of PbWO4 (Pb 45.5 %,
W 40.4 %, O 14.1 % by mass), the averaging GFLASH applies to compounds; critical energy Ec = 9.3 MeV.

Additions to the bare parameterisation (all documented in ``CaloSimConfig``):

* photons start their shower ``photon_offset_x0`` = 0.5 X0 deeper than electrons (the classic
  Longo-Sestili shower-maximum offset between photon- and electron-initiated showers: C_gamma = +0.5,
  C_e = -0.5), GFLASH being tuned on electrons;
* spots beyond the 23 cm crystal depth are lost (longitudinal leakage), as are spots outside the
  13.2 cm window (lateral leakage), for both HR and LR;
* a per-shower intrinsic fluctuation multiplies the deposit by (1 + a/sqrt(E[GeV]) * N(0, 1)),
  a = ``stochastic_term`` = 2.5 %, standing in for the photo-statistics/light-collection terms that
  GFLASH (all spots E/N) does not model;
* detector response: Gaussian noise per crystal, then zero suppression (values below the threshold
  set to 0). Defaults: 40 MeV per LR crystal (CMS-ECAL-like), 10 MeV per HR crystal (so that the 16
  HR crystals of one LR crystal add up to the same 40 MeV in quadrature), thresholds at 2 sigma.
  The LR image is the 4x4 sum of the *noiseless* HR deposits of the same event plus its own LR noise
  and threshold, so every (LR, HR) pair is energy-consistent up to noise.

Neutral pions decay isotropically in their rest frame (m = 134.977 MeV) into two photons, boosted
along the beam axis; the photons hit the calorimeter face ``pion_distance_cm`` (129 cm) downstream
of the decay point, at the pion impact + distance * tan(theta_i) (cos phi_i, sin phi_i). Only decays
with an opening angle below ``max_opening_angle_deg`` (2 degrees) are kept (rejected ones are
resampled). Each photon showers with its own energy and small inclination (the lateral shift
depth * tan(theta_i) is applied along the shower); the two showers are superposed.

Coordinates (the physics metrics rely on this)
----------------------------------------------
``impact_cm`` = (x, y) in cm relative to the centre of the image window; x runs along the column
axis (increasing column index j), y along the row axis (increasing row index i). Pixel (i, j) of
the HR image has its centre at x = (j + 0.5) * 0.55 - 6.6 cm, y = (i + 0.5) * 0.55 - 6.6 cm
(LR: same with 2.2 cm cells). Photons (and the pion line of flight) enter at normal incidence with
the impact point uniform over a 2.2 x 2.2 cm square (one LR crystal) centred on the window centre;
this square is symmetric under flips and 90-degree rotations of the window, so those augmentations
map the data distribution exactly onto itself. For pions ``impact_cm`` is the energy-weighted mean
of the two photon impacts.

Outputs are in GeV (float32); ``label`` is 0 for photons and 1 for pions; ``energy_gev`` is the
true particle energy. Everything is deterministic given the seed: events are processed in fixed
blocks of ``BLOCK_EVENTS`` events, each with its own random stream derived from (seed, block), so
``simulate_showers`` and the DataModule's default file hold identical events, and the detector noise has a
separate stream (``noise=False`` returns exactly the deposits underlying ``noise=True``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from lit_sr.utils.progress import track

SIMULATOR_VERSION = "1.0.0"
PI0_MASS_GEV = 0.134977
BLOCK_EVENTS = 256  # events per random-stream block; part of the definition of the event sequence
DATASETS = ("hr", "lr", "label", "impact_cm", "energy_gev")
LABEL_NAMES = ("photon", "pion")

# Random-stream purposes (first spawn-key word), so streams never collide.
_KEY_LABELS, _KEY_SHOWERS, _KEY_NOISE = 1, 2, 3


@dataclass(frozen=True)
class CaloGeometry:
    """Homogeneous PbWO4 calorimeter of the reference study; lengths in cm."""

    x0_cm: float = 0.89
    moliere_radius_cm: float = 2.19
    depth_cm: float = 23.0
    z_eff: float = 68.4  # mass-fraction-weighted mean Z of PbWO4 (GFLASH compound averaging)
    critical_energy_mev: float = 9.3
    hr_cell_cm: float = 0.55
    lr_cell_cm: float = 2.2
    hr_pixels: int = 24
    lr_pixels: int = 6

    def __post_init__(self) -> None:
        if not math.isclose(self.hr_pixels * self.hr_cell_cm, self.lr_pixels * self.lr_cell_cm, rel_tol=1e-9):
            raise ValueError(
                "HR and LR images must cover the same window "
                f"({self.hr_pixels}x{self.hr_cell_cm} cm != {self.lr_pixels}x{self.lr_cell_cm} cm)"
            )
        if self.hr_pixels % self.lr_pixels:
            raise ValueError(f"hr_pixels={self.hr_pixels} must be a multiple of lr_pixels={self.lr_pixels}")

    @property
    def factor(self) -> int:
        """Super-resolution factor (HR pixels per LR pixel along one axis)."""
        return self.hr_pixels // self.lr_pixels

    @property
    def window_cm(self) -> float:
        """Side of the square image window in cm."""
        return self.hr_pixels * self.hr_cell_cm


@dataclass(frozen=True)
class CaloSimConfig:
    """Simulation settings. Energies in GeV unless the name says MeV."""

    energy_gev: float = 20.0  # beam energy of photons and pions
    pion_distance_cm: float = 129.0  # pi0 decay point to calorimeter face
    max_opening_angle_deg: float = 2.0  # two-photon decays with larger opening angles are resampled
    hr_noise_mev: float = 10.0  # per 0.55 cm crystal; 4x4 of them add to 40 MeV in quadrature
    lr_noise_mev: float = 40.0  # per 2.2 cm crystal, CMS-ECAL-like
    hr_threshold_mev: float = 20.0  # zero suppression at 2 sigma
    lr_threshold_mev: float = 80.0
    spot_fraction: float = 1.0  # fraction of the GFLASH spot count (granularity of spot fluctuations)
    min_spots: int = 50  # floor on spots per shower, keeps low-energy photons from being lumpy
    stochastic_term: float = 0.025  # per-shower intrinsic resolution a/sqrt(E[GeV])
    photon_offset_x0: float = 0.5  # photon showers start this many X0 deeper than electron showers
    geometry: CaloGeometry = field(default_factory=CaloGeometry)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "CaloSimConfig":
        data = json.loads(text)
        geometry = CaloGeometry(**data.pop("geometry"))
        return cls(geometry=geometry, **data)


# ----------------------------------------------------------------------------------------------
# GFLASH parameterisation (Grindhammer & Peters, hep-ex/0001020, homogeneous media)
# ----------------------------------------------------------------------------------------------


def _longitudinal_params(
    energy_gev: np.ndarray, rng: np.random.Generator, geo: CaloGeometry
) -> tuple[np.ndarray, np.ndarray]:
    """Per-shower (T, alpha) of the individual Gamma profile, with correlated log-normal fluctuations."""
    z = geo.z_eff
    ln_y = np.log(np.maximum(energy_gev * 1e3 / geo.critical_energy_mev, 3.0))  # guard ln(ln y)
    mean_ln_t = np.log(np.maximum(ln_y - 0.812, 0.1))
    mean_ln_a = np.log(0.81 + (0.458 + 2.26 / z) * ln_y)
    # The sigma fits are only valid for ln y >~ 2; floor the denominators for robustness.
    sig_ln_t = 1.0 / np.maximum(-1.4 + 1.26 * ln_y, 1.0)
    sig_ln_a = 1.0 / np.maximum(-0.58 + 0.86 * ln_y, 1.0)
    rho = np.clip(0.705 - 0.023 * ln_y, -0.99, 0.99)
    n = energy_gev.shape[0]
    g1 = rng.standard_normal(n)
    g2 = rng.standard_normal(n)
    t_max = np.exp(mean_ln_t + sig_ln_t * g1)
    alpha = np.exp(mean_ln_a + sig_ln_a * (rho * g1 + np.sqrt(1.0 - rho**2) * g2))
    return t_max, np.maximum(alpha, 1.05)  # alpha > 1 so the profile has a maximum


def gflash_spot_count(energy_gev: np.ndarray | float, config: CaloSimConfig = CaloSimConfig()) -> np.ndarray:
    """Spots per shower: ``spot_fraction`` x 93 ln(Z) E[GeV]^0.876, at least ``min_spots``."""
    e = np.asarray(energy_gev, dtype=np.float64)
    n = config.spot_fraction * 93.0 * math.log(config.geometry.z_eff) * np.power(e, 0.876)
    return np.maximum(np.rint(n), config.min_spots).astype(np.int64)


@dataclass
class _Spots:
    """Longitudinally contained energy spots of a batch of showers (shower frame)."""

    shower: np.ndarray  # index of the parent shower
    depth_cm: np.ndarray  # depth below the calorimeter face
    r_cm: np.ndarray  # distance from the shower axis
    energy_gev: np.ndarray  # energy carried by the spot


def _sample_spots(energy_gev: np.ndarray, rng: np.random.Generator, config: CaloSimConfig) -> _Spots:
    """Draw GFLASH spots for showers of the given energies; spots below the crystals are dropped."""
    geo = config.geometry
    z = geo.z_eff
    e = np.asarray(energy_gev, dtype=np.float64)
    n_showers = e.shape[0]
    t_max, alpha = _longitudinal_params(e, rng, geo)
    t_spot = t_max * (0.698 + 0.00212 * z)
    a_spot = np.maximum(alpha * (0.639 + 0.00334 * z), 1.05)
    beta_spot = (a_spot - 1.0) / t_spot  # Gamma rate: maximum of (beta t)^(a-1) e^(-beta t) at T
    # Per-shower intrinsic fluctuation, applied as a scale on every spot of the shower.
    scale = 1.0 + config.stochastic_term / np.sqrt(e) * rng.standard_normal(n_showers)
    n_spots = gflash_spot_count(e, config)
    spot_e = e * np.maximum(scale, 0.0) / n_spots

    shower = np.repeat(np.arange(n_showers), n_spots)
    t = rng.standard_gamma(a_spot[shower]) / beta_spot[shower]
    depth = (t + config.photon_offset_x0) * geo.x0_cm
    keep = depth < geo.depth_cm  # longitudinal leakage
    shower, t, depth = shower[keep], t[keep], depth[keep]

    # Radial profile (r in Molière radii), parameters as functions of tau = t / T.
    ln_e = np.log(e)
    tau = t / t_max[shower]
    rc = (0.0251 + 0.00319 * ln_e)[shower] + (0.1162 - 0.000381 * z) * tau
    k1, k2, k3 = 0.659 - 0.00309 * z, 0.645, -2.59
    k4 = (0.3585 + 0.0421 * ln_e)[shower]
    rt = k1 * (np.exp(k3 * (tau - k2)) + np.exp(k4 * (tau - k2)))
    p1, p2 = 2.632 - 0.00094 * z, 0.401 + 0.00187 * z
    p3 = (1.313 - 0.0686 * ln_e)[shower]
    arg = (p2 - tau) / p3
    p_core = np.clip(p1 * np.exp(arg - np.exp(arg)), 0.0, 1.0)
    radius = np.where(rng.random(tau.shape[0]) < p_core, rc, rt)
    # Inverse CDF of 2 r R^2/(r^2+R^2)^2: F(r) = r^2/(r^2+R^2)  ->  r = R sqrt(u/(1-u)).
    u = rng.random(tau.shape[0])
    r_cm = radius * np.sqrt(u / (1.0 - u)) * geo.moliere_radius_cm
    return _Spots(shower=shower, depth_cm=depth, r_cm=r_cm, energy_gev=spot_e[shower])


def radial_containment(
    radii_moliere: np.ndarray | list[float],
    n_showers: int,
    seed: int,
    config: CaloSimConfig = CaloSimConfig(),
    energy_gev: float | None = None,
) -> np.ndarray:
    """Fraction of the (longitudinally contained) photon-shower energy within each radius.

    Laterally unbounded (no window cut) and noiseless; radii in Molière radii. Used to check the
    textbook containment (~90 % within 1 R_M, ~95 % within 2 R_M).
    """
    e = config.energy_gev if energy_gev is None else energy_gev
    spots = _sample_spots(np.full(n_showers, float(e)), np.random.default_rng(seed), config)
    r = spots.r_cm / config.geometry.moliere_radius_cm
    total = spots.energy_gev.sum()
    return np.array([spots.energy_gev[r < rad].sum() / total for rad in np.asarray(radii_moliere, float)])


def shower_deposits(
    energy_gev: np.ndarray,
    impact_cm: np.ndarray,
    rng: np.random.Generator,
    config: CaloSimConfig = CaloSimConfig(),
    event: np.ndarray | None = None,
    n_events: int | None = None,
    tan_theta: np.ndarray | None = None,
    direction_phi: np.ndarray | None = None,
) -> np.ndarray:
    """Noiseless HR deposits (n_events, H, W) in GeV of photon showers.

    ``energy_gev`` (S,) and ``impact_cm`` (S, 2) describe S photons (x along columns, y along rows,
    relative to the window centre); shower s is added to image ``event[s]`` (default: one image per
    shower). ``tan_theta``/``direction_phi`` give the photon inclination (default: normal incidence).
    """
    geo = config.geometry
    e = np.asarray(energy_gev, dtype=np.float64)
    impact = np.asarray(impact_cm, dtype=np.float64).reshape(-1, 2)
    s = e.shape[0]
    event = np.arange(s) if event is None else np.asarray(event)
    n_events = s if n_events is None else int(n_events)
    npix = geo.hr_pixels
    spots = _sample_spots(e, rng, config)
    sh = spots.shower
    phi = rng.random(sh.shape[0]) * (2.0 * np.pi)
    x = impact[sh, 0] + spots.r_cm * np.cos(phi)
    y = impact[sh, 1] + spots.r_cm * np.sin(phi)
    if tan_theta is not None:  # inclined photon: the shower axis drifts by depth * tan(theta)
        drift = spots.depth_cm * np.asarray(tan_theta, dtype=np.float64)[sh]
        dphi = np.asarray(direction_phi, dtype=np.float64)[sh]
        x += drift * np.cos(dphi)
        y += drift * np.sin(dphi)
    half = 0.5 * geo.window_cm
    col = np.floor((x + half) / geo.hr_cell_cm).astype(np.int64)
    row = np.floor((y + half) / geo.hr_cell_cm).astype(np.int64)
    inside = (col >= 0) & (col < npix) & (row >= 0) & (row < npix)  # lateral leakage out of the window
    flat = (event[sh[inside]] * npix + row[inside]) * npix + col[inside]
    dep = np.bincount(flat, weights=spots.energy_gev[inside], minlength=n_events * npix * npix)
    return dep.reshape(n_events, npix, npix)


# ----------------------------------------------------------------------------------------------
# Event kinematics
# ----------------------------------------------------------------------------------------------


def _uniform_impacts(n: int, rng: np.random.Generator, geo: CaloGeometry) -> np.ndarray:
    """Impact points uniform over one LR crystal centred on the window centre (flip/rot90 symmetric)."""
    half = 0.5 * geo.lr_cell_cm
    return rng.uniform(-half, half, size=(n, 2))


@dataclass
class PionDecays:
    """Lab-frame photons of pi0 -> gamma gamma decays along the beam axis (angles in rad)."""

    e1_gev: np.ndarray
    e2_gev: np.ndarray
    theta1: np.ndarray  # polar angle of photon 1 w.r.t. the beam axis
    theta2: np.ndarray  # photon 2 travels at azimuth phi + pi
    phi: np.ndarray  # azimuth of photon 1

    @property
    def opening_angle(self) -> np.ndarray:
        return self.theta1 + self.theta2  # coplanar with the beam, on opposite sides

    def invariant_mass_gev(self) -> np.ndarray:
        return np.sqrt(2.0 * self.e1_gev * self.e2_gev * (1.0 - np.cos(self.opening_angle)))


def sample_pion_decays(
    n: int, energy_gev: float, rng: np.random.Generator, max_opening_angle_deg: float = 2.0
) -> PionDecays:
    """Isotropic pi0 -> gamma gamma in the rest frame, boosted along z; keeps opening angle < cut.

    Rejected decays are redrawn in vectorised rounds until ``n`` are accepted.
    """
    m = PI0_MASS_GEV
    gamma = energy_gev / m
    beta = math.sqrt(max(1.0 - 1.0 / gamma**2, 0.0))
    cut = math.radians(max_opening_angle_deg)
    if 2.0 * m / energy_gev >= cut:  # minimum opening angle 2 m / E must pass the cut
        raise ValueError(f"no pi0 of {energy_gev} GeV decays with an opening angle below {max_opening_angle_deg} deg")
    parts: list[tuple[np.ndarray, ...]] = [tuple(np.zeros(0) for _ in range(5))]
    have = 0
    while have < n:
        k = max(int(1.2 * (n - have)) + 16, 64)
        cos_star = rng.uniform(-1.0, 1.0, k)
        phi = rng.uniform(0.0, 2.0 * np.pi, k)
        sin_star = np.sqrt(1.0 - cos_star**2)
        pt = 0.5 * m * sin_star
        pz1 = gamma * 0.5 * m * (cos_star + beta)
        pz2 = gamma * 0.5 * m * (-cos_star + beta)
        e1 = gamma * 0.5 * m * (1.0 + beta * cos_star)
        e2 = gamma * 0.5 * m * (1.0 - beta * cos_star)
        th1, th2 = np.arctan2(pt, pz1), np.arctan2(pt, pz2)
        ok = th1 + th2 < cut
        parts.append((e1[ok], e2[ok], th1[ok], th2[ok], phi[ok]))
        have += int(ok.sum())
    cols = [np.concatenate(c)[:n] for c in zip(*parts)]
    return PionDecays(*cols)


# ----------------------------------------------------------------------------------------------
# Events, detector response and blocks
# ----------------------------------------------------------------------------------------------


def _photon_events(n: int, rng: np.random.Generator, config: CaloSimConfig) -> tuple[np.ndarray, np.ndarray]:
    impact = _uniform_impacts(n, rng, config.geometry)
    dep = shower_deposits(np.full(n, config.energy_gev), impact, rng, config)
    return dep, impact


def _pion_events(n: int, rng: np.random.Generator, config: CaloSimConfig) -> tuple[np.ndarray, np.ndarray]:
    pi_impact = _uniform_impacts(n, rng, config.geometry)
    d = sample_pion_decays(n, config.energy_gev, rng, config.max_opening_angle_deg)
    u = np.stack([np.cos(d.phi), np.sin(d.phi)], axis=1)
    imp1 = pi_impact + config.pion_distance_cm * np.tan(d.theta1)[:, None] * u
    imp2 = pi_impact - config.pion_distance_cm * np.tan(d.theta2)[:, None] * u
    energies = np.concatenate([d.e1_gev, d.e2_gev])
    dep = shower_deposits(
        energies,
        np.concatenate([imp1, imp2]),
        rng,
        config,
        event=np.concatenate([np.arange(n), np.arange(n)]),
        n_events=n,
        tan_theta=np.tan(np.concatenate([d.theta1, d.theta2])),
        direction_phi=np.concatenate([d.phi, d.phi + np.pi]),
    )
    impact = (d.e1_gev[:, None] * imp1 + d.e2_gev[:, None] * imp2) / (d.e1_gev + d.e2_gev)[:, None]
    return dep, impact


def lr_from_hr(hr: np.ndarray, factor: int) -> np.ndarray:
    """Sum non-overlapping factor x factor blocks: (N, H, W) -> (N, H/f, W/f)."""
    n, h, w = hr.shape
    return hr.reshape(n, h // factor, factor, w // factor, factor).sum(axis=(2, 4))


def _detector_response(
    hr_dep: np.ndarray, rng: np.random.Generator, config: CaloSimConfig, noise: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(HR, LR) in GeV: LR is the 4x4 sum of the noiseless HR deposits; then noise + zero suppression."""
    lr_dep = lr_from_hr(hr_dep, config.geometry.factor)
    # Draw the noise even when unused so the noise stream never depends on the flag.
    hr_noise = rng.standard_normal(hr_dep.shape) * (config.hr_noise_mev * 1e-3)
    lr_noise = rng.standard_normal(lr_dep.shape) * (config.lr_noise_mev * 1e-3)
    if not noise:
        return hr_dep, lr_dep
    hr = hr_dep + hr_noise
    lr = lr_dep + lr_noise
    hr[hr < config.hr_threshold_mev * 1e-3] = 0.0
    lr[lr < config.lr_threshold_mev * 1e-3] = 0.0
    return hr, lr


def _stream(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in key)))


def _event_labels(n_photons: int, n_pions: int, seed: int) -> np.ndarray:
    labels = np.concatenate([np.zeros(n_photons, np.int8), np.ones(n_pions, np.int8)])
    return _stream(seed, _KEY_LABELS).permutation(labels)


def _check_counts(n_photons: int, n_pions: int, seed: int) -> None:
    if n_photons < 0 or n_pions < 0:
        raise ValueError(f"event counts must be >= 0, got n_photons={n_photons}, n_pions={n_pions}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")


def n_event_blocks(n_photons: int, n_pions: int) -> int:
    """Number of blocks of the event sequence (the last may hold fewer than BLOCK_EVENTS events)."""
    return -(-(n_photons + n_pions) // BLOCK_EVENTS)


def event_block(
    n_photons: int,
    n_pions: int,
    seed: int,
    config: CaloSimConfig,
    noise: bool,
    b: int,
    labels: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Block ``b`` of the shuffled event sequence, on its own random streams (seed, block): blocks can be
    simulated in any order or in parallel processes and give the same events."""
    _check_counts(n_photons, n_pions, seed)
    if labels is None:
        labels = _event_labels(n_photons, n_pions, seed)
    start = b * BLOCK_EVENTS
    lab = labels[start : start + BLOCK_EVENTS]
    npix = config.geometry.hr_pixels
    rng = _stream(seed, _KEY_SHOWERS, b)
    is_ph = lab == 0
    dep = np.empty((lab.shape[0], npix, npix))
    impact = np.empty((lab.shape[0], 2))
    dep[is_ph], impact[is_ph] = _photon_events(int(is_ph.sum()), rng, config)
    dep[~is_ph], impact[~is_ph] = _pion_events(int((~is_ph).sum()), rng, config)
    hr, lr = _detector_response(dep, _stream(seed, _KEY_NOISE, b), config, noise)
    return {
        "hr": hr.astype(np.float32),
        "lr": lr.astype(np.float32),
        "label": lab.copy(),
        "impact_cm": impact.astype(np.float32),
        "energy_gev": np.full(lab.shape[0], config.energy_gev, np.float32),
    }


def iter_event_blocks(
    n_photons: int, n_pions: int, seed: int, config: CaloSimConfig = CaloSimConfig(), noise: bool = True
) -> Iterator[dict[str, np.ndarray]]:
    """Yield consecutive blocks (<= BLOCK_EVENTS events) of the shuffled event sequence."""
    _check_counts(n_photons, n_pions, seed)
    labels = _event_labels(n_photons, n_pions, seed)
    for b in range(n_event_blocks(n_photons, n_pions)):
        yield event_block(n_photons, n_pions, seed, config, noise, b, labels)


def simulate_showers(
    n_photons: int,
    n_pions: int,
    seed: int,
    config: CaloSimConfig = CaloSimConfig(),
    progress: bool = False,
    noise: bool = True,
) -> dict[str, np.ndarray]:
    """Simulate shuffled photon and pi0 events; returns ``hr``, ``lr``, ``label``, ``impact_cm``, ``energy_gev``.

    ``noise=False`` gives the noiseless deposits (no noise, no zero suppression) of the same events.
    """
    blocks = list(
        track(
            iter_event_blocks(n_photons, n_pions, seed, config, noise),
            n_photons + n_pions,
            "simulating showers",
            unit="events",
            enabled=progress,
            weight=lambda b: len(b["label"]),
        )
    )
    if not blocks:
        g = config.geometry
        return {
            "hr": np.zeros((0, g.hr_pixels, g.hr_pixels), np.float32),
            "lr": np.zeros((0, g.lr_pixels, g.lr_pixels), np.float32),
            "label": np.zeros(0, np.int8),
            "impact_cm": np.zeros((0, 2), np.float32),
            "energy_gev": np.zeros(0, np.float32),
        }
    return {k: np.concatenate([blk[k] for blk in blocks]) for k in DATASETS}
