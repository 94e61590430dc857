"""King-profile PSF of an XMM-Newton EPIC-pn-like telescope, rendered on pixel grids.

PSF(r) ∝ (1 + (r/r_c)^2)^(-beta), truncated at ``truncation_arcsec`` and renormalised so the
truncated profile integrates to one (the simulator uses exactly this truncated profile, so every
rendered source conserves its flux). FWHM = 2 r_c sqrt(2^(1/beta) - 1); the default LR PSF has
FWHM 6 arcsec and beta 1.5 (r_c = 3.914 arcsec), the SR target PSF has r_c / 2 (FWHM 3 arcsec).

Pixel values are integrals of the profile over the pixel, computed with the midpoint rule on
``oversample`` x ``oversample`` sub-pixels. Pixel coordinates are 0-based with pixel centres at
integers (astropy ``origin=0``); a kernel of half size H is an array of (2H+1)^2 pixels whose centre
pixel is [H, H].

Matching kernel (HR optics -> LR optics). For beta = 1.5 the King profile is the 2-D Cauchy
(Poisson) kernel, whose Fourier transform is exp(-2 pi r_c |k|); hence King(a) ⊛ King(b) =
King(a + b) exactly and the untruncated matching kernel is King(r_c,LR - r_c,HR). On pixel grids
and with truncation we instead build K as a regularised Fourier ratio of the two rendered kernels
(``method='fourier'``, default): the ratio is well conditioned because the HR transfer function
exceeds the LR one at every frequency. ``method='cauchy'`` returns the analytic kernel sampled at
pixel centres (exact only in the continuous, untruncated limit); tests compare both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

DEFAULT_FWHM_ARCSEC = 6.0
DEFAULT_BETA = 1.5
DEFAULT_TRUNCATION_ARCSEC = 60.0


def king_fwhm(core_radius_arcsec: float, beta: float) -> float:
    """Analytic FWHM (arcsec) of a King profile: 2 r_c sqrt(2^(1/beta) - 1)."""
    return 2.0 * core_radius_arcsec * math.sqrt(2.0 ** (1.0 / beta) - 1.0)


def king_core_radius(fwhm_arcsec: float, beta: float) -> float:
    """Core radius r_c (arcsec) giving the requested FWHM (inverse of :func:`king_fwhm`)."""
    return fwhm_arcsec / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))


@dataclass(frozen=True)
class KingPSF:
    """Circular King PSF. Lengths in arcsec; ``beta`` > 1 so the profile has finite flux."""

    core_radius_arcsec: float
    beta: float = DEFAULT_BETA
    truncation_arcsec: float = DEFAULT_TRUNCATION_ARCSEC

    def __post_init__(self) -> None:
        if not (self.core_radius_arcsec > 0 and self.truncation_arcsec > 0):
            raise ValueError(f"KingPSF needs positive core radius and truncation, got {self}")
        if self.beta <= 0:
            raise ValueError(f"KingPSF beta must be > 0, got {self.beta}")

    @classmethod
    def from_fwhm(
        cls,
        fwhm_arcsec: float = DEFAULT_FWHM_ARCSEC,
        beta: float = DEFAULT_BETA,
        truncation_arcsec: float = DEFAULT_TRUNCATION_ARCSEC,
    ) -> KingPSF:
        return cls(king_core_radius(fwhm_arcsec, beta), beta, truncation_arcsec)

    @property
    def fwhm_arcsec(self) -> float:
        return king_fwhm(self.core_radius_arcsec, self.beta)

    def narrower(self, factor: float = 2.0) -> KingPSF:
        """The same optics ``factor`` times sharper (r_c / factor, same beta and truncation)."""
        return KingPSF(self.core_radius_arcsec / factor, self.beta, self.truncation_arcsec)

    def profile(self, r_arcsec: np.ndarray) -> np.ndarray:
        """Unnormalised profile (1 + (r/r_c)^2)^-beta, zero beyond the truncation radius."""
        r = np.asarray(r_arcsec, dtype=np.float64)
        out = (1.0 + (r / self.core_radius_arcsec) ** 2) ** (-self.beta)
        return np.where(r <= self.truncation_arcsec, out, 0.0)

    def _cumulative(self, radius_arcsec: np.ndarray) -> np.ndarray:
        """Integral of the untruncated profile over a disc of the given radius (arcsec^2)."""
        x2 = (np.asarray(radius_arcsec, dtype=np.float64) / self.core_radius_arcsec) ** 2
        rc2 = self.core_radius_arcsec**2
        if abs(self.beta - 1.0) < 1e-12:
            return math.pi * rc2 * np.log1p(x2)
        return math.pi * rc2 / (self.beta - 1.0) * (1.0 - (1.0 + x2) ** (1.0 - self.beta))

    def surface_brightness(self, r_arcsec: np.ndarray) -> np.ndarray:
        """Normalised PSF (fraction of the flux per arcsec^2) of the truncated profile."""
        return self.profile(r_arcsec) / float(self._cumulative(self.truncation_arcsec))

    def encircled_energy(self, radius_arcsec: np.ndarray) -> np.ndarray:
        """Fraction of the (truncated) PSF flux within ``radius_arcsec`` of the centre."""
        r = np.minimum(np.asarray(radius_arcsec, dtype=np.float64), self.truncation_arcsec)
        return self._cumulative(r) / float(self._cumulative(self.truncation_arcsec))

    def default_oversample(self, pixel_arcsec: float) -> int:
        """Sub-pixels per axis: at least 8, and >= 8 per core radius."""
        return max(8, math.ceil(8.0 * pixel_arcsec / self.core_radius_arcsec))

    def kernel(
        self,
        pixel_arcsec: float,
        oversample: int | None = None,
        offset_pix: tuple[float, float] = (0.0, 0.0),
        half_size: int | None = None,
    ) -> np.ndarray:
        """Pixel-integrated PSF as a (2H+1, 2H+1) float64 array summing to one.

        ``offset_pix`` = (dy, dx): source position relative to the centre pixel [H, H], in pixels.
        ``half_size`` H defaults to the truncation radius (plus the offset) in pixels. The kernel is
        renormalised to sum exactly to one; if H cuts the truncated profile the cut flux is put back
        proportionally (a warning-free choice for small stamps, documented here).
        """
        os_ = oversample or self.default_oversample(pixel_arcsec)
        dy, dx = offset_pix
        if half_size is None:
            half_size = math.ceil(self.truncation_arcsec / pixel_arcsec + 0.5 + max(abs(dy), abs(dx)))
        n = 2 * half_size + 1
        sub = (np.arange(n * os_) + 0.5) / os_ - half_size - 0.5  # sub-pixel centres, pixels
        yy = (sub - dy)[:, None]
        xx = (sub - dx)[None, :]
        vals = self.profile(np.hypot(yy, xx) * pixel_arcsec)
        ker = vals.reshape(n, os_, n, os_).sum(axis=(1, 3))
        return ker / ker.sum()


@lru_cache(maxsize=16)
def _phase_stamps_cached(
    core_radius_arcsec: float, beta: float, truncation_arcsec: float, pixel_arcsec: float, phases: int
) -> np.ndarray:
    psf = KingPSF(core_radius_arcsec, beta, truncation_arcsec)
    fine = pixel_arcsec / phases
    r_fine = math.floor(truncation_arcsec / fine)  # last fine offset with flux
    half = math.ceil(r_fine / phases)  # stamp half size, pixels
    a = half * phases + phases  # fine-array half size
    o = np.arange(-a, a + 1)
    kf = psf.profile(np.hypot(o[:, None], o[None, :]) * fine)
    kf /= kf.sum()  # midpoint rule, sub-pixel = fine pixel
    n = 2 * half + 1
    out = np.empty((phases, phases, n, n))
    for py in range(phases):
        s = a - half * phases - py
        rows = kf[s : s + n * phases].reshape(n, phases, -1).sum(axis=1)
        for px in range(phases):
            t = a - half * phases - px
            out[py, px] = rows[:, t : t + n * phases].reshape(n, n, phases).sum(axis=2)
    out.setflags(write=False)
    return out


def phase_stamps(psf: KingPSF, pixel_arcsec: float, phases: int) -> np.ndarray:
    """Library of pixel-integrated PSF stamps for sources on a sub-pixel lattice.

    Returns a read-only float64 array [phases, phases, 2H+1, 2H+1]. ``stamps[py, px]`` is the PSF of
    a source whose position relative to the stamp's centre pixel is
    (-0.5 + (py + 0.5) / phases, -0.5 + (px + 0.5) / phases) pixels, i.e. at the centre of the
    sub-pixel (py, px) of that pixel. Each stamp holds the whole truncated PSF, so it sums to one
    (to rounding). Cached per (PSF, pixel size, phases).
    """
    return _phase_stamps_cached(
        float(psf.core_radius_arcsec), float(psf.beta), float(psf.truncation_arcsec), float(pixel_arcsec), int(phases)
    )


def cauchy_matching_kernel(
    psf_lr: KingPSF, psf_hr: KingPSF, hr_pixel_arcsec: float, half_size: int | None = None
) -> np.ndarray:
    """Analytic matching kernel for beta = 1.5: King(r_c,LR - r_c,HR) sampled at HR pixel centres."""
    if abs(psf_lr.beta - 1.5) > 1e-9 or abs(psf_hr.beta - 1.5) > 1e-9:
        raise ValueError("the Cauchy matching kernel is exact only for beta = 1.5 (use method='fourier')")
    rc = psf_lr.core_radius_arcsec - psf_hr.core_radius_arcsec
    if rc <= 0:
        raise ValueError("the LR PSF must be broader than the HR PSF")
    diff = KingPSF(rc, 1.5, psf_lr.truncation_arcsec)
    h = half_size if half_size is not None else math.ceil(psf_lr.truncation_arcsec / hr_pixel_arcsec)
    o = np.arange(-h, h + 1) * hr_pixel_arcsec
    k = diff.profile(np.hypot(o[:, None], o[None, :]))
    return k / k.sum()


def matching_kernel(
    psf_lr: KingPSF,
    psf_hr: KingPSF,
    hr_pixel_arcsec: float,
    method: str = "fourier",
    half_size: int | None = None,
    regularization: float = 1e-6,
) -> np.ndarray:
    """Kernel K on the HR grid with PSF_HR ⊛ K ≈ PSF_LR (both pixel-integrated on the HR grid).

    ``method='fourier'``: K = IFFT[ P_LR conj(P_HR) / (|P_HR|^2 + eps max|P_HR|^2) ] on a zero-padded
    grid, cropped to ``half_size`` (default: the LR truncation radius in HR pixels), clipped at zero and
    normalised to sum one. ``method='cauchy'``: see :func:`cauchy_matching_kernel`.
    Returns a float64 (2H+1, 2H+1) array summing to one.
    """
    if method == "cauchy":
        return cauchy_matching_kernel(psf_lr, psf_hr, hr_pixel_arcsec, half_size)
    if method != "fourier":
        raise ValueError(f"unknown matching-kernel method {method!r} (expected 'fourier' or 'cauchy')")
    h = half_size if half_size is not None else math.ceil(psf_lr.truncation_arcsec / hr_pixel_arcsec)
    t = psf_lr.kernel(hr_pixel_arcsec)
    p = psf_hr.kernel(hr_pixel_arcsec)
    n = 1 << math.ceil(math.log2(t.shape[0] + p.shape[0] + 2 * h + 1))

    def centred_fft(a: np.ndarray) -> np.ndarray:
        c = a.shape[0] // 2
        buf = np.zeros((n, n))
        buf[: a.shape[0], : a.shape[1]] = a
        return np.fft.rfft2(np.roll(buf, (-c, -c), axis=(0, 1)))  # centre pixel -> index 0

    ft, fp = centred_fft(t), centred_fft(p)
    eps = regularization * float(np.max(np.abs(fp)) ** 2)
    k = np.fft.irfft2(ft * np.conj(fp) / (np.abs(fp) ** 2 + eps), s=(n, n))
    k = np.roll(k, (h, h), axis=(0, 1))[: 2 * h + 1, : 2 * h + 1]
    k = np.clip(k, 0.0, None)  # ringing at the 1e-6 level; a kernel of optics is non-negative
    return k / k.sum()


def sr_matching_kernel(
    pixel_arcsec: float,
    scale: int,
    psf_fwhm_arcsec: float = DEFAULT_FWHM_ARCSEC,
    psf_beta: float = DEFAULT_BETA,
) -> np.ndarray:
    """The HR -> LR matching kernel of an x``scale`` SR: from the LR King PSF narrowed ``scale`` times (the SR
    target's optics) to the LR PSF itself, sampled on the HR grid (``pixel_arcsec`` / ``scale``, pixel_arcsec the
    input pixel in arcsec). The forward model of an SR prediction to what the telescope records blurs with it,
    then sums ``scale`` x ``scale`` blocks."""
    s = int(scale)
    psf_lr = KingPSF.from_fwhm(psf_fwhm_arcsec, psf_beta)
    return matching_kernel(psf_lr, psf_lr.narrower(s), pixel_arcsec / s)


def sr_made_consistent(
    hr_rate: np.ndarray,
    input_grid_rate: np.ndarray,
    mask: np.ndarray,
    pixel_arcsec: float,
    rl_iterations: int = 0,
    psf_fwhm_arcsec: float = DEFAULT_FWHM_ARCSEC,
    psf_beta: float = DEFAULT_BETA,
) -> np.ndarray:
    """An x s SR rate image (counts/s per output pixel) made consistent with an input-grid rate estimate (e.g. a
    denoiser's output, counts/s per input pixel) over the input pixels where ``mask`` is true
    (:mod:`lit_sr.inference.consistency`; negative values are clipped to 0 first).

    ``rl_iterations`` = 0: every s x s block rescaled so that its sum equals the estimate (exact). > 0: that many
    Richardson-Lucy iterations from the SR image toward (:func:`sr_matching_kernel` blur, mirror-padded, then
    s x s sums) = the estimate: the physical forward model of the observation."""
    from lit_sr.inference.consistency import blur_sum_operator, project_block_sums, richardson_lucy_consistent

    s = hr_rate.shape[0] // input_grid_rate.shape[0]
    y0 = torch.from_numpy(np.clip(np.asarray(hr_rate, np.float64), 0.0, None))
    d = torch.from_numpy(np.clip(np.asarray(input_grid_rate, np.float64), 0.0, None))
    w = torch.from_numpy(np.asarray(mask, np.float64))
    if rl_iterations <= 0:
        return project_block_sums(y0, d, s, weight=w).numpy()
    kernel = torch.from_numpy(sr_matching_kernel(pixel_arcsec, s, psf_fwhm_arcsec, psf_beta))
    forward, adjoint = blur_sum_operator(kernel, s, padding="symmetric")
    return richardson_lucy_consistent(y0, d, forward, adjoint, rl_iterations, weight=w).numpy()


class PSFMatchingBlur(torch.nn.Module):
    """Torch forward operator HR optics -> LR optics on the HR grid: convolution of [..., H, W] rate images
    with :func:`matching_kernel` (mirror-padded edges, so no flux is lost or invented there).

    An x``scale`` SR target has the PSF narrowed ``scale`` times (:meth:`KingPSF.narrower`); a reference
    measured with the telescope's own optics (held-out counts of a real observation) sees the sky through
    the LR PSF. A loss or score of the SR prediction against such a reference blurs the prediction with this
    operator first (and sums ``scale`` x ``scale`` blocks): the forward model of the observation. Applied by
    FFT (the kernel spans the LR truncation radius: 61 x 61 HR pixels at 2 arcsec).

    Args:
        pixel_arcsec: input (LR) pixel size, arcsec; the kernel is sampled on pixel_arcsec / scale.
        scale: SR factor.
        psf_fwhm_arcsec, psf_beta: the LR King PSF (the simulator's defaults: 6 arcsec, 1.5).
    """

    def __init__(
        self,
        pixel_arcsec: float,
        scale: int = 2,
        psf_fwhm_arcsec: float = DEFAULT_FWHM_ARCSEC,
        psf_beta: float = DEFAULT_BETA,
    ) -> None:
        super().__init__()
        if not pixel_arcsec > 0 or int(scale) < 2:
            raise ValueError(f"PSFMatchingBlur needs pixel_arcsec > 0 and scale >= 2, got {pixel_arcsec}, {scale}")
        kernel = sr_matching_kernel(pixel_arcsec, int(scale), psf_fwhm_arcsec, psf_beta)
        self.register_buffer("kernel", torch.as_tensor(kernel, dtype=torch.float32), persistent=False)
        self.half = kernel.shape[0] // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.half
        H, W = x.shape[-2:]
        lead = x.shape[:-2]
        flat = x.reshape(-1, 1, H, W)
        if H <= h or W <= h:
            raise ValueError(
                f"PSFMatchingBlur: image {H} x {W} must exceed the kernel's half size {h} (mirror padding)"
            )
        padded = torch.nn.functional.pad(flat, (h, h, h, h), mode="reflect")
        size = (padded.shape[-2] + 2 * h, padded.shape[-1] + 2 * h)
        k = self.kernel.to(x.dtype)
        spec = torch.fft.rfft2(padded, s=size) * torch.fft.rfft2(k, s=size)
        full = torch.fft.irfft2(spec, s=size)
        out = full[..., 2 * h : 2 * h + H, 2 * h : 2 * h + W]
        return out.reshape(*lead, H, W)
