"""Einstein-radius estimate from a lens image: the mean ridge radius of the lensed light over azimuth.

Method (numpy only):
  1. optional lens-light removal (``lens_light_percentile``): along elliptical rings one pixel wide (axis ratio and
     angle from the second moments of the central light) subtract that percentile of the pixel values -- the lens
     galaxy is removed, arcs (which cover only part of each ring) mostly survive; the steep core leaves residuals,
     so combine it with ``min_radius_arcsec`` (pixels closer to the centre are ignored);
  2. keep pixels (outside ``min_radius_arcsec``) above ``threshold = max(threshold_fraction * peak, n_sigma *
     noise)``, the peak taken outside ``min_radius_arcsec`` and the noise being the MAD standard deviation of the
     image border (the border holds sky only);
  3. split the kept pixels into ``n_azimuth_bins`` sectors around the centre; in every sector with kept pixels the
     ridge radius is the mean radius of those pixels weighted by (value - threshold);
  4. theta_E = mean of the sector radii (each sector counts once, whatever its flux).

Why step 4 weights sectors, not flux: for a singular isothermal sphere a source at offset beta has images at
theta_E + beta and theta_E - beta whose fluxes differ (magnifications theta_E/beta +- 1), so a flux-weighted mean
radius is biased by beta^2 / theta_E; but both images subtend the same azimuthal angle (tangential stretch r/beta
at radius r), so the per-sector average is unbiased. For full rings the ridge radius varies as theta_E + beta
cos(phi) and its azimuthal mean is again theta_E. Ellipticity and shear make this approximate.

Accuracy (tests/test_lensing_sim.py; 50 noiseless no_sub lenses of the default config, 100x100 HR): median
|error| 0.034" on HR (0.05"/px) and 0.040" on the 2x2-binned LR; 0.025" / 0.024" with ``fit_center``. With lens
light, ``lens_light_percentile=20, min_radius_arcsec=0.5`` brings the median |error| of 12 lenses from 1.02" (no
subtraction) to 0.12" -- a rough heuristic, biased low by the lens core's residual, not a lens-light fit.

Centre: the image centre (where the simulator puts the lens) unless ``center_arcsec`` is given; with
``fit_center=True`` a circle is fitted (algebraic least squares, Kasa) to the sector ridge points and the fit is
repeated once about that centre. Pixel (i, j) of an S x S image is at x = (j - (S-1)/2) * pixel_scale,
y = (i - (S-1)/2) * pixel_scale (the simulator's convention).
"""

from __future__ import annotations

import math

import numpy as np


