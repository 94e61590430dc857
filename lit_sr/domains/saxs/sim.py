"""Simulator of Jungfrau-like SAXS frames with and without bremsstrahlung background.

Values are keV deposited per pixel (75 um pixels; default frame 512 rows x 1024 columns = the
Jungfrau 1024x512 module). One HDF5 file holds one experiment (fixed geometry: beam centre,
beam-stop, with a small per-shot jitter):

    xray    float32 [n_xray, H, W]  X-ray-only shots (SAXS signal, photon counting)
    full    float32 [n_full, H, W]  full shots = signal + bremsstrahlung background
    signal  float32 [n_full, H, W]  the X-ray part of each full shot (``full - signal`` is the
                                    background; the simulator knows it, real data would not)

File attributes: ``height``, ``width``, ``pixel_size_um``, ``photon_energy_keV``, ``porod_exponent``,
``seed``, ``beam_center`` (row, col), ``beamstop_radius_px``, ``units`` = "keV", and ``complete`` =
True written last (a file without it is a crashed simulation and must be re-simulated).

Signal model (per shot): I(r, phi) = I0 / (1 + (r_eff/r0)^2)^(p/2) * (1 + sum_k a_k exp(-d_k^2/2w_k^2))
with the Porod-like exponent p (default 4), r_eff an elliptic radius (anisotropy aligned with the
shot's dominant direction phi0, uniform per shot), streaks along phi0 (and phi0 + pi, centrosymmetric)
with angular width w_k; times the beam-stop transmission (a disc plus a holder rod, 0 inside);
counts ~ Poisson(I) and the frame is counts * photon_energy. The dynamic range (max over the
smallest non-zero value = one photon) exceeds 1e4.

Bragg-like peaks (``bragg_pairs`` > 0; default 0, the frames are then those of the simulator before the
peaks, same random stream): per shot one ring radius R (log-uniform in ``bragg_radius_range``, 512-row
scale) and ``bragg_pairs`` centrosymmetric pairs of compact Gaussian peaks on it (Friedel pairs: the
same expected photons, log-uniform in ``bragg_photons_range``, and width sigma, uniform in
``bragg_sigma_range`` px, at c + R u and c - R u for a random direction u), integrated over every pixel
(erf), added to the expected photons before the beam-stop shadow and Poisson-sampled with the rest.

Background model (per full shot, all terms additive and non-negative, keV): sparse single-pixel hits
with a log-uniform energy spectrum, charge-sharing clusters (Gaussian footprint over 2-9 pixels),
straight tracks (constant dE/dx with gamma fluctuations, bilinear deposition) and a smooth diffuse
fog. A per-shot intensity factor (log-uniform) scales the hit/cluster/track rates.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from scipy import ndimage

from lit_sr.data.h5store import Field, H5Schema, write_h5
from lit_sr.data.h5store import is_complete as h5_is_complete

JUNGFRAU_SHAPE = (512, 1024)
#: the config fields of the Bragg-like peaks (absent from files simulated before them)
BRAGG_FIELDS = frozenset({"bragg_pairs", "bragg_photons_range", "bragg_sigma_range", "bragg_radius_range"})
PIXEL_SIZE_UM = 75.0


@dataclass
class SAXSSimConfig:
    """Parameters of the simulation; lengths in pixels are given for a 512-row frame and scale
    with ``min(height, width) / 512`` (floored to a few pixels) so small test frames look alike."""

    height: int = JUNGFRAU_SHAPE[0]
    width: int = JUNGFRAU_SHAPE[1]
    photon_energy: float = 8.0  # keV per X-ray photon
    porod_exponent: float = 4.0
    peak_photons: float = 1.0e6  # expected photons/pixel at r = 0 (before shot factor)
    shot_intensity_range: tuple[float, float] = (0.3, 3.0)  # log-uniform per shot
    core_radius: float = 4.0  # r0 in px (512-row scale)
    beamstop_radius: float = 6.0  # px (512-row scale)
    beamstop_rod_width: float = 6.0  # px (512-row scale)
    anisotropy_range: tuple[float, float] = (0.0, 0.3)
    n_streaks_range: tuple[int, int] = (1, 3)  # inclusive
    streak_amplitude_range: tuple[float, float] = (0.5, 5.0)
    streak_width_range: tuple[float, float] = (0.03, 0.12)  # rad
    # background
    background_intensity_range: tuple[float, float] = (0.5, 2.0)  # log-uniform per full shot
    hit_density: float = 2.0e-3  # single-pixel hits per pixel
    hit_energy_range: tuple[float, float] = (4.0, 1000.0)  # keV, log-uniform (broad spectrum)
    cluster_density: float = 5.0e-4
    cluster_sigma_range: tuple[float, float] = (0.35, 0.8)  # px
    track_density: float = 3.0e-5
    track_length_range: tuple[float, float] = (5.0, 60.0)  # px
    track_dedx_range: tuple[float, float] = (10.0, 40.0)  # keV per px of path
    fog_level: float = 0.5  # mean keV/pixel of the diffuse fog
    fog_smoothness: float = 40.0  # px (512-row scale), gaussian sigma of the fog field
    # Bragg-like peaks of the X-ray signal (0 pairs: none, the frames are unchanged)
    bragg_pairs: int = 0  # centrosymmetric pairs of compact peaks per shot
    bragg_photons_range: tuple[float, float] = (1.0e3, 1.0e5)  # expected photons per peak, log-uniform
    bragg_sigma_range: tuple[float, float] = (0.5, 1.0)  # px, Gaussian width (not scaled with the frame)
    bragg_radius_range: tuple[float, float] = (60.0, 400.0)  # px (512-row scale), ring radius, log-uniform

    def scale(self) -> float:
        return min(self.height, self.width) / 512.0


@dataclass
class Geometry:
    center: tuple[float, float]
    rod_angle: float


def _loguniform(rng: np.random.Generator, lo: float, hi: float, size=None):
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size))


def make_geometry(cfg: SAXSSimConfig, rng: np.random.Generator) -> Geometry:
    """Beam centre in the left part of the frame (so the far side is signal-free) and a beam-stop rod."""
    cy = cfg.height * rng.uniform(0.35, 0.65)
    cx = cfg.width * rng.uniform(0.15, 0.3)
    return Geometry(center=(cy, cx), rod_angle=float(rng.uniform(0, 2 * np.pi)))


def expected_signal(cfg: SAXSSimConfig, geom: Geometry, rng: np.random.Generator) -> np.ndarray:
    """Expected photons per pixel of one X-ray shot (float64 [H, W])."""
    s = cfg.scale()
    r0 = max(1.0, cfg.core_radius * s)
    rb = max(2.0, cfg.beamstop_radius * s)
    rod = max(2.0, cfg.beamstop_rod_width * s)
    cy = geom.center[0] + rng.normal(0, 1.0)
    cx = geom.center[1] + rng.normal(0, 1.0)
    y = np.arange(cfg.height)[:, None] + 0.5 - cy
    x = np.arange(cfg.width)[None, :] + 0.5 - cx
    r = np.hypot(y, x)
    phi = np.arctan2(y, x)
    phi0 = rng.uniform(0, np.pi)  # dominant direction of this shot
    eps = rng.uniform(*cfg.anisotropy_range)
    r_eff = r * (1.0 + eps * np.cos(2 * (phi - phi0)))
    radial = 1.0 / (1.0 + (r_eff / r0) ** 2) ** (cfg.porod_exponent / 2)
    ang = np.ones_like(r)
    n_streaks = rng.integers(cfg.n_streaks_range[0], cfg.n_streaks_range[1] + 1)
    for k in range(n_streaks):
        direction = phi0 + (0.0 if k == 0 else rng.normal(0, 0.6))
        d = np.angle(np.exp(2j * (phi - direction))) / 2  # angular distance modulo pi
        amp = _loguniform(rng, *cfg.streak_amplitude_range) * (1.0 if k == 0 else 0.3)
        ang += amp * np.exp(-0.5 * (d / rng.uniform(*cfg.streak_width_range)) ** 2)
    intensity = cfg.peak_photons * _loguniform(rng, *cfg.shot_intensity_range) * radial * ang
    if cfg.bragg_pairs > 0:  # no draws without peaks: the default frames stay those from before the peaks
        intensity += bragg_peaks(cfg, (cy, cx), rng)[0]
    # beam-stop shadow: disc + holder rod towards the frame edge
    shadow = r < rb
    u = y * math.sin(geom.rod_angle) + x * math.cos(geom.rod_angle)
    v = -y * math.cos(geom.rod_angle) + x * math.sin(geom.rod_angle)
    shadow |= (u > 0) & (np.abs(v) < rod / 2)
    intensity[shadow] = 0.0
    return intensity


def gaussian_pixel_fractions(centre: float, sigma: float, n: int) -> tuple[int, np.ndarray]:
    """(first pixel, fractions) of a unit 1-D Gaussian at ``centre`` (pixel i spans [i, i + 1)) integrated over
    the pixels within 6 sigma that lie inside [0, n)."""
    from scipy.special import erf

    lo = max(0, int(math.floor(centre - 6 * sigma)))
    hi = min(n, int(math.ceil(centre + 6 * sigma)) + 1)
    if hi <= lo:
        return 0, np.zeros(0)
    edges = np.arange(lo, hi + 1, dtype=np.float64)
    cdf = 0.5 * (1.0 + erf((edges - centre) / (math.sqrt(2.0) * sigma)))
    return lo, np.diff(cdf)


def bragg_peaks(
    cfg: SAXSSimConfig, centre: tuple[float, float], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Expected photons [H, W] of ``cfg.bragg_pairs`` centrosymmetric pairs of Gaussian peaks on one ring about
    ``centre`` (row, col in px; pixel i spans [i, i + 1)), and the peaks [2 * pairs, 4] as (row, col, expected
    photons, sigma px), partners adjacent (2k, 2k + 1). A peak partly off the frame loses the part outside."""
    h, w = cfg.height, cfg.width
    image = np.zeros((h, w), np.float64)
    n = int(cfg.bragg_pairs)
    lo_r, hi_r = (v * cfg.scale() for v in cfg.bragg_radius_range)
    radius = float(_loguniform(rng, lo_r, hi_r))
    theta = rng.uniform(0.0, np.pi, n)
    photons = _loguniform(rng, *cfg.bragg_photons_range, n)
    sigma = rng.uniform(*cfg.bragg_sigma_range, n)
    peaks = []
    for k in range(n):
        for sign in (1.0, -1.0):
            row = centre[0] + sign * radius * math.sin(theta[k])
            col = centre[1] + sign * radius * math.cos(theta[k])
            peaks.append((row, col, photons[k], sigma[k]))
            r0, fy = gaussian_pixel_fractions(row, sigma[k], h)
            c0, fx = gaussian_pixel_fractions(col, sigma[k], w)
            image[r0 : r0 + len(fy), c0 : c0 + len(fx)] += photons[k] * np.outer(fy, fx)
    return image, np.asarray(peaks, np.float64).reshape(-1, 4)


