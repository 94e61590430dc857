"""Simulator of XMM-Newton EPIC-pn-like 0.5-2 keV counts images for denoising (x1) and SR (x2).

One *field* is a sky patch observed three times (independent Poisson draws of one sky):

    input_20ks        LR grid (``pixel_arcsec``), LR PSF, 20 ks      -> network input
    target_50ks       LR grid, LR PSF, 50 ks                         -> denoising target
    target_100ks_x2   HR grid (pixels / 2), PSF 2x narrower, 100 ks  -> super-resolution target

(tag names follow the configured exposures; the defaults are above.) numpy + astropy only; seeded.

Units. Rates are counts/s in the 0.5-2 keV band: per source (total, PSF-convolved flux) or per pixel
(images). Angles in arcsec unless named ``_arcmin`` / ``_deg``. Exposure maps in seconds.

Sky model (order-of-magnitude EPIC-pn 0.5-2 keV choices, all configurable):
* AGN (point sources): N(>S) = agn_density_per_deg2 * (S / agn_ref_rate)^(-agn_slope) between
  agn_min_rate and agn_max_rate. Defaults 400 deg^-2 above 1e-3 counts/s (1.4e-15 erg/cm^2/s with a
  pn thin-filter conversion of 6.9e11 counts cm^2/erg for a Gamma = 1.7 power law, combined from the
  0.5-1 and 1-2 keV factors 8.25e11 and 5.88e11 of the 2XMM paper, A&A 2009, aa11409-08 Table 1),
  Euclidean slope 1.5 (the real counts flatten below ~1e-15 cgs: faint sources are over-abundant
  here), limit 1e-4 counts/s = 2 counts in 20 ks on axis: the median point source has ~3 counts in
  20 ks, so denoising matters.
* Clusters: elliptical beta models I ∝ (1 + (r/r_c)^2)^(-3 beta + 1/2), beta in [0.55, 0.8] (≈ 2/3),
  r_c log-uniform 10-60 arcsec, truncated at 5 r_c; rates 2e-3 - 0.1 counts/s (slope 1.5);
  60 deg^-2, i.e. several times the real sky density so training sees extended emission.
* Galaxies: elliptical Sersic profiles, n in [0.5, 4], r_e 2-12 arcsec, truncated at 5 r_e,
  2e-4 - 5e-3 counts/s, 150 deg^-2.
  The catalogue rate of an extended source is its total rate within the truncation radius.
* Cosmic background 3e-3 counts/s/arcmin^2 with a +-10 % large-scale modulation (scales >= 8 arcmin,
  so PSF convolution is omitted); vignetted.
* Particle (instrumental) background 1.5e-3 counts/s/arcmin^2, flat, NOT vignetted, NOT PSF-convolved.

Instrument: LR pixels 4.1 arcsec, King PSF FWHM 6 arcsec / beta 1.5 truncated at 60 arcsec
(:mod:`lit_sr.domains.xmm.psf`); the HR target has 2.05 arcsec pixels and r_c / 2 (FWHM 3 arcsec).
Vignetting V(theta) = max(0, 1 - vignetting_per_arcmin2 theta^2), theta = off-axis angle (arcmin):
0.73 at 10 arcmin, 0.49 at the 13.75 arcmin FOV edge. The field centre lies at a random off-axis
position (uniform in a disc of ``max_offaxis_arcmin``), the detector is rotated by a random roll.
Detector: 2 x 6 CCDs of 4.37 x 13.67 arcmin (64 x 200 pn pixels) separated by ``chip_gap_arcsec``
gaps, aimpoint ``aimpoint_arcmin`` from the array centre, circular FOV. Exposure maps are
T x mean over 4x4 sub-samples per LR pixel (2x2 per HR pixel, the same sky points) of V x live,
so an LR exposure map equals the 2x2 mean of the HR map at equal T.

Expected counts (the explicit noiseless model; counts ~ Poisson of it):
    mu = (sources + cosmic) [counts/s/pixel] * exposure_map [s] + particle [counts/s/pixel] * T * live.

Rendering. Point sources sit on a lattice of 1/16 LR pixel (= 1/8 HR pixel, 0.256 arcsec): their
positions are snapped to it, and pixel-integrated PSF stamps for each lattice phase are precomputed
(:func:`lit_sr.domains.xmm.psf.phase_stamps`), so LR and HR renderings of a point source are exact
integrals of the truncated King PSF (midpoint rule on 0.256 arcsec sub-pixels) at the catalogued position.
Extended sources are drawn on a grid of LR/4 pixels (normalised numerically to their rate), convolved
with each PSF and block-summed to LR (4x4) and HR (2x2). The cosmic background is evaluated at HR
pixel centres; its LR image is the 2x2 sum of the HR one.

LR <-> HR relation (state precisely): for every source, sum over the LR image = sum over the HR image
= catalogue rate x (fraction of its PSF-convolved light inside the field); the cosmic background obeys
sum2x2(HR) = LR exactly; the particle rate per HR pixel is 1/4 of the LR one. Because the PSFs differ,
sum2x2(HR source image) is the LR image *with the HR PSF*, not the LR image; PSF_HR ⊛ K ≈ PSF_LR with
the matching kernel of :func:`lit_sr.domains.xmm.psf.matching_kernel` closes the loop.

Coordinates: 0-based pixel coordinates with pixel centres at integers; x_hr = 2 x_lr + 0.5. FITS WCS
(1-based): CRPIX_hr = 2 CRPIX_lr - 0.5, CDELT_hr = CDELT_lr / 2.

Determinism: field k of split s uses numpy SeedSequence((seed, crc32(s), k)) spawned into independent
streams for the sky and for each product's Poisson noise, so a field does not depend on how many fields
are simulated or on the order.

Whole-detector EPIC-pn frames (options added after v1; off by default, ``conf/data/xmm_wide.yaml`` sets them).
The real 20 ks images (``../shared/data/xmm_real``) are SAS images of the whole pn detector in DETX/DETY binned
by 80 (4.0 arcsec pixels, 411 rows x 403 columns) of fields an observer pointed at: a bright target near the
aimpoint and the serendipitous sky around it. Options that reproduce them:
* ``detector_layout = "epn_detxy"``: the image axes are the detector axes (no roll); the field centre is the
  centre of the CCD array; the optical axis lies ``aimpoint_arcmin`` from it. The exposed pixels are the
  EPIC-pn mask *as seen in the six real images*: :data:`EPN_DETXY_DEAD_ROWS` and the per-band
  :data:`EPN_DETXY_DEAD_COLUMNS` are the majority vote (>= 4 of 6) of the detector masks that
  :func:`lit_sr.domains.xmm.fits_io.estimate_detector_mask` estimates from the whole observations (they agree
  to <= 965 of 165,633 pixels): 11 + 3 + 11 dead rows (outside the CCDs and the gap between the two rows of
  6 CCDs of 64 x 200 pixels of 4.1 arcsec) and 3-8 pixel wide gaps between the CCD columns plus a few
  flagged columns (2-3 pixels) per band; 86.3 % of the 411 x 403 pixels are exposed. The 411 x 403 mask is
  centred in the square ``lr_size`` field (columns beyond it are unexposed); it needs ``pixel_arcsec = 4.0``.
  X-rays from the sky reach the CCDs only inside the circular field of view (radius ``fov_radius_arcmin``
  about the array centre); the particle background falls on the whole CCD area (the out-of-FOV corners of
  the real images keep counts: 1.8-5.6e-3 counts/s/arcmin^2 in the 20 ks slices, median 2.6e-3).
* targets (``target_probabilities`` = P(cluster), P(supernova remnant), P(bright point source); the rest
  of the fields have none): one bright source per field at the aimpoint, Gaussian scatter
  ``target_offset_arcmin`` per axis, rates log-uniform in the ``target_*_rate_range`` (counts/s, total):
  - cluster: the beta model above, core radius log-uniform in ``target_cluster_core_arcsec_range``;
  - supernova remnant ("snr"): an optically thin shell of uniform emissivity between R (1 - f) and R,
    R = ``extent_arcsec`` (outer radius), f = ``shape`` (thickness / R), projected: surface brightness
    ∝ sqrt(R^2 - r^2) - sqrt(max(R_in^2 - r^2, 0)) (limb-brightened), times a filamentary log-normal
    texture exp(s g - s^2 / 2) with g a unit-variance Gaussian random field of correlation length
    ``target_snr_filament_arcsec`` (Gaussian-smoothed white noise) and s = ``target_snr_filament_sigma``
    (s = 0: the smooth shell); renormalised to the rate;
  - point: a point source (e.g. an AGN, X-ray binary or magnetar).
* ``oot_fraction``: out-of-time events (:func:`out_of_time`): a fraction f of the sky counts (6.3 % in pn
  full-frame mode, XMM-Newton Users Handbook) lands at a random row of its CCD column, so bright targets
  draw the streaks along DETY seen in the real cluster images. Particles are uniform and unaffected.
* ``flat_exposure``: the files' EXPOSURE map is T x CCD mask, the exposure the real images are used with
  (they carry no exposure map: ``real.py`` and ``predict=fits`` take T x the estimated detector mask), so a
  model trained on these files sees rates defined as on the real images (vignetting and the FOV edge stay in
  the counts; the out-of-FOV corners have a rate, as in the real images).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from scipy import special
from scipy.signal import fftconvolve

from lit_sr.domains.xmm.fits_io import EXPOSURE_EXTNAME, scaled_wcs
from lit_sr.domains.xmm.psf import KingPSF, phase_stamps

XMM_SIM_VERSION = "1"
HR_FACTOR = 2  # SR scale (fixed: the sub-pixel lattice below is built for it)
LR_PHASES = 16  # source-position lattice per LR pixel (8 per HR pixel)
EXT_FACTOR = 4  # extended sources are rendered on LR / 4 pixels (= HR / 2)
SUBSAMPLE_LR = 4  # exposure-map sub-samples per LR pixel axis (2 per HR pixel)
KIND_CODES = {"point": 0, "cluster": 1, "galaxy": 2, "snr": 3}
KIND_NAMES = {v: k for k, v in KIND_CODES.items()}
MARKER_NAME = "xmm_dataset.json"
TELESCOP, INSTRUME = "XMM", "EPN"
ARCMIN2_PER_DEG2 = 3600.0


@dataclass
class XMMSimConfig:
    """Simulation parameters. Angles in arcsec unless the name says otherwise; rates in counts/s
    (0.5-2 keV); densities per deg^2 above the minimum rate; exposures in ks."""

    # grid and optics
    lr_size: int = 64  # LR image side, pixels (HR side = 2 * lr_size)
    pixel_arcsec: float = 4.1  # LR pixel (EPIC-pn); HR pixels are pixel_arcsec / 2
    psf_fwhm_arcsec: float = 6.0  # LR King PSF; the HR target PSF has r_c / 2
    psf_beta: float = 1.5
    psf_truncation_arcsec: float = 60.0
    # exposures (ks)
    exposure_input_ks: float = 20.0
    exposure_target_ks: float = 50.0
    exposure_sr_ks: float = 100.0
    # pointing and detector
    vignetting_per_arcmin2: float = 0.0027  # V = 1 - c theta^2 (theta in arcmin)
    fov_radius_arcmin: float = 13.75
    max_offaxis_arcmin: float = 8.0  # field centre uniform within this off-axis disc
    ccd_width_arcmin: float = 64 * 4.1 / 60  # 6 CCD columns
    ccd_height_arcmin: float = 200 * 4.1 / 60  # 2 CCD rows
    chip_gap_arcsec: float = 8.0
    aimpoint_arcmin: tuple[float, float] = (2.2, 3.0)  # optical axis rel. to array centre (detector x, y)
    random_roll: bool = True
    random_pointing: bool = True  # random (RA, Dec); else (ra_deg, dec_deg)
    ra_deg: float = 150.1
    dec_deg: float = 2.2
    # AGN
    agn_density_per_deg2: float = 400.0  # N(> agn_ref_rate)
    agn_ref_rate: float = 1.0e-3
    agn_slope: float = 1.5  # N(>S) ∝ S^-slope
    agn_min_rate: float = 1.0e-4
    agn_max_rate: float = 0.3
    # clusters (beta models)
    cluster_density_per_deg2: float = 60.0
    cluster_rate_range: tuple[float, float] = (2.0e-3, 0.1)
    cluster_slope: float = 1.5
    cluster_core_arcsec_range: tuple[float, float] = (10.0, 60.0)  # log-uniform
    cluster_beta_range: tuple[float, float] = (0.55, 0.8)
    cluster_axis_ratio_range: tuple[float, float] = (0.7, 1.0)
    cluster_truncation_rc: float = 5.0
    # galaxies (Sersic)
    galaxy_density_per_deg2: float = 150.0
    galaxy_rate_range: tuple[float, float] = (2.0e-4, 5.0e-3)
    galaxy_slope: float = 1.5
    galaxy_sersic_range: tuple[float, float] = (0.5, 4.0)
    galaxy_re_arcsec_range: tuple[float, float] = (2.0, 12.0)  # log-uniform
    galaxy_axis_ratio_range: tuple[float, float] = (0.3, 1.0)
    galaxy_truncation_re: float = 5.0
    extended_margin_arcsec: float = 120.0  # extended sources are drawn this far outside the field
    # backgrounds (counts/s/arcmin^2)
    cosmic_bkg_rate: float = 3.0e-3  # vignetted
    cosmic_bkg_modulation: float = 0.1  # fractional amplitude of the large-scale modulation
    cosmic_bkg_scale_arcmin: float = 8.0  # shortest wavelength of the modulation
    particle_bkg_rate: float = 1.5e-3  # not vignetted, not PSF-convolved
    # output
    write_expected: bool = False  # add 'EXPECTED' and 'BACKGROUND' (expected counts) HDUs
    # --- options added after v1 (written to the dataset marker / hash only when not at their default) ---
    detector_layout: str = "ccd_array"  # 'ccd_array' (analytic 2 x 6 CCDs, random roll) | 'epn_detxy' (module doc)
    target_probabilities: tuple[float, float, float] = (0.0, 0.0, 0.0)  # P(cluster), P(snr), P(point) per field
    target_offset_arcmin: float = 1.0  # rms scatter of the target about the aimpoint, per axis
    target_cluster_rate_range: tuple[float, float] = (5.0, 150.0)  # counts/s, log-uniform
    target_cluster_core_arcsec_range: tuple[float, float] = (30.0, 240.0)  # log-uniform
    target_cluster_beta_range: tuple[float, float] = (0.5, 0.8)
    target_snr_rate_range: tuple[float, float] = (3.0, 60.0)  # counts/s, log-uniform
    target_snr_radius_arcmin_range: tuple[float, float] = (2.0, 12.0)  # outer radius, log-uniform
    target_snr_shell_fraction_range: tuple[float, float] = (0.1, 0.35)  # shell thickness / outer radius
    target_snr_filament_arcsec: float = 15.0  # correlation length of the filamentary texture
    target_snr_filament_sigma: float = 1.0  # log-normal width of the texture (0: smooth shell)
    target_point_rate_range: tuple[float, float] = (1.0, 10.0)  # counts/s, log-uniform
    oot_fraction: float = 0.0  # out-of-time events ('epn_detxy' only): 0.063 in pn full-frame mode
    flat_exposure: bool = False  # EXPOSURE HDU = T x CCD mask (no vignetting, no FOV), as the real images are used

    # derived quantities -------------------------------------------------------------------------
    @property
    def hr_size(self) -> int:
        return HR_FACTOR * self.lr_size

    @property
    def hr_pixel_arcsec(self) -> float:
        return self.pixel_arcsec / HR_FACTOR

    @property
    def psf_lr(self) -> KingPSF:
        return KingPSF.from_fwhm(self.psf_fwhm_arcsec, self.psf_beta, self.psf_truncation_arcsec)

    @property
    def psf_hr(self) -> KingPSF:
        return self.psf_lr.narrower(HR_FACTOR)

    @property
    def margin_lr(self) -> int:
        """LR pixels around the field within which sources still send PSF light into it."""
        return math.ceil(self.psf_truncation_arcsec / self.pixel_arcsec) + 1

    def exposure_ks(self, product: str) -> float:
        return {"input": self.exposure_input_ks, "target": self.exposure_target_ks, "sr": self.exposure_sr_ks}[product]

    def to_json(self) -> dict:
        """The fields as JSON; the options added after v1 only when they differ from their defaults, so the
        marker and the folder hash of a dataset simulated before they existed stay valid."""
        d = json.loads(json.dumps(asdict(self)))
        defaults = json.loads(json.dumps(asdict(XMMSimConfig())))
        for name in POST_V1_FIELDS:
            if d[name] == defaults[name]:
                del d[name]
        return d

    @property
    def has_targets(self) -> bool:
        return sum(self.target_probabilities) > 0

    def __post_init__(self) -> None:
        if self.detector_layout not in DETECTOR_LAYOUTS:
            raise ValueError(f"detector_layout={self.detector_layout!r}; expected one of {DETECTOR_LAYOUTS}")
        if self.detector_layout == "epn_detxy" and abs(self.pixel_arcsec - EPN_DETXY_PIXEL_ARCSEC) > 1e-9:
            raise ValueError(
                f"detector_layout='epn_detxy' is the EPIC-pn mask on {EPN_DETXY_PIXEL_ARCSEC}\" DETX/DETY pixels "
                f"(SAS binning 80); got pixel_arcsec={self.pixel_arcsec}"
            )
        if self.oot_fraction and self.detector_layout != "epn_detxy":
            raise ValueError("oot_fraction needs detector_layout='epn_detxy' (readout columns along the image rows)")
        p = self.target_probabilities
        if len(p) != 3 or min(p) < 0 or sum(p) > 1 + 1e-12:
            raise ValueError(
                f"target_probabilities={p}: expected 3 probabilities (cluster, snr, point) summing to <= 1"
            )

    @classmethod
    def from_json(cls, d: Mapping) -> XMMSimConfig:
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name in d:
                v = d[f.name]
                # lists (JSON) and Hydra's ListConfig become tuples
                kw[f.name] = tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
        return cls(**kw)


POST_V1_FIELDS = (
    "detector_layout",
    "target_probabilities",
    "target_offset_arcmin",
    "target_cluster_rate_range",
    "target_cluster_core_arcsec_range",
    "target_cluster_beta_range",
    "target_snr_rate_range",
    "target_snr_radius_arcmin_range",
    "target_snr_shell_fraction_range",
    "target_snr_filament_arcsec",
    "target_snr_filament_sigma",
    "target_point_rate_range",
    "oot_fraction",
    "flat_exposure",
)
DETECTOR_LAYOUTS = ("ccd_array", "epn_detxy")

# EPIC-pn exposed pixels of the real SAS images (DETX/DETY binned by 80: 4.0 arcsec, 411 rows x 403 columns), the
# majority vote of the masks estimated from the six whole observations of ../shared/data/xmm_real (module doc).
# Inclusive 0-based (first, last) pixel ranges; rows count along DETY (image axis 0), columns along DETX.
EPN_DETXY_PIXEL_ARCSEC = 4.0
EPN_DETXY_SHAPE = (411, 403)
EPN_DETXY_DEAD_ROWS = ((0, 10), (204, 206), (400, 410))
EPN_DETXY_DEAD_COLUMNS = {  # per band of 6 CCDs: (first row, last row) -> dead column ranges
    (11, 203): ((65, 67), (93, 94), (129, 134), (151, 153), (190, 192), (195, 202), (235, 237), (266, 269),
                (334, 336), (402, 402)),
    (207, 399): ((65, 67), (132, 134), (180, 181), (200, 202), (267, 269), (271, 273), (289, 291), (323, 325),
                 (334, 336), (370, 371), (402, 402)),
}  # fmt: skip


def epn_detxy_mask(size: int) -> np.ndarray:
    """Exposed pixels (bool [size, size]) of the EPIC-pn DETX/DETY mask, the 411 x 403 mask centred in the
    square (offsets floor((size - 411) / 2), floor((size - 403) / 2)); pixels beyond it are unexposed."""
    h, w = EPN_DETXY_SHAPE
    m = np.ones((h, w), bool)
    for r0, r1 in EPN_DETXY_DEAD_ROWS:
        m[r0 : r1 + 1] = False
    for (b0, b1), cols in EPN_DETXY_DEAD_COLUMNS.items():
        for c0, c1 in cols:
            m[b0 : b1 + 1, c0 : c1 + 1] = False
    out = np.zeros((size, size), bool)
    oy, ox = (size - h) // 2, (size - w) // 2
    ys, xs = slice(max(oy, 0), min(oy + h, size)), slice(max(ox, 0), min(ox + w, size))
    out[ys, xs] = m[ys.start - oy : ys.stop - oy, xs.start - ox : xs.stop - ox]
    return out


PRODUCTS = ("input", "target", "sr")  # grid: LR, LR, HR


def product_tags(config: XMMSimConfig) -> dict[str, str]:
    """Folder names per product, e.g. {'input': 'input_20ks', 'target': 'target_50ks', 'sr': 'target_100ks_x2'}."""
    return {
        "input": f"input_{config.exposure_input_ks:g}ks",
        "target": f"target_{config.exposure_target_ks:g}ks",
        "sr": f"target_{config.exposure_sr_ks:g}ks_x{HR_FACTOR}",
        "sources": "sources",
    }


def field_name(index: int) -> str:
    return f"field_{index:06d}"


# ------------------------------------------------------------------------------------------------
# random streams


def field_streams(seed: int, split: str, index: int) -> dict[str, np.random.Generator]:
    """Independent generators for the sky and each product's noise of field ``index`` of ``split``."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(split.encode()), int(index)])
    sky, *noise = ss.spawn(1 + len(PRODUCTS))
    out = {"sky": np.random.default_rng(sky)}
    out.update({p: np.random.default_rng(s) for p, s in zip(PRODUCTS, noise)})
    return out


