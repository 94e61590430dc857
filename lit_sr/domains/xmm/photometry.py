"""Astronomy metrics for X-ray counts / rate images: aperture photometry, source detection, PSF FWHM,
and the Poisson deviance.

Positions are 0-based pixel coordinates (x = column, y = row, pixel centres at integers), as in
photutils and astropy ``origin=0``.

Detection (:func:`detection_stats`) uses a sliding-cell Poisson test, the classic approach for
low-count X-ray images: the counts N in a small circular cell around every pixel are compared with
the expected background B in the same cell; under the null hypothesis N ~ Poisson(B), so the chance
probability p = P(X >= N | B) = regularised lower incomplete gamma P(N, B) is exact for integer N
(and its continuous extension is used for non-integer images such as model outputs). p is expressed as
a Gaussian-equivalent significance; local maxima above the threshold are detections. Unlike a
Gaussian k-sigma cut this stays calibrated at < 1 background count per cell, where Poisson tails are
much heavier than Gaussian ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from photutils.aperture import CircularAnnulus, CircularAperture
from scipy import ndimage, optimize, special, stats
from scipy.spatial import cKDTree

# ------------------------------------------------------------------------------------------------
# Poisson deviance


def poisson_deviance(observed_counts: np.ndarray, expected_counts: np.ndarray) -> np.ndarray:
    """Per-pixel Poisson deviance 2 [o ln(o/e) - (o - e)] (o = 0 gives 2 e; o > 0 with e = 0 gives inf)."""
    o = np.asarray(observed_counts, dtype=np.float64)
    e = np.asarray(expected_counts, dtype=np.float64)
    if np.any(e < 0) or np.any(o < 0):
        raise ValueError("poisson_deviance needs non-negative observed and expected counts")
    with np.errstate(divide="ignore", invalid="ignore"):
        d = 2.0 * (special.xlogy(o, o) - special.xlogy(o, e) - (o - e))
    return np.clip(d, 0.0, None)


def poisson_deviance_reference(mu: np.ndarray, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Expectation E[D] of the deviance of a Poisson(mu) draw against mu, and P(D > threshold).

    Exact sums over k for mu <= 200; above, E[D] = 1 + 1/(6 mu) (asymptotic series) and
    P(D > t) = P(chi2_1 > t). At low counts E[D] is not 1 (0.092 at mu = 0.01, 0.938 at 0.4, 1.147 at 1,
    1.047 at 5; it -> 0 as mu -> 0), so compare a mean deviance with this reference, not with 1.
    """
    mu = np.asarray(mu, dtype=np.float64)
    flat = mu.ravel()
    ed = np.empty_like(flat)
    pt = np.empty_like(flat) if threshold is not None else None
    small = flat <= 200.0
    if small.any():
        m = flat[small]
        kmax = int(np.ceil(m.max() + 12 * np.sqrt(m.max()) + 30))
        k = np.arange(kmax + 1, dtype=np.float64)[:, None]
        logp = special.xlogy(k, m[None, :]) - m[None, :] - special.gammaln(k + 1)
        p = np.exp(logp)
        d = poisson_deviance(np.broadcast_to(k, p.shape), np.broadcast_to(m[None, :], p.shape))
        d = np.where(np.isfinite(d), d, 0.0)  # k > 0 at mu = 0 has p = 0
        ed[small] = (p * d).sum(axis=0)
        if pt is not None:
            pt[small] = (p * (d > threshold)).sum(axis=0)
    big = ~small
    if big.any():
        ed[big] = 1.0 + 1.0 / (6.0 * flat[big])
        if pt is not None:
            pt[big] = stats.chi2.sf(threshold, 1)
    return ed.reshape(mu.shape), None if pt is None else pt.reshape(mu.shape)


# ------------------------------------------------------------------------------------------------
# aperture photometry


def _positions(positions_xy: np.ndarray) -> np.ndarray:
    pos = np.asarray(positions_xy, dtype=np.float64).reshape(-1, 2)
    return pos