def simulate_xray_frame(cfg: SAXSSimConfig, geom: Geometry, rng: np.random.Generator) -> np.ndarray:
    """One X-ray-only frame in keV: Poisson photon counts times the photon energy."""
    lam = expected_signal(cfg, geom, rng)
    counts = rng.poisson(lam)
    return (counts * cfg.photon_energy).astype(np.float32)


def _splat_bilinear(img: np.ndarray, yy: np.ndarray, xx: np.ndarray, ee: np.ndarray) -> None:
    """Deposit energies ee at sub-pixel positions (pixel centres at i + 0.5), bilinear weights."""
    h, w = img.shape
    fy, fx = yy - 0.5, xx - 0.5
    y0, x0 = np.floor(fy).astype(int), np.floor(fx).astype(int)
    dy, dx = fy - y0, fx - x0
    for oy, ox, wt in ((0, 0, (1 - dy) * (1 - dx)), (0, 1, (1 - dy) * dx), (1, 0, dy * (1 - dx)), (1, 1, dy * dx)):
        iy, ix = y0 + oy, x0 + ox
        ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
        np.add.at(img, (iy[ok], ix[ok]), (ee * wt)[ok])


def simulate_background(cfg: SAXSSimConfig, rng: np.random.Generator) -> np.ndarray:
    """Bremsstrahlung background in keV (float32 [H, W], non-negative)."""
    sparse, fog = background_parts(cfg, rng)
    return (sparse + fog).astype(np.float32)