# ------------------------------------------------------------------------------------------------
# sky description


@dataclass
class SourceCatalog:
    """True sources. Positions in 0-based LR pixel coordinates; ``extent_arcsec`` is r_c (cluster),
    r_e (galaxy), the outer radius R (snr) or 0 (point); ``shape`` is beta (cluster), Sersic n (galaxy), the
    shell thickness / R (snr) or 0."""

    kind: np.ndarray  # int8 codes, see KIND_CODES
    x_lr: np.ndarray
    y_lr: np.ndarray
    rate: np.ndarray  # counts/s (total within truncation for extended sources)
    extent_arcsec: np.ndarray
    shape: np.ndarray
    axis_ratio: np.ndarray
    pa_deg: np.ndarray  # major-axis position angle from the +x pixel axis, degrees

    @classmethod
    def empty(cls) -> SourceCatalog:
        z = np.zeros(0)
        return cls(np.zeros(0, np.int8), z, z, z, z, z, z, z)

    @classmethod
    def concat(cls, parts: list[SourceCatalog]) -> SourceCatalog:
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)})

    def __len__(self) -> int:
        return len(self.rate)

    def select(self, mask: np.ndarray) -> SourceCatalog:
        return SourceCatalog(**{f.name: getattr(self, f.name)[mask] for f in dataclasses.fields(self)})

    @property
    def x_hr(self) -> np.ndarray:
        return HR_FACTOR * self.x_lr + (HR_FACTOR - 1) / 2

    @property
    def y_hr(self) -> np.ndarray:
        return HR_FACTOR * self.y_lr + (HR_FACTOR - 1) / 2

    def in_field(self, lr_size: int) -> np.ndarray:
        lo, hi = -0.5, lr_size - 0.5
        return (self.x_lr >= lo) & (self.x_lr < hi) & (self.y_lr >= lo) & (self.y_lr < hi)


