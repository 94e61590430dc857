"""Astronomy metrics of X-ray denoising / super-resolution on simulated fields (the evaluator contract).

:class:`XMMEvaluator` receives, per validation/test batch, physical-unit count-rate images (counts/s per
pixel of their own grid) of every *source*:

* ``input``  the observed input (input grid);
* ``bicubic`` the classical x2 baseline (SR only, target grid);
* ``model``  the network's output;
* ``target`` the longer observation the model learns (noisy);
* ``truth``  the noiseless target rate (simulations with an 'EXPECTED' HDU) -- the ceiling,

and the batch's truth keys (``lit_sr.domains.xmm.data``). Every image is judged as a counts image of
its own product: rate x the exposure map of the input (``input``) or of the target (all others), with
the expected background counts of that product ('BACKGROUND' HDU; else a flat rate estimated from the
observed counts). So the model is judged "as if it were the target observation".

Metrics (``compute()`` keys, ``<metric>/<source>``):

* ``l1``, ``psnr``: mean |a - target| and PSNR (data range 1) in model space (the scaled images), target
  grid only. (The module logs the model's and baselines' PSNR/SSIM itself; ``psnr/truth`` is the ceiling.)
* ``deviance``: mean Poisson deviance per exposed pixel of the observed target counts against
  rate x target exposure (expectations floored at 1e-6 counts so that a zero prediction under a count
  stays finite). Lower is better; ``truth`` gives the value of the exact model.
* ``lr_consistency``: hallucination summary (a) -- mean deviance of the observed *input* counts against
  the source forward-modelled to the input (PSF matching kernel, 2x2 sum, x input exposure), divided by
  its expectation under that forward model (1 for a consistent image; see
  :mod:`lit_sr.domains.xmm.hallucination`). SR: input pixels within ``gap_margin_lr`` of exposure
  edges (chip gaps, FOV) are masked, where the forward model is biased. ``lr_excess_frac``: fraction of
  pixels above ``consistency_threshold`` minus its expectation.
* ``flux_median``, ``flux_scatter``: aperture photometry (photutils, exact overlap) at the true positions
  of point sources with rate >= ``flux_min_rate``: recovered / true rate, median and half the 16-84 %
  range. Aperture radius ``aperture_radius_lr`` input pixels with a background annulus, corrected by the
  encircled energy of the PSF the image should have (input grid: input PSF; SR target grid: the 2x
  narrower PSF; bicubic: the input PSF on the fine grid).
* ``completeness``, ``false_per_field``: sliding-cell Poisson detection at ``detection_significance``
  (:func:`lit_sr.domains.xmm.photometry.detection_stats`), matched within ``match_radius_lr`` input pixels;
  completeness over exposed point sources with rate >= ``detection_min_rate``; false detections are
  unmatched ones outside the extent (2 r_c or 2 r_e, at least 3 input pixels) of extended sources.
* ``fwhm_arcsec``: median FWHM of a King fit (beta 1.5) to bright isolated point sources (rate >=
  ``fwhm_min_rate``, no source brighter than 10 % of it within ``isolation_lr``), to compare with the
  input PSF (6") and the SR target PSF (3").
* ``flux_n``, ``completeness_n``, ``fwhm_n``: how many sources entered those numbers (per source type).

States are torchmetrics sums and concatenations, so ``compute()`` reduces across devices.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lit_sr.domains.xmm.hallucination import forward_model_to_input, lr_consistency_map
from lit_sr.domains.xmm.photometry import (aperture_flux_ratio, detection_stats, estimate_background_rate,
                                           point_source_fwhm, poisson_deviance)
from lit_sr.domains.xmm.psf import KingPSF, matching_kernel
from lit_sr.metrics.evaluator import Evaluator

SOURCES = ("input", "bicubic", "model", "target", "truth")
SUM_STATS = ("l1_sum", "sq_sum", "pix", "dev_sum", "dev_pix", "cons_dev", "cons_exp", "cons_above", "cons_above_exp",
             "cons_pix", "det_found", "det_total", "false", "fields")
CAT_STATS = ("flux_ratio", "fwhm")
DEVIANCE_FLOOR_COUNTS = 1e-6


class _States(Metric):
    """Named float64 sums and concatenated lists, reduced across processes by torchmetrics."""

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
def _psf_kernel(fwhm_arcsec: float, beta: float, truncation_arcsec: float, pixel_arcsec: float, half: int) -> np.ndarray:
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


class XMMEvaluator(Evaluator):
    """The X-ray evaluator (see the module docstring for the metrics and their keys).

    Args:
        scale: target grid / input grid (1 denoising, 2 SR).
        transform: the data transform (model space for ``l1`` and ``psnr``); None = physical units.
        pixel_arcsec: input pixel size.
        psf_fwhm_arcsec, psf_beta, psf_truncation_arcsec: input King PSF; the SR target's is 2x narrower.
        flux_min_rate, detection_min_rate, fwhm_min_rate: counts/s thresholds of the source selections.
        aperture_radius_lr, annulus_lr: photometry aperture and background annulus (input pixels).
        detection_significance, cell_radius_lr, match_radius_lr: detection settings (input pixels).
        isolation_lr, fwhm_box_lr: FWHM isolation radius and fitted box side (input pixels).
        consistency_threshold, gap_margin_lr: LR-consistency map threshold and SR gap mask margin.
    """

    def __init__(self, scale: int = 2, transform: nn.Module | None = None, pixel_arcsec: float = 4.1,
                 psf_fwhm_arcsec: float = 6.0, psf_beta: float = 1.5, psf_truncation_arcsec: float = 60.0,
                 flux_min_rate: float = 1e-3, detection_min_rate: float = 5e-4, fwhm_min_rate: float = 2e-3,
                 aperture_radius_lr: float = 2.0, annulus_lr: Sequence[float] = (5.0, 8.0),
                 detection_significance: float = 5.0, cell_radius_lr: float = 1.5, match_radius_lr: float = 2.0,
                 isolation_lr: float = 5.0, fwhm_box_lr: int = 9, consistency_threshold: float = 9.0,
                 gap_margin_lr: int = 3) -> None:
        super().__init__()
        self.scale = int(scale)
        self.transform = transform
        self.pixel_arcsec = float(pixel_arcsec)
        self.psf_lr = KingPSF.from_fwhm(psf_fwhm_arcsec, psf_beta, psf_truncation_arcsec)
        self.psf_target = self.psf_lr.narrower(self.scale) if self.scale > 1 else self.psf_lr
        self.flux_min_rate, self.detection_min_rate, self.fwhm_min_rate = flux_min_rate, detection_min_rate, fwhm_min_rate
        self.aperture_radius_lr, self.annulus_lr = float(aperture_radius_lr), tuple(float(a) for a in annulus_lr)
        self.detection_significance = float(detection_significance)
        self.cell_radius_lr, self.match_radius_lr = float(cell_radius_lr), float(match_radius_lr)
        self.isolation_lr, self.fwhm_box_lr = float(isolation_lr), int(fwhm_box_lr)
        self.consistency_threshold, self.gap_margin_lr = float(consistency_threshold), int(gap_margin_lr)
        self.matching = matching_kernel(self.psf_lr, self.psf_target, pixel_arcsec / self.scale) if self.scale > 1 else None
        self.states = nn.ModuleDict({s: _States(SUM_STATS, CAT_STATS) for s in SOURCES})
        self._seen: set[str] = set()

    # ------------------------------------------------------------------ helpers
    def _grid(self, source: str) -> int:
        """Pixels per input pixel of a source's grid."""
        return 1 if source == "input" else self.scale

    def _psf_for(self, source: str) -> KingPSF:
        if source in ("input", "bicubic"):
            return self.psf_lr
        return self.psf_target

    def _kernel(self, source: str) -> np.ndarray:
        f = self._grid(source)
        psf = self._psf_for(source)
        half = int(math.ceil(self.annulus_lr[1] * f)) + 2
        return _psf_kernel(psf.fwhm_arcsec, psf.beta, psf.truncation_arcsec, self.pixel_arcsec / f, half)

    def _to_model(self, x: np.ndarray) -> np.ndarray:
        if self.transform is None:
            return x
        return self.transform(torch.from_numpy(np.asarray(x, np.float32))).numpy()

    # ------------------------------------------------------------------ contract
    @torch.no_grad()
    def update(self, batch: Mapping[str, torch.Tensor], images: Mapping[str, torch.Tensor]) -> None:
        """``images``: physical-unit tensors (``input``, ``output``, ``target``, ``bicubic`` ...) [B, 1, H, W]."""
        if "counts_in" not in batch or "exposure_target" not in batch:
            return          # batches without the truth keys (e.g. a user's loader): nothing to measure
        srcs = {"input": images["input"], "model": images["output"], "target": images["target"]}
        if "bicubic" in images and self.scale > 1:
            srcs["bicubic"] = images["bicubic"]
        if "rate_true" in batch:
            srcs["truth"] = batch["rate_true"]
        np_batch = {k: v.detach().float().cpu().numpy() for k, v in batch.items() if torch.is_tensor(v)}
        arrays = {k: v.detach().float().cpu().numpy()[:, 0] for k, v in srcs.items()}
        for b in range(next(iter(arrays.values())).shape[0]):
            field = {k: (v[b, 0] if v.ndim == 4 else v[b]) for k, v in np_batch.items()}
            target_model = self._to_model(arrays["target"][b])
            for source, imgs in arrays.items():
                self._seen.add(source)
                sums, cats = self._measure(source, imgs[b], field, target_model)
                self.states[source].update(sums, cats)

    def _measure(self, source: str, rate: np.ndarray, f: Mapping[str, np.ndarray],
                 target_model: np.ndarray) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        sums: dict[str, float] = {"fields": 1.0}
        cats: dict[str, np.ndarray] = {}
        on_input = source == "input"
        g = self._grid(source)
        exposure = f["exposure_in"] if on_input else f["exposure_target"]
        observed = f["counts_in"] if on_input else f["counts_target"]
        live = exposure > 0
        rate = np.clip(np.asarray(rate, np.float64), 0.0, None)
        # image quality in model space against the target (target grid only)
        if rate.shape == target_model.shape and source != "target":
            diff = self._to_model(rate) - target_model
            sums.update(l1_sum=float(np.abs(diff).sum()), sq_sum=float((diff.astype(np.float64) ** 2).sum()),
                        pix=float(diff.size))
            dev = poisson_deviance(f["counts_target"][live],
                                   np.maximum(rate[live] * f["exposure_target"][live], DEVIANCE_FLOOR_COUNTS))
            sums.update(dev_sum=float(dev.sum()), dev_pix=float(live.sum()))
        # hallucination summary (a): consistency with the observed input counts
        if not on_input:
            expected = forward_model_to_input(rate, self.scale, f["exposure_in"], self.matching)
            mask = gap_mask(f["exposure_in"], self.gap_margin_lr) if self.scale > 1 else None
            _, s = lr_consistency_map(f["counts_in"], expected, self.consistency_threshold, mask=mask)
            n = s["n_pixels"]
            if n:
                sums.update(cons_dev=s["mean_deviance"] * n, cons_exp=s["expected_mean"] * n,
                            cons_above=s["frac_above"] * n, cons_above_exp=s["expected_frac_above"] * n,
                            cons_pix=float(n))
        if "src_xy" not in f:
            return sums, cats
        valid = np.isfinite(f["src_xy"][:, 0]) & (f["src_kind"] >= 0)
        xy_lr, rates = f["src_xy"][valid].astype(np.float64), f["src_rate"][valid].astype(np.float64)
        kind, extent = f["src_kind"][valid].astype(np.int64), f["src_extent"][valid].astype(np.float64)
        xy = g * xy_lr + (g - 1) / 2.0                  # input-grid pixel -> this grid (pixel centres at integers)
        h, w = rate.shape
        point = kind == 0

        def inside(margin: float) -> np.ndarray:
            return (xy[:, 0] >= margin) & (xy[:, 0] <= w - 1 - margin) & (xy[:, 1] >= margin) & (xy[:, 1] <= h - 1 - margin)

        def exposed_at(p: np.ndarray, radius: float) -> np.ndarray:
            out = np.zeros(len(p), bool)
            for i, (x, y) in enumerate(p):
                x0, x1 = int(max(math.floor(x - radius), 0)), int(min(math.ceil(x + radius), w - 1))
                y0, y1 = int(max(math.floor(y - radius), 0)), int(min(math.ceil(y + radius), h - 1))
                out[i] = x1 >= x0 and y1 >= y0 and bool(live[y0:y1 + 1, x0:x1 + 1].all())
            return out

        # flux recovery at the true positions
        r_ap, (a_in, a_out) = self.aperture_radius_lr * g, (self.annulus_lr[0] * g, self.annulus_lr[1] * g)
        sel = point & (rates >= self.flux_min_rate) & inside(a_out)
        sel[sel] = exposed_at(xy[sel], r_ap)
        if sel.any():
            ratios = aperture_flux_ratio(rate, xy[sel], rates[sel], r_ap, (a_in, a_out), psf=self._kernel(source),
                                         mask=~live)
            cats["flux_ratio"] = ratios[np.isfinite(ratios)]
        # detection: completeness and false detections, judged as counts of this product
        counts_equiv = rate * exposure
        if ("bkg_in" if on_input else "bkg_target") in f:
            bkg = f["bkg_in"] if on_input else f["bkg_target"]
        else:
            bkg = estimate_background_rate(observed, exposure) * exposure
        det = detection_stats(counts_equiv, bkg, xy, rates, self.detection_significance,
                              match_radius_pix=self.match_radius_lr * g, cell_radius_pix=self.cell_radius_lr * g)
        considered = point & (rates >= self.detection_min_rate) & inside(0.0)
        considered[considered] = exposed_at(xy[considered], 1.0)
        sums.update(det_found=float(det.true_detected[considered].sum()), det_total=float(considered.sum()))
        false = det.matched_true < 0
        if false.any() and (~point).any():
            ext_xy = xy[~point]
            ext_r = np.maximum(2.0 * extent[~point] / (self.pixel_arcsec / g), 3.0 * g)
            d = np.hypot(det.positions_xy[:, None, 0] - ext_xy[None, :, 0], det.positions_xy[:, None, 1] - ext_xy[None, :, 1])
            false &= ~(d <= ext_r[None, :]).any(axis=1)
        sums["false"] = float(false.sum())
        # FWHM of bright isolated point sources
        half = (self.fwhm_box_lr * g) // 2
        sel = point & (rates >= self.fwhm_min_rate) & inside(half)
        for i in np.flatnonzero(sel):
            d = np.hypot(*(xy_lr - xy_lr[i]).T)
            if np.any((d > 0) & (d < self.isolation_lr) & (rates > 0.1 * rates[i])):
                sel[i] = False
        sel[sel] = exposed_at(xy[sel], half)
        if sel.any():
            fw = point_source_fwhm(rate, xy[sel], box=2 * half + 1, pixel_arcsec=self.pixel_arcsec / g, beta=1.5,
                                   oversample=4)
            cats["fwhm"] = fw[np.isfinite(fw)]
        return sums, cats

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for source in SOURCES:
            if source not in self._seen and self.states[source]._update_count == 0:
                continue
            s = self.states[source].compute()
            if s["pix"] > 0:
                out[f"l1/{source}"] = s["l1_sum"] / s["pix"]
                mse = s["sq_sum"] / s["pix"]
                out[f"psnr/{source}"] = 10.0 * math.log10(1.0 / mse) if mse > 0 else float("inf")
            if s["dev_pix"] > 0:
                out[f"deviance/{source}"] = s["dev_sum"] / s["dev_pix"]
            if s["cons_pix"] > 0 and s["cons_exp"] > 0:
                out[f"lr_consistency/{source}"] = s["cons_dev"] / s["cons_exp"]
                out[f"lr_excess_frac/{source}"] = (s["cons_above"] - s["cons_above_exp"]) / s["cons_pix"]
            r = s["flux_ratio"]
            if len(r):
                p16, p50, p84 = np.percentile(r, [16, 50, 84])
                out[f"flux_median/{source}"], out[f"flux_scatter/{source}"] = float(p50), float(0.5 * (p84 - p16))
            out[f"flux_n/{source}"] = float(len(r))
            if s["det_total"] > 0:
                out[f"completeness/{source}"] = s["det_found"] / s["det_total"]
                out[f"completeness_n/{source}"] = s["det_total"]
            if s["fields"] > 0:
                out[f"false_per_field/{source}"] = s["false"] / s["fields"]
            if len(s["fwhm"]):
                out[f"fwhm_arcsec/{source}"] = float(np.median(s["fwhm"]))
            out[f"fwhm_n/{source}"] = float(len(s["fwhm"]))
        return out

    def reset(self) -> None:
        for m in self.states.values():
            m.reset()
        self._seen = set()