def background_parts(cfg: SAXSSimConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The background's compact deposits (hits, clusters, tracks) and its diffuse fog, float64 [H, W]
    each in keV (their sum, cast to float32, is :func:`simulate_background`'s frame, same draws)."""
    h, w = cfg.height, cfg.width
    npix = h * w
    f = _loguniform(rng, *cfg.background_intensity_range)
    bg = np.zeros((h, w), np.float64)
    # single-pixel hits
    n = rng.poisson(cfg.hit_density * npix * f)
    iy, ix = rng.integers(0, h, n), rng.integers(0, w, n)
    np.add.at(bg, (iy, ix), _loguniform(rng, *cfg.hit_energy_range, n))
    # charge-sharing clusters: energy spread by a Gaussian footprint on the 3x3 neighbourhood
    n = rng.poisson(cfg.cluster_density * npix * f)
    if n:
        cy, cx = rng.uniform(0, h, n), rng.uniform(0, w, n)
        sig = rng.uniform(*cfg.cluster_sigma_range, n)
        e = _loguniform(rng, *cfg.hit_energy_range, n)
        py, px = np.floor(cy).astype(int), np.floor(cx).astype(int)
        offs = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)]
        wts = np.stack([np.exp(-((py + a + 0.5 - cy) ** 2 + (px + b + 0.5 - cx) ** 2) / (2 * sig**2)) for a, b in offs])
        wts /= wts.sum(0, keepdims=True)
        for (a, b), wt in zip(offs, wts):
            yy, xx = py + a, px + b
            ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            np.add.at(bg, (yy[ok], xx[ok]), (e * wt)[ok])
    # straight tracks
    n = rng.poisson(cfg.track_density * npix * f)
    for _ in range(n):
        length = rng.uniform(*cfg.track_length_range)
        theta = rng.uniform(0, 2 * np.pi)
        y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
        m = max(2, int(length * 4))
        t = np.linspace(0, length, m)
        de = rng.uniform(*cfg.track_dedx_range) * length / m * rng.gamma(4.0, 0.25, m)
        _splat_bilinear(bg, y0 + t * np.sin(theta), x0 + t * np.cos(theta), de)
    # diffuse fog: smooth positive field with mean fog_level
    fog_term = np.zeros((h, w), np.float64)
    if cfg.fog_level > 0:
        sm = max(2.0, cfg.fog_smoothness * cfg.scale())
        field_ = ndimage.gaussian_filter(rng.normal(size=(h, w)), sm, mode="wrap")
        field_ /= field_.std() + 1e-12
        fog = np.exp(0.5 * field_)
        fog_term = cfg.fog_level * fog / fog.mean()
    return bg, fog_term


