"""A physics-informed galaxy generator: a differentiable Sersic bulge + exponential disk plus a ProGAN residual.

Why: the plain ProGAN generator of ``galaxy_progan`` drew galaxies far rounder than the simulator's
(seed-0 run of the CPU recipe, 1229 test stamps, HSM |g| of the observed stamps: disks mean 0.08 vs 0.25
real, 90th percentile 0.14 vs 0.49), in every recipe of the ablation (docs/galaxy.md). Here the shape
is a parameter: an MLP maps (z, label embedding) to the structural parameters of the simulator's smooth
model (:mod:`lit_sr.domains.galaxy.sim`), which are rendered in ADU, differentiably in torch:

* total flux F (ADU, whole profile), bulge-to-total B, bulge Sersic index n in [1, 4] (continuous),
  disk half-light radius r_d (arcsec) and bulge-to-disk half-light-radius ratio rho;
* one reduced shear (g1, g2), |g| < ``max_shear`` (galsim convention: the area-preserving shear that
  maps a round profile of half-light radius r to an ellipse of axes r / sqrt(q), r sqrt(q),
  q = (1 - |g|) / (1 + |g|)), shared by bulge and disk;
* a sub-pixel centre offset (dx, dy), |d| < ``max_offset_pixels`` native pixels.

The profile of each component: I(r) = F_c b_n^{2n} / (2 pi n r_e^2 Gamma(2n)) exp(-b_n (r / r_e)^{1/n}),
r the round radius of the sheared coordinates, b_n from the Ciotti & Bertin (1999) series (so r_e is the
half-light radius; relative error of b_n 2.5e-5 at n = 1, less above); the disk has n = 1. Pixels are
integrated by averaging the profile over an ``oversample``^2 sub-pixel grid, and over a ``core_oversample``^2 grid in the central ``core_pixels``^2
(the n = 4 cusp), as the simulator's ``image_psf_free`` is (tests/test_galaxy_sersic.py checks flux,
half-light radius and axis ratio against galsim).

:class:`SersicProGenerator` extends :class:`lit_sr.nets.progan.ProGenerator`: its output (model space,
``transform`` of the rendered ADU image, pooled to the phase resolution 4 * 2**depth) plus
``residual_scale`` x the ProGAN CNN output (its fade-in unchanged) for knots and irregular structure.
``residual_scale`` is a learned scalar starting at ``residual_init`` (0 = ReZero: the CNN learns once the
profile is in place). Same call signature as the ProGenerator, so the ProGAN module, the PSF layer, EMA,
prediction and resume use it unchanged. Options (``galaxy_progan_sersic`` turns both on): ``latent_prior`` (the
position angle and centre jitter uniform from latent coordinates, a learned per-class spread of the other
parameters) and ``residual_gate`` (the residual only on the galaxy); see :class:`SersicProGenerator`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lit_sr.nets.progan import ProGenerator, _check_depth_alpha

PARAMETER_NAMES = (
    "flux_adu",
    "disk_hlr_arcsec",
    "bulge_fraction",
    "sersic_n",
    "bulge_to_disk_hlr",
    "g1",
    "g2",
    "dx_pix",
    "dy_pix",
)


N_SHAPE_OUTPUTS = 6  # latent_prior: flux, disk radius, bulge fraction, n, radius ratio, |g|
N_PRIOR_LATENTS = 9  # latent_prior: 6 spreads + position angle + 2 offsets


def sersic_b(n: torch.Tensor) -> torch.Tensor:
    """b_n with Gamma(2n) gammainc(2n, b_n) = Gamma(2n) / 2 (r_e the half-light radius); Ciotti & Bertin (1999)
    asymptotic series; relative error 2.5e-5 at n = 1, 3e-6 at n = 1.5, less above (tests/test_galaxy_sersic.py)."""
    return (
        2.0 * n
        - 1.0 / 3.0
        + 4.0 / (405.0 * n)
        + 46.0 / (25515.0 * n**2)
        + 131.0 / (1148175.0 * n**3)
        - 2194697.0 / (30690717750.0 * n**4)
    )


def sersic_intensity(
    r2_arcsec2: torch.Tensor, flux: torch.Tensor, hlr_arcsec: torch.Tensor, n: torch.Tensor
) -> torch.Tensor:
    """Surface brightness (flux per arcsec^2) of a Sersic profile of total ``flux`` at squared round radius
    ``r2_arcsec2``; ``flux``, ``hlr_arcsec``, ``n`` broadcast against it (e.g. [B, 1, 1])."""
    b = sersic_b(n)
    log_norm = (
        2.0 * n * torch.log(b)
        - math.log(2.0 * math.pi)
        - torch.log(n)
        - 2.0 * torch.log(hlr_arcsec)
        - torch.lgamma(2.0 * n)
    )
    x = (r2_arcsec2 / hlr_arcsec**2 + 1e-12) ** (0.5 / n)
    return flux * torch.exp(log_norm - b * x)


def _round_r2(dx: torch.Tensor, dy: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """Squared radius before the shear of offsets (dx, dy) from the centre: |A^-1 (dx, dy)|^2 with the
    area-preserving shear A = [[1 + g1, g2], [g2, 1 - g1]] / sqrt(1 - |g|^2) (galsim's convention)."""
    u = (1.0 - g1) * dx - g2 * dy
    v = -g2 * dx + (1.0 + g1) * dy
    return (u * u + v * v) / (1.0 - g1 * g1 - g2 * g2)


def _sub_pixel_offsets(n_pixels: int, start: float, oversample: int, device, dtype) -> torch.Tensor:
    """Sub-pixel centre positions (pixel units) of ``n_pixels`` pixels from ``start``: [n_pixels, oversample]."""
    k = (torch.arange(oversample, device=device, dtype=dtype) + 0.5) / oversample - 0.5
    return start + torch.arange(n_pixels, device=device, dtype=dtype)[:, None] + k[None, :]


def _render_window(
    params: Mapping[str, torch.Tensor],
    centre: tuple[torch.Tensor, torch.Tensor],
    rows: torch.Tensor,
    cols: torch.Tensor,
    pixel_scale: float,
) -> torch.Tensor:
    """Pixel values (ADU) of a window: rows [h, o] and cols [w, o] sub-pixel positions -> [B, h, w]."""
    cy, cx = centre  # [B]
    h, o = rows.shape
    w = cols.shape[0]
    dy = (rows.reshape(1, h * o, 1) - cy[:, None, None]) * pixel_scale
    dx = (cols.reshape(1, 1, w * o) - cx[:, None, None]) * pixel_scale
    g1 = params["g1"][:, None, None]
    g2 = params["g2"][:, None, None]
    r2 = _round_r2(dx, dy, g1, g2)  # [B, h*o, w*o]
    flux = params["flux_adu"][:, None, None]
    bulge = params["bulge_fraction"][:, None, None]
    r_disk = params["disk_hlr_arcsec"][:, None, None]
    r_bulge = r_disk * params["bulge_to_disk_hlr"][:, None, None]
    n = params["sersic_n"][:, None, None]
    one = torch.ones_like(n)
    sb = sersic_intensity(r2, flux * bulge, r_bulge, n) + sersic_intensity(r2, flux * (1.0 - bulge), r_disk, one)
    sb = sb.reshape(-1, h, o, w, o).mean(dim=(2, 4))
    return sb * pixel_scale**2


def render_bulge_disk(
    params: Mapping[str, torch.Tensor],
    size: int,
    pixel_scale_arcsec: float,
    oversample: int = 4,
    core_pixels: int = 6,
    core_oversample: int = 32,
) -> torch.Tensor:
    """PSF-free, pixel-integrated bulge + disk images [B, 1, size, size] (ADU per pixel, array [row=y, col=x]).

    ``params``: tensors [B] named as in :data:`PARAMETER_NAMES` (flux in ADU, radii in arcsec, offsets in
    pixels). The profile centre is at (row, col) = (size/2 - 1/2 + dy, size/2 - 1/2 + dx), as in the simulator.
    The central ``core_pixels``^2 pixels (even; 0 = none) are integrated on a ``core_oversample`` grid.
    """
    any_param = params["flux_adu"]
    dev, dt = any_param.device, any_param.dtype
    cy = size / 2.0 - 0.5 + params["dy_pix"]
    cx = size / 2.0 - 0.5 + params["dx_pix"]
    grid = _sub_pixel_offsets(size, 0.0, int(oversample), dev, dt)
    img = _render_window(params, (cy, cx), grid, grid, pixel_scale_arcsec)
    c = int(core_pixels)
    if c > 0:
        if c % 2 or c > size:
            raise ValueError(f"render_bulge_disk: core_pixels must be even and <= size={size}, got {c}")
        lo = size // 2 - c // 2
        core_grid = _sub_pixel_offsets(c, float(lo), int(core_oversample), dev, dt)
        core = _render_window(params, (cy, cx), core_grid, core_grid, pixel_scale_arcsec)
        img = torch.cat(
            [
                img[:, :lo],
                torch.cat([img[:, lo : lo + c, :lo], core, img[:, lo : lo + c, lo + c :]], dim=2),
                img[:, lo + c :],
            ],
            dim=1,
        )
    return img[:, None]


def _bounded(raw: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.sigmoid(raw)


def _log_bounded(raw: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return torch.exp(_bounded(raw, math.log(lo), math.log(hi)))


class SersicProGenerator(ProGenerator):
    """ProGenerator whose image is a rendered bulge + disk (parameters from an MLP of z and the label) plus
    the ProGAN CNN output as a residual, in model space (see the module docstring).

    Args (beyond :class:`~lit_sr.nets.progan.ProGenerator`'s):
        transform: ADU -> model space (the data's transform; its output is what the ProGAN module expects).
        pixel_scale_arcsec: native pixel size of the final resolution.
        flux_range_adu, disk_hlr_range_arcsec, bulge_to_disk_hlr_range, sersic_n_range: [lo, hi] of the
            parameters (log-uniform squashing for flux and radii, linear for the others).
        max_shear: bound on |g|; max_offset_pixels: bound on each centre offset (native pixels).
        hidden: width of the two hidden layers of the parameter MLP.
        oversample: sub-pixels per native pixel side at the final depth (halved per depth below it, at
            least 1; the phase image is the native render averaged over blocks, i.e. pixel-integrated);
            core_pixels, core_oversample: the finely integrated centre (see :func:`render_bulge_disk`).
        residual_init: starting value of the learned residual scale (0 = the CNN starts silent).
        latent_prior: False: the MLP gives all parameters. True: the sky's isotropy and the cutout's jitter are
            built in, the position angle uniform on [0, 180) deg and the centre offsets uniform within
            +-``max_offset_pixels``, drawn from latent coordinates 6-8; the MLP gives flux, radii, bulge
            fraction, n and |g| (``max_shear`` x sigmoid), each plus a learned per-class spread times latent
            coordinates 0-5 (spread 1 at the start: the parameter distributions start wide, not collapsed).
        residual_gate: multiply the residual by tanh(2 x the rendered model-space image) (no gradient through
            the gate): the CNN adds structure on the galaxy, not on the empty sky.
    """

    def __init__(
        self,
        transform: nn.Module,
        latent_dim: int = 64,
        channels_per_resolution: Sequence[int] | Mapping[int, int] = (64, 64, 32, 32, 16),
        out_channels: int = 1,
        num_classes: int = 0,
        embed_dim: int | None = None,
        pixel_scale_arcsec: float = 0.2,
        flux_range_adu: Sequence[float] = (1.0e3, 5.0e5),
        disk_hlr_range_arcsec: Sequence[float] = (0.1, 4.0),
        bulge_to_disk_hlr_range: Sequence[float] = (0.1, 1.5),
        sersic_n_range: Sequence[float] = (1.0, 4.0),
        max_shear: float = 0.9,
        max_offset_pixels: float = 1.0,
        hidden: int = 64,
        oversample: int = 4,
        core_pixels: int = 6,
        core_oversample: int = 32,
        residual_init: float = 0.0,
        latent_prior: bool = False,
        residual_gate: bool = False,
    ) -> None:
        super().__init__(latent_dim, channels_per_resolution, out_channels, num_classes, embed_dim)
        if out_channels != 1:
            raise ValueError(f"SersicProGenerator renders one band: out_channels must be 1, got {out_channels}")
        for name, rng in (
            ("flux_range_adu", flux_range_adu),
            ("disk_hlr_range_arcsec", disk_hlr_range_arcsec),
            ("bulge_to_disk_hlr_range", bulge_to_disk_hlr_range),
            ("sersic_n_range", sersic_n_range),
        ):
            if len(rng) != 2 or not 0 < float(rng[0]) < float(rng[1]):
                raise ValueError(f"SersicProGenerator: {name} must be [lo, hi] with 0 < lo < hi, got {list(rng)}")
        if not 0 < max_shear < 1:
            raise ValueError(f"SersicProGenerator: max_shear must be in (0, 1), got {max_shear}")
        self.transform = transform
        self.pixel_scale = float(pixel_scale_arcsec)
        self.flux_range = tuple(float(v) for v in flux_range_adu)
        self.disk_hlr_range = tuple(float(v) for v in disk_hlr_range_arcsec)
        self.ratio_range = tuple(float(v) for v in bulge_to_disk_hlr_range)
        self.n_range = tuple(float(v) for v in sersic_n_range)
        self.max_shear = float(max_shear)
        self.max_offset = float(max_offset_pixels)
        self.oversample = int(oversample)
        self.core_pixels = int(core_pixels)
        self.core_oversample = int(core_oversample)
        self.latent_prior = bool(latent_prior)
        self.residual_gate = bool(residual_gate)
        if self.latent_prior and self.latent_dim < N_PRIOR_LATENTS:
            raise ValueError(
                f"SersicProGenerator: latent_prior needs latent_dim >= {N_PRIOR_LATENTS}, got {self.latent_dim}"
            )
        in_dim = self.latent_dim + (self.embed_dim if self.embed is not None else 0)
        n_out = N_SHAPE_OUTPUTS if self.latent_prior else len(PARAMETER_NAMES)
        self.param_mlp = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, n_out),
        )
        self.residual_scale = nn.Parameter(torch.tensor(float(residual_init)))
        if self.latent_prior:
            # log of the per-class spread of each shape output around the MLP's value, in units of a latent
            # coordinate: starts at 1 (wide distributions the critic narrows)
            self.log_spread = nn.Parameter(torch.zeros(max(self.num_classes, 1), N_SHAPE_OUTPUTS))

    def structural_parameters(self, z: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Physical parameters [B] (names of :data:`PARAMETER_NAMES`) of the latents and labels."""
        x = self.norm(z)
        if self.embed is not None:
            x = torch.cat([x, self.embed(labels.long())], dim=1)
        raw = self.param_mlp(x)
        if self.latent_prior:
            return self._prior_parameters(raw, z, labels)
        u = raw[:, 5:7]
        s = (u.pow(2).sum(dim=1, keepdim=True) + 1e-12).sqrt()
        g = self.max_shear * torch.tanh(s) / s * u  # |g| < max_shear, smooth through g = 0
        return {
            **self._profile_parameters(raw),
            "g1": g[:, 0],
            "g2": g[:, 1],
            "dx_pix": self.max_offset * torch.tanh(raw[:, 7]),
            "dy_pix": self.max_offset * torch.tanh(raw[:, 8]),
        }

    def _profile_parameters(self, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flux, radii, bulge fraction and Sersic n from the first five MLP outputs, mapped into their ranges."""
        return {
            "flux_adu": _log_bounded(raw[:, 0], *self.flux_range),
            "disk_hlr_arcsec": _log_bounded(raw[:, 1], *self.disk_hlr_range),
            "bulge_fraction": torch.sigmoid(raw[:, 2]),
            "sersic_n": _bounded(raw[:, 3], *self.n_range),
            "bulge_to_disk_hlr": _log_bounded(raw[:, 4], *self.ratio_range),
        }

    def _prior_parameters(
        self, raw: torch.Tensor, z: torch.Tensor, labels: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """``latent_prior``: shape outputs + learned per-class spread x z[:, :6]; position angle and centre offset
        uniform, from z[:, 6:9] through the normal CDF."""
        row = labels.long() if self.num_classes > 0 else torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
        raw = raw + self.log_spread[row].exp() * z[:, :N_SHAPE_OUTPUTS]
        uniform = 0.5 * (1.0 + torch.erf(z[:, N_SHAPE_OUTPUTS:N_PRIOR_LATENTS] / math.sqrt(2.0)))  # U(0, 1)
        g = self.max_shear * torch.sigmoid(raw[:, 5])
        two_beta = 2.0 * math.pi * uniform[:, 0]  # beta uniform on [0, pi)
        return {
            **self._profile_parameters(raw),
            "g1": g * torch.cos(two_beta),
            "g2": g * torch.sin(two_beta),
            "dx_pix": self.max_offset * (2.0 * uniform[:, 1] - 1.0),
            "dy_pix": self.max_offset * (2.0 * uniform[:, 2] - 1.0),
        }

    def render(self, params: Mapping[str, torch.Tensor], depth: int) -> torch.Tensor:
        """Rendered ADU image [B, 1, r, r] at the resolution r = 4 * 2**depth (pixel-integrated)."""
        over = max(1, self.oversample // 2 ** (self.max_depth - depth))
        img = render_bulge_disk(
            params, self.max_resolution, self.pixel_scale, over, self.core_pixels, self.core_oversample
        )
        f = 2 ** (self.max_depth - depth)
        return F.avg_pool2d(img, f) if f > 1 else img

    def forward(
        self, z: torch.Tensor, labels: torch.Tensor | None = None, depth: int | None = None, alpha: float = 1.0
    ) -> torch.Tensor:
        """Model-space images [B, 1, 4*2**depth, 4*2**depth]: transform(render) + residual_scale * CNN."""
        depth = self.max_depth if depth is None else int(depth)
        _check_depth_alpha("SersicProGenerator", depth, alpha, self.max_depth)
        residual = super().forward(z, labels, depth, alpha)  # checks z and labels
        smooth = self.transform(self.render(self.structural_parameters(z, labels), depth))
        if self.residual_gate:
            residual = residual * torch.tanh(2.0 * smooth.detach().clamp_min(0.0))
        return smooth + self.residual_scale * residual