@dataclass
class FieldSky:
    """Everything random about one field except the Poisson noise."""

    ra_deg: float
    dec_deg: float
    axis_offset_arcmin: tuple[float, float]  # optical axis relative to the field centre (pixel x, y axes)
    roll_deg: float  # detector rotation relative to the pixel axes
    sources: SourceCatalog
    cosmic_modes: np.ndarray  # [m, 4]: kx, ky (1/arcmin), phase, amplitude
    texture_seed: int = 0  # seed of the supernova-remnant textures (source i uses texture_seed + i)


def snap_to_lattice(x_lr: np.ndarray) -> np.ndarray:
    """Nearest-below point of the source lattice (centres of 1/16-LR-pixel cells)."""
    f = np.floor((np.asarray(x_lr) + 0.5) * LR_PHASES)
    return -0.5 + (f + 0.5) / LR_PHASES


def _power_law_rates(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float) -> np.ndarray:
    """Draws from N(>S) ∝ S^-slope truncated to [lo, hi] (inverse CDF)."""
    u = rng.uniform(size=n)
    return lo * (1.0 - u * (1.0 - (lo / hi) ** slope)) ** (-1.0 / slope)


def _expected_number(density_per_deg2_above_lo: float, lo: float, hi: float, slope: float, area_deg2: float) -> float:
    return density_per_deg2_above_lo * (1.0 - (lo / hi) ** slope) * area_deg2