def fog_of_frames(n_xray: int, n_full: int, seed: int, cfg: SAXSSimConfig) -> np.ndarray:
    """The diffuse fog [n_full, H, W] (keV, float64) of the full shots :func:`iter_saxs_frames` simulates
    with these arguments (the same random stream replayed): what no estimator of compact deposits removes."""
    rng = _experiment_rng(seed)
    geom = make_geometry(cfg, rng)
    for _ in range(n_xray):
        simulate_xray_frame(cfg, geom, rng)
    fogs = []
    for _ in range(n_full):
        simulate_xray_frame(cfg, geom, rng)
        fogs.append(background_parts(cfg, rng)[1])
    return np.stack(fogs) if fogs else np.zeros((0, cfg.height, cfg.width))


def saxs_schema() -> H5Schema:
    """Datasets of a SAXS file: X-ray-only shots, and full shots with their X-ray part (keV per pixel)."""
    return H5Schema(
        [
            Field(
                "xray",
                (None, None),
                "float32",
                nonnegative=True,
                units="keV",
                group="xray",
                per_sample_key=False,
                description="X-ray-only shots",
            ),
            Field(
                "full",
                (None, None),
                "float32",
                units="keV",
                group="full",
                per_sample_key=False,
                description="full shots: X-ray signal + bremsstrahlung background",
            ),
            Field(
                "signal",
                (None, None),
                "float32",
                units="keV",
                group="full",
                per_sample_key=False,
                description="the X-ray part of each full shot",
            ),
        ],
        what="SAXS file",
    )


