"""Parametric galaxy simulator (galsim): the training set of the class-conditional progressive WGAN-GP.

Model (one galaxy)
------------------
A bulge (Sersic, index from the small fixed grid ``sersic_n_grid`` = 1.5, 2.5, 4.0 -- galsim tabulates
each new index, so indices are reused and profiles are never truncated), an exponential disk and, for
some galaxies, star-forming knots: round Gaussians (sigma ``knot_sigma_arcsec``) whose positions are
drawn from the face-on disk profile (radius ~ Gamma(2) x disk scale radius, uniform azimuth), so
their expected light follows the disk; they carry ``knot_fraction`` of the disk light. Bulge, disk and
knots share one area-preserving shear (axis ratio ``q``, position angle ``beta_deg``, galsim
convention, counter-clockwise from +x) and one sub-pixel offset of the centre.

Distributions (per class c, parameters in ``MorphologyPrior``; u ~ U(0, 1) independent):

* ``hlr_arcsec`` H: log-normal (median, sigma of ln H) truncated to a range, sampled by inverse CDF;
* ``bulge_fraction`` B (bulge-to-total flux): uniform on a class range (disk: 0-0.3, bulge: 0.6-0.95,
  irregular: 0-0.15);
* bulge-to-disk half-light-radius ratio rho: uniform on a class range; the component radii are then
  scaled so that the composite face-on profile has half-light radius exactly H (see
  ``composite_half_light_radius``; knot light is counted as disk light, the sigma of the knots
  ignored). ``hlr_arcsec`` is therefore the half-light radius of the round profile before the
  area-preserving shear, i.e. the geometric mean sqrt(a b) of the half-light "ellipse";
* ``sersic_n``: categorical over the grid with class probabilities (bulge-dominated favour n = 4);
* ``q``: a randomly inclined oblate system of intrinsic thickness q0, q = sqrt(cos^2 i + q0^2 sin^2 i)
  with cos i ~ U(0, 1): naturally truncated to [q0, 1] (q0 = 0.2 disks, 0.55 bulges, 0.4 irregulars);
* ``beta_deg``: uniform on [0, 180);
* ``n_knots``: 0 with probability 1 - p_knots, else uniform integer on a class range; ``knot_fraction``
  uniform on a class range (0 when there are no knots);
* ``flux`` (ADU, whole profile, including light falling outside the stamp): log-normal truncated
  to ``flux_range_adu``, the same for all classes;
* centre offset ``offset_x_arcsec``, ``offset_y_arcsec``: uniform within +-``centre_jitter_pixels``;
* ``psf_fwhm_arcsec``: ``psf_fwhm_arcsec`` x exp(``psf_fwhm_jitter`` N(0, 1)) (jitter 0 by default:
  one fixed PSF, as the GAN's fixed PSF layer assumes); ``psf_beta`` fixed.

Class labels: 0 disk-dominated, 1 bulge-dominated, 2 irregular/knotty. ``size_bin``: index of
``hlr_arcsec`` among ``size_bin_edges_arcsec`` (3 bins; default edges 0.66 and 0.89 arcsec are the
tertiles 0.656 and 0.890 of 300000 default parameter draws, rounded; ``tests/test_galaxy_sim.py``
checks the three bin fractions are 1/3 +- 0.01).

Images (all in ADU per pixel, sky-subtracted, array [row=y, col=x])
-------------------------------------------------------------------
* ``image``: galaxy convolved with a Moffat PSF (``psf_fwhm_arcsec``, ``psf_beta``) and the pixel
  response, drawn by galsim (``method='auto'``) on a ``stamp_size``^2 stamp of ``pixel_scale_arcsec``
  pixels, plus noise: Poisson noise of the galaxy electrons (counts x ``gain_e_per_adu``, divided back
  by the gain) and Gaussian sky noise of variance ``sky_level_adu / gain_e_per_adu`` ADU^2 (the
  Gaussian limit of the Poisson noise of a sky level ``sky_level_adu`` that has been subtracted).
  Per-pixel variance: (galaxy + sky_level) / gain. ``add_noise=False`` returns the noiseless image.
* ``image_psf_free``: the same galaxy without PSF and without noise, integrated over the same pixels
  (i.e. the equivalent of galsim ``method='auto'`` without the PSF): drawn with ``method='no_pixel'``
  on a grid ``oversample`` (4) times finer and summed per pixel, the central ``core_pixels``^2 (6^2)
  pixels, which hold the Sersic cusp, on a ``core_oversample`` (32) times finer grid. Against
  galsim's exact ``method='auto'`` this was within 0.1 % of the peak for n = 4 bulges of hlr 0.06"
  and 0.15" (4x alone: 4.5-11 %). galsim's ``method='auto'`` itself is unusable here: untruncated
  n = 4 bulges without a PSF need ~8000^2-10000^2 FFTs (galsim's FFT-size warning) and took
  0.4-37 s per profile.
* ``psf``: the Moffat actually used, sampled at pixel centres (``method='no_pixel'``, no pixel
  response -- the pixel is already in ``image_psf_free``) on an odd ``psf_size``^2 stamp centred on
  its middle pixel, normalised to sum 1. Hence ``image`` ~= conv(``image_psf_free``, ``psf``) +
  noise, the forward model of the GAN's fixed PSF layer. Measured max |conv - image| / peak over
  noiseless galaxies: median 0.65 %, max 3.5 % (48 galaxies, seed 7, ``tests/test_galaxy_sim.py``);
  the largest errors are compact bulge-dominated galaxies (the discrete convolution samples the
  Moffat core, FWHM 3 pixels, at pixel centres). Using the pixel-convolved Moffat instead was
  worse (median 1.5-3 % per class, 96 galaxies).

Profile centre: array position (row, col) = (H/2 - 1/2 + offset_y/scale, W/2 - 1/2 + offset_x/scale).

Determinism: galaxies are produced in fixed blocks of ``BLOCK_GALAXIES``; block b draws its labels,
parameters and noise from streams derived from (seed, purpose, b), always drawing the parameters of
a full block. So a set of n galaxies is exactly the first n galaxies of any larger set of the same
seed, independent of how it is consumed. Labels are class balanced and stratified: each consecutive
group of ``n_classes`` galaxies holds one galaxy of each class in a random order, so every prefix
is balanced to within one galaxy per class.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import special

SIMULATOR_VERSION = "1.0.0"
BLOCK_GALAXIES = 96  # galaxies per random-stream block; part of the definition of the sequence
DEFAULT_SET_SIZE = 3072  # 32 blocks, 1024 per class; simulated in < 60 s on one core (benchmarks/bench_galaxy_sim.py)
LABEL_NAMES = ("disk", "bulge", "irregular")
IMAGE_FIELDS = ("image", "image_psf_free", "psf")
PARAMETER_FIELDS = (
    "flux",
    "hlr_arcsec",
    "q",
    "beta_deg",
    "bulge_fraction",
    "sersic_n",
    "n_knots",
    "knot_fraction",
    "psf_fwhm_arcsec",
    "psf_beta",
    "sky_level",
    "offset_x_arcsec",
    "offset_y_arcsec",
)
FIELDS = IMAGE_FIELDS + ("label", "size_bin") + PARAMETER_FIELDS

# Random-stream purposes (first spawn-key word), so streams never collide.
_KEY_LABELS, _KEY_PARAMS, _KEY_NOISE = 1, 2, 3
_B_EXP = float(special.gammaincinv(2.0, 0.5))  # exponential: r_hlr = 1.678 r_scale


@dataclass(frozen=True)
class MorphologyPrior:
    """Parameter distributions of one morphology class (see the module docstring)."""

    name: str
    hlr_median_arcsec: float
    hlr_sigma_ln: float
    hlr_range_arcsec: tuple[float, float]
    bulge_fraction_range: tuple[float, float]
    bulge_to_disk_hlr_range: tuple[float, float]
    sersic_n_probs: tuple[float, ...]  # probabilities over GalaxySimConfig.sersic_n_grid
    min_axis_ratio: float  # intrinsic thickness q0 of the inclined oblate system
    knot_probability: float
    n_knots_range: tuple[int, int]  # inclusive
    knot_fraction_range: tuple[float, float]  # fraction of the disk light in knots


DEFAULT_CLASSES = (
    MorphologyPrior(
        "disk", 0.9, 0.3, (0.3, 2.0), (0.0, 0.3), (0.2, 0.5), (0.5, 0.3, 0.2), 0.2, 0.3, (2, 8), (0.05, 0.15)
    ),
    MorphologyPrior(
        "bulge", 0.6, 0.35, (0.25, 2.0), (0.6, 0.95), (0.3, 0.8), (0.1, 0.3, 0.6), 0.55, 0.0, (0, 0), (0.0, 0.0)
    ),
    MorphologyPrior(
        "irregular", 0.8, 0.3, (0.3, 2.0), (0.0, 0.15), (0.2, 0.5), (0.6, 0.3, 0.1), 0.4, 1.0, (8, 30), (0.3, 0.6)
    ),
)


@dataclass(frozen=True)
class GalaxySimConfig:
    """Simulation settings; angles in arcsec unless the name says otherwise, fluxes in ADU."""

    stamp_size: int = 64  # square stamp side in pixels, a power of 2
    pixel_scale_arcsec: float = 0.2
    psf_size: int = 25  # odd side of the stored PSF kernel in pixels
    psf_fwhm_arcsec: float = 0.6
    psf_beta: float = 3.5  # Moffat beta
    psf_fwhm_jitter: float = 0.0  # sigma of ln(FWHM) per image; 0 = one fixed PSF
    gain_e_per_adu: float = 4.0
    sky_level_adu: float = 400.0  # per pixel, subtracted; sky noise sigma = sqrt(400 / 4) = 10 ADU
    add_noise: bool = True
    flux_median_adu: float = 2.0e4
    flux_sigma_ln: float = 0.7
    flux_range_adu: tuple[float, float] = (4.0e3, 2.0e5)
    sersic_n_grid: tuple[float, ...] = (1.5, 2.5, 4.0)
    knot_sigma_arcsec: float = 0.1
    centre_jitter_pixels: float = 0.5
    oversample: int = 4  # sub-pixels per pixel side for the PSF-free pixel integration
    core_pixels: int = 6  # even side of the central window integrated more finely (cuspy bulges)
    core_oversample: int = 32  # sub-pixels per pixel side inside that window
    size_bin_edges_arcsec: tuple[float, ...] = (0.66, 0.89)
    classes: tuple[MorphologyPrior, ...] = DEFAULT_CLASSES

    def __post_init__(self) -> None:
        s = self.stamp_size
        if s < 8 or s & (s - 1):
            raise ValueError(f"GalaxySimConfig.stamp_size must be a power of 2 >= 8, got {s}")
        if self.psf_size % 2 == 0 or not 3 <= self.psf_size <= s:
            raise ValueError(f"GalaxySimConfig.psf_size must be odd, >= 3 and <= stamp_size={s}, got {self.psf_size}")
        for name in ("pixel_scale_arcsec", "psf_fwhm_arcsec", "gain_e_per_adu", "flux_median_adu", "knot_sigma_arcsec"):
            if not getattr(self, name) > 0:
                raise ValueError(f"GalaxySimConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.psf_beta <= 1.1:
            raise ValueError(f"GalaxySimConfig.psf_beta must be > 1.1 (untruncated Moffat), got {self.psf_beta}")
        if self.sky_level_adu < 0 or self.psf_fwhm_jitter < 0 or self.flux_sigma_ln < 0:
            raise ValueError("GalaxySimConfig: sky_level_adu, psf_fwhm_jitter and flux_sigma_ln must be >= 0")
        if not 0 < self.flux_range_adu[0] < self.flux_range_adu[1]:
            raise ValueError(f"GalaxySimConfig.flux_range_adu must be 0 < lo < hi, got {self.flux_range_adu}")
        for name in ("oversample", "core_oversample"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 1:
                raise ValueError(f"GalaxySimConfig.{name} must be an integer >= 1, got {getattr(self, name)}")
        if self.core_pixels % 2 or not 0 <= self.core_pixels <= s:
            raise ValueError(f"GalaxySimConfig.core_pixels must be even and <= stamp_size={s}, got {self.core_pixels}")
        if self.centre_jitter_pixels < 0 or (self.core_pixels and self.centre_jitter_pixels > self.core_pixels / 2 - 2):
            raise ValueError(
                "GalaxySimConfig.centre_jitter_pixels must be >= 0 and keep the profile centre >= 2 "
                f"pixels inside the central core window (<= core_pixels / 2 - 2 = "
                f"{self.core_pixels / 2 - 2:g}), got {self.centre_jitter_pixels}"
            )
        if list(self.size_bin_edges_arcsec) != sorted(self.size_bin_edges_arcsec):
            raise ValueError(f"GalaxySimConfig.size_bin_edges_arcsec must increase, got {self.size_bin_edges_arcsec}")
        if not self.classes or BLOCK_GALAXIES % len(self.classes):
            raise ValueError(
                f"GalaxySimConfig.classes: need 1..n classes with n dividing {BLOCK_GALAXIES}, got {len(self.classes)}"
            )
        for c, prior in enumerate(self.classes):
            where = f"GalaxySimConfig.classes[{c}] ({prior.name})"
            if len(prior.sersic_n_probs) != len(self.sersic_n_grid) or abs(sum(prior.sersic_n_probs) - 1) > 1e-6:
                raise ValueError(
                    f"{where}.sersic_n_probs must have {len(self.sersic_n_grid)} entries summing to 1, "
                    f"got {prior.sersic_n_probs}"
                )
            lo, hi = prior.hlr_range_arcsec
            if not 0 < lo < hi or prior.hlr_sigma_ln <= 0:
                raise ValueError(f"{where}: need 0 < hlr_range_arcsec[0] < [1] and hlr_sigma_ln > 0")
            if not 0 <= prior.bulge_fraction_range[0] <= prior.bulge_fraction_range[1] < 1:
                raise ValueError(f"{where}.bulge_fraction_range must lie in [0, 1), got {prior.bulge_fraction_range}")
            if not 0 < prior.bulge_to_disk_hlr_range[0] <= prior.bulge_to_disk_hlr_range[1]:
                raise ValueError(
                    f"{where}.bulge_to_disk_hlr_range must be positive, got {prior.bulge_to_disk_hlr_range}"
                )
            if not 0 < prior.min_axis_ratio <= 1:
                raise ValueError(f"{where}.min_axis_ratio must be in (0, 1], got {prior.min_axis_ratio}")
            if not 0 <= prior.n_knots_range[0] <= prior.n_knots_range[1]:
                raise ValueError(f"{where}.n_knots_range must be 0 <= lo <= hi, got {prior.n_knots_range}")
            if not 0 <= prior.knot_fraction_range[0] <= prior.knot_fraction_range[1] < 1:
                raise ValueError(f"{where}.knot_fraction_range must lie in [0, 1), got {prior.knot_fraction_range}")

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_size_bins(self) -> int:
        return len(self.size_bin_edges_arcsec) + 1

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GalaxySimConfig:
        data = json.loads(text)
        classes = tuple(
            MorphologyPrior(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()})
            for c in data.pop("classes")
        )
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(classes=classes, **data)


# ----------------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------------


def composite_half_light_radius(
    bulge_fraction: np.ndarray, sersic_n: np.ndarray, bulge_to_disk_hlr: np.ndarray
) -> np.ndarray:
    """Half-light radius of round bulge (Sersic n) + exponential disk, in units of the disk hlr.

    Solves B P(2n, b_n (x/rho)^(1/n)) + (1 - B) P(2, b_1 x) = 1/2 for x by bisection, P the
    regularised lower incomplete gamma function (enclosed-flux fraction of an untruncated Sersic
    profile). The root lies between the two component radii, 1 and rho.
    """
    bt, n, rho = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (bulge_fraction, sersic_n, bulge_to_disk_hlr))
    )
    b_n = special.gammaincinv(2.0 * n, 0.5)

    def enclosed(x: np.ndarray) -> np.ndarray:
        return bt * special.gammainc(2.0 * n, b_n * (x / rho) ** (1.0 / n)) + (1.0 - bt) * special.gammainc(
            2.0, _B_EXP * x
        )

    lo, hi = np.minimum(1.0, rho), np.maximum(1.0, rho)
    for _ in range(60):  # interval shrinks by 2^-60: exact to float64
        mid = 0.5 * (lo + hi)
        below = enclosed(mid) < 0.5
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def _truncated_lognormal(
    u: np.ndarray, median: np.ndarray, sigma_ln: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Inverse-CDF sample of a log-normal truncated to [lo, hi] from uniforms u."""
    a = special.ndtr((np.log(lo) - np.log(median)) / sigma_ln)
    b = special.ndtr((np.log(hi) - np.log(median)) / sigma_ln)
    z = special.ndtri(a + u * (b - a))
    return np.clip(median * np.exp(sigma_ln * z), lo, hi)