def _draw_positions(rng: np.random.Generator, n: int, lr_size: int, margin_lr: float) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = -0.5 - margin_lr, lr_size - 0.5 + margin_lr
    return snap_to_lattice(rng.uniform(lo, hi, n)), snap_to_lattice(rng.uniform(lo, hi, n))


def draw_field(config: XMMSimConfig, rng: np.random.Generator) -> FieldSky:
    """Draw pointing, roll, sources and background modulation of one field."""
    c = config
    pix_deg = c.pixel_arcsec / 3600.0
    if c.random_pointing:
        ra = float(rng.uniform(0.0, 360.0))
        dec = float(np.degrees(np.arcsin(rng.uniform(-0.85, 0.85))))  # uniform on the sphere, |Dec| < 58 deg
    else:
        ra, dec = c.ra_deg, c.dec_deg
    r = c.max_offaxis_arcmin * math.sqrt(rng.uniform())
    phi = rng.uniform(0, 2 * math.pi)
    axis = (float(r * math.cos(phi)), float(r * math.sin(phi)))
    roll = float(rng.uniform(0.0, 360.0)) if c.random_roll else 0.0

    parts = []
    # AGN: drawn over the field plus the PSF margin
    m = c.margin_lr
    area = ((c.lr_size + 2 * m) * pix_deg) ** 2
    dens_lo = c.agn_density_per_deg2 * (c.agn_min_rate / c.agn_ref_rate) ** (-c.agn_slope)
    n = rng.poisson(_expected_number(dens_lo, c.agn_min_rate, c.agn_max_rate, c.agn_slope, area))
    x, y = _draw_positions(rng, n, c.lr_size, m)
    z = np.zeros(n)
    parts.append(
        SourceCatalog(
            np.full(n, KIND_CODES["point"], np.int8),
            x,
            y,
            _power_law_rates(rng, n, c.agn_min_rate, c.agn_max_rate, c.agn_slope),
            z,
            z,
            z + 1,
            z,
        )
    )
    # extended sources: drawn further out since their light reaches far
    me = m + c.extended_margin_arcsec / c.pixel_arcsec
    area_e = ((c.lr_size + 2 * me) * pix_deg) ** 2
    lo, hi = c.cluster_rate_range
    n = rng.poisson(_expected_number(c.cluster_density_per_deg2, lo, hi, c.cluster_slope, area_e))
    x, y = _draw_positions(rng, n, c.lr_size, me)
    parts.append(
        SourceCatalog(
            np.full(n, KIND_CODES["cluster"], np.int8),
            x,
            y,
            _power_law_rates(rng, n, lo, hi, c.cluster_slope),
            np.exp(rng.uniform(*np.log(c.cluster_core_arcsec_range), n)),
            rng.uniform(*c.cluster_beta_range, n),
            rng.uniform(*c.cluster_axis_ratio_range, n),
            rng.uniform(0, 180, n),
        )
    )
    lo, hi = c.galaxy_rate_range
    n = rng.poisson(_expected_number(c.galaxy_density_per_deg2, lo, hi, c.galaxy_slope, area_e))
    x, y = _draw_positions(rng, n, c.lr_size, me)
    parts.append(
        SourceCatalog(
            np.full(n, KIND_CODES["galaxy"], np.int8),
            x,
            y,
            _power_law_rates(rng, n, lo, hi, c.galaxy_slope),
            np.exp(rng.uniform(*np.log(c.galaxy_re_arcsec_range), n)),
            rng.uniform(*c.galaxy_sersic_range, n),
            rng.uniform(*c.galaxy_axis_ratio_range, n),
            rng.uniform(0, 180, n),
        )
    )

    # cosmic background modulation: 3 plane waves with wavelengths >= cosmic_bkg_scale_arcmin
    n_modes = 3
    kmag = rng.uniform(0.25, 1.0, n_modes) / c.cosmic_bkg_scale_arcmin
    kang = rng.uniform(0, 2 * math.pi, n_modes)
    amp = rng.uniform(0.5, 1.0, n_modes)
    amp = amp / amp.sum()  # |modulation| <= 1 before scaling
    modes = np.stack([kmag * np.cos(kang), kmag * np.sin(kang), rng.uniform(0, 2 * math.pi, n_modes), amp], 1)
    # everything below draws only with the post-v1 options on, so v1 fields stay bit-identical
    if c.detector_layout == "epn_detxy":  # detector frame: no roll, field centre = array centre
        axis, roll = (float(c.aimpoint_arcmin[0]), float(c.aimpoint_arcmin[1])), 0.0
    texture_seed = 0
    if c.has_targets:
        parts.append(draw_target(c, rng, axis))
        texture_seed = int(rng.integers(0, 2**62))
    return FieldSky(ra, dec, axis, roll, SourceCatalog.concat(parts), modes, texture_seed)


def _log_uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(np.exp(rng.uniform(math.log(lo_hi[0]), math.log(lo_hi[1]))))