def _pixel_coordinates(shape: tuple[int, int], pixel_scale: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    y = (np.arange(h) - (h - 1) / 2) * pixel_scale
    x = (np.arange(w) - (w - 1) / 2) * pixel_scale
    return np.broadcast_to(x[None, :], shape), np.broadcast_to(y[:, None], shape)


def _border_noise(img: np.ndarray, width: int) -> float:
    border = np.concatenate(
        [img[:width].ravel(), img[-width:].ravel(), img[:, :width].ravel(), img[:, -width:].ravel()]
    )
    return float(1.4826 * np.median(np.abs(border - np.median(border))))


def _central_shape(
    img: np.ndarray, x: np.ndarray, y: np.ndarray, center: tuple[float, float], radius: float
) -> tuple[float, float]:
    """Axis ratio q and major-axis angle of the light within ``radius`` (flux-weighted second moments)."""
    dx, dy = x - center[0], y - center[1]
    w = np.where(np.hypot(dx, dy) < radius, np.clip(img, 0.0, None), 0.0)
    if w.sum() <= 0:
        return 1.0, 0.0
    qxx, qyy, qxy = (w * dx * dx).sum(), (w * dy * dy).sum(), (w * dx * dy).sum()
    tr, det = qxx + qyy, qxx * qyy - qxy**2
    disc = math.sqrt(max(tr * tr / 4 - det, 0.0))
    lam1, lam2 = tr / 2 + disc, max(tr / 2 - disc, 1e-30)
    return math.sqrt(lam2 / lam1), 0.5 * math.atan2(2 * qxy, qxx - qyy)


def subtract_lens_light(
    img: np.ndarray,
    pixel_scale_arcsec: float,
    center_arcsec: tuple[float, float] = (0.0, 0.0),
    percentile: float = 20.0,
    shape_radius_arcsec: float = 0.5,
) -> np.ndarray:
    """``img`` minus an estimate of the lens galaxy: along elliptical rings (one pixel wide; axis ratio and angle
    from the second moments of the light within ``shape_radius_arcsec``, where the lens dominates) subtract the
    ``percentile`` of the pixel values. Arcs cover only part of each ring and mostly survive."""
    x, y = _pixel_coordinates(img.shape, pixel_scale_arcsec)
    q, angle = _central_shape(img, x, y, center_arcsec, shape_radius_arcsec)
    dx, dy = x - center_arcsec[0], y - center_arcsec[1]
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    ell_r = np.sqrt(q * u * u + v * v / q)  # elliptical radius with the area of a circle of that radius
    ring = np.rint(ell_r / pixel_scale_arcsec).astype(int)
    out = img.astype(np.float64).copy()
    order = np.argsort(ring, axis=None, kind="stable")
    bounds = np.flatnonzero(np.diff(ring.ravel()[order])) + 1
    for idx in np.split(order, bounds):
        out.flat[idx] -= np.percentile(img.flat[idx], percentile)
    return out


def _sector_radii(
    img: np.ndarray, x: np.ndarray, y: np.ndarray, center: tuple[float, float], keep: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge radius and angle of every sector holding kept pixels."""
    dx, dy = x[keep] - center[0], y[keep] - center[1]
    r = np.hypot(dx, dy)
    phi = np.arctan2(dy, dx)
    w = img[keep]
    sector = np.minimum(((phi + math.pi) / (2 * math.pi) * n_bins).astype(int), n_bins - 1)
    wsum = np.bincount(sector, weights=w, minlength=n_bins)
    rsum = np.bincount(sector, weights=w * r, minlength=n_bins)
    phisum = np.bincount(sector, weights=w * phi, minlength=n_bins)  # no wrap-around inside a sector
    used = wsum > 0
    return rsum[used] / wsum[used], phisum[used] / wsum[used]


def _kasa_circle(px: np.ndarray, py: np.ndarray) -> tuple[float, float, float]:
    """Least-squares circle through points: solve x^2 + y^2 = 2 a x + 2 b y + c."""
    a_mat = np.column_stack([2 * px, 2 * py, np.ones_like(px)])
    (a, b, c), *_ = np.linalg.lstsq(a_mat, px**2 + py**2, rcond=None)
    return float(a), float(b), float(math.sqrt(max(c + a * a + b * b, 0.0)))


def einstein_radius_from_image(
    img: np.ndarray,
    pixel_scale_arcsec: float,
    *,
    center_arcsec: tuple[float, float] | None = None,
    fit_center: bool = False,
    threshold_fraction: float = 0.15,
    n_sigma: float = 3.0,
    n_azimuth_bins: int = 32,
    lens_light_percentile: float | None = None,
    min_radius_arcsec: float = 0.0,
    border_width: int = 3,
) -> float:
    """Einstein radius in arcsec of one lens image ``img`` [H, W] (any linear flux unit); NaN if no pixel passes
    the threshold. See the module doc for the method and the pixel convention.

    Args:
        center_arcsec: lens centre (x, y) in arcsec; default the image centre.
        fit_center: refine the centre with a circle fit to the ridge points.
        threshold_fraction: keep pixels above this fraction of the image peak ...
        n_sigma: ... and above n_sigma times the border noise (MAD).
        n_azimuth_bins: sectors over 2 pi.
        lens_light_percentile: if set, subtract this azimuthal percentile per radius first (lens light).
        min_radius_arcsec: ignore pixels closer than this to the centre (residual lens-light core).
    """
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 2:
        raise ValueError(f"einstein_radius_from_image expects a 2-D image, got shape {img.shape}")
    center = (0.0, 0.0) if center_arcsec is None else (float(center_arcsec[0]), float(center_arcsec[1]))
    if lens_light_percentile is not None:
        img = subtract_lens_light(img, pixel_scale_arcsec, center, lens_light_percentile)
    x, y = _pixel_coordinates(img.shape, pixel_scale_arcsec)
    noise = _border_noise(img, border_width) if n_sigma > 0 else 0.0
    outside_core = np.hypot(x - center[0], y - center[1]) >= min_radius_arcsec
    if not outside_core.any():
        return float("nan")
    threshold = max(threshold_fraction * float(img[outside_core].max()), n_sigma * noise)
    keep = (img > threshold) & outside_core
    if not keep.any():
        return float("nan")
    radii, angles = _sector_radii(img - threshold, x, y, center, keep, n_azimuth_bins)
    if fit_center and radii.size >= 3:
        cx, cy, _ = _kasa_circle(center[0] + radii * np.cos(angles), center[1] + radii * np.sin(angles))
        center = (cx, cy)
        keep = (img > threshold) & (np.hypot(x - cx, y - cy) >= min_radius_arcsec)
        radii, _ = _sector_radii(img - threshold, x, y, center, keep, n_azimuth_bins)
    return float(radii.mean()) if radii.size else float("nan")


def einstein_radii_from_images(images: np.ndarray, pixel_scale_arcsec: float, **kwargs) -> np.ndarray:
    """:func:`einstein_radius_from_image` for every image of ``images`` [N, H, W] (or [N, 1, H, W]); float64 [N]."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise ValueError(f"einstein_radii_from_images expects [N, H, W] or [N, 1, H, W], got shape {images.shape}")
    return np.array([einstein_radius_from_image(im, pixel_scale_arcsec, **kwargs) for im in images])
