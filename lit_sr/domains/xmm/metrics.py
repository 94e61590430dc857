"""Astronomy metrics of X-ray denoising / super-resolution on simulated fields (the evaluator contract).

:class:`XMMEvaluator` receives, per validation/test batch, physical-unit count-rate images (counts/s per
pixel of their own grid) and the batch's truth keys (``lit_sr.domains.xmm.data``), and measures every
*source* (product) the same way:

* ``input``  the observed input (input grid);
* the classical **baselines** named in config (``baselines``), computed here from the input rate in the same
  pass, in counts/s on the grid where they are normally applied, their width tuned on the validation split
  (:meth:`XMMEvaluator.tune`, logged as ``tuned/<baseline>_sigma_px``):
  ``smooth`` (denoising: the exposure-corrected Gaussian smoothing of the input,
  :func:`lit_sr.domains.xmm.baselines.gaussian_smooth_rate`), ``bicubic`` (SR: flux-conserving bicubic x2)
  and ``bicubic_smooth`` (SR: the smoothing on the input grid, then bicubic x2);
* ``model``  the network's output;
* ``target`` the longer observation the model learns (noisy);
* ``truth``  the noiseless target rate the simulator knows ('EXPECTED' HDU / exposure) -- the ceiling.

Metrics (``compute()`` keys, ``<metric>/<source>``):

* ``psnr_truth``, ``ssim_truth`` (**primary**): PSNR and SSIM against the noiseless target rate, in model
  space (the data transform, range 1), over the pixels the target exposes (others set to 0 in both images
  for SSIM). PSNR is accumulated over the split (sum of squared errors / pixels); SSIM (torchmetrics'
  Gaussian window, sigma 1.5, 11 x 11) is the mean over fields. Target grid only.
* ``psnr_noisy_target`` (secondary): PSNR against the noisy target in model space. The square-root stretch of
  Poisson counts has a mean below the stretch of the mean, so this rewards a biased estimate: the noiseless
  truth itself scores below a squared-error-trained model. Kept for comparison with earlier tables.
* ``deviance``: mean Poisson deviance per exposed pixel of the observed target counts against
  rate x target exposure (expectations floored at 1e-6 counts). Lower is better; a proper score that needs
  no truth.
* ``lr_consistency``, ``lr_excess_frac``: consistency with the observed input counts (hallucination summary,
  :mod:`lit_sr.domains.xmm.hallucination`; SR: input pixels within ``gap_margin_lr`` of exposure edges masked).
* ``fwhm_arcsec``: median FWHM of a King fit (beta 1.5) to bright isolated point sources (rate >=
  ``fwhm_min_rate``, no source brighter than 10 % of it within ``isolation_lr``); ``fwhm_n`` how many.
* ``flux_median``, ``flux_scatter``, ``flux_n``, ``flux_radius_arcsec``: aperture photometry (exact overlap,
  background annulus ``annulus_lr``) at the true positions of point sources with rate >= ``flux_min_rate``:
  recovered / true rate. Broadening is not read as loss: each product's aperture radius is
  ``aperture_fwhm_factor`` x its own measured FWHM (at least ``aperture_radius_lr``, at most the largest of
  ``aperture_radii_lr``), and the aperture correction is that of its own PSF -- the PSF the product should
  have (input PSF on the input grid and for the bicubic products, the 2x narrower target PSF for the others)
  convolved with the Gaussian that brings it to the product's measured FWHM
  (:func:`lit_sr.domains.xmm.photometry.broadened_psf_kernel`). A flux-conserving blur reads ~1.
* ``completeness``, ``false_per_field``: sliding-cell Poisson detection at ``detection_significance``
  (:func:`lit_sr.domains.xmm.photometry.detection_stats`; every product judged as counts, rate x the exposure
  of its product: input for ``input``, target for the others), matched within ``match_radius_lr`` input
  pixels; completeness over exposed point sources with rate >= ``detection_min_rate``; false detections are
  unmatched ones outside the extent (2 r_c or 2 r_e, at least 3 input pixels) of extended sources.
  Smooth images are not Poisson counts, so a threshold means a different false rate for every product:
  ``completeness_at_input_fdr`` is each product's completeness at the false-detection rate of the input at
  ``detection_significance`` (the curve over thresholds >= ``detection_floor``, interpolated; see
  :func:`~lit_sr.domains.xmm.photometry.completeness_at_false_rate`), ``threshold_at_input_fdr`` the
  threshold it needs, ``input_false_per_field`` that rate. A product with fewer false detections than that
  even at the floor gets its completeness at the floor, a lower bound (``threshold_at_input_fdr`` equals
  ``detection_floor``, also logged).

States are torchmetrics sums and concatenations, so ``compute()`` reduces across devices.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import nn
from torchmetrics import Metric
from torchmetrics.functional.image import structural_similarity_index_measure
from torchmetrics.utilities import dim_zero_cat

from lit_sr.domains.xmm.baselines import DEFAULT_SIGMA_GRID_PX, gaussian_smooth_rate, tune_sigma
from lit_sr.domains.xmm.hallucination import forward_model_to_input, lr_consistency_map
from lit_sr.domains.xmm.photometry import (
    aperture_net_ratios,
    aperture_recovery_fraction,
    broadened_psf_kernel,
    completeness_at_false_rate,
    detection_curve,
    detection_stats,
    estimate_background_rate,
    point_source_fwhm,
    poisson_deviance,
)
from lit_sr.domains.xmm.psf import KingPSF, matching_kernel
from lit_sr.metrics.evaluator import Batch, Evaluator, Images
from lit_sr.metrics.image import upsample_baseline

#: baselines the evaluator can compute, and the grid they are scored on ("input" is always measured)
BASELINES = {"dn": ("input", "smooth"), "sr": ("input", "bicubic", "bicubic_smooth")}
SMOOTHED = ("smooth", "bicubic_smooth")
SUM_STATS = (
    "sq_truth",
    "pix_truth",
    "ssim_truth",
    "ssim_fields",
    "sq_target",
    "pix_target",
    "dev_sum",
    "dev_pix",
    "cons_dev",
    "cons_exp",
    "cons_above",
    "cons_above_exp",
    "cons_pix",
    "fields",
)
CAT_STATS = ("flux_raw", "fwhm", "true_best_sig", "false_sig")
DEVIANCE_FLOOR_COUNTS = 1e-6


class _States(Metric):
    """Named float64 sums and concatenated arrays, reduced across processes by torchmetrics."""

    full_state_update = False

    def __init__(self, sum_names: Sequence[str], cat_names: Sequence[str]) -> None:
        super().__init__()
        self.sum_names, self.cat_names = tuple(sum_names), tuple(cat_names)
        for name in self.sum_names:
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        for name in self.cat_names:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, sums: Mapping[str, float], cats: Mapping[str, np.ndarray]) -> None:
        for name, value in sums.items():
            setattr(self, name, getattr(self, name) + float(value))
        for name, values in cats.items():
            if len(values):
                getattr(self, name).append(torch.as_tensor(np.asarray(values, np.float64), device=self.device))

    def compute(self) -> dict[str, Any]:
        out: dict[str, Any] = {n: float(getattr(self, n)) for n in self.sum_names}
        for n in self.cat_names:
            v = getattr(self, n)
            out[n] = dim_zero_cat(v).cpu().numpy() if (isinstance(v, torch.Tensor) or len(v)) else np.zeros(0)
        return out


@lru_cache(maxsize=16)
def _psf_kernel(
    fwhm_arcsec: float, beta: float, truncation_arcsec: float, pixel_arcsec: float, half: int
) -> np.ndarray:
    return KingPSF.from_fwhm(fwhm_arcsec, beta, truncation_arcsec).kernel(pixel_arcsec, half_size=half)


def gap_mask(exposure_in: np.ndarray, margin: int, deficit: float = 0.9) -> np.ndarray:
    """True for input pixels at least ``margin`` pixels away from any exposure deficit (a pixel whose
    exposure is below ``deficit`` x the largest within 2 pixels: chip gaps, FOV edge, outside)."""
    e = np.asarray(exposure_in, np.float64)
    low = e < deficit * ndimage.maximum_filter(e, size=5, mode="nearest")
    low |= e <= 0
    if margin > 0:
        low = ndimage.binary_dilation(low, structure=np.ones((2 * margin + 1, 2 * margin + 1), bool))
    return ~low


def psnr_db(squared_error_sum: float, n_pixels: float, data_range: float = 1.0) -> float:
    """10 log10(range^2 / MSE) from a sum of squared errors over ``n_pixels`` (inf for a perfect match)."""
    if n_pixels <= 0:
        return float("nan")
    mse = squared_error_sum / n_pixels
    return 10.0 * math.log10(data_range**2 / mse) if mse > 0 else float("inf")


class XMMEvaluator(Evaluator):
    """The X-ray evaluator (see the module docstring for the metrics and their keys).

    Args:
        scale: target grid / input grid (1 denoising, 2 SR).
        transform: the data transform (model space for the PSNR/SSIM and the sigma tuning); None = physical units.
        baselines: classical baselines to compute and score (``BASELINES``: dn ``input``, ``smooth``;
            sr ``input``, ``bicubic``, ``bicubic_smooth``); None = all of the task's. The input is always
            measured (its false-detection rate is the reference of ``completeness_at_input_fdr``).
        sigma_grid_px: smoothing widths tried on the validation split (input pixels).
        pixel_arcsec: input pixel size.
        psf_fwhm_arcsec, psf_beta, psf_truncation_arcsec: input King PSF; the SR target's is 2x narrower.
        flux_min_rate, detection_min_rate, fwhm_min_rate: counts/s thresholds of the source selections.
        aperture_radius_lr: smallest photometry aperture (input pixels); aperture_fwhm_factor: aperture radius
            per measured FWHM; aperture_radii_lr: radii measured (the one used is chosen per product);
            annulus_lr: background annulus (input pixels).
        detection_significance, cell_radius_lr, match_radius_lr: detection settings (input pixels);
            detection_floor: lowest threshold of the completeness / false-detection curves.
        isolation_lr, fwhm_box_lr: FWHM isolation radius and fitted box side (input pixels).
        consistency_threshold, gap_margin_lr: LR-consistency map threshold and SR gap mask margin.
    """

    def __init__(
        self,
        scale: int = 2,
        transform: nn.Module | None = None,
        baselines: Sequence[str] | None = None,
        sigma_grid_px: Sequence[float] = DEFAULT_SIGMA_GRID_PX,
        pixel_arcsec: float = 4.1,
        psf_fwhm_arcsec: float = 6.0,
        psf_beta: float = 1.5,
        psf_truncation_arcsec: float = 60.0,
        flux_min_rate: float = 1e-3,
        detection_min_rate: float = 5e-4,
        fwhm_min_rate: float = 2e-3,
        aperture_radius_lr: float = 2.0,
        aperture_fwhm_factor: float = 1.5,
        aperture_radii_lr: Sequence[float] = (2.0, 2.5, 3.0, 3.5, 4.0, 4.5),
        annulus_lr: Sequence[float] = (5.0, 8.0),
        detection_significance: float = 5.0,
        detection_floor: float = 2.0,
        cell_radius_lr: float = 1.5,
        match_radius_lr: float = 2.0,
        isolation_lr: float = 5.0,
        fwhm_box_lr: int = 9,
        consistency_threshold: float = 9.0,
        gap_margin_lr: int = 3,
    ) -> None:
        super().__init__()
        self.scale = int(scale)
        task = "dn" if self.scale == 1 else "sr"
        names = tuple(BASELINES[task]) if baselines is None else tuple(baselines)
        unknown = sorted(set(names) - set(BASELINES[task]))
        if unknown:
            raise ValueError(
                f"model.evaluator.baselines: {unknown} not available at scale {self.scale}; expected "
                f"some of {list(BASELINES[task])}"
            )
        self.baselines = tuple(b for b in names if b != "input")
        self.sources = ("input", *self.baselines, "model", "target", "truth")
        self.sigma_grid_px = tuple(float(s) for s in sigma_grid_px)
        self.transform = transform
        self.pixel_arcsec = float(pixel_arcsec)
        self.psf_lr = KingPSF.from_fwhm(psf_fwhm_arcsec, psf_beta, psf_truncation_arcsec)
        self.psf_target = self.psf_lr.narrower(self.scale) if self.scale > 1 else self.psf_lr
        self.flux_min_rate, self.detection_min_rate, self.fwhm_min_rate = (
            flux_min_rate,
            detection_min_rate,
            fwhm_min_rate,
        )
        self.aperture_radius_lr, self.aperture_fwhm_factor = float(aperture_radius_lr), float(aperture_fwhm_factor)
        self.aperture_radii_lr = tuple(sorted(float(r) for r in aperture_radii_lr))
        self.annulus_lr = tuple(float(a) for a in annulus_lr)
        if not self.aperture_radii_lr or self.aperture_radii_lr[-1] >= self.annulus_lr[0]:
            raise ValueError(
                f"model.evaluator.aperture_radii_lr={list(self.aperture_radii_lr)}: expected radii "
                f"below the annulus inner radius {self.annulus_lr[0]} (input pixels)"
            )
        self.detection_significance, self.detection_floor = float(detection_significance), float(detection_floor)
        if self.detection_floor > self.detection_significance:
            raise ValueError(
                f"model.evaluator.detection_floor={detection_floor} is above detection_significance="
                f"{detection_significance}; the curves must reach the nominal threshold"
            )
        self.cell_radius_lr, self.match_radius_lr = float(cell_radius_lr), float(match_radius_lr)
        self.isolation_lr, self.fwhm_box_lr = float(isolation_lr), int(fwhm_box_lr)
        self.consistency_threshold, self.gap_margin_lr = float(consistency_threshold), int(gap_margin_lr)
        self.matching = (
            matching_kernel(self.psf_lr, self.psf_target, pixel_arcsec / self.scale) if self.scale > 1 else None
        )
        self.states = nn.ModuleDict({s: _States(SUM_STATS, CAT_STATS) for s in self.sources})
        self._seen: set[str] = set()

    # ------------------------------------------------------------------ helpers
    def _grid(self, source: str) -> int:
        """Pixels per input pixel of a source's grid."""
        return 1 if source == "input" else self.scale

    def _psf_for(self, source: str) -> KingPSF:
        """The PSF a product should have (before any broadening it adds)."""
        return self.psf_lr if source in ("input", "bicubic", "bicubic_smooth") else self.psf_target

    def _to_model(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(x) if self.transform is not None else x

    def _smooth_then(self, name: str) -> Any:
        """The operation applied after smoothing for baseline ``name`` (bicubic x2 for ``bicubic_smooth``)."""
        if name == "bicubic_smooth":
            return lambda r: upsample_baseline(r, self.scale, "bicubic", flux_conserving=True)
        return None

    def sigma_of(self, name: str) -> float:
        key = f"{name}_sigma_px"
        if key not in self.tuned:
            raise RuntimeError(
                f"XMMEvaluator: baseline {name!r} has no tuned width; call prepare(pairs) on the "
                "validation split first (the modules do it before the first val/test pass)"
            )
        return self.tuned[key]

    def baseline_images(self, batch: Batch, images: Images) -> dict[str, torch.Tensor]:
        """The configured baselines [B, 1, H, W] (counts/s per pixel of their grid) from the input rate."""
        rate = images["input"].double()
        exposure = batch["exposure_in"].to(rate)
        out: dict[str, torch.Tensor] = {}
        for name in self.baselines:
            if name == "bicubic":
                out[name] = upsample_baseline(rate, self.scale, "bicubic", flux_conserving=True)
                continue
            est = gaussian_smooth_rate(rate, self.sigma_of(name), exposure)
            after = self._smooth_then(name)
            out[name] = after(est) if after is not None else est
        return out

    # ------------------------------------------------------------------ tuning (validation split)
    def tune(self, pairs: Iterable[tuple[Batch, Images]]) -> dict[str, float]:
        """Smoothing widths of the smoothed baselines: the grid value with the best squared error against the
        noiseless rate in model space (the primary metric) on the validation split; without the truth
        ('EXPECTED' missing) the best Poisson deviance against the noisy target counts."""
        smoothed = [b for b in self.baselines if b in SMOOTHED]
        if not smoothed:
            return {}
        inputs, exposures, truths, masks, counts_t, exposures_t = [], [], [], [], [], []
        for batch, images in pairs:
            if "exposure_in" not in batch or "exposure_target" not in batch:
                continue
            inputs.append(images["input"].double().cpu())
            exposures.append(batch["exposure_in"].double().cpu())
            exposures_t.append(batch["exposure_target"].double().cpu())
            counts_t.append(batch["counts_target"].double().cpu())
            masks.append(batch["exposure_target"].cpu() > 0)
            if "rate_true" in batch:
                truths.append(batch["rate_true"].double().cpu())
        if not inputs:
            raise ValueError(
                "XMMEvaluator.tune: the validation batches carry no exposure maps (exposure_in, "
                "exposure_target); the smoothing width cannot be tuned"
            )
        out = {}
        for name in smoothed:
            if len(truths) == len(inputs):
                sigma, _ = tune_sigma(
                    inputs,
                    truths,
                    self.sigma_grid_px,
                    exposures=exposures,
                    masks=masks,
                    after=self._smooth_then(name),
                    transform=self._to_model,
                )
            else:
                sigma, _ = tune_sigma(
                    inputs,
                    counts_t,
                    self.sigma_grid_px,
                    exposures=exposures,
                    after=self._smooth_then(name),
                    loss="poisson",
                    reference_exposures=exposures_t,
                )
            out[f"{name}_sigma_px"] = sigma
        return out

    # ------------------------------------------------------------------ contract
    @torch.no_grad()
    def update(self, batch: Batch, images: Images) -> None:
        """``images``: physical-unit tensors (``input``, ``output``, ``target`` ...) [B, 1, H, W]."""
        if "counts_in" not in batch or "exposure_target" not in batch:
            return  # batches without the truth keys (e.g. a user's loader): nothing to measure
        srcs = {
            "input": images["input"],
            **self.baseline_images(batch, images),
            "model": images["output"],
            "target": images["target"],
        }
        if "rate_true" in batch:
            srcs["truth"] = batch["rate_true"]
        srcs = {k: v.float() for k, v in srcs.items()}
        live_t = batch["exposure_target"] > 0
        truth_model = self._to_model(srcs["truth"]) * live_t if "truth" in srcs else None
        target_model = self._to_model(srcs["target"])
        for source, img in srcs.items():
            if img.shape[-2:] != live_t.shape[-2:] or source == "truth":
                continue
            pred = self._to_model(img.clamp_min(0.0))
            d = (pred - target_model).double()
            self.states[source].update({"sq_target": float((d**2).sum()), "pix_target": float(d.numel())}, {})
            if truth_model is not None and source != "truth":
                pred = pred * live_t
                d = (pred - truth_model).double()[live_t]
                ssim = structural_similarity_index_measure(
                    pred.float(), truth_model.float(), data_range=1.0, reduction="none"
                )
                self.states[source].update(
                    {
                        "sq_truth": float((d**2).sum()),
                        "pix_truth": float(d.numel()),
                        "ssim_truth": float(ssim.double().sum()),
                        "ssim_fields": float(ssim.numel()),
                    },
                    {},
                )
        np_batch = {k: v.detach().float().cpu().numpy() for k, v in batch.items() if torch.is_tensor(v)}
        arrays = {k: v.detach().float().cpu().numpy()[:, 0] for k, v in srcs.items()}
        for b in range(next(iter(arrays.values())).shape[0]):
            field = {k: (v[b, 0] if v.ndim == 4 else v[b]) for k, v in np_batch.items()}
            for source, imgs in arrays.items():
                self._seen.add(source)
                sums, cats = self._measure(source, imgs[b], field)
                self.states[source].update(sums, cats)

    def _measure(
        self, source: str, rate: np.ndarray, f: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        sums: dict[str, float] = {"fields": 1.0}
        cats: dict[str, np.ndarray] = {}
        on_input = source == "input"
        g = self._grid(source)
        exposure = f["exposure_in"] if on_input else f["exposure_target"]
        observed = f["counts_in"] if on_input else f["counts_target"]
        live = exposure > 0
        rate = np.clip(np.asarray(rate, np.float64), 0.0, None)
        # proper score against the observed target counts (target grid only)
        if rate.shape == f["counts_target"].shape and source != "target":
            dev = poisson_deviance(
                f["counts_target"][live], np.maximum(rate[live] * f["exposure_target"][live], DEVIANCE_FLOOR_COUNTS)
            )
            sums.update(dev_sum=float(dev.sum()), dev_pix=float(live.sum()))
        # hallucination summary (a): consistency with the observed input counts
        if not on_input:
            expected = forward_model_to_input(rate, self.scale, f["exposure_in"], self.matching)
            mask = gap_mask(f["exposure_in"], self.gap_margin_lr) if self.scale > 1 else None
            _, s = lr_consistency_map(f["counts_in"], expected, self.consistency_threshold, mask=mask)
            n = s["n_pixels"]
            if n:
                sums.update(
                    cons_dev=s["mean_deviance"] * n,
                    cons_exp=s["expected_mean"] * n,
                    cons_above=s["frac_above"] * n,
                    cons_above_exp=s["expected_frac_above"] * n,
                    cons_pix=float(n),
                )
        if "src_xy" not in f:
            return sums, cats
        valid = np.isfinite(f["src_xy"][:, 0]) & (f["src_kind"] >= 0)
        xy_lr, rates = f["src_xy"][valid].astype(np.float64), f["src_rate"][valid].astype(np.float64)
        kind, extent = f["src_kind"][valid].astype(np.int64), f["src_extent"][valid].astype(np.float64)
        xy = g * xy_lr + (g - 1) / 2.0  # input-grid pixel -> this grid (pixel centres at integers)
        h, w = rate.shape
        point = kind == 0

        def inside(margin: float) -> np.ndarray:
            return (
                (xy[:, 0] >= margin)
                & (xy[:, 0] <= w - 1 - margin)
                & (xy[:, 1] >= margin)
                & (xy[:, 1] <= h - 1 - margin)
            )

        def exposed_at(p: np.ndarray, radius: float) -> np.ndarray:
            out = np.zeros(len(p), bool)
            for i, (x, y) in enumerate(p):
                x0, x1 = int(max(math.floor(x - radius), 0)), int(min(math.ceil(x + radius), w - 1))
                y0, y1 = int(max(math.floor(y - radius), 0)), int(min(math.ceil(y + radius), h - 1))
                out[i] = x1 >= x0 and y1 >= y0 and bool(live[y0 : y1 + 1, x0 : x1 + 1].all())
            return out

        # flux at the true positions, every aperture radius (the product's is chosen in compute())
        annulus = (self.annulus_lr[0] * g, self.annulus_lr[1] * g)
        radii = [r * g for r in self.aperture_radii_lr]
        sel = point & (rates >= self.flux_min_rate) & inside(annulus[1])
        sel[sel] = exposed_at(xy[sel], radii[-1])
        if sel.any():
            cats["flux_raw"] = aperture_net_ratios(rate, xy[sel], rates[sel], radii, annulus, mask=~live)
        # detection at the floor threshold; the curves over thresholds follow in compute()
        counts_equiv = rate * exposure
        if ("bkg_in" if on_input else "bkg_target") in f:
            bkg = f["bkg_in"] if on_input else f["bkg_target"]
        else:
            bkg = estimate_background_rate(observed, exposure) * exposure
        det = detection_stats(
            counts_equiv,
            bkg,
            xy,
            rates,
            self.detection_floor,
            match_radius_pix=self.match_radius_lr * g,
            cell_radius_pix=self.cell_radius_lr * g,
        )
        considered = point & (rates >= self.detection_min_rate) & inside(0.0)
        considered[considered] = exposed_at(xy[considered], 1.0)
        best = np.full(len(xy), -np.inf)
        hit = det.matched_true >= 0
        best[det.matched_true[hit]] = det.significance[hit]
        false = det.matched_true < 0
        if false.any() and (~point).any():
            ext_xy = xy[~point]
            ext_r = np.maximum(2.0 * extent[~point] / (self.pixel_arcsec / g), 3.0 * g)
            d = np.hypot(
                det.positions_xy[:, None, 0] - ext_xy[None, :, 0], det.positions_xy[:, None, 1] - ext_xy[None, :, 1]
            )
            false &= ~(d <= ext_r[None, :]).any(axis=1)
        cats["true_best_sig"] = best[considered]
        cats["false_sig"] = det.significance[false]
        # FWHM of bright isolated point sources
        half = (self.fwhm_box_lr * g) // 2
        sel = point & (rates >= self.fwhm_min_rate) & inside(half)
        for i in np.flatnonzero(sel):
            d = np.hypot(*(xy_lr - xy_lr[i]).T)
            if np.any((d > 0) & (d < self.isolation_lr) & (rates > 0.1 * rates[i])):
                sel[i] = False
        sel[sel] = exposed_at(xy[sel], half)
        if sel.any():
            fw = point_source_fwhm(
                rate, xy[sel], box=2 * half + 1, pixel_arcsec=self.pixel_arcsec / g, beta=1.5, oversample=4
            )
            cats["fwhm"] = fw[np.isfinite(fw)]
        return sums, cats

    def flux_correction(self, source: str, fwhm_arcsec: float) -> tuple[float, float]:
        """(aperture radius in input pixels, recovered fraction) of a product whose sources have the measured
        ``fwhm_arcsec``: the radius ``aperture_fwhm_factor`` x FWHM rounded up to a measured radius, the
        fraction that of the product's nominal PSF broadened to that FWHM."""
        g = self._grid(source)
        pix = self.pixel_arcsec / g
        want = max(self.aperture_radius_lr, self.aperture_fwhm_factor * fwhm_arcsec / self.pixel_arcsec)
        radius = next((r for r in self.aperture_radii_lr if r >= want - 1e-9), self.aperture_radii_lr[-1])
        psf = self._psf_for(source)
        half = int(math.ceil(psf.truncation_arcsec / pix)) + 1
        nominal = _psf_kernel(psf.fwhm_arcsec, psf.beta, psf.truncation_arcsec, pix, half)
        box = 2 * ((self.fwhm_box_lr * g) // 2) + 1
        kernel, _ = broadened_psf_kernel(nominal, fwhm_arcsec / pix, box=box)
        fraction = aperture_recovery_fraction(kernel, radius * g, (self.annulus_lr[0] * g, self.annulus_lr[1] * g))
        return radius, fraction

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        stats = {
            s: self.states[s].compute() for s in self.sources if s in self._seen or self.states[s]._update_count > 0
        }
        n_r = len(self.aperture_radii_lr)
        curves = {}
        for source, s in stats.items():
            if s["pix_truth"] > 0:
                out[f"psnr_truth/{source}"] = psnr_db(s["sq_truth"], s["pix_truth"])
                out[f"ssim_truth/{source}"] = s["ssim_truth"] / s["ssim_fields"]
            if s["pix_target"] > 0 and source != "target":
                out[f"psnr_noisy_target/{source}"] = psnr_db(s["sq_target"], s["pix_target"])
            if s["dev_pix"] > 0:
                out[f"deviance/{source}"] = s["dev_sum"] / s["dev_pix"]
            if s["cons_pix"] > 0 and s["cons_exp"] > 0:
                out[f"lr_consistency/{source}"] = s["cons_dev"] / s["cons_exp"]
                out[f"lr_excess_frac/{source}"] = (s["cons_above"] - s["cons_above_exp"]) / s["cons_pix"]
            fw = s["fwhm"]
            out[f"fwhm_n/{source}"] = float(len(fw))
            if len(fw):
                out[f"fwhm_arcsec/{source}"] = float(np.median(fw))
            raw = np.asarray(s["flux_raw"]).reshape(-1, n_r)
            out[f"flux_n/{source}"] = float(len(raw))
            if len(raw) and len(fw):
                radius, fraction = self.flux_correction(source, float(np.median(fw)))
                r = raw[:, self.aperture_radii_lr.index(radius)] / fraction
                r = r[np.isfinite(r)]
                if len(r):
                    p16, p50, p84 = np.percentile(r, [16, 50, 84])
                    out[f"flux_median/{source}"], out[f"flux_scatter/{source}"] = float(p50), float(0.5 * (p84 - p16))
                    out[f"flux_radius_arcsec/{source}"] = radius * self.pixel_arcsec
            if s["fields"] > 0:
                curve = detection_curve(s["true_best_sig"], s["false_sig"], int(s["fields"]), self.detection_floor)
                curves[source] = curve
                at = np.searchsorted(-curve.thresholds, -self.detection_significance, side="right") - 1
                out[f"completeness_n/{source}"] = float(len(s["true_best_sig"]))
                out[f"completeness/{source}"] = float(curve.completeness[at])
                out[f"false_per_field/{source}"] = float(curve.false_per_field[at])
        if "input" in curves:
            f0 = out["false_per_field/input"]
            out["input_false_per_field"] = f0
            out["detection_floor"] = self.detection_floor
            for source, curve in curves.items():
                comp, thr = completeness_at_false_rate(curve, f0)
                out[f"completeness_at_input_fdr/{source}"] = comp
                out[f"threshold_at_input_fdr/{source}"] = thr
        return out

    def reset(self) -> None:
        for m in self.states.values():
            m.reset()
        self._seen = set()