def draw_target(config: XMMSimConfig, rng: np.random.Generator, axis_arcmin: tuple[float, float]) -> SourceCatalog:
    """The observer's target of one field (module doc): none, a cluster, a supernova remnant or a point source
    with probabilities ``target_probabilities``, at the optical axis + N(0, target_offset_arcmin^2) per axis."""
    c = config
    p_cluster, p_snr, p_point = c.target_probabilities
    u = rng.uniform()
    centre = (c.lr_size - 1) / 2.0
    off = rng.normal(0.0, c.target_offset_arcmin, 2) * 60.0 / c.pixel_arcsec
    x = snap_to_lattice(np.array([centre + axis_arcmin[0] * 60.0 / c.pixel_arcsec + off[0]]))
    y = snap_to_lattice(np.array([centre + axis_arcmin[1] * 60.0 / c.pixel_arcsec + off[1]]))
    one = np.ones(1)
    if u < p_cluster:
        kind, rate = "cluster", _log_uniform(rng, c.target_cluster_rate_range)
        extent = _log_uniform(rng, c.target_cluster_core_arcsec_range)
        shape = float(rng.uniform(*c.target_cluster_beta_range))
        q, pa = float(rng.uniform(*c.cluster_axis_ratio_range)), float(rng.uniform(0, 180))
    elif u < p_cluster + p_snr:
        kind, rate = "snr", _log_uniform(rng, c.target_snr_rate_range)
        extent = 60.0 * _log_uniform(rng, c.target_snr_radius_arcmin_range)
        shape = float(rng.uniform(*c.target_snr_shell_fraction_range))
        q, pa = float(rng.uniform(0.85, 1.0)), float(rng.uniform(0, 180))
    elif u < p_cluster + p_snr + p_point:
        kind, rate, extent, shape, q, pa = "point", _log_uniform(rng, c.target_point_rate_range), 0.0, 0.0, 1.0, 0.0
    else:
        return SourceCatalog.empty()
    return SourceCatalog(
        np.full(1, KIND_CODES[kind], np.int8), x, y, rate * one, extent * one, shape * one, q * one, pa * one
    )


# ------------------------------------------------------------------------------------------------
# WCS