def _class_table(config: GalaxySimConfig, attr: str, index: int | None = None) -> np.ndarray:
    values = [getattr(p, attr) if index is None else getattr(p, attr)[index] for p in config.classes]
    return np.asarray(values, dtype=np.float64)


def sample_parameters(
    labels: np.ndarray, rng: np.random.Generator, config: GalaxySimConfig = GalaxySimConfig()
) -> dict[str, np.ndarray]:
    """Physical parameters (float64 arrays) of galaxies of the given classes.

    The stream is consumed in a fixed order and amount for a given number of labels, so galaxy j
    depends only on the stream, on j and on the labels. Returns the ``PARAMETER_FIELDS`` plus
    ``size_bin``, the component radii ``disk_hlr_arcsec``, ``bulge_hlr_arcsec`` and the face-on knot
    offsets ``knot_xy`` [N, max_knots, 2] in arcsec (only the first ``n_knots`` are used).
    """
    lab = np.asarray(labels, dtype=np.int64)
    if lab.size and (lab.min() < 0 or lab.max() >= config.n_classes):
        raise ValueError(f"labels must lie in [0, {config.n_classes}), got range [{lab.min()}, {lab.max()}]")
    m = lab.shape[0]
    t = {
        name: _class_table(config, name)[lab]
        for name in ("hlr_median_arcsec", "hlr_sigma_ln", "min_axis_ratio", "knot_probability")
    }

    def lo_hi(name: str) -> tuple[np.ndarray, np.ndarray]:
        return _class_table(config, name, 0)[lab], _class_table(config, name, 1)[lab]

    u = rng.uniform(size=(12, m))  # one row per variable, fixed order
    hlr_lo, hlr_hi = lo_hi("hlr_range_arcsec")
    hlr = _truncated_lognormal(u[0], t["hlr_median_arcsec"], t["hlr_sigma_ln"], hlr_lo, hlr_hi)
    bt_lo, bt_hi = lo_hi("bulge_fraction_range")
    bulge_fraction = bt_lo + (bt_hi - bt_lo) * u[1]
    rho_lo, rho_hi = lo_hi("bulge_to_disk_hlr_range")
    rho = rho_lo + (rho_hi - rho_lo) * u[2]
    cum = np.cumsum(np.asarray([p.sersic_n_probs for p in config.classes]), axis=1)[lab]
    n_index = np.minimum((u[3][:, None] > cum).sum(axis=1), len(config.sersic_n_grid) - 1)
    sersic_n = np.asarray(config.sersic_n_grid, dtype=np.float64)[n_index]
    cos_i = u[4]
    q = np.sqrt(cos_i**2 + t["min_axis_ratio"] ** 2 * (1.0 - cos_i**2))
    beta_deg = 180.0 * u[5]
    k_lo, k_hi = lo_hi("n_knots_range")
    has_knots = u[6] < t["knot_probability"]
    n_knots = np.where(has_knots, k_lo + np.floor(u[7] * (k_hi - k_lo + 1)), 0).astype(np.int64)
    n_knots = np.minimum(n_knots, k_hi.astype(np.int64))
    f_lo, f_hi = lo_hi("knot_fraction_range")
    knot_fraction = np.where(n_knots > 0, f_lo + (f_hi - f_lo) * u[8], 0.0)
    fl_lo, fl_hi = config.flux_range_adu
    flux = _truncated_lognormal(
        u[9],
        np.float64(config.flux_median_adu),
        np.float64(max(config.flux_sigma_ln, 1e-12)),
        np.float64(fl_lo),
        np.float64(fl_hi),
    )
    jitter = config.centre_jitter_pixels * config.pixel_scale_arcsec
    offset_x = jitter * (2.0 * u[10] - 1.0)
    offset_y = jitter * (2.0 * u[11] - 1.0)
    psf_fwhm = config.psf_fwhm_arcsec * np.exp(config.psf_fwhm_jitter * rng.standard_normal(m))
    # Knot positions for the largest possible count, so the draw count does not depend on the classes.
    max_knots = max(max(p.n_knots_range[1] for p in config.classes), 1)
    knot_r = rng.gamma(2.0, 1.0, size=(m, max_knots))  # in disk scale radii
    knot_phi = rng.uniform(0.0, 2.0 * np.pi, size=(m, max_knots))

    x = composite_half_light_radius(bulge_fraction, sersic_n, rho)
    disk_hlr = hlr / x
    knot_r_arcsec = knot_r * (disk_hlr / _B_EXP)[:, None]
    return {
        "flux": flux,
        "hlr_arcsec": hlr,
        "q": q,
        "beta_deg": beta_deg,
        "bulge_fraction": bulge_fraction,
        "sersic_n": sersic_n,
        "n_knots": n_knots,
        "knot_fraction": knot_fraction,
        "psf_fwhm_arcsec": psf_fwhm,
        "psf_beta": np.full(m, config.psf_beta),
        "sky_level": np.full(m, config.sky_level_adu),
        "offset_x_arcsec": offset_x,
        "offset_y_arcsec": offset_y,
        "size_bin": np.digitize(hlr, config.size_bin_edges_arcsec).astype(np.int64),
        "disk_hlr_arcsec": disk_hlr,
        "bulge_hlr_arcsec": rho * disk_hlr,
        "knot_xy": np.stack([knot_r_arcsec * np.cos(knot_phi), knot_r_arcsec * np.sin(knot_phi)], axis=-1),
    }


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def galaxy_components(params: dict[str, np.ndarray], j: int, config: GalaxySimConfig = GalaxySimConfig()):
    """galsim profiles (no PSF) of galaxy ``j`` of a ``sample_parameters`` dict: (bulge + disk, knots or None).

    Both parts carry the galaxy's shear and centre offset; their sum is the galaxy.
    """
    import galsim

    flux = float(params["flux"][j])
    bt = float(params["bulge_fraction"][j])
    fk = float(params["knot_fraction"][j])
    nk = int(params["n_knots"][j])
    shear = galsim.Shear(q=float(params["q"][j]), beta=float(params["beta_deg"][j]) * galsim.degrees)
    offset = (float(params["offset_x_arcsec"][j]), float(params["offset_y_arcsec"][j]))
    smooth = galsim.Exponential(
        half_light_radius=float(params["disk_hlr_arcsec"][j]), flux=flux * (1.0 - bt) * (1.0 - fk)
    )
    if bt > 0:
        smooth = smooth + galsim.Sersic(
            float(params["sersic_n"][j]), half_light_radius=float(params["bulge_hlr_arcsec"][j]), flux=flux * bt
        )
    smooth = smooth.shear(shear).shift(*offset)
    if nk == 0:
        return smooth, None
    knot = galsim.Gaussian(sigma=config.knot_sigma_arcsec, flux=flux * (1.0 - bt) * fk / nk)
    knots = galsim.Add([knot.shift(float(x), float(y)) for x, y in params["knot_xy"][j, :nk]])
    return smooth, knots.shear(shear).shift(*offset)