def aperture_flux_ratio(
    rate_image: np.ndarray,
    positions_xy: np.ndarray,
    true_rates: np.ndarray,
    radius_pix: float,
    annulus: tuple[float, float] = (6.0, 9.0),
    psf: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Recovered / true flux of sources at known positions.

    Flux = sum in a circle of ``radius_pix`` minus the local background, estimated as the *mean* per pixel
    in the annulus (r_in, r_out) (a median is biased in sparse Poisson images). With ``psf`` (a kernel
    on the same pixel grid, centred, summing to one) the result is divided by the PSF fraction this
    procedure recovers: EE(r) - (A_ap / A_ann) * EE(r_in..r_out), i.e. the aperture's encircled energy
    minus the PSF light that leaks into the annulus and is subtracted as background. ``mask``: True for
    pixels to ignore (e.g. chip gaps). Returns float64 [N].
    """
    data = np.asarray(rate_image, dtype=np.float64)
    pos = _positions(positions_xy)
    ap = CircularAperture(pos, r=radius_pix)
    an = CircularAnnulus(pos, r_in=annulus[0], r_out=annulus[1])
    ap_sum, _ = ap.do_photometry(data, mask=mask, method="exact")
    an_sum, _ = an.do_photometry(data, mask=mask, method="exact")
    ap_area = np.atleast_1d(ap.area_overlap(data, mask=mask, method="exact"))
    an_area = np.atleast_1d(an.area_overlap(data, mask=mask, method="exact"))
    with np.errstate(divide="ignore", invalid="ignore"):
        bkg = an_sum / an_area
        net = ap_sum - bkg * ap_area
        factor = 1.0 if psf is None else aperture_recovery_fraction(psf, radius_pix, annulus)
        return net / (factor * np.asarray(true_rates, dtype=np.float64))


def aperture_recovery_fraction(psf: np.ndarray, radius_pix: float, annulus: tuple[float, float]) -> float:
    """Fraction of a source's flux that aperture photometry with an annulus background recovers for a
    source of PSF ``psf`` (a centred kernel on the image's pixel grid, summing to one):
    EE(r) - (A_ap / A_ann) EE(r_in..r_out), the encircled energy minus the PSF light in the annulus that
    is subtracted as background."""
    k = np.asarray(psf, dtype=np.float64)
    c = ((k.shape[1] - 1) / 2.0, (k.shape[0] - 1) / 2.0)
    ee_ap = float(CircularAperture(c, r=radius_pix).do_photometry(k, method="exact")[0][0])
    ee_an = float(CircularAnnulus(c, r_in=annulus[0], r_out=annulus[1]).do_photometry(k, method="exact")[0][0])
    return ee_ap - radius_pix**2 / (annulus[1] ** 2 - annulus[0] ** 2) * ee_an


def aperture_net_ratios(
    rate_image: np.ndarray,
    positions_xy: np.ndarray,
    true_rates: np.ndarray,
    radii_pix: Sequence[float],
    annulus: tuple[float, float],
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Background-subtracted aperture flux / true rate at several radii, no PSF correction: [N, len(radii)].
    The correction for the PSF of the product (:func:`aperture_recovery_fraction`) is applied later, once
    the product's PSF is known (see :func:`broadened_psf_kernel`)."""
    cols = [
        aperture_flux_ratio(rate_image, positions_xy, true_rates, float(r), annulus, psf=None, mask=mask)
        for r in radii_pix
    ]
    return np.stack(cols, axis=-1) if cols else np.zeros((len(_positions(positions_xy)), 0))


def broadened_psf_kernel(
    kernel: np.ndarray, fwhm_pix: float, box: int, oversample: int = 4, tolerance_pix: float = 0.01
) -> tuple[np.ndarray, float]:
    """The nominal PSF ``kernel`` (centred, odd side, summing to one) convolved with the circular Gaussian that
    makes its FWHM, measured as the products' FWHM is measured (:func:`point_source_fwhm`: pixel-integrated
    King fit, beta 1.5, ``box`` pixels), equal ``fwhm_pix``; and that Gaussian's sigma (pixels).

    A product that broadens sources while conserving their flux (smoothing, a network's blur) then gets the
    aperture correction of its own PSF, so broadening is not read as flux loss. Products no broader than
    the nominal PSF get the nominal kernel (sigma 0). Sum conserved (reflect boundary, see
    :func:`lit_sr.domains.xmm.baselines.gaussian_smooth_rate`)."""
    from lit_sr.domains.xmm.baselines import gaussian_smooth_rate

    k = np.asarray(kernel, np.float64)
    centre = np.array([[(k.shape[1] - 1) / 2.0, (k.shape[0] - 1) / 2.0]])

    def fwhm_of(sigma: float) -> float:
        return float(
            point_source_fwhm(gaussian_smooth_rate(k, sigma), centre, box=box, beta=1.5, oversample=oversample)[0]
        )

    if not (math.isfinite(fwhm_pix) and fwhm_pix > fwhm_of(0.0)):
        return k, 0.0
    lo, hi = 0.0, max(fwhm_pix / 2.0, 0.5)
    while fwhm_of(hi) < fwhm_pix and hi < k.shape[0]:
        hi *= 2.0
    while hi - lo > tolerance_pix:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if fwhm_of(mid) < fwhm_pix else (lo, mid)
    sigma = 0.5 * (lo + hi)
    return gaussian_smooth_rate(k, sigma), sigma


def summarize_ratios(ratios: np.ndarray) -> dict[str, float]:
    """Median and robust scatter (half the 16-84 % range) of finite ratios, and how many there were."""
    r = np.asarray(ratios, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return {"median": float("nan"), "scatter": float("nan"), "n": 0}
    p16, p50, p84 = np.percentile(r, [16, 50, 84])
    return {"median": float(p50), "scatter": float(0.5 * (p84 - p16)), "n": int(r.size)}


# ------------------------------------------------------------------------------------------------
# detection


def _disk(radius_pix: float) -> np.ndarray:
    h = math.floor(radius_pix)
    o = np.arange(-h, h + 1)
    return (np.hypot(o[:, None], o[None, :]) <= radius_pix + 1e-9).astype(np.float64)


@dataclass
class DetectionResult:
    """Detections (x, y, significance), their match to the truth, completeness and false detections."""

    positions_xy: np.ndarray  # [n_det, 2]
    significance: np.ndarray  # [n_det] Gaussian-equivalent sigma of the cell Poisson test
    matched_true: np.ndarray  # [n_det] index of the matched true source, -1 if false
    true_detected: np.ndarray  # [n_true] bool
    completeness: float  # among true sources with rate >= min_rate
    n_considered: int  # how many true sources entered ``completeness``
    bin_edges: np.ndarray  # rate bins (counts/s or the image unit)
    bin_completeness: np.ndarray  # per bin (nan if empty)
    bin_counts: np.ndarray  # true sources per bin
    n_false: int
    false_per_deg2: float  # nan without pixel_arcsec
    exposed_pixels: int


def significance_map(counts: np.ndarray, background_counts: np.ndarray, cell_radius_pix: float = 1.5) -> np.ndarray:
    """Gaussian-equivalent significance of the counts in a circular cell around each pixel (see module doc)."""
    cell = _disk(cell_radius_pix)
    n = ndimage.convolve(np.asarray(counts, np.float64), cell, mode="constant")
    b = ndimage.convolve(np.asarray(background_counts, np.float64), cell, mode="constant")
    p = np.ones_like(n)
    ok = (n > 0) & (b > 0)
    p[ok] = special.gammainc(n[ok], b[ok])  # P(X >= n | Poisson(b)) for integer n
    sig = stats.norm.isf(np.clip(p, 1e-300, 1.0))
    sig[b <= 0] = 0.0
    return sig


def detect_sources(
    counts: np.ndarray,
    background_counts: np.ndarray,
    significance: float = 5.0,
    cell_radius_pix: float = 1.5,
    min_separation_pix: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of the cell significance above ``significance``; returns (positions_xy [n, 2], sigma [n]).

    Positions are background-subtracted centroids of the counts in a (2 ceil(r)+3)^2 box around each peak.
    Peaks closer than ``min_separation_pix`` to a more significant one are merged into it.
    """
    counts = np.asarray(counts, np.float64)
    bkg = np.broadcast_to(np.asarray(background_counts, np.float64), counts.shape)
    sig = significance_map(counts, bkg, cell_radius_pix)
    size = 2 * math.ceil(min_separation_pix) + 1
    peaks = (sig >= significance) & (sig == ndimage.maximum_filter(sig, size=size, mode="constant"))
    labels, n = ndimage.label(peaks)
    if n == 0:
        return np.zeros((0, 2)), np.zeros(0)
    idx = ndimage.maximum_position(sig, labels, index=np.arange(1, n + 1))
    order = np.argsort([-sig[i] for i in idx])
    kept: list[tuple[int, int]] = []
    for j in order:
        y, x = idx[j]
        if all(math.hypot(y - ky, x - kx) >= min_separation_pix for ky, kx in kept):
            kept.append((y, x))
    h = math.ceil(cell_radius_pix) + 1
    net = counts - bkg
    pos, sigs = [], []
    for y, x in kept:
        y0, y1, x0, x1 = max(y - h, 0), min(y + h + 1, counts.shape[0]), max(x - h, 0), min(x + h + 1, counts.shape[1])
        w = np.clip(net[y0:y1, x0:x1], 0.0, None)
        if w.sum() > 0:
            yy, xx = np.mgrid[y0:y1, x0:x1]
            pos.append((float((w * xx).sum() / w.sum()), float((w * yy).sum() / w.sum())))
        else:
            pos.append((float(x), float(y)))
        sigs.append(float(sig[y, x]))
    return np.asarray(pos), np.asarray(sigs)


def detection_stats(
    image_counts_or_rate: np.ndarray,
    background: np.ndarray | float,
    true_positions: np.ndarray,
    true_rates: np.ndarray,
    significance: float = 5.0,
    match_radius_pix: float = 2.0,
    cell_radius_pix: float = 1.5,
    exposure_s: np.ndarray | float | None = None,
    min_rate: float = 0.0,
    rate_bins: np.ndarray | None = None,
    pixel_arcsec: float | None = None,
) -> DetectionResult:
    """Detect sources, match them to the true list and measure completeness and false detections.

    image / background: counts and expected background counts per pixel; or, with ``exposure_s``, rates
    (counts/s/pixel) that are multiplied by the exposure (s) first. true_positions [n, 2] (x, y) and
    true_rates [n] describe the true sources (pass every true source you do not want to count as a false
    detection, e.g. extended ones too). Matching is one-to-one, most significant detection first, to the
    nearest unmatched true source within ``match_radius_pix``. ``completeness`` is over true sources with
    rate >= ``min_rate``; ``rate_bins`` (edges) gives completeness per bin. False detections are counted
    per image and per deg^2 of exposed sky (pixels with background > 0; needs ``pixel_arcsec``).
    """
    img = np.asarray(image_counts_or_rate, np.float64)
    bkg = np.broadcast_to(np.asarray(background, np.float64), img.shape).astype(np.float64)
    if exposure_s is not None:
        img = img * exposure_s
        bkg = bkg * exposure_s
    det_pos, det_sig = detect_sources(img, bkg, significance, cell_radius_pix, min_separation_pix=match_radius_pix)
    tpos = np.asarray(true_positions, np.float64).reshape(-1, 2)
    trate = np.asarray(true_rates, np.float64).reshape(-1)
    matched = np.full(len(det_pos), -1, dtype=np.int64)
    taken = np.zeros(len(tpos), dtype=bool)
    if len(tpos) and len(det_pos):
        tree = cKDTree(tpos)
        for j in np.argsort(-det_sig):
            cand = tree.query_ball_point(det_pos[j], r=match_radius_pix)
            cand = [c for c in cand if not taken[c]]
            if cand:
                best = min(cand, key=lambda c: np.hypot(*(tpos[c] - det_pos[j])))
                matched[j] = best
                taken[best] = True
    sel = trate >= min_rate
    completeness = float(taken[sel].mean()) if sel.any() else float("nan")
    if rate_bins is None:
        lo = max(trate[sel].min() if sel.any() else 1.0, 1e-300)
        hi = trate.max() if len(trate) else 1.0
        rate_bins = np.geomspace(lo, hi * (1 + 1e-9), 6) if hi > lo else np.array([lo, lo * 2])
    edges = np.asarray(rate_bins, np.float64)
    which = np.digitize(trate, edges) - 1
    nb = len(edges) - 1
    bin_counts = np.array([(which == b).sum() for b in range(nb)])
    bin_comp = np.array([taken[which == b].mean() if bin_counts[b] else np.nan for b in range(nb)])
    n_false = int((matched < 0).sum())
    exposed = int((bkg > 0).sum())
    per_deg2 = float("nan")
    if pixel_arcsec is not None and exposed > 0:
        per_deg2 = n_false / (exposed * (pixel_arcsec / 3600.0) ** 2)
    return DetectionResult(
        det_pos,
        det_sig,
        matched,
        taken,
        completeness,
        int(sel.sum()),
        edges,
        bin_comp,
        bin_counts,
        n_false,
        per_deg2,
        exposed,
    )


@dataclass
class DetectionCurve:
    """Completeness and false detections per field as functions of the detection threshold (Gaussian sigma)."""

    thresholds: np.ndarray  # descending
    completeness: np.ndarray  # at each threshold
    false_per_field: np.ndarray  # at each threshold (non-decreasing along the array)


def detection_curve(
    true_best_significance: np.ndarray, false_significance: np.ndarray, n_fields: int, floor: float = 0.0
) -> DetectionCurve:
    """The completeness / false-detection curve of one product over every threshold >= ``floor``.

    ``true_best_significance``: per true source, the significance of the detection matched to it (one-to-one,
    most significant first; 0 or -inf if none). ``false_significance``: every unmatched detection. Because
    matching runs in decreasing significance, the detections above a threshold and their matches are a prefix
    of the full list, so both numbers at any threshold follow from these two arrays (one detection pass at
    the floor)."""
    t_sig = np.asarray(true_best_significance, np.float64).ravel()
    f_sig = np.sort(np.asarray(false_significance, np.float64).ravel())
    steps = np.concatenate([t_sig[t_sig >= floor], f_sig[f_sig >= floor], [floor]])
    thresholds = np.unique(steps)[::-1]
    top = np.nextafter(thresholds[0], np.inf)  # above everything: nothing detected
    thresholds = np.concatenate([[top], thresholds])
    t_sorted = np.sort(t_sig)
    comp = (len(t_sorted) - np.searchsorted(t_sorted, thresholds, side="left")) / max(len(t_sorted), 1)
    false = (len(f_sig) - np.searchsorted(f_sig, thresholds, side="left")) / max(int(n_fields), 1)
    if len(t_sorted) == 0:
        comp = np.full(len(thresholds), np.nan)
    return DetectionCurve(thresholds, comp, false)


def completeness_at_false_rate(curve: DetectionCurve, false_per_field: float) -> tuple[float, float]:
    """Completeness at a given false-detection rate (per field), linearly interpolated along the curve between
    its two thresholds that bracket the rate (a product more conservative than the rate everywhere returns
    its completeness at the floor, a lower bound); and the stricter bracketing threshold."""
    f, c, t = curve.false_per_field, curve.completeness, curve.thresholds
    # for each distinct false rate the loosest threshold (highest completeness) reaching it
    uniq, idx = np.unique(f, return_index=True)
    best_c = np.array([c[f == u].max() for u in uniq])
    best_t = np.array([t[f == u].min() for u in uniq])
    comp = float(np.interp(false_per_field, uniq, best_c))
    at_or_below = uniq <= false_per_field + 1e-12
    threshold = float(best_t[at_or_below][-1]) if at_or_below.any() else float(t[0])
    return comp, threshold


def estimate_background_rate(
    counts: np.ndarray,
    exposure_s: np.ndarray,
    clip_sigma: float = 3.0,
    cell_radius_pix: float = 1.5,
    iterations: int = 3,
) -> float:
    """Flat background rate (counts/s/pixel) of a counts image: total counts / total exposure over exposed
    pixels, iteratively excluding cells that are significant at ``clip_sigma`` (sources). A simple helper
    for real data where the true background is unknown; it ignores vignetting differences between the
    particle and sky components."""
    counts = np.asarray(counts, np.float64)
    exp = np.asarray(exposure_s, np.float64)
    keep = exp > 0
    rate = counts[keep].sum() / exp[keep].sum()
    for _ in range(iterations):
        sig = significance_map(counts, rate * exp, cell_radius_pix)
        src = ndimage.binary_dilation(sig > clip_sigma, structure=_disk(cell_radius_pix + 1) > 0)
        use = keep & ~src
        if not use.any():
            break
        rate = counts[use].sum() / exp[use].sum()
    return float(rate)


# ------------------------------------------------------------------------------------------------
# FWHM


def _king_pixel_model(params: np.ndarray, shape: tuple[int, int], beta: float | None, oversample: int) -> np.ndarray:
    if beta is None:
        x0, y0, log_rc, amp, bkg, log_bm1 = params
        b = 1.0 + math.exp(log_bm1)
    else:
        x0, y0, log_rc, amp, bkg = params
        b = beta
    rc = math.exp(log_rc)
    h, w = shape
    sy = (np.arange(h * oversample) + 0.5) / oversample - 0.5
    sx = (np.arange(w * oversample) + 0.5) / oversample - 0.5
    r2 = (sy[:, None] - y0) ** 2 + (sx[None, :] - x0) ** 2
    prof = (1.0 + r2 / rc**2) ** (-b) / (math.pi * rc**2 / (b - 1.0))  # unit total flux (untruncated)
    pix = prof.reshape(h, oversample, w, oversample).mean(axis=(1, 3))
    return amp * pix + bkg


def point_source_fwhm(
    image: np.ndarray,
    positions_xy: np.ndarray,
    box: int = 11,
    pixel_arcsec: float | None = None,
    beta: float | None = 1.5,
    oversample: int = 8,
) -> np.ndarray:
    """FWHM of point sources from a least-squares fit of a pixel-integrated King profile plus a flat background.

    A Gaussian or second moments would not reproduce the FWHM of a King profile (wings; infinite second
    moment for beta <= 2), so the fitted model is the profile itself, integrated over pixels with
    ``oversample``^2 sub-samples: FWHM = 2 r_c sqrt(2^(1/beta) - 1). ``beta`` fixed (default 1.5) or None to
    fit it. ``box``: odd side of the fitted cut-out (pixels). Returns FWHM in pixels, or arcsec with
    ``pixel_arcsec``; nan where the fit fails or the box leaves the image.
    """
    img = np.asarray(image, np.float64)
    half = box // 2
    out = []
    for x, y in _positions(positions_xy):
        cx, cy = round(x), round(y)
        if cy - half < 0 or cx - half < 0 or cy + half >= img.shape[0] or cx + half >= img.shape[1]:
            out.append(np.nan)
            continue
        cut = img[cy - half : cy + half + 1, cx - half : cx + half + 1]
        edge = np.concatenate([cut[0], cut[-1], cut[1:-1, 0], cut[1:-1, -1]])
        b0 = float(np.median(edge))
        amp0 = max(float((cut - b0).sum()), 1e-12)
        p0 = [x - (cx - half), y - (cy - half), math.log(1.0), amp0, b0]
        if beta is None:
            p0.append(math.log(0.5))
        scale = max(float(np.abs(cut).max()), 1e-30)

        def resid(p: np.ndarray, cut: np.ndarray = cut, scale: float = scale) -> np.ndarray:
            return ((_king_pixel_model(p, cut.shape, beta, oversample) - cut) / scale).ravel()

        try:
            fit = optimize.least_squares(resid, p0, method="lm", xtol=1e-10, ftol=1e-10)
            rc = math.exp(fit.x[2])
        except (ValueError, RuntimeError, OverflowError):  # a fit that runs off (core radius -> inf) failed
            out.append(np.nan)
            continue
        b = beta if beta is not None else 1.0 + math.exp(fit.x[5])
        fwhm = 2.0 * rc * math.sqrt(2.0 ** (1.0 / b) - 1.0)
        out.append(fwhm if fit.success else np.nan)
    res = np.asarray(out)
    return res * pixel_arcsec if pixel_arcsec is not None else res