def lr_wcs(config: XMMSimConfig, sky: FieldSky) -> WCS:
    """TAN WCS of the LR grid, north up / east left, CRVAL at the field centre."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.crval = [sky.ra_deg, sky.dec_deg]
    w.wcs.crpix = [(config.lr_size + 1) / 2.0, (config.lr_size + 1) / 2.0]
    w.wcs.cdelt = [-config.pixel_arcsec / 3600.0, config.pixel_arcsec / 3600.0]
    w.wcs.radesys = "ICRS"
    w.pixel_shape = (config.lr_size, config.lr_size)
    w.wcs.set()
    return w


def hr_wcs(config: XMMSimConfig, sky: FieldSky) -> WCS:
    return scaled_wcs(lr_wcs(config, sky), HR_FACTOR)


# ------------------------------------------------------------------------------------------------
# exposure


def _subsample_offsets_arcmin(config: XMMSimConfig) -> tuple[np.ndarray, np.ndarray]:
    """Sky offsets (arcmin, pixel x and y axes) from the field centre of the exposure sub-samples."""
    n = config.lr_size * SUBSAMPLE_LR
    x_lr = -0.5 + (np.arange(n) + 0.5) / SUBSAMPLE_LR
    off = (x_lr - (config.lr_size - 1) / 2.0) * config.pixel_arcsec / 60.0
    return off[None, :], off[:, None]  # u (x) varies along columns, v (y) along rows


def vignetting(theta_arcmin: np.ndarray, config: XMMSimConfig) -> np.ndarray:
    """Effective-area fraction at off-axis angle theta (arcmin): max(0, 1 - c theta^2)."""
    return np.clip(1.0 - config.vignetting_per_arcmin2 * np.asarray(theta_arcmin) ** 2, 0.0, None)


def detector_coordinates(config: XMMSimConfig, sky: FieldSky, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, ...]:
    """(theta, x_det, y_det) in arcmin for sky offsets (u, v) from the field centre; detector axes are
    rotated by the roll and centred on the CCD array."""
    du, dv = u - sky.axis_offset_arcmin[0], v - sky.axis_offset_arcmin[1]
    theta = np.hypot(du, dv)
    cr, sr = math.cos(math.radians(sky.roll_deg)), math.sin(math.radians(sky.roll_deg))
    xd = cr * du + sr * dv + config.aimpoint_arcmin[0]
    yd = -sr * du + cr * dv + config.aimpoint_arcmin[1]
    return theta, xd, yd


def live_mask_at(config: XMMSimConfig, theta: np.ndarray, xd: np.ndarray, yd: np.ndarray) -> np.ndarray:
    """True where a sky point falls on a live CCD inside the FOV (not in a chip gap)."""
    w, h, g = config.ccd_width_arcmin, config.ccd_height_arcmin, config.chip_gap_arcsec / 60.0
    live = (theta <= config.fov_radius_arcmin) & (np.abs(xd) < 3 * w) & (np.abs(yd) < h)
    for k in range(-2, 3):  # 5 boundaries between the 6 CCD columns
        live &= np.abs(xd - k * w) >= g / 2
    live &= np.abs(yd) >= g / 2  # boundary between the 2 CCD rows
    return live


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    h, w = a.shape
    return a.reshape(h // f, f, w // f, f).mean(axis=(1, 3))


def _block_sum(a: np.ndarray, f: int) -> np.ndarray:
    h, w = a.shape[-2:]
    return a.reshape(*a.shape[:-2], h // f, f, w // f, f).sum(axis=(-3, -1))


@dataclass
class ExposureGeometry:
    """Per-pixel exposure factors (dimensionless, per unit exposure time) on both grids."""

    vign_live_lr: np.ndarray  # mean over the pixel of V x live
    vign_live_hr: np.ndarray
    live_lr: np.ndarray  # live fraction of the pixel (for the particle background)
    live_hr: np.ndarray


def exposure_geometry(config: XMMSimConfig, sky: FieldSky) -> ExposureGeometry:
    """Sub-sampled exposure factors. 'ccd_array': sky and particles both need a live CCD inside the FOV circle
    about the optical axis. 'epn_detxy': the real pn mask (pixel-exact: no roll); sky photons also need the
    FOV circle about the array centre, particles do not (they hit the whole CCD area)."""
    u, v = _subsample_offsets_arcmin(config)
    theta, xd, yd = detector_coordinates(config, sky, u, v)
    if config.detector_layout == "epn_detxy":
        ccd = np.kron(epn_detxy_mask(config.lr_size), np.ones((SUBSAMPLE_LR, SUBSAMPLE_LR))).astype(np.float64)
        fov = np.hypot(xd, yd) <= config.fov_radius_arcmin
        vl = vignetting(theta, config) * ccd * fov
        live = ccd
    else:
        live = live_mask_at(config, theta, xd, yd).astype(np.float64)
        vl = vignetting(theta, config) * live
    f_hr = SUBSAMPLE_LR // HR_FACTOR
    return ExposureGeometry(
        _block_mean(vl, SUBSAMPLE_LR), _block_mean(vl, f_hr), _block_mean(live, SUBSAMPLE_LR), _block_mean(live, f_hr)
    )


def exposure_map(
    config: XMMSimConfig, sky: FieldSky, product: str, geometry: ExposureGeometry | None = None
) -> np.ndarray:
    """Exposure map in seconds (T x vignetting x live fraction; with ``flat_exposure`` T x live fraction) of
    ``product`` ('input', 'target', 'sr')."""
    g = geometry or exposure_geometry(config, sky)
    t = config.exposure_ks(product) * 1e3
    if config.flat_exposure:  # T x CCD mask: what the real SAS images without an exposure map are used with
        return t * (g.live_hr if product == "sr" else g.live_lr)
    return t * (g.vign_live_hr if product == "sr" else g.vign_live_lr)


# ------------------------------------------------------------------------------------------------
# rendering


def _add_stamp(canvas: np.ndarray, stamp: np.ndarray, top: int, left: int, weight: float) -> None:
    """canvas[top:top+n, left:left+n] += weight * stamp, clipped to the canvas."""
    n0, n1 = stamp.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + n0, canvas.shape[0]), min(left + n1, canvas.shape[1])
    if y0 < y1 and x0 < x1:
        canvas[y0:y1, x0:x1] += weight * stamp[y0 - top : y1 - top, x0 - left : x1 - left]


def render_points(config: XMMSimConfig, sources: SourceCatalog, grid: str) -> np.ndarray:
    """Rate image (counts/s/pixel) of the point sources on the 'lr' or 'hr' grid (PSF-convolved)."""
    hr = grid == "hr"
    size = config.hr_size if hr else config.lr_size
    pix = config.hr_pixel_arcsec if hr else config.pixel_arcsec
    phases = LR_PHASES // HR_FACTOR if hr else LR_PHASES
    psf = config.psf_hr if hr else config.psf_lr
    stamps = phase_stamps(psf, pix, phases)
    half = stamps.shape[-1] // 2
    img = np.zeros((size, size))
    pts = np.flatnonzero(sources.kind == KIND_CODES["point"])
    # the fine lattice index is the same on both grids: x_hr = -0.5 + (f + 0.5) / 8 with x_lr = -0.5 + (f + 0.5) / 16
    fx = np.floor((sources.x_lr[pts] + 0.5) * LR_PHASES).astype(np.int64)  # positions off the lattice
    fy = np.floor((sources.y_lr[pts] + 0.5) * LR_PHASES).astype(np.int64)  # use their lattice cell
    for i, jx, jy in zip(pts, fx, fy):
        px, phx = divmod(int(jx), phases)
        py, phy = divmod(int(jy), phases)
        _add_stamp(img, stamps[phy, phx], py - half, px - half, float(sources.rate[i]))
    return img


def _extended_profile(kind: int, r_ell_arcsec: np.ndarray, extent: float, shape: float, trunc: float) -> np.ndarray:
    """Unnormalised surface brightness of a cluster (beta model), galaxy (Sersic) or supernova-remnant shell
    (projected path length through the shell, ``extent`` = outer radius) at elliptical radius r."""
    x = r_ell_arcsec / extent
    if kind == KIND_CODES["snr"]:  # projected uniform shell between 1 - shape and 1 (units of the outer radius)
        inner = 1.0 - shape
        return np.sqrt(np.clip(1.0 - x**2, 0.0, None)) - np.sqrt(np.clip(inner**2 - x**2, 0.0, None))
    if kind == KIND_CODES["cluster"]:
        prof = (1.0 + x**2) ** (-3.0 * shape + 0.5)
    else:
        b_n = special.gammaincinv(2.0 * shape, 0.5)  # half-light radius definition of b_n
        prof = np.exp(-b_n * (x ** (1.0 / shape) - 1.0))
    return np.where(x <= trunc, prof, 0.0)


def extended_stamp(
    config: XMMSimConfig,
    sources: SourceCatalog,
    i: int,
    ext_pixel_arcsec: float,
    x_ext: float,
    y_ext: float,
    texture_seed: int = 0,
) -> tuple[np.ndarray, int, int]:
    """Normalised (sum = rate) intrinsic image of extended source ``i`` on the extended grid.

    (x_ext, y_ext): source centre in extended-grid pixel coordinates (0-based). Returns the stamp and
    its top/left pixel. A supernova remnant gets its filamentary texture from ``texture_seed + i``.
    """
    kind = int(sources.kind[i])
    extent, shape, q = float(sources.extent_arcsec[i]), float(sources.shape[i]), float(sources.axis_ratio[i])
    trunc = {KIND_CODES["cluster"]: config.cluster_truncation_rc, KIND_CODES["snr"]: 1.0}.get(
        kind, config.galaxy_truncation_re
    )
    rmax_pix = trunc * extent / ext_pixel_arcsec
    cy, cx = round(y_ext), round(x_ext)
    half = math.ceil(rmax_pix) + 1
    # sub-samples per pixel: cluster cores (>= 10 arcsec) are smooth at the 1 arcsec grid; small Sersic
    # cores are cuspy, so they get 4x4 (2x2 for large ones)
    if kind == KIND_CODES["galaxy"]:
        os_ = 4 if extent < 4 * ext_pixel_arcsec else 2
    else:
        os_ = 1 if extent >= 4 * ext_pixel_arcsec else 2
    n = 2 * half + 1
    sub = (np.arange(n * os_) + 0.5) / os_ - half - 0.5
    dy = (sub + cy - y_ext)[:, None] * ext_pixel_arcsec
    dx = (sub + cx - x_ext)[None, :] * ext_pixel_arcsec
    pa = math.radians(float(sources.pa_deg[i]))
    major = dx * math.cos(pa) + dy * math.sin(pa)
    minor = -dx * math.sin(pa) + dy * math.cos(pa)
    r_ell = np.sqrt(major**2 + (minor / q) ** 2)
    img = _extended_profile(kind, r_ell, extent, shape, trunc).reshape(n, os_, n, os_).sum(axis=(1, 3))
    if kind == KIND_CODES["snr"] and config.target_snr_filament_sigma > 0:
        img = img * snr_texture(config, img.shape, ext_pixel_arcsec, texture_seed + i)
    total = img.sum()
    return img * (float(sources.rate[i]) / total), cy - half, cx - half


def snr_texture(config: XMMSimConfig, shape: tuple[int, int], pixel_arcsec: float, seed: int) -> np.ndarray:
    """Filamentary log-normal texture exp(s g - s^2 / 2) (mean 1): g is white noise smoothed by a Gaussian of
    ``target_snr_filament_arcsec`` and rescaled to unit variance, s = ``target_snr_filament_sigma``."""
    from scipy import ndimage

    g = ndimage.gaussian_filter(
        np.random.default_rng(seed).standard_normal(shape), config.target_snr_filament_arcsec / pixel_arcsec
    )
    g /= g.std() or 1.0
    s = config.target_snr_filament_sigma
    return np.exp(s * g - 0.5 * s**2)


@lru_cache(maxsize=8)
def _psf_kernel(psf: KingPSF, pixel_arcsec: float) -> np.ndarray:
    return psf.kernel(pixel_arcsec)


def render_extended(
    config: XMMSimConfig, sources: SourceCatalog, texture_seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(LR, HR) rate images (counts/s/pixel) of clusters, galaxies and remnants, each convolved with its PSF."""
    n_lr, n_hr = config.lr_size, config.hr_size
    ext = np.flatnonzero(sources.kind != KIND_CODES["point"])
    if len(ext) == 0:
        return np.zeros((n_lr, n_lr)), np.zeros((n_hr, n_hr))
    m = config.margin_lr
    e_pix = config.pixel_arcsec / EXT_FACTOR
    size = EXT_FACTOR * (n_lr + 2 * m)
    canvas = np.zeros((size, size))
    for i in ext:
        # extended-grid pixel j has its centre at LR coordinate -0.5 - m + (j + 0.5) / EXT_FACTOR
        xe = (sources.x_lr[i] + 0.5 + m) * EXT_FACTOR - 0.5
        ye = (sources.y_lr[i] + 0.5 + m) * EXT_FACTOR - 0.5
        stamp, top, left = extended_stamp(config, sources, int(i), e_pix, xe, ye, texture_seed)
        _add_stamp(canvas, stamp, top, left, 1.0)
    crop = slice(EXT_FACTOR * m, EXT_FACTOR * (m + n_lr))
    out = []
    for psf, f in ((config.psf_lr, EXT_FACTOR), (config.psf_hr, EXT_FACTOR // HR_FACTOR)):
        conv = fftconvolve(canvas, _psf_kernel(psf, e_pix), mode="same")[crop, crop]
        out.append(_block_sum(np.clip(conv, 0.0, None), f))
    return out[0], out[1]


def cosmic_background(config: XMMSimConfig, sky: FieldSky) -> tuple[np.ndarray, np.ndarray]:
    """(LR, HR) cosmic-background rate images (counts/s/pixel, before vignetting); LR = 2x2 sum of HR."""
    n = config.hr_size
    x_hr = np.arange(n)
    off = (x_hr - (n - 1) / 2.0) * config.hr_pixel_arcsec / 60.0  # arcmin from the field centre
    u, v = off[None, :], off[:, None]
    mod = np.zeros((n, n))
    for kx, ky, ph, amp in sky.cosmic_modes:
        mod += amp * np.cos(2 * math.pi * (kx * u + ky * v) + ph)
    pix_area = (config.hr_pixel_arcsec / 60.0) ** 2
    hr = config.cosmic_bkg_rate * pix_area * (1.0 + config.cosmic_bkg_modulation * mod)
    return _block_sum(hr, HR_FACTOR), hr


@dataclass
class ExpectedRates:
    """Noiseless sky rates (counts/s/pixel) on both grids, before exposure; particle rate per pixel."""

    sources_lr: np.ndarray
    sources_hr: np.ndarray
    cosmic_lr: np.ndarray
    cosmic_hr: np.ndarray
    particle_lr: float
    particle_hr: float

    @property
    def sky_lr(self) -> np.ndarray:
        return self.sources_lr + self.cosmic_lr

    @property
    def sky_hr(self) -> np.ndarray:
        return self.sources_hr + self.cosmic_hr


def expected_rates(config: XMMSimConfig, sky: FieldSky) -> ExpectedRates:
    pts_lr = render_points(config, sky.sources, "lr")
    pts_hr = render_points(config, sky.sources, "hr")
    ext_lr, ext_hr = render_extended(config, sky.sources, sky.texture_seed)
    cos_lr, cos_hr = cosmic_background(config, sky)
    part_lr = config.particle_bkg_rate * (config.pixel_arcsec / 60.0) ** 2
    return ExpectedRates(pts_lr + ext_lr, pts_hr + ext_hr, cos_lr, cos_hr, part_lr, part_lr / HR_FACTOR**2)


def out_of_time(sky_counts: np.ndarray, config: XMMSimConfig) -> np.ndarray:
    """Out-of-time events of the EPIC-pn readout ('epn_detxy' layout): photons arriving while a CCD is read out
    are assigned a random row of their CCD column. Returns (1 - f) x the counts + f x each CCD band's column sum
    spread evenly over that band's rows of the column (f = ``oot_fraction``; the image's rows are DETY, the
    readout direction); the total is conserved. Works on the LR or the 2x finer HR grid."""
    f = config.oot_fraction
    if f <= 0:
        return sky_counts
    g = sky_counts.shape[0] // config.lr_size  # 1 (LR) or 2 (HR)
    oy = (config.lr_size - EPN_DETXY_SHAPE[0]) // 2
    out = (1.0 - f) * sky_counts
    for r0, r1 in EPN_DETXY_DEAD_COLUMNS:  # the two CCD bands
        lo, hi = max(g * (r0 + oy), 0), min(g * (r1 + 1 + oy), sky_counts.shape[0])
        if lo < hi:
            out[lo:hi] += f * sky_counts[lo:hi].sum(axis=0, keepdims=True) / (hi - lo)
    return out


def expected_counts(
    config: XMMSimConfig, rates: ExpectedRates, geometry: ExposureGeometry, product: str, background_only: bool = False
) -> np.ndarray:
    """Noiseless expected counts per pixel of ``product``: sky rate x exposure map (+ out-of-time events, see
    :func:`out_of_time`) + particle x T x live."""
    t = config.exposure_ks(product) * 1e3
    if product == "sr":
        sky_rate = rates.cosmic_hr if background_only else rates.sky_hr
        return out_of_time(sky_rate * t * geometry.vign_live_hr, config) + rates.particle_hr * t * geometry.live_hr
    sky_rate = rates.cosmic_lr if background_only else rates.sky_lr
    return out_of_time(sky_rate * t * geometry.vign_live_lr, config) + rates.particle_lr * t * geometry.live_lr


@dataclass
class SimulatedField:
    """One simulated field: sky, geometry, expected counts and Poisson counts for every product."""

    config: XMMSimConfig
    seed: int
    split: str
    index: int
    sky: FieldSky
    geometry: ExposureGeometry
    rates: ExpectedRates
    expected: dict[str, np.ndarray]  # product -> expected counts (float64)
    background: dict[str, np.ndarray]  # product -> expected background counts (cosmic + particle)
    counts: dict[str, np.ndarray]  # product -> Poisson counts (int32)
    exposure: dict[str, np.ndarray]  # product -> exposure map (s, float64)


def simulate_field(config: XMMSimConfig, seed: int, split: str, index: int) -> SimulatedField:
    """Simulate field ``index`` of ``split``; depends only on (config, seed, split, index)."""
    streams = field_streams(seed, split, index)
    sky = draw_field(config, streams["sky"])
    geom = exposure_geometry(config, sky)
    rates = expected_rates(config, sky)
    expected, background, counts, exposure = {}, {}, {}, {}
    for p in PRODUCTS:
        expected[p] = expected_counts(config, rates, geom, p)
        background[p] = expected_counts(config, rates, geom, p, background_only=True)
        counts[p] = streams[p].poisson(expected[p]).astype(np.int32)
        exposure[p] = exposure_map(config, sky, p, geom)
    return SimulatedField(config, seed, split, index, sky, geom, rates, expected, background, counts, exposure)


# ------------------------------------------------------------------------------------------------
# FITS output


def _common_cards(hdr: fits.Header, sim: SimulatedField) -> None:
    c = sim.config
    hdr["TELESCOP"] = (TELESCOP, "simulated XMM-Newton-like data")
    hdr["INSTRUME"] = (INSTRUME, "EPIC-pn-like")
    hdr["ENERG_LO"] = (0.5, "[keV] band lower edge")
    hdr["ENERG_HI"] = (2.0, "[keV] band upper edge")
    hdr["SIMSEED"] = (int(sim.seed), "simulation seed")
    hdr["SIMSPLIT"] = (sim.split, "dataset split")
    hdr["SIMFIELD"] = (int(sim.index), "field index within the split")
    hdr["SIMVERS"] = (XMM_SIM_VERSION, "lit_sr.domains.xmm.sim format version")
    hdr["ROLL"] = (round(sim.sky.roll_deg, 6), "[deg] detector roll vs pixel axes")
    hdr["AXOFFX"] = (round(sim.sky.axis_offset_arcmin[0], 6), "[arcmin] optical axis - field centre, x")
    hdr["AXOFFY"] = (round(sim.sky.axis_offset_arcmin[1], 6), "[arcmin] optical axis - field centre, y")
    hdr["BKGCXB"] = (c.cosmic_bkg_rate, "[ct/s/arcmin2] mean cosmic bkg (vignetted)")
    hdr["BKGPART"] = (c.particle_bkg_rate, "[ct/s/arcmin2] particle bkg (not vignetted)")
    hdr.add_history(
        f"Simulated by lit_sr.domains.xmm.sim v{XMM_SIM_VERSION}: seed={sim.seed} split={sim.split} field={sim.index}"
    )
    hdr.add_comment("SIMULATED DATA - not an XMM-Newton observation.")


def _image_hdus(sim: SimulatedField, product: str, wcs_header: fits.Header, common: fits.Header) -> fits.HDUList:
    c = sim.config
    psf = c.psf_hr if product == "sr" else c.psf_lr
    hdr = wcs_header.copy()
    hdr["BUNIT"] = "count"
    hdr["EXPOSURE"] = (c.exposure_ks(product) * 1e3, "[s] nominal exposure time")
    hdr["PSFFWHM"] = (round(psf.fwhm_arcsec, 6), "[arcsec] King PSF FWHM")
    hdr["PSFBETA"] = (psf.beta, "King PSF beta")
    hdr.extend(common)
    ehdr = wcs_header.copy()
    ehdr["BUNIT"] = "s"
    hdus = [
        fits.PrimaryHDU(sim.counts[product].astype(np.int32), header=hdr),
        fits.ImageHDU(sim.exposure[product].astype(np.float32), header=ehdr, name=EXPOSURE_EXTNAME),
    ]
    if c.write_expected:
        for name, arr in (("EXPECTED", sim.expected[product]), ("BACKGROUND", sim.background[product])):
            h = wcs_header.copy()
            h["BUNIT"] = "count"
            hdus.append(fits.ImageHDU(arr.astype(np.float32), header=h, name=name))
    return fits.HDUList(hdus)


def source_table_hdus(sim: SimulatedField, common: fits.Header | None = None) -> fits.HDUList:
    """True source list as a binary table 'SOURCES' (positions 0-based, see module docstring)."""
    c, s = sim.config, sim.sky.sources
    ra, dec = lr_wcs(c, sim.sky).pixel_to_world_values(s.x_lr, s.y_lr)
    columns = [  # (name, FITS-compatible dtype, unit, values); a structured array is ~3x faster than fits.Column
        ("SRC_ID", ">i4", "", np.arange(len(s))),
        ("KIND", "S7", "", np.array([KIND_NAMES[int(k)] for k in s.kind], dtype="S7")),
        ("RA", ">f8", "deg", ra),
        ("DEC", ">f8", "deg", dec),
        ("X_LR", ">f8", "pix", s.x_lr),
        ("Y_LR", ">f8", "pix", s.y_lr),
        ("X_HR", ">f8", "pix", s.x_hr),
        ("Y_HR", ">f8", "pix", s.y_hr),
        ("RATE", ">f8", "count/s", s.rate),
        ("EXTENT", ">f4", "arcsec", s.extent_arcsec),
        ("SHAPE", ">f4", "", s.shape),
        ("AXRATIO", ">f4", "", s.axis_ratio),
        ("PA", ">f4", "deg", s.pa_deg),
        ("IN_FIELD", "?", "", s.in_field(c.lr_size)),
    ]
    rec = np.zeros(len(s), dtype=[(n, t) for n, t, _, _ in columns])
    for n, _, _, v in columns:
        rec[n] = v
    table = fits.BinTableHDU(rec, name="SOURCES")
    for i, (_, _, unit, _) in enumerate(columns, start=1):
        if unit:
            table.header[f"TUNIT{i}"] = unit
    th = table.header
    th["PIXORIG"] = (0, "X/Y are 0-based, pixel centres at integers")
    th["EXTDEF"] = ("r_c (cluster), r_e (galaxy), R_out (snr), 0 (point)", "EXTENT")
    th["SHPDEF"] = ("beta (cluster), Sersic n (galaxy), f (snr), 0 (point)", "SHAPE")
    th["RATEDEF"] = ("total 0.5-2 keV rate within truncation", "meaning of RATE")
    primary = fits.PrimaryHDU()
    if common is None:
        common = fits.Header()
        _common_cards(common, sim)
    primary.header.extend(common)
    return fits.HDUList([primary, table])


def write_field(out_root: Path, sim: SimulatedField) -> None:
    """Write the three images and the source list of one field under ``out_root/<tag>/``."""
    tags = product_tags(sim.config)
    name = field_name(sim.index) + ".fits"
    common = fits.Header()
    _common_cards(common, sim)  # built once per field: astropy card creation dominates write time
    wcs_headers = {"lr": lr_wcs(sim.config, sim.sky).to_header(), "hr": hr_wcs(sim.config, sim.sky).to_header()}
    for product in PRODUCTS:
        hdus = _image_hdus(sim, product, wcs_headers["hr" if product == "sr" else "lr"], common)
        hdus.writeto(out_root / tags[product] / name)
    source_table_hdus(sim, common).writeto(out_root / tags["sources"] / name)


# ------------------------------------------------------------------------------------------------
# dataset


class _Progress:
    """rich progress bar on a TTY, else one plain line every ~10 %."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.t0 = total, 0, time.perf_counter()
        self.enabled = enabled and total > 0
        self.next_report = 0.1
        self.bar = None
        if self.enabled and sys.stdout.isatty():
            from rich.progress import Progress

            self.bar = Progress(transient=False)
            self.bar.start()
            self.task = self.bar.add_task("simulating XMM fields", total=total)

    def step(self) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.advance(self.task)
        elif self.done / self.total >= self.next_report - 1e-9 or self.done == self.total:
            dt = time.perf_counter() - self.t0
            print(
                f"xmm sim: {self.done}/{self.total} fields ({100 * self.done / self.total:.0f} %), {dt:.1f} s",
                flush=True,
            )
            while self.next_report <= self.done / self.total + 1e-9:
                self.next_report += 0.1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _marker(root: Path) -> Path:
    return Path(root) / MARKER_NAME


def _read_marker(root: Path) -> dict | None:
    try:
        with open(_marker(root)) as fh:
            meta = json.load(fh)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("complete") is True else None


def is_complete_xmm_dataset(
    root: str | Path,
    config: XMMSimConfig | None = None,
    seed: int | None = None,
    n_fields: Mapping[str, int] | None = None,
) -> bool:
    """True if ``root`` holds a finished dataset (marker present and every file there); with config / seed /
    n_fields given, also require that they match the ones it was simulated with."""
    root = Path(root)
    meta = _read_marker(root)
    if meta is None:
        return False
    if config is not None and meta.get("config") != config.to_json():
        return False
    if seed is not None and meta.get("seed") != int(seed):
        return False
    if n_fields is not None and meta.get("n_fields") != {k: int(v) for k, v in n_fields.items()}:
        return False
    for split, n in meta.get("n_fields", {}).items():
        for tag in meta.get("tags", {}).values():
            folder = root / split / tag
            if not folder.is_dir() or sum(1 for p in folder.iterdir() if p.suffix == ".fits") != n:
                return False
    return True


def write_xmm_dataset(
    root: str | Path,
    n_fields: Mapping[str, int] | None = None,
    config: XMMSimConfig | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Simulate ``n_fields`` (split -> count; default train 400, val 50, test 50) into
    ``<root>/<split>/<tag>/field_XXXXXX.fits``, atomically.

    Everything is written into a temporary sibling folder that is renamed onto ``root`` at the end,
    after the marker file ``xmm_dataset.json`` (config, seed, counts, tags, version, run time). An
    existing complete dataset with the same parameters is returned untouched; an existing ``root`` that
    is different or incomplete raises FileExistsError (nothing the user owns is deleted). A process killed
    mid-way leaves only a hidden ``.<root>.partial-*`` folder beside ``root``, which may be deleted.
    """
    root = Path(root)
    config = config or XMMSimConfig()
    n_fields = dict(n_fields or {"train": 400, "val": 50, "test": 50})
    if is_complete_xmm_dataset(root, config, seed, n_fields):
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(
            f"{root}: exists and is not a complete XMM dataset with this config/seed/n_fields; "
            "choose another folder or delete it"
        )
    tags = product_tags(config)
    tmp = root.parent / f".{root.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    bar = _Progress(sum(n_fields.values()), progress)
    try:
        for split, n in n_fields.items():
            for tag in tags.values():
                (tmp / split / tag).mkdir(parents=True, exist_ok=True)
            for k in range(int(n)):
                write_field(tmp / split, simulate_field(config, seed, split, k))
                bar.step()
        meta = {
            "complete": True,
            "format": "lit_sr.xmm",
            "version": XMM_SIM_VERSION,
            "seed": int(seed),
            "n_fields": {k: int(v) for k, v in n_fields.items()},
            "tags": tags,
            "config": config.to_json(),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        with open(tmp / MARKER_NAME, "w") as fh:
            json.dump(meta, fh, indent=2)
        if root.exists():
            root.rmdir()  # empty folder (checked above)
        os.replace(tmp, root)
    finally:
        bar.close()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root