def galaxy_profile(params: dict[str, np.ndarray], j: int, config: GalaxySimConfig = GalaxySimConfig()):
    """galsim profile (no PSF) of galaxy ``j`` of a ``sample_parameters`` dict."""
    smooth, knots = galaxy_components(params, j, config)
    return smooth if knots is None else smooth + knots


def moffat_kernel(fwhm_arcsec: float, beta: float, size: int, pixel_scale_arcsec: float) -> np.ndarray:
    """galsim Moffat sampled at the centres of an odd ``size``^2 grid (no pixel response), sum 1, float64."""
    import galsim

    if size % 2 == 0:
        raise ValueError(f"PSF kernel size must be odd, got {size}")
    img = (
        galsim.Moffat(beta=beta, fwhm=fwhm_arcsec)
        .drawImage(nx=size, ny=size, scale=pixel_scale_arcsec, method="no_pixel", dtype=np.float64)
        .array
    )
    return img / img.sum()


def render_galaxy(
    params: dict[str, np.ndarray], j: int, config: GalaxySimConfig = GalaxySimConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """Noiseless (PSF-convolved image, PSF-free image) of galaxy ``j``, float64 ADU per pixel."""
    import galsim

    n, s = config.stamp_size, config.pixel_scale_arcsec
    smooth, knots = galaxy_components(params, j, config)
    gal = smooth if knots is None else smooth + knots
    psf = galsim.Moffat(beta=float(params["psf_beta"][j]), fwhm=float(params["psf_fwhm_arcsec"][j]))
    image = galsim.Convolve(gal, psf).drawImage(nx=n, ny=n, scale=s, method="auto", dtype=np.float64).array
    psf_free = _pixel_integrated(smooth, n, s, int(config.oversample))
    w = config.core_pixels
    if w:
        # The galaxy centre is within centre_jitter_pixels of the stamp centre: the central w x w pixels, which
        # hold the Sersic cusp, get a much finer midpoint rule (both grids share the stamp centre).
        # Knots (smooth Gaussians) do not need it.
        core = slice(n // 2 - w // 2, n // 2 + w // 2)
        psf_free[core, core] = _pixel_integrated(smooth, w, s, int(config.core_oversample))
    if knots is not None:
        psf_free += _pixel_integrated(knots, n, s, int(config.oversample))
    return image, psf_free


def _pixel_integrated(profile, n: int, scale: float, oversample: int) -> np.ndarray:
    """Flux per pixel of an n x n grid centred on the profile origin: surface brightness sampled on
    an ``oversample`` times finer grid times the sub-pixel area, summed per pixel (midpoint rule)."""
    fine = profile.drawImage(
        nx=n * oversample, ny=n * oversample, scale=scale / oversample, method="no_pixel", dtype=np.float64
    ).array
    return fine.reshape(n, oversample, n, oversample).sum(axis=(1, 3))


def add_noise(image: np.ndarray, rng: np.random.Generator, gain_e_per_adu: float, sky_level_adu: float) -> np.ndarray:
    """Poisson noise of the galaxy electrons plus Gaussian noise of a subtracted sky (ADU in, ADU out)."""
    electrons = rng.poisson(np.clip(image, 0.0, None) * gain_e_per_adu)
    sky = rng.normal(0.0, math.sqrt(sky_level_adu / gain_e_per_adu), size=image.shape)
    return electrons / gain_e_per_adu + sky


# ----------------------------------------------------------------------------------------------
# Galaxy sequence
# ----------------------------------------------------------------------------------------------


def _stream(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in key)))


