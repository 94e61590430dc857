"""Galaxy-galaxy strong-lens simulator on lenstronomy: paired HR (150x150, 0.05"/px) and LR (75x75, 0.1"/px) images
in three substructure classes (0 ``no_sub``, 1 ``cdm``, 2 ``vortex``), for super-resolution and substructure studies.

Cosmology and lens mass
-----------------------
Flat LambdaCDM with H0 = 70 km/s/Mpc, Omega_m = 0.3 (astropy ``FlatLambdaCDM``), lens at z_l = 0.5, source at
z_s = 1.0. The lens mass ``halo_mass_msun`` is M_E, the projected mass inside the Einstein radius (inside the
kappa = 1/2 isodensity ellipse of the SIE). For any lens this fixes theta_E:

    theta_E^2 = (4 G M_E / c^2) * D_ls / (D_l D_s)          (angular-diameter distances)

and for the isothermal profile the velocity dispersion follows as sigma_v = c sqrt(theta_E D_s / (4 pi D_ls)).
M_E = 1e12 Msun gives theta_E = 1.66" (sigma_v = 367 km/s); the default mass distribution is log-normal with median
5e11 Msun and 0.12 dex scatter, so the 2-sigma range of theta_E is 0.89"-1.55" (median 1.18"); set
``median_mass_msun=1e12`` for theta_E ~ 1.66". (The virial alternative -- M200 = 1e12 Msun, r200 = 172 kpc, an SIS
with sigma_v = V200 / sqrt 2 = 112 km/s -- gives theta_E = 0.15", about 3 HR pixels, so it is not used.)

Lens: singular isothermal ellipsoid (lenstronomy ``SIE``, whose theta_E is the circularised Einstein radius) with
axis ratio q ~ U(0.6, 1) at a random angle (lenstronomy convention e = (1 - q) / (1 + q), e1 = e cos 2phi,
e2 = e sin 2phi), plus external shear |gamma| ~ U(0, 0.05) at a random angle. The lens centre is the image centre
(optional uniform jitter).

Source: elliptical Sersic (lenstronomy ``SERSIC_ELLIPSE``) at |beta| <= 0.5 theta_E from the lens centre (uniform in
area; well inside the cut of the SIE, radius ~theta_E: of 144 sampled lenses the source centre has 2 images in 131
and 4 in 13, lenstronomy LensEquationSolver), R_eff ~ U(0.1", 0.35"), n ~ U(0.8, 2.5), q ~ U(0.5, 1),
``source_amp`` = surface brightness at R_eff in counts/s/arcsec^2, log-uniform in [50, 500]. Optional lens light
(flag ``lens_light``): Sersic n ~ U(3, 5), R_eff ~ U(0.4", 1.2"), same ellipticity as the mass, amplitude
log-uniform in [200, 2000] counts/s/arcsec^2 at R_eff.

Substructure (all point masses; a point mass m has Einstein radius theta_E sqrt(m / M_E) with the same distances):
  * ``cdm``: N ~ Poisson(``subhalo_mean_count`` = 25) subhalos with masses from dN/dm ~ m^-1.9 between 1e8 and
    1e10 Msun (inverse-CDF sampling), uniform in area in the annulus 0.7-1.3 theta_E around the lens centre so they
    perturb the arcs. ``n_subhalos`` = N (can be 0 by chance).
  * ``vortex``: a straight "vortex line": ``vortex_n_masses`` = 20 equal point masses evenly spaced on a segment of
    length U(1, 2) theta_E, random direction, centred at radius U(0.8, 1.2) theta_E (so it crosses the ring region);
    total mass log-uniform in [3e9, 3e10] Msun (mean 1.2e10, close to the cdm mean total of 25 x 5.4e8 = 1.3e10
    Msun, so the classes differ by the spatial pattern more than by the mass). ``n_subhalos`` = 20.
  * ``no_sub``: none.
Point masses rather than (T)NFW subhalos: no concentration relation is needed, and a point mass perturbs the arcs
more than an extended subhalo of the same mass, so these images are an optimistic case for substructure detection.

Instrument and units
--------------------
Images are in counts/s (e-/s) per HR pixel, i.e. surface brightness x (0.05")^2. HR: ``image_size`` x
``image_size`` pixels of 0.05" (default 150, even), lenstronomy ``GAUSSIAN`` PSF FWHM 0.09", 2x2 supersampling with
the convolution done on the supersampled grid (the PSF is only 1.8 px wide). Pixel (row i, column j) is centred at
x = (j - (size-1)/2) * 0.05", y = (i - (size-1)/2) * 0.05"; the image centre is between pixels.
LR (noiseless) = 2x2 *mean* of the noiseless HR image (after an optional extra Gaussian blur that widens the PSF to
``lr_psf_fwhm_arcsec``), so LR values are in the same unit -- counts/s per HR-pixel area -- and bicubic(LR) is
directly comparable to HR; the counts/s collected by one LR pixel are 4 x its value.
Noise, per lens, exposure time t ~ log-uniform [300, 3000] s:
  HR = Poisson(hr_clean * t) / t + N(0, background_rms^2),               var = hr_clean / t + background_rms^2
  LR = Poisson(4 lr_clean * t_lr) / (4 t_lr) + N(0, lr_background_rms^2), var = lr_clean / (4 t_lr) + lr_bg^2
with t_lr = ``lr_exposure_factor`` * t. The Gaussian term is sky-subtracted background + read noise. Defaults
background_rms = lr_background_rms = 0.02 counts/s (per HR-pixel area): a pure 2x2 binning of the HR detector would
give 0.01 for LR, so the default LR is a shallower observation. (Negative clean values cannot occur: every light
profile is non-negative.)

Determinism
-----------
Lens k is the j-th lens of block b = k // BLOCK_LENSES (j = k % BLOCK_LENSES). Its parameters come from a random
stream seeded by (seed, b, j) and its noise from a separate stream, so a lens does not depend on n, on how the
blocks are consumed, or on whether noise is drawn. Labels: consecutive triples of lenses hold the three classes
in a random order (stream (seed, b)), so any prefix of the sequence -- and any index-range split of length
divisible by 3 -- has exactly equal class counts.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

SIMULATOR_VERSION = "1.0.0"
BLOCK_LENSES = 48  # lenses per block (multiple of 3); part of the definition of the lens sequence
LABEL_NAMES = ("no_sub", "cdm", "vortex")
LR_FACTOR = 2  # HR pixels per LR pixel along one axis (fixed for this slice)
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

# 1-D physical parameters returned with every block (float32 unless listed in _INT_FIELDS)
PARAM_FIELDS = (
    "theta_e_arcsec",
    "lens_e1",
    "lens_e2",
    "shear_gamma1",
    "shear_gamma2",
    "source_x_arcsec",
    "source_y_arcsec",
    "source_r_eff_arcsec",
    "source_n_sersic",
    "source_amp",
    "n_subhalos",
    "exposure_s",
    "halo_mass_msun",
    "velocity_dispersion_kms",
    "substructure_mass_msun",
    "lens_x_arcsec",
    "lens_y_arcsec",
)
_INT_FIELDS = ("n_subhalos",)

# Random-stream purposes (first spawn-key word), so streams never collide.
_KEY_LABELS, _KEY_LENS, _KEY_NOISE = 1, 2, 3


@dataclass(frozen=True)
class LensSimConfig:
    """Simulation settings. Angles in arcsec, masses in Msun (M_E: projected mass inside the Einstein radius),
    image values in counts/s per HR pixel, times in s. Ranges are (low, high); ``*_theta_e`` are in units of theta_E."""

    # cosmology (FlatLambdaCDM) and lens mass
    z_lens: float = 0.5
    z_source: float = 1.0
    h0: float = 70.0
    omega_m: float = 0.3
    median_mass_msun: float = 5.0e11  # log-normal median of M_E
    mass_scatter_dex: float = 0.12
    lens_axis_ratio_range: tuple[float, float] = (0.6, 1.0)
    lens_center_jitter_arcsec: float = 0.0  # lens centre ~ U(-j, j) in x and y
    shear_max: float = 0.05
    # source
    source_offset_max_theta_e: float = 0.5
    source_r_eff_range_arcsec: tuple[float, float] = (0.1, 0.35)
    source_n_sersic_range: tuple[float, float] = (0.8, 2.5)
    source_axis_ratio_range: tuple[float, float] = (0.5, 1.0)
    source_amp_range: tuple[float, float] = (50.0, 500.0)  # counts/s/arcsec^2 at R_eff, log-uniform
    # lens light
    lens_light: bool = False
    lens_light_amp_range: tuple[float, float] = (200.0, 2000.0)  # counts/s/arcsec^2 at R_eff, log-uniform
    lens_light_r_eff_range_arcsec: tuple[float, float] = (0.4, 1.2)
    lens_light_n_sersic_range: tuple[float, float] = (3.0, 5.0)
    # substructure
    subhalo_mean_count: float = 25.0
    subhalo_mass_range_msun: tuple[float, float] = (1.0e8, 1.0e10)
    subhalo_mass_slope: float = 1.9  # dN/dm ~ m^-slope
    subhalo_annulus_theta_e: tuple[float, float] = (0.7, 1.3)
    vortex_mass_range_msun: tuple[float, float] = (3.0e9, 3.0e10)  # total, log-uniform
    vortex_length_theta_e: tuple[float, float] = (1.0, 2.0)
    vortex_center_radius_theta_e: tuple[float, float] = (0.8, 1.2)
    vortex_n_masses: int = 20
    # instrument
    image_size: int = 150  # HR pixels per side (even)
    pixel_scale_arcsec: float = 0.05
    psf_fwhm_arcsec: float = 0.09
    supersampling: int = 2
    exposure_range_s: tuple[float, float] = (300.0, 3000.0)  # log-uniform
    background_rms: float = 0.02  # counts/s per HR pixel
    lr_psf_fwhm_arcsec: float | None = None  # None: LR PSF = HR PSF (binning only)
    lr_background_rms: float = 0.02  # counts/s per HR-pixel area (the unit of LR values)
    lr_exposure_factor: float = 1.0
    noise: bool = True

    def __post_init__(self) -> None:
        if self.image_size < 8 or self.image_size % LR_FACTOR:
            raise ValueError(f"LensSimConfig.image_size must be even and >= 8, got {self.image_size}")
        if not 0 < self.z_lens < self.z_source:
            raise ValueError(f"LensSimConfig needs 0 < z_lens < z_source, got {self.z_lens}, {self.z_source}")
        if not isinstance(self.supersampling, int) or self.supersampling < 1:
            raise ValueError(f"LensSimConfig.supersampling must be an integer >= 1, got {self.supersampling!r}")
        if self.vortex_n_masses < 1:
            raise ValueError(f"LensSimConfig.vortex_n_masses must be >= 1, got {self.vortex_n_masses}")
        if self.lr_psf_fwhm_arcsec is not None and self.lr_psf_fwhm_arcsec < self.psf_fwhm_arcsec:
            raise ValueError(
                f"LensSimConfig.lr_psf_fwhm_arcsec={self.lr_psf_fwhm_arcsec} must be >= "
                f"psf_fwhm_arcsec={self.psf_fwhm_arcsec} (LR cannot be sharper than HR)"
            )
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple) and not (len(v) == 2 and v[0] <= v[1]):
                raise ValueError(f"LensSimConfig.{f.name} must be (low, high) with low <= high, got {v}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LensSimConfig:
        data = json.loads(text)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# ----------------------------------------------------------------------------------------------
# Cosmology: M_E -> theta_E, sigma_v
# ----------------------------------------------------------------------------------------------


class LensCosmology:
    """Angular-diameter distances (Mpc) of the lens configuration and the M_E -> theta_E relation."""

    def __init__(self, z_lens: float = 0.5, z_source: float = 1.0, h0: float = 70.0, omega_m: float = 0.3) -> None:
        import astropy.constants as const
        import astropy.units as u
        from astropy.cosmology import FlatLambdaCDM

        cosmo = FlatLambdaCDM(H0=h0, Om0=omega_m)
        self.d_l_mpc = float(cosmo.angular_diameter_distance(z_lens).to_value(u.Mpc))
        self.d_s_mpc = float(cosmo.angular_diameter_distance(z_source).to_value(u.Mpc))
        try:  # astropy >= 7 takes (z1, z2); older versions only have the _z1z2 method
            d_ls = cosmo.angular_diameter_distance(z_lens, z_source)
        except TypeError:
            d_ls = cosmo.angular_diameter_distance_z1z2(z_lens, z_source)
        self.d_ls_mpc = float(d_ls.to_value(u.Mpc))
        # theta_E [rad] = sqrt(4 G M / c^2 * D_ls / (D_l D_s)); store theta_E [arcsec] per sqrt(Msun)
        four_g_over_c2 = (4 * const.G * const.M_sun / const.c**2).to_value(u.Mpc)  # Mpc per Msun
        rad_to_arcsec = 180.0 / math.pi * 3600.0
        self._theta_per_sqrt_msun = (
            math.sqrt(four_g_over_c2 * self.d_ls_mpc / (self.d_l_mpc * self.d_s_mpc)) * rad_to_arcsec
        )
        self._c_kms = const.c.to_value(u.km / u.s)
        self._rad_to_arcsec = rad_to_arcsec

    def theta_e_arcsec(self, mass_msun: np.ndarray | float) -> np.ndarray | float:
        """Einstein radius in arcsec of a lens whose projected mass inside theta_E is ``mass_msun``."""
        return self._theta_per_sqrt_msun * np.sqrt(mass_msun)

    def velocity_dispersion_kms(self, theta_e_arcsec: np.ndarray | float) -> np.ndarray | float:
        """Isothermal-sphere velocity dispersion (km/s) with Einstein radius ``theta_e_arcsec``."""
        theta_rad = np.asarray(theta_e_arcsec) / self._rad_to_arcsec
        return self._c_kms * np.sqrt(theta_rad * self.d_s_mpc / (4 * math.pi * self.d_ls_mpc))

    @classmethod
    def from_config(cls, config: LensSimConfig) -> LensCosmology:
        return cls(config.z_lens, config.z_source, config.h0, config.omega_m)


# ----------------------------------------------------------------------------------------------
# Parameters of one lens
# ----------------------------------------------------------------------------------------------


@dataclass
class LensParams:
    """Everything that defines one noiseless lens image (angles in arcsec, masses in Msun)."""

    label: int
    halo_mass_msun: float
    theta_e_arcsec: float
    velocity_dispersion_kms: float
    lens_x_arcsec: float
    lens_y_arcsec: float
    lens_e1: float
    lens_e2: float
    shear_gamma1: float
    shear_gamma2: float
    source_x_arcsec: float
    source_y_arcsec: float
    source_r_eff_arcsec: float
    source_n_sersic: float
    source_e1: float
    source_e2: float
    source_amp: float
    exposure_s: float
    lens_light_amp: float = 0.0
    lens_light_r_eff_arcsec: float = 1.0
    lens_light_n_sersic: float = 4.0
    sub_x_arcsec: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sub_y_arcsec: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sub_mass_msun: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def n_subhalos(self) -> int:
        return int(self.sub_mass_msun.shape[0])

    def without_substructure(self) -> LensParams:
        """The same lens with the subhalos / vortex removed."""
        return dataclasses.replace(self, sub_x_arcsec=np.zeros(0), sub_y_arcsec=np.zeros(0), sub_mass_msun=np.zeros(0))


def _loguniform(rng: np.random.Generator, lo: float, hi: float, size=None):
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size))


def _ellipticity(rng: np.random.Generator, q_range: tuple[float, float]) -> tuple[float, float]:
    q = rng.uniform(*q_range)
    phi = rng.uniform(0.0, math.pi)
    e = (1.0 - q) / (1.0 + q)
    return e * math.cos(2 * phi), e * math.sin(2 * phi)


def _uniform_annulus(rng: np.random.Generator, r_lo: float, r_hi: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.sqrt(rng.uniform(r_lo**2, r_hi**2, n))
    phi = rng.uniform(0.0, 2 * math.pi, n)
    return r * np.cos(phi), r * np.sin(phi)


def sample_power_law_masses(rng: np.random.Generator, n: int, m_lo: float, m_hi: float, slope: float) -> np.ndarray:
    """``n`` masses from dN/dm ~ m^-slope on [m_lo, m_hi] (inverse CDF; slope != 1)."""
    a = 1.0 - slope
    u = rng.uniform(size=n)
    return (m_lo**a + u * (m_hi**a - m_lo**a)) ** (1.0 / a)


def sample_lens_params(
    rng: np.random.Generator, label: int, config: LensSimConfig, cosmology: LensCosmology
) -> LensParams:
    """Draw one lens of class ``label`` (0 no_sub, 1 cdm, 2 vortex). Draw order is fixed for all classes."""
    c = config
    mass = float(c.median_mass_msun * 10.0 ** (c.mass_scatter_dex * rng.standard_normal()))
    theta_e = float(cosmology.theta_e_arcsec(mass))
    lx, ly = rng.uniform(-1.0, 1.0, 2) * c.lens_center_jitter_arcsec
    e1, e2 = _ellipticity(rng, c.lens_axis_ratio_range)
    g = rng.uniform(0.0, c.shear_max)
    g_phi = rng.uniform(0.0, math.pi)
    bx, by = _uniform_annulus(rng, 0.0, c.source_offset_max_theta_e * theta_e, 1)
    r_eff = rng.uniform(*c.source_r_eff_range_arcsec)
    n_s = rng.uniform(*c.source_n_sersic_range)
    se1, se2 = _ellipticity(rng, c.source_axis_ratio_range)
    amp = float(_loguniform(rng, *c.source_amp_range))
    exposure = float(_loguniform(rng, *c.exposure_range_s))
    ll_amp = float(_loguniform(rng, *c.lens_light_amp_range))
    ll_r = rng.uniform(*c.lens_light_r_eff_range_arcsec)
    ll_n = rng.uniform(*c.lens_light_n_sersic_range)
    params = LensParams(
        label=int(label),
        halo_mass_msun=mass,
        theta_e_arcsec=theta_e,
        velocity_dispersion_kms=float(cosmology.velocity_dispersion_kms(theta_e)),
        lens_x_arcsec=float(lx),
        lens_y_arcsec=float(ly),
        lens_e1=e1,
        lens_e2=e2,
        shear_gamma1=g * math.cos(2 * g_phi),
        shear_gamma2=g * math.sin(2 * g_phi),
        source_x_arcsec=float(lx + bx[0]),
        source_y_arcsec=float(ly + by[0]),
        source_r_eff_arcsec=float(r_eff),
        source_n_sersic=float(n_s),
        source_e1=se1,
        source_e2=se2,
        source_amp=amp,
        exposure_s=exposure,
        lens_light_amp=ll_amp if c.lens_light else 0.0,
        lens_light_r_eff_arcsec=float(ll_r),
        lens_light_n_sersic=float(ll_n),
    )
    if label == 1:
        n_sub = int(rng.poisson(c.subhalo_mean_count))
        masses = sample_power_law_masses(rng, n_sub, *c.subhalo_mass_range_msun, c.subhalo_mass_slope)
        sx, sy = _uniform_annulus(
            rng, c.subhalo_annulus_theta_e[0] * theta_e, c.subhalo_annulus_theta_e[1] * theta_e, n_sub
        )
        params.sub_x_arcsec, params.sub_y_arcsec, params.sub_mass_msun = lx + sx, ly + sy, masses
    elif label == 2:
        total = float(_loguniform(rng, *c.vortex_mass_range_msun))
        length = rng.uniform(*c.vortex_length_theta_e) * theta_e
        cx, cy = _uniform_annulus(
            rng, c.vortex_center_radius_theta_e[0] * theta_e, c.vortex_center_radius_theta_e[1] * theta_e, 1
        )
        direction = rng.uniform(0.0, math.pi)
        t = (np.linspace(0.0, 1.0, c.vortex_n_masses) - 0.5) * length if c.vortex_n_masses > 1 else np.zeros(1)
        params.sub_x_arcsec = lx + cx[0] + t * math.cos(direction)
        params.sub_y_arcsec = ly + cy[0] + t * math.sin(direction)
        params.sub_mass_msun = np.full(c.vortex_n_masses, total / c.vortex_n_masses)
    elif label != 0:
        raise ValueError(
            f"lens label must be 0 ({LABEL_NAMES[0]}), 1 ({LABEL_NAMES[1]}) or 2 ({LABEL_NAMES[2]}), got {label}"
        )
    return params


# ----------------------------------------------------------------------------------------------
# Rendering (lenstronomy) and detector response
# ----------------------------------------------------------------------------------------------


class LensRenderer:
    """Noiseless HR images of :class:`LensParams` with lenstronomy's ``ImageModel``.

    The pixel grid, PSF, light models and numerics are built once; the lens model list depends on the number of
    point masses, so one ``ImageModel`` per point-mass count is built on first use and cached (``reuse=True``).
    With ``reuse=False`` every call builds everything afresh (the benchmark's baseline).
    """

    def __init__(self, config: LensSimConfig, image_size: int | None = None, reuse: bool = True) -> None:
        self.config = config
        self.image_size = int(image_size or config.image_size)
        if self.image_size < 8 or self.image_size % LR_FACTOR:
            raise ValueError(f"image_size must be even and >= 8, got {self.image_size}")
        self.reuse = reuse
        self._models: dict[tuple[int, bool], object] = {}
        self._grid = self._psf = self._source = self._lens_light = None
        if reuse:
            self._grid, self._psf, self._source, self._lens_light = self._build_components()

    def _build_components(self):
        from lenstronomy.Data.pixel_grid import PixelGrid
        from lenstronomy.Data.psf import PSF
        from lenstronomy.LightModel.light_model import LightModel

        pix = self.config.pixel_scale_arcsec
        corner = -(self.image_size - 1) / 2 * pix  # coordinate of pixel (0, 0): the image centre is (0, 0)
        grid = PixelGrid(
            nx=self.image_size,
            ny=self.image_size,
            transform_pix2angle=np.eye(2) * pix,
            ra_at_xy_0=corner,
            dec_at_xy_0=corner,
        )
        psf = PSF(psf_type="GAUSSIAN", fwhm=self.config.psf_fwhm_arcsec, truncation=5)
        return grid, psf, LightModel(["SERSIC_ELLIPSE"]), LightModel(["SERSIC_ELLIPSE"])

    def image_model(self, n_point_masses: int, with_psf: bool = True):
        """lenstronomy ``ImageModel`` with lens list SIE + SHEAR + ``n_point_masses`` x POINT_MASS."""
        key = (n_point_masses, with_psf)
        if self.reuse and key in self._models:
            return self._models[key]
        from lenstronomy.Data.psf import PSF
        from lenstronomy.ImSim.image_model import ImageModel
        from lenstronomy.LensModel.lens_model import LensModel

        grid, psf, source, lens_light = (
            self._build_components() if not self.reuse else (self._grid, self._psf, self._source, self._lens_light)
        )
        if not with_psf:
            psf = PSF(psf_type="NONE")
        lens = LensModel(["SIE", "SHEAR"] + ["POINT_MASS"] * n_point_masses)
        numerics = {
            "supersampling_factor": self.config.supersampling,
            "supersampling_convolution": self.config.supersampling > 1,
        }
        model = ImageModel(
            grid,
            psf,
            lens_model_class=lens,
            source_model_class=source,
            lens_light_model_class=lens_light,
            kwargs_numerics=numerics,
        )
        if self.reuse:
            self._models[key] = model
        return model

    @staticmethod
    def lens_kwargs(p: LensParams) -> list[dict]:
        kw = [
            {
                "theta_E": p.theta_e_arcsec,
                "e1": p.lens_e1,
                "e2": p.lens_e2,
                "center_x": p.lens_x_arcsec,
                "center_y": p.lens_y_arcsec,
            },
            {"gamma1": p.shear_gamma1, "gamma2": p.shear_gamma2, "ra_0": p.lens_x_arcsec, "dec_0": p.lens_y_arcsec},
        ]
        # point mass m: Einstein radius theta_E * sqrt(m / M_E) (same distances as the main lens)
        theta_sub = p.theta_e_arcsec * np.sqrt(p.sub_mass_msun / p.halo_mass_msun)
        kw += [
            {"theta_E": float(t), "center_x": float(x), "center_y": float(y)}
            for t, x, y in zip(theta_sub, p.sub_x_arcsec, p.sub_y_arcsec)
        ]
        return kw

    @staticmethod
    def source_kwargs(p: LensParams) -> list[dict]:
        return [
            {
                "amp": p.source_amp,
                "R_sersic": p.source_r_eff_arcsec,
                "n_sersic": p.source_n_sersic,
                "e1": p.source_e1,
                "e2": p.source_e2,
                "center_x": p.source_x_arcsec,
                "center_y": p.source_y_arcsec,
            }
        ]

    @staticmethod
    def lens_light_kwargs(p: LensParams) -> list[dict]:
        return [
            {
                "amp": p.lens_light_amp,
                "R_sersic": p.lens_light_r_eff_arcsec,
                "n_sersic": p.lens_light_n_sersic,
                "e1": p.lens_e1,
                "e2": p.lens_e2,
                "center_x": p.lens_x_arcsec,
                "center_y": p.lens_y_arcsec,
            }
        ]

    def render(
        self, p: LensParams, lensed: bool = True, with_psf: bool = True, lens_light: bool | None = None
    ) -> np.ndarray:
        """Noiseless HR image (float64 [size, size], counts/s per HR pixel).

        ``lensed=False`` gives the unlensed source at its source-plane position (for magnification checks);
        ``lens_light`` defaults to ``p.lens_light_amp > 0``.
        """
        model = self.image_model(p.n_subhalos, with_psf)
        add_light = p.lens_light_amp > 0 if lens_light is None else lens_light
        if lensed:
            img = model.source_surface_brightness(self.source_kwargs(p), self.lens_kwargs(p), unconvolved=not with_psf)
        else:
            img = model.source_surface_brightness(self.source_kwargs(p), None, unconvolved=not with_psf, de_lensed=True)
        if add_light:
            img = img + model.lens_surface_brightness(self.lens_light_kwargs(p), unconvolved=not with_psf)
        return np.asarray(img, dtype=np.float64)


def lr_from_hr(hr_clean: np.ndarray, config: LensSimConfig) -> np.ndarray:
    """Noiseless LR image(s) [..., H/2, W/2] from noiseless HR [..., H, W]: optional extra blur to the LR PSF, then
    2x2 *mean* binning.

    The extra Gaussian has sigma^2 = sigma_LR^2 - sigma_HR^2 (Gaussian PSFs add in quadrature) and reflecting
    boundaries, which conserve the total flux exactly.
    """
    img = np.asarray(hr_clean, dtype=np.float64)
    if config.lr_psf_fwhm_arcsec is not None and config.lr_psf_fwhm_arcsec > config.psf_fwhm_arcsec:
        sigma_px = (
            math.sqrt(config.lr_psf_fwhm_arcsec**2 - config.psf_fwhm_arcsec**2)
            / FWHM_PER_SIGMA
            / config.pixel_scale_arcsec
        )
        sig = (0.0,) * (img.ndim - 2) + (sigma_px, sigma_px)
        img = ndimage.gaussian_filter(img, sig, mode="reflect", truncate=5.0)
    *lead, h, w = img.shape
    f = LR_FACTOR
    return img.reshape(*lead, h // f, f, w // f, f).mean(axis=(-3, -1))


def add_noise(
    clean: np.ndarray,
    rng: np.random.Generator,
    exposure_s: float,
    background_rms: float,
    pixel_area_factor: float = 1.0,
) -> np.ndarray:
    """Poisson photon noise of ``clean * exposure_s * pixel_area_factor`` counts, converted back to ``clean``'s
    unit, plus Gaussian background of rms ``background_rms``. Variance: clean / (t * area) + background_rms^2."""
    scale = exposure_s * pixel_area_factor
    counts = rng.poisson(np.clip(clean, 0.0, None) * scale)
    return counts / scale + rng.normal(0.0, background_rms, clean.shape)


# ----------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------


def _stream(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in key)))


def block_labels(seed: int, block_index: int) -> np.ndarray:
    """Labels of the BLOCK_LENSES lenses of a block: every consecutive triple is a random order of (0, 1, 2)."""
    rng = _stream(seed, _KEY_LABELS, block_index)
    return np.argsort(rng.random((BLOCK_LENSES // 3, 3)), axis=1).reshape(-1).astype(np.int64)


def _empty_block(size: int, return_clean: bool) -> dict[str, np.ndarray]:
    lr = size // LR_FACTOR
    out = {
        "hr": np.zeros((0, size, size), np.float32),
        "lr": np.zeros((0, lr, lr), np.float32),
        "label": np.zeros(0, np.int64),
    }
    out.update({k: np.zeros(0, np.int64 if k in _INT_FIELDS else np.float32) for k in PARAM_FIELDS})
    if return_clean:
        out["hr_clean"] = np.zeros((0, size, size), np.float32)
        out["lr_clean"] = np.zeros((0, lr, lr), np.float32)
    return out


class LensSimulator:
    """Simulates blocks of the lens sequence for one (config, image size, seed).

    ``reuse=True`` (default) keeps the cosmology and the renderer for all lenses; ``reuse=False`` rebuilds both for
    every lens (the naive per-lens set-up, kept as the benchmark baseline; the images are identical).
    """

    def __init__(self, config: LensSimConfig | None = None, image_size: int | None = None, reuse: bool = True) -> None:
        self.config = config or LensSimConfig()
        self.image_size = int(image_size or self.config.image_size)
        self.reuse = reuse
        self.cosmology = LensCosmology.from_config(self.config) if reuse else None
        self.renderer = LensRenderer(self.config, self.image_size) if reuse else None

    def lens_params(self, seed: int, block_index: int, j: int) -> LensParams:
        """Parameters of lens ``j`` of block ``block_index`` (no image)."""
        cosmo = self.cosmology or LensCosmology.from_config(self.config)
        label = int(block_labels(seed, block_index)[j])
        return sample_lens_params(_stream(seed, _KEY_LENS, block_index, j), label, self.config, cosmo)

    def block(
        self, seed: int, block_index: int, n_lenses: int = BLOCK_LENSES, return_clean: bool = False
    ) -> dict[str, np.ndarray]:
        """The first ``n_lenses`` lenses of block ``block_index`` (see module doc for the keys and units)."""
        if not 0 <= n_lenses <= BLOCK_LENSES:
            raise ValueError(f"n_lenses must be in [0, {BLOCK_LENSES}], got {n_lenses}")
        if seed < 0 or block_index < 0:
            raise ValueError(f"seed and block_index must be >= 0, got {seed}, {block_index}")
        cfg, size = self.config, self.image_size
        if n_lenses == 0:
            return _empty_block(size, return_clean)
        labels = block_labels(seed, block_index)[:n_lenses]
        hr_clean = np.empty((n_lenses, size, size))
        params: list[LensParams] = []
        for j in range(n_lenses):
            cosmo = self.cosmology or LensCosmology.from_config(cfg)
            renderer = self.renderer or LensRenderer(cfg, size, reuse=False)
            p = sample_lens_params(_stream(seed, _KEY_LENS, block_index, j), int(labels[j]), cfg, cosmo)
            hr_clean[j] = renderer.render(p)
            params.append(p)
        lr_clean = lr_from_hr(hr_clean, cfg)
        if cfg.noise:
            hr = np.empty_like(hr_clean)
            lr = np.empty_like(lr_clean)
            for j, p in enumerate(params):
                rng = _stream(seed, _KEY_NOISE, block_index, j)
                hr[j] = add_noise(hr_clean[j], rng, p.exposure_s, cfg.background_rms)
                lr[j] = add_noise(
                    lr_clean[j],
                    rng,
                    p.exposure_s * cfg.lr_exposure_factor,
                    cfg.lr_background_rms,
                    pixel_area_factor=LR_FACTOR**2,
                )
        else:
            hr, lr = hr_clean, lr_clean
        out = {"hr": hr.astype(np.float32), "lr": lr.astype(np.float32), "label": labels.copy()}
        for k in PARAM_FIELDS:
            vals = [
                p.n_subhalos
                if k == "n_subhalos"
                else float(p.sub_mass_msun.sum())
                if k == "substructure_mass_msun"
                else getattr(p, k)
                for p in params
            ]
            out[k] = np.asarray(vals, np.int64 if k in _INT_FIELDS else np.float32)
        if return_clean:
            out["hr_clean"] = hr_clean.astype(np.float32)
            out["lr_clean"] = lr_clean.astype(np.float32)
        return out


def simulate_lenses(
    n: int,
    seed: int,
    config: LensSimConfig | None = None,
    image_size: int | None = None,
    return_clean: bool = False,
    reuse: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield the first ``n`` lenses of the sequence for ``seed`` in blocks of up to BLOCK_LENSES.

    Each block is a dict of numpy arrays: ``hr`` float32 [N, S, S] and ``lr`` float32 [N, S/2, S/2] in counts/s per
    HR-pixel area (S = ``image_size`` or ``config.image_size``), ``label`` int64 (0 no_sub, 1 cdm, 2 vortex), the
    1-D parameters of ``PARAM_FIELDS`` (float32; ``n_subhalos`` int64) and, with ``return_clean``, the noiseless
    ``hr_clean`` / ``lr_clean``. Lens k is the same whatever ``n`` (see module doc).
    """
    if n < 0 or seed < 0:
        raise ValueError(f"n and seed must be >= 0, got n={n}, seed={seed}")
    sim = LensSimulator(config, image_size, reuse=reuse)
    for b, start in enumerate(range(0, n, BLOCK_LENSES)):
        yield sim.block(seed, b, min(BLOCK_LENSES, n - start), return_clean=return_clean)


def concatenate_blocks(blocks) -> dict[str, np.ndarray]:
    """Concatenate the blocks of :func:`simulate_lenses` key by key (all blocks must have the same keys)."""
    blocks = list(blocks)
    if not blocks:
        raise ValueError("no blocks to concatenate (n = 0)")
    return {k: np.concatenate([blk[k] for blk in blocks]) for k in blocks[0]}