def resolve_config(config: SAXSSimConfig | None = None, **overrides) -> SAXSSimConfig:
    """``config`` (default :class:`SAXSSimConfig`) with ``overrides`` applied, checked."""
    cfg = config or SAXSSimConfig()
    if overrides:
        cfg = SAXSSimConfig(**{**asdict(cfg), **overrides})
    if cfg.height < 8 or cfg.width < 8:
        raise ValueError(f"frame {cfg.height}x{cfg.width} too small; expected at least 8x8 pixels")
    return cfg


def _experiment_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5A85])


def iter_saxs_frames(n_xray: int, n_full: int, seed: int, cfg: SAXSSimConfig) -> Iterator[dict[str, np.ndarray]]:
    """Blocks of one frame: ``{"xray": [1, H, W]}`` n_xray times, then ``{"full", "signal"}`` n_full times.

    One random stream per experiment (geometry first, then the shots in this order), so the frames do
    not depend on how they are written.
    """
    rng = _experiment_rng(seed)
    geom = make_geometry(cfg, rng)
    for _ in range(n_xray):
        yield {"xray": simulate_xray_frame(cfg, geom, rng)[None]}
    for _ in range(n_full):
        sig = simulate_xray_frame(cfg, geom, rng)
        yield {"full": (sig + simulate_background(cfg, rng))[None], "signal": sig[None]}


def saxs_attrs(seed: int, cfg: SAXSSimConfig) -> dict:
    """File attributes of a simulated experiment (see the module docstring)."""
    geom = make_geometry(cfg, _experiment_rng(seed))
    attrs = {k: np.asarray(v) for k, v in asdict(cfg).items()}
    attrs.update(
        photon_energy_keV=cfg.photon_energy,
        pixel_size_um=PIXEL_SIZE_UM,
        units="keV",
        seed=int(seed),
        beam_center=np.asarray(geom.center),
        beamstop_radius_px=max(2.0, cfg.beamstop_radius * cfg.scale()),
        simulator="lit_sr.domains.saxs.sim (Porod SAXS + bremsstrahlung)",
    )
    return attrs


def write_options(cfg: SAXSSimConfig) -> dict:
    """Frames are read as random patches: one uncompressed chunk per frame (no inflation per patch)."""
    shape = (cfg.height, cfg.width)
    return {"chunk_rows": 1, "compression": None, "shapes": {"xray": shape, "full": shape, "signal": shape}}


def simulate_saxs_file(
    path: str | Path,
    n_xray: int,
    n_full: int,
    seed: int = 0,
    config: SAXSSimConfig | None = None,
    progress: bool = False,
    **overrides,
) -> Path:
    """Simulate ``n_xray`` X-ray-only and ``n_full`` full shots into ``path`` (atomic; see module doc).

    ``overrides`` set fields of :class:`SAXSSimConfig` (e.g. ``height=64, width=128``).
    """
    cfg = resolve_config(config, **overrides)
    return write_h5(
        path,
        saxs_schema(),
        {"xray": n_xray, "full": n_full},
        iter_saxs_frames(n_xray, n_full, seed, cfg),
        attrs=saxs_attrs(seed, cfg),
        description=f"simulating SAXS frames -> {Path(path).name}",
        progress=progress,
        **write_options(cfg),
    )


def is_complete(path: str | Path) -> bool:
    """True if ``path`` is a finished simulation (an interrupted one lacks ``complete``)."""
    return h5_is_complete(path, saxs_schema())