def block_labels(seed: int, block: int, n_classes: int = 3) -> np.ndarray:
    """Labels of one full block: consecutive groups of ``n_classes`` each hold every class once, shuffled."""
    rng = _stream(seed, _KEY_LABELS, block)
    groups = BLOCK_GALAXIES // n_classes
    return rng.permuted(np.tile(np.arange(n_classes, dtype=np.int64), (groups, 1)), axis=1).reshape(-1)


def simulate_galaxies(
    n: int, seed: int, config: GalaxySimConfig = GalaxySimConfig(), progress: bool = False
) -> Iterator[dict[str, np.ndarray]]:
    """Yield the first ``n`` galaxies of the (seed, config) sequence in blocks of <= ``BLOCK_GALAXIES``.

    Each block is a dict with ``FIELDS``: ``image``, ``image_psf_free`` [m, S, S] float32 (ADU),
    ``psf`` [m, K, K] float32 (sum 1), ``label`` and ``size_bin`` int64, ``n_knots`` int64 and the
    other parameters as float32 1-D arrays (units in their names; ``flux`` and ``sky_level`` in ADU,
    ``sky_level`` per pixel).
    """
    if int(n) != n or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed}")
    blocks = _iter_blocks(int(n), int(seed), config)  # arguments checked above, eagerly
    return _with_progress(blocks, int(n)) if progress else blocks


