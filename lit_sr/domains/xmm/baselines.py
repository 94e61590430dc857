"""Classical baselines of X-ray denoising / super-resolution: Gaussian smoothing of a count-rate image.

An X-ray astronomer's first denoiser is a Gaussian smoothing of the counts image divided by the smoothed
exposure map (the exposure-corrected, "normalised-convolution" smoothing of ``csmooth``-like tools without
adaptivity): it handles chip gaps and vignetting, and conserves the counts. Its one free parameter, the
width sigma, is tuned on a validation split (:func:`tune_sigma`), never on the test fields.

Units: rates are counts/s per pixel of their own grid; ``sigma_px`` is in pixels of that grid.

Smoothing operator. The kernel is the pixel-integrated Gaussian (erf differences, so sigma -> 0 is the
identity and small widths are not aliased), truncated at 4 sigma and renormalised. The image boundary is
half-sample symmetric (scipy ``mode='reflect'``: ``d c b a | a b c d | d c b a``): the weight a pixel
would spread outside the image is folded back in, so every pixel's weights still sum to 1 and the
operator conserves the image sum exactly, for any width. The 2-D operator is separable, applied as two
dense 1-D matrices (``A_y @ x @ A_x^T``): exact, the same on numpy and torch, and cheap at these field
sizes (<= a few hundred pixels a side).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable, Iterable, Sequence, TypeVar

import numpy as np
import torch

from lit_sr.domains.xmm.photometry import poisson_deviance
from lit_sr.metrics.stats import tune_on_grid
from lit_sr.nets.smoothing_gate import pixel_gaussian_kernel

Array = TypeVar("Array", np.ndarray, torch.Tensor)

TRUNCATE_SIGMA = 4.0
#: smoothed exposure below this fraction of the pixel's own exposure scale is treated as unexposed
MIN_EXPOSURE_FRACTION = 1e-6
DEFAULT_SIGMA_GRID_PX = tuple(float(s) for s in np.round(np.arange(0.0, 4.01, 0.25), 2))


@lru_cache(maxsize=64)
def smoothing_matrix(n: int, sigma_px: float) -> np.ndarray:
    """The 1-D smoothing operator [n, n] (float64): ``out = A @ x``. Columns sum to 1 (sum conserving),
    and the matrix is symmetric (the half-sample-symmetric fold of a symmetric kernel)."""
    if n < 1:
        raise ValueError(f"smoothing_matrix: n={n} must be >= 1")
    if not (sigma_px >= 0.0 and math.isfinite(sigma_px)):
        raise ValueError(f"gaussian_smooth_rate: sigma_px={sigma_px} must be finite and >= 0 (pixels)")
    if sigma_px == 0.0:
        return np.eye(n)
    k = pixel_gaussian_kernel(sigma_px, TRUNCATE_SIGMA).numpy()
    radius = k.size // 2
    d = np.arange(-radius, radius + 1, dtype=np.float64)
    a = np.zeros((n, n))
    src = np.arange(n)
    for offset, weight in zip(d.astype(np.int64), k):
        dst = src + offset
        # fold positions outside [0, n) back in (half-sample symmetric, period 2n)
        dst = np.mod(dst, 2 * n)
        dst = np.where(dst >= n, 2 * n - 1 - dst, dst)
        np.add.at(a, (dst, src), weight)
    return a


def _apply(x: Array, sigma_px: float) -> Array:
    h, w = x.shape[-2:]
    ay, ax = smoothing_matrix(int(h), float(sigma_px)), smoothing_matrix(int(w), float(sigma_px))
    if isinstance(x, torch.Tensor):
        ty = torch.as_tensor(ay, dtype=x.dtype, device=x.device)
        tx = torch.as_tensor(ax, dtype=x.dtype, device=x.device)
        return ty @ x @ tx.T
    return ay @ np.asarray(x) @ ax.T


def gaussian_smooth_rate(rate: Array, sigma_px: float, exposure: Array | None = None) -> Array:
    """Gaussian smoothing of a count-rate image ``rate`` [..., H, W] (counts/s per pixel), numpy or torch.

    ``exposure`` None: the plain smoothing, which conserves the image sum (sum over pixels of the rate).
    ``exposure`` [..., H, W] (s, broadcastable): the exposure-corrected smoothing
    ``S(rate x exposure) / S(exposure)`` -- counts and exposure smoothed alike, so a flat sky stays flat
    across chip gaps and vignetting; 0 where the exposure is 0 (no estimate is made there). It conserves
    the counts up to the redistribution between pixels of unequal exposure.
    ``sigma_px`` = 0 returns the input (a copy).
    """
    if exposure is None:
        return _apply(rate, sigma_px)
    if isinstance(rate, torch.Tensor):
        exposure = torch.as_tensor(exposure, dtype=rate.dtype, device=rate.device)
        exposure = exposure.expand_as(rate) if exposure.shape != rate.shape else exposure
        live = exposure > 0
        e = torch.where(live, exposure, torch.zeros_like(exposure))
        num, den = _apply(rate * e, sigma_px), _apply(e, sigma_px)
        scale = e.amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(rate.dtype).tiny)
        ok = live & (den > MIN_EXPOSURE_FRACTION * scale)
        return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))
    rate = np.asarray(rate)
    exposure = np.broadcast_to(np.asarray(exposure, dtype=rate.dtype), rate.shape)
    live = exposure > 0
    e = np.where(live, exposure, 0.0)
    num, den = _apply(rate * e, sigma_px), _apply(e, sigma_px)
    scale = np.maximum(e.max(axis=(-2, -1), keepdims=True), np.finfo(np.float64).tiny)
    ok = live & (den > MIN_EXPOSURE_FRACTION * scale)
    return np.where(ok, num / np.where(ok, den, 1.0), 0.0).astype(rate.dtype, copy=False)


def tune_sigma(
    inputs: Sequence[Array],
    references: Sequence[Array],
    sigma_grid_px: Iterable[float] = DEFAULT_SIGMA_GRID_PX,
    *,
    exposures: Sequence[Array] | None = None,
    masks: Sequence[Array] | None = None,
    after: Callable[[Array], Array] | None = None,
    transform: Callable[[Array], Array] | None = None,
    loss: str = "mse",
    reference_exposures: Sequence[Array] | None = None,
) -> tuple[float, dict[float, float]]:
    """The smoothing width (pixels of the input grid) that best predicts ``references`` from ``inputs``,
    chosen on a grid; returns it and every (sigma, loss) tried. Use the validation split only.

    Args:
        inputs: observed count-rate images [..., h, w] (counts/s per pixel), numpy or torch.
        references: what the smoothed input should match, on the grid of ``after(smoothed)``:
            ``loss='mse'``: rates (e.g. the simulator's noiseless rate);
            ``loss='poisson'``: counts of an independent observation of the same sky (a longer exposure, or
            the other half of binomially thinned counts on real data), scored by the mean Poisson deviance
            against ``prediction x reference_exposures`` (no truth needed).
        sigma_grid_px: candidate widths (pixels of the input grid; 0 = no smoothing).
        exposures: input exposure maps (s): exposure-corrected smoothing (see :func:`gaussian_smooth_rate`).
        masks: pixels that count in the loss (boolean, reference grid); None = all (``mse``) or the pixels
            with positive reference exposure (``poisson``).
        after: applied to the smoothed rate before comparison (e.g. a flux-conserving bicubic x2 upsampling
            for the SR baseline).
        transform: ``mse`` only -- both sides are compared after it (e.g. the sqrt stretch of model space).
        loss: 'mse' (mean squared error over all masked pixels of all images) or 'poisson'.
    """
    inputs, references = list(inputs), list(references)
    if len(inputs) != len(references) or not inputs:
        raise ValueError(f"tune_sigma: {len(inputs)} inputs and {len(references)} references; expected the same, >= 1")
    if loss not in ("mse", "poisson"):
        raise ValueError(f"tune_sigma: loss={loss!r}; expected 'mse' or 'poisson'")
    if loss == "poisson" and reference_exposures is None:
        raise ValueError("tune_sigma: loss='poisson' needs reference_exposures (s) to turn rates into counts")

    def np64(x) -> np.ndarray:
        return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)

    refs = [np64(r) for r in references]
    if loss == "mse" and transform is not None:
        refs = [np64(transform(r)) for r in references]
    if masks is not None:
        mask_list = [np64(m).astype(bool) for m in masks]
    elif loss == "poisson":
        mask_list = [np64(e) > 0 for e in reference_exposures]
    else:
        mask_list = [np.ones(r.shape, bool) for r in refs]

    def objective(sigma: float) -> float:
        total, n = 0.0, 0
        for i, x in enumerate(inputs):
            est = gaussian_smooth_rate(x, sigma, None if exposures is None else exposures[i])
            if after is not None:
                est = after(est)
            if loss == "mse":
                pred = np64(transform(est) if transform is not None else est)
                diff = (pred - refs[i])[mask_list[i]]
                total += float(np.sum(diff * diff))
                n += diff.size
            else:
                mu = np.clip(np64(est), 0.0, None) * np64(reference_exposures[i])
                m = mask_list[i]
                dev = poisson_deviance(refs[i][m], np.maximum(mu[m], 1e-9))
                total += float(dev.sum())
                n += dev.size
        return total / n if n else float("nan")

    return tune_on_grid(objective, sigma_grid_px)