def _with_progress(blocks: Iterator[dict[str, np.ndarray]], n: int) -> Iterator[dict[str, np.ndarray]]:
    from rich.progress import Progress  # only needed for interactive runs

    with Progress(transient=False) as bar:
        task = bar.add_task("simulating galaxies", total=n)
        for block in blocks:
            yield block
            bar.advance(task, block["label"].shape[0])


def _iter_blocks(n: int, seed: int, config: GalaxySimConfig) -> Iterator[dict[str, np.ndarray]]:
    fixed_psf = None
    if config.psf_fwhm_jitter == 0:
        fixed_psf = moffat_kernel(config.psf_fwhm_arcsec, config.psf_beta, config.psf_size, config.pixel_scale_arcsec)
    for b, start in enumerate(range(0, n, BLOCK_GALAXIES)):
        m = min(BLOCK_GALAXIES, n - start)
        labels = block_labels(seed, b, config.n_classes)
        params = sample_parameters(labels, _stream(seed, _KEY_PARAMS, b), config)  # full block, then cut
        noise_rng = _stream(seed, _KEY_NOISE, b)
        s, k = config.stamp_size, config.psf_size
        image = np.empty((m, s, s), np.float32)
        psf_free = np.empty((m, s, s), np.float32)
        psf = np.empty((m, k, k), np.float32)
        for j in range(m):
            clean, free = render_galaxy(params, j, config)
            if config.add_noise:  # drawn galaxy by galaxy in order: prefix-stable
                clean = add_noise(clean, noise_rng, config.gain_e_per_adu, config.sky_level_adu)
            image[j], psf_free[j] = clean, free
            psf[j] = (
                fixed_psf
                if fixed_psf is not None
                else moffat_kernel(float(params["psf_fwhm_arcsec"][j]), config.psf_beta, k, config.pixel_scale_arcsec)
            )
        out = {
            "image": image,
            "image_psf_free": psf_free,
            "psf": psf,
            "label": labels[:m].copy(),
            "size_bin": params["size_bin"][:m].copy(),
        }
        for name in PARAMETER_FIELDS:
            value = params[name][:m]
            out[name] = value.astype(np.int64) if name == "n_knots" else value.astype(np.float32)
        yield out


def concatenate_blocks(blocks: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join the blocks of ``simulate_galaxies`` into one dict of arrays (empty input -> empty dict)."""
    blocks = list(blocks)
    if not blocks:
        return {}
    return {key: np.concatenate([blk[key] for blk in blocks]) for key in blocks[0]}


def simulate_galaxy_set(
    n: int, seed: int, config: GalaxySimConfig = GalaxySimConfig(), progress: bool = False
) -> dict[str, np.ndarray]:
    """``simulate_galaxies`` joined into one dict."""
    return concatenate_blocks(simulate_galaxies(n, seed, config, progress))
