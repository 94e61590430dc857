"""Denoising and super-resolution judged on real XMM-Newton observations with held-out counts.

    python -m lit_sr.domains.xmm.real --data ../shared/data/xmm_real --dn <run>/checkpoints/last.ckpt \
        --sr <run>/checkpoints/last.ckpt --out docs

The data folder holds, per ObsID, a 20 ks time slice (``20ks/<obsid>_*.fits.gz``) and the whole cleaned
observation (``full/<obsid>_*.fits.gz``), EPIC-pn 0.5-2 keV counts images from SAS ``evselect``. The slice's
events are a subset of the full observation's, so ``held-out = full - slice`` is an independent Poisson image
of the same sky with exposure T - T_slice (T, T_slice from the EXPOSURE cards): a reference with no
simulation in it. Every method predicts a count rate on the slice's grid from the slice alone; it is scored
on the exposed pixels (the detector mask of :func:`lit_sr.domains.xmm.fits_io.estimate_detector_mask`,
estimated from the full observation) against the held-out counts:

* ``deviance``: mean held-out Poisson deviance per pixel, 2 [k ln(k/mu) - (k - mu)] with mu = predicted
  rate x (T - T_slice) (a proper score: lower is better; predictions of 0 counts are floored at
  :data:`MU_FLOOR` counts, which only the raw rate reaches, in its zero-count pixels);
* ``se_ratio``: squared error of the rate against the held-out rate k / (T - T_slice), relative to the raw
  rate's, with the held-out Poisson variance sum k / (T - T_slice)^2 subtracted from both (its expectation):
  an estimate of the true squared-error ratio (< 1: closer to the sky than the raw 20 ks rate). The
  difference of the two raw squared errors needs no subtraction (the reference noise cancels in it);
* ``count_ratio``: predicted / held-out counts summed over the exposed pixels (1 = no overall bias);
* ``psnr``: PSNR (dB) in the model's scaled space (the data transform: clip at max_rate, sqrt stretch, data
  range 1) against the held-out rate image, as the reference study reports it (its reference is noisy).

Methods: the raw 20 ks rate; Gaussian smoothing (exposure-corrected, :func:`baselines.gaussian_smooth_rate`)
with sigma tuned on the simulated validation split by the same held-out deviance (input 20 ks -> the
independent 50 ks target counts), and with sigma tuned on these real files (an oracle row: it has seen the
held-out counts); the DN model; the SR model with its x2 output summed 2x2 back to the input grid. The
exposure given to the models is T_slice x the detector mask (no exposure map ships with the files: vignetting
and per-CCD good-time differences, present in ObsIDs 0085110101 and 0200920101 (ONTIMEnn cards), are not
modelled; they affect every method alike).

Models fine-tuned on the real pairs themselves (``xmm_dn_real``, ``xmm_sr_real``) are scored leave-one-out
(``--dn-loo`` / ``--sr-loo`` with a ``{obsid}`` path template: each ObsID by the run whose ``data.leave_out`` is
that ObsID). ``--psf-matched`` adds, for every SR row, its forward model to the telescope's optics: the x2
output (the SR target's PSF, twice narrower) blurred with the HR -> LR PSF matching kernel, then summed 2x2
(:func:`psf_matched_rate`); the held-out counts were recorded through the LR PSF, so a sharper prediction is
judged only after this step. ``--flux-conserving`` adds, for every model row, the same prediction times one factor per frame that
makes its total over the exposed pixels equal to the slice's counts / T_slice (:func:`flux_conserving`).
``--sr-consistent-with`` adds, for every SR row, the x2 output made consistent with a denoiser's output on the
input grid (:func:`sr_consistent_rate`: exact 2x2 block-sum rescale, and with ``--psf-matched`` Richardson-Lucy
on the PSF forward model): the sub-pixel split is the SR's, the input-grid content the denoiser's.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from astropy.io import fits

from lit_sr.data.validate import DataFileError
from lit_sr.domains.xmm.fits_io import estimate_detector_mask, read_observation
from lit_sr.domains.xmm.photometry import poisson_deviance

log = logging.getLogger("lit_sr")

#: expected counts below this are floored in the deviance (only the raw rate predicts 0 counts)
MU_FLOOR = 1e-3


@dataclass
class RealPair:
    """One observation: the 20 ks slice and the held-out counts (full - slice) on the same grid."""

    obsid: str
    slice_counts: np.ndarray  # counts [H, W]
    heldout_counts: np.ndarray  # counts [H, W] (full - slice)
    slice_exposure_s: float
    heldout_exposure_s: float
    mask: np.ndarray  # exposed pixels (bool [H, W]), from the full observation
    pixel_arcsec: float
    slice_path: Path
    full_path: Path
    header: Any = field(default=None, repr=False)

    @property
    def slice_exposure_map(self) -> np.ndarray:
        return (self.mask * self.slice_exposure_s).astype(np.float32)

    @property
    def heldout_exposure_map(self) -> np.ndarray:
        return (self.mask * self.heldout_exposure_s).astype(np.float32)

    @property
    def raw_rate(self) -> np.ndarray:
        return np.where(self.mask, self.slice_counts / self.slice_exposure_s, 0.0)


def _exposure_s(path: Path) -> float:
    value = fits.getheader(path).get("EXPOSURE")
    if not isinstance(value, (int, float)) or not value > 0:
        raise DataFileError(path, "HDU 0 EXPOSURE", f"EXPOSURE card is {value!r}; expected the exposure in s (> 0)")
    return float(value)


def list_obsids(data: str | Path, slice_dir: str = "20ks", full_dir: str = "full") -> dict[str, tuple[Path, Path]]:
    """{ObsID: (slice file, full file)} for every ObsID with a file in both ``<data>/20ks`` and ``<data>/full``
    (matched by the leading 10 digits of the file names); only names are read."""
    data = Path(data)
    if not (data / slice_dir).is_dir() or not (data / full_dir).is_dir():
        raise DataFileError(
            data,
            None,
            f"expected sub-folders '{slice_dir}/' (time slices) and '{full_dir}/' "
            "(whole observations) of FITS counts images",
        )

    def by_obsid(folder: Path) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for p in sorted(folder.iterdir()):
            m = re.match(r"(\d{10})", p.name)
            if m and p.name.lower().endswith((".fits", ".fits.gz")):
                if m.group(1) in out:
                    raise DataFileError(
                        p, None, f"a second file of ObsID {m.group(1)} in {folder} ({out[m.group(1)].name})"
                    )
                out[m.group(1)] = p
        return out

    slices, fulls = by_obsid(data / slice_dir), by_obsid(data / full_dir)
    obsids = sorted(set(slices) & set(fulls))
    if not obsids:
        raise DataFileError(data, None, "no ObsID has both a time slice and a full observation")
    return {o: (slices[o], fulls[o]) for o in obsids}


def load_pairs(
    data: str | Path,
    slice_dir: str = "20ks",
    full_dir: str = "full",
    only: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> list[RealPair]:
    """Every ObsID with a file in both ``<data>/20ks`` and ``<data>/full`` (matched by the leading digits),
    restricted to ``only`` (if given) and without ``exclude``; the files of other ObsIDs are never opened."""
    files = list_obsids(data, slice_dir, full_dir)
    for o in [*(only or ()), *exclude]:
        if o not in files:
            raise DataFileError(Path(data), None, f"ObsID {o!r} has no slice/full pair here; found {sorted(files)}")
    obsids = [o for o in files if (only is None or o in only) and o not in exclude]
    if not obsids:
        raise DataFileError(Path(data), None, f"no ObsID left (only={only}, exclude={list(exclude)})")
    pairs = []
    for obsid in obsids:
        s_path, f_path = files[obsid]
        s_obs = read_observation(s_path, exposure_ks=1.0, detector_mask="none")
        f_obs = read_observation(f_path, exposure_ks=1.0, detector_mask="none")
        if s_obs.shape != f_obs.shape:
            raise DataFileError(
                f_path, "HDU 0", f"shape {f_obs.shape} differs from the slice {s_path.name} {s_obs.shape}"
            )
        heldout = f_obs.counts.astype(np.float64) - s_obs.counts.astype(np.float64)
        if (heldout < 0).any():
            raise DataFileError(
                f_path,
                "HDU 0",
                f"{int((heldout < 0).sum())} pixels have fewer counts than in the slice "
                f"{s_path.name}; expected the slice's events to be a subset",
            )
        t_s, t_f = _exposure_s(s_path), _exposure_s(f_path)
        if t_f <= t_s:
            raise DataFileError(f_path, "HDU 0 EXPOSURE", f"{t_f:g} s is not longer than the slice's {t_s:g} s")
        pairs.append(
            RealPair(
                obsid,
                s_obs.counts.astype(np.float64),
                heldout,
                t_s,
                t_f - t_s,
                estimate_detector_mask(f_obs.counts),
                s_obs.pixel_arcsec,
                s_path,
                f_path,
                s_obs.header,
            )
        )
    return pairs


# ------------------------------------------------------------------------------------------------ scores


def score(
    rate: np.ndarray, pair: RealPair, transform: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> dict[str, float]:
    """Held-out scores of a predicted rate (counts/s per input pixel) on ``pair`` (see the module doc)."""
    m = pair.mask
    t_h = pair.heldout_exposure_s
    k = pair.heldout_counts[m]
    r = np.clip(np.asarray(rate, np.float64)[m], 0.0, None)
    mu = np.maximum(r * t_h, MU_FLOOR)
    dev = poisson_deviance(k, mu)
    r_h = k / t_h
    noise = float(np.mean(k)) / t_h**2  # E[(k/T - lambda)^2] estimated by k / T^2
    r_raw = pair.raw_rate[m]
    se, se_raw = float(np.mean((r - r_h) ** 2)), float(np.mean((r_raw - r_h) ** 2))
    out = {
        "deviance": float(np.mean(dev)),
        "count_ratio": float(np.sum(r) * t_h / max(np.sum(k), 1.0)),
        "se_ratio": (se - noise) / (se_raw - noise) if se_raw > noise else float("nan"),
        "se_minus_raw": se - se_raw,
    }
    if transform is not None:
        a = transform(torch.from_numpy(r)).numpy()
        b = transform(torch.from_numpy(r_h)).numpy()
        mse = float(np.mean((a - b) ** 2))
        out["psnr"] = 10 * math.log10(1.0 / mse) if mse > 0 else float("inf")
    return out


# ------------------------------------------------------------------------------------------------ baselines


def simulated_validation(
    sim_root: str | Path, max_fields: int | None = None
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """(input rates, input exposures, target counts, target exposures) of the simulated validation split
    (``<sim_root>/val/input_20ks`` and ``val/target_50ks``: the DN pair, two independent exposures)."""
    from lit_sr.domains.xmm.data import count_rate, read_image_file

    root = Path(sim_root)
    files = sorted((root / "val" / "input_20ks").glob("field_*.fits"))[:max_fields]
    if not files:
        raise DataFileError(
            root / "val" / "input_20ks",
            None,
            "no simulated validation fields (field_*.fits); run a training of xmm_dn once to simulate them",
        )
    rates, exps, tgt, texp = [], [], [], []
    for f in files:
        a = read_image_file(f, optional=())
        b = read_image_file(root / "val" / "target_50ks" / f.name, optional=())
        rates.append(count_rate(a["counts"], a["EXPOSURE"]).astype(np.float64))
        exps.append(a["EXPOSURE"].astype(np.float64))
        tgt.append(b["counts"].astype(np.float64))
        texp.append(b["EXPOSURE"].astype(np.float64))
    return rates, exps, tgt, texp


def tune_sigma_simulated(sim_root: str | Path, grid: Sequence[float]) -> tuple[float, dict[float, float]]:
    """Smoothing width (input pixels) with the lowest held-out deviance on the simulated validation split."""
    from lit_sr.domains.xmm.baselines import tune_sigma

    rates, exps, tgt, texp = simulated_validation(sim_root)
    return tune_sigma(rates, tgt, grid, exposures=exps, loss="poisson", reference_exposures=texp)


def tune_sigma_real(pairs: Sequence[RealPair], grid: Sequence[float]) -> tuple[float, dict[float, float]]:
    """The oracle: the width with the lowest held-out deviance on the real files themselves."""
    from lit_sr.domains.xmm.baselines import tune_sigma

    return tune_sigma(
        [p.raw_rate for p in pairs],
        [p.heldout_counts for p in pairs],
        grid,
        exposures=[p.slice_exposure_map for p in pairs],
        masks=[p.mask for p in pairs],
        loss="poisson",
        reference_exposures=[p.heldout_exposure_map for p in pairs],
    )


def smoothed(pair: RealPair, sigma_px: float) -> np.ndarray:
    from lit_sr.domains.xmm.baselines import gaussian_smooth_rate

    return np.asarray(gaussian_smooth_rate(pair.raw_rate, float(sigma_px), pair.slice_exposure_map), np.float64)


# ------------------------------------------------------------------------------------------------ models


@dataclass
class LoadedModel:
    module: Any
    transform: torch.nn.Module
    scale: int
    patch_size: int
    exposure_norm_ks: float
    checkpoint: Path
    experiment: str
    leave_out: str | None = None  # the ObsID a real-data (Noise2Noise) run never trained on


def unclipped_transform(transform: torch.nn.Module) -> torch.nn.Module:
    """The same stretch without its upper clip (:class:`StretchTransform` ``clip=False``): identical below
    ``max_value``, continued above it."""
    from lit_sr.data.transforms import StretchTransform

    if not isinstance(transform, StretchTransform):
        raise ValueError(f"no unclipped form of {type(transform).__name__}; expected a StretchTransform")
    return StretchTransform(transform.max_value, transform.stretch, transform.a, clip=False)


def load_model(checkpoint: str | Path, unclipped: bool = False) -> LoadedModel:
    """A trained xmm_dn / xmm_sr LightningModule from ``<run>/checkpoints/<name>.ckpt`` and the run's
    ``config_resolved.yaml`` (net, data transform, scale, patch size). ``unclipped``: the data transform
    without its upper clip and the net's output without its upper clamp (a model trained with the clip then
    sees the same inputs below ``max_rate`` and passes brighter pixels through its residual skip)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    ckpt = Path(checkpoint)
    if not ckpt.is_file():
        raise DataFileError(ckpt, None, "checkpoint not found")
    cfg_path = ckpt.parent.parent / "config_resolved.yaml"
    if not cfg_path.is_file():
        raise DataFileError(cfg_path, None, "the run's resolved config is missing (expected beside checkpoints/)")
    cfg = OmegaConf.load(cfg_path)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg["evaluator"] = None
    module = instantiate(model_cfg, _convert_="all")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    module.load_state_dict(state["state_dict"], strict=True)
    module.eval()
    transform = instantiate(OmegaConf.to_container(cfg.data.transform, resolve=True))
    if unclipped:
        transform = unclipped_transform(transform)
        net = module.net
        if getattr(net, "output_range", None) is not None:
            net.output_range = (net.output_range[0], None)
    return LoadedModel(
        module,
        transform,
        int(cfg.data.scale),
        int(cfg.data.patch_size),
        float(cfg.data.exposure_norm_ks),
        ckpt,
        str(cfg.get("experiment_name", "model")),
        cfg.data.get("leave_out"),
    )


def leave_one_out_rates(
    template: str, pairs: Sequence[RealPair], self_ensemble: bool = False, scale: int = 1
) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, np.ndarray]]:
    """Leave-one-out predictions: for each pair the checkpoint ``template.format(obsid=...)``, which must come
    from a real-data run with ``data.leave_out`` = that ObsID (refused otherwise: the held-out image must never
    have been a training target) and have the given ``scale`` (1: denoisers, 2: SR). Several templates joined
    by ``|``: the mean of their predictions (an ensemble of fine-tunes, e.g. of different seeds). Returns
    ({obsid: rate on the input grid (SR: summed 2 x 2)}, {obsid: checkpoints}, {obsid: rate on the model's
    output grid})."""
    rates, used, native = {}, {}, {}
    for p in pairs:
        members = []
        for member in template.split("|"):
            path = Path(member.strip().format(obsid=p.obsid))
            model = load_model(path)
            if model.leave_out != p.obsid:
                raise DataFileError(
                    path,
                    "config_resolved.yaml data.leave_out",
                    f"is {model.leave_out!r}; expected {p.obsid!r}: a leave-one-out score needs the run that never "
                    f"trained on {p.obsid}",
                )
            if model.scale != scale:
                raise DataFileError(path, "config_resolved.yaml data.scale", f"is {model.scale}; expected {scale}")
            members.append(model_rate(model, p, self_ensemble))
        native[p.obsid] = np.mean([m[0] for m in members], axis=0)
        rates[p.obsid] = np.mean([m[1] for m in members], axis=0)
        used[p.obsid] = " | ".join(member.strip().format(obsid=p.obsid) for member in template.split("|"))
    return rates, used, native


def flux_conserving(rate: np.ndarray, pair: RealPair) -> np.ndarray:
    """``rate`` (on the input grid or a finer one) times one factor so that its total over the exposed
    pixels (summed back to the input grid) equals the slice's counts / T_slice there: the field's total rate
    as the 20 ks slice measures it (Poisson error 1 / sqrt(counts), 0.1-0.4 % on the six real slices).
    Uses only the input, so it is a legitimate step of any method (:func:`lit_sr.inference.flux.match_total`)."""
    from lit_sr.inference.flux import match_total

    s = rate.shape[0] // pair.slice_counts.shape[0]
    out, _ = match_total(
        torch.from_numpy(np.asarray(rate, np.float64)),
        torch.from_numpy(pair.raw_rate.astype(np.float64)),
        torch.from_numpy(pair.mask.astype(np.float64)),
        scale=s,
    )
    return out.numpy()


@torch.no_grad()
def model_rate(
    model: LoadedModel, pair: RealPair, self_ensemble: bool = False, batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """(rate on the model's output grid, the same summed back to the input grid), counts/s per pixel.
    With ``self_ensemble`` the mean of the 8 flips/rotations."""
    return model_rate_array(model, pair.raw_rate, pair.slice_exposure_map, self_ensemble, batch_size, where=pair.obsid)


@torch.no_grad()
def model_rate_array(
    model: LoadedModel,
    rate: np.ndarray,
    exposure_s: np.ndarray,
    self_ensemble: bool = False,
    batch_size: int = 16,
    where: str = "frame",
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`model_rate` for an input rate image (counts/s per pixel, [H, W]) and its exposure map (s)."""
    from lit_sr.domains.xmm.data import model_input
    from lit_sr.domains.xmm.predict import D4_KEYS, XMMFramePredictor

    rate_t = torch.from_numpy(np.asarray(rate, np.float32))[None]
    expo = torch.from_numpy(np.asarray(exposure_s, np.float32))[None]
    frame = model_input(rate_t, expo, model.transform, model.exposure_norm_ks)
    predictor = XMMFramePredictor(model.patch_size, None, batch_size, self_ensemble)
    out = predictor(model.module.frame_forward, frame, where=where)
    keys = ["output", *([k for k in D4_KEYS if k in out] if self_ensemble else [])]
    phys = torch.stack([model.transform.inverse(out[k]) for k in keys]).mean(0)[0].double().numpy()
    s = model.scale
    h, w = phys.shape[0] // s, phys.shape[1] // s
    lr = phys.reshape(h, s, w, s).sum(axis=(1, 3)) if s > 1 else phys
    return phys, lr


def psf_matched_rate(
    hr_rate: np.ndarray,
    pair: RealPair,
    psf_fwhm_arcsec: float = 6.0,
    psf_beta: float = 1.5,
) -> np.ndarray:
    """The forward model of an x s SR rate image (counts/s per output pixel, the SR target's optics: PSF
    narrowed s times) to what the telescope records on the input grid: blurred with the HR -> LR matching
    kernel (pixel size of ``pair``) and summed s x s (:func:`hallucination.forward_model_to_input` at unit
    exposure; the fine-tuning loss applies the same kernel with :class:`psf.PSFMatchingBlur`)."""
    from lit_sr.domains.xmm.hallucination import forward_model_to_input
    from lit_sr.domains.xmm.psf import sr_matching_kernel

    s = hr_rate.shape[0] // pair.slice_counts.shape[0]
    kernel = sr_matching_kernel(pair.pixel_arcsec, s, psf_fwhm_arcsec, psf_beta)
    return forward_model_to_input(hr_rate, s, 1.0, kernel)


def sr_consistent_rate(
    hr_rate: np.ndarray,
    input_grid_rate: np.ndarray,
    pair: RealPair,
    rl_iterations: int = 0,
    psf_fwhm_arcsec: float = 6.0,
    psf_beta: float = 1.5,
) -> np.ndarray:
    """An x s SR rate image made consistent with an input-grid rate estimate (e.g. a denoiser's output) over the
    pair's exposed pixels, counts/s per output pixel: :func:`lit_sr.domains.xmm.psf.sr_made_consistent`.
    ``rl_iterations`` = 0: exact block sums (scored summed s x s it is the estimate itself); > 0: Richardson-Lucy
    on the forward model of :func:`psf_matched_rate`."""
    from lit_sr.domains.xmm.psf import sr_made_consistent

    return sr_made_consistent(
        hr_rate, input_grid_rate, pair.mask, pair.pixel_arcsec, rl_iterations, psf_fwhm_arcsec, psf_beta
    )


# ------------------------------------------------------------------------------------------------ image statistics (sim_real.py compares simulations with the real images on them)

COUNT_BINS = (0, 1, 2, 3, 6, 21, 41, np.inf)  # counts-per-pixel histogram edges: 0, 1, 2, 3-5, 6-20, 21-40, >40


def image_statistics(
    counts: Sequence[np.ndarray], exposures_s: Sequence[np.ndarray], pixel_arcsec: float
) -> dict[str, float]:
    """Statistics of 20 ks counts images (pooled over the images) for the simulator-vs-real comparison:
    field size, counts-per-pixel histogram of the exposed pixels, flat background (counts/s/arcmin^2, sources
    clipped), 5-sigma detections per deg^2 and their net counts in a 3-pixel radius, and extended emission
    (fraction of the exposed area whose 4-pixel-smoothed rate exceeds 3x the background; fraction of all
    counts above the background)."""
    from scipy import ndimage

    from lit_sr.domains.xmm.photometry import detect_sources, estimate_background_rate

    pix_arcmin2 = (pixel_arcsec / 60.0) ** 2
    hist = np.zeros(len(COUNT_BINS) - 1)
    n_pix = area = src_counts = total = bright_area = 0.0
    net_counts: list[float] = []
    n_det = 0
    bkg_rates = []
    disk = np.hypot(*np.mgrid[-3:4, -3:4]) <= 3.0
    for c, e in zip(counts, exposures_s):
        c, e = np.asarray(c, np.float64), np.asarray(e, np.float64)
        live = e > 0
        v = c[live]
        hist += np.histogram(v, bins=COUNT_BINS)[0]
        n_pix += v.size
        area += v.size * pix_arcmin2
        b = estimate_background_rate(c, e)  # counts/s/pixel
        bkg_rates.append(b / pix_arcmin2)
        bc = b * e
        total += v.sum()
        src_counts += max(v.sum() - bc[live].sum(), 0.0)
        sm = ndimage.gaussian_filter(np.where(live, c, 0.0), 4.0) / np.maximum(
            ndimage.gaussian_filter(live * 1.0, 4.0), 1e-6
        )
        bright_area += float((sm[live] > 3 * b * e[live]).sum()) * pix_arcmin2
        pos, _ = detect_sources(c * live, bc * live, 5.0)
        n_det += len(pos)
        net = ndimage.convolve(c - bc, disk.astype(float), mode="constant")
        for x, y in pos:
            net_counts.append(float(net[int(round(y)), int(round(x))]))
    net_counts_arr = np.asarray(net_counts) if net_counts else np.zeros(1)
    out = {
        "images": float(len(counts)),
        "field_px": float(np.mean([np.asarray(c).shape[0] for c in counts])),
        "pixel_arcsec": pixel_arcsec,
        "exposed_arcmin2_per_image": area / len(counts),
        "mean_counts_per_pixel": total / n_pix,
        "background_per_arcmin2_s": float(np.median(bkg_rates)),
        "detections_per_deg2": n_det / (area / 3600.0),
        "detections": float(n_det),
        "det_net_counts_median": float(np.median(net_counts_arr)),
        "det_net_counts_p90": float(np.percentile(net_counts_arr, 90)),
        "bright_area_fraction": bright_area / area,
        "source_count_fraction": src_counts / total,
    }
    labels = ["0", "1", "2", "3-5", "6-20", "21-40", ">40"]
    out.update({f"frac_pixels_{lab}": float(h / n_pix) for lab, h in zip(labels, hist)})
    return out


# ------------------------------------------------------------------------------------------------ report


def evaluate(
    pairs: Sequence[RealPair],
    predictions: Mapping[str, Mapping[str, np.ndarray]],
    transform: Callable[[torch.Tensor], torch.Tensor] | None,
) -> dict[str, dict[str, dict[str, float]]]:
    """{method: {obsid | 'mean': scores}} for ``predictions[method][obsid]`` (rates on the input grid)."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for method, by_obs in predictions.items():
        rows = {p.obsid: score(by_obs[p.obsid], p, transform) for p in pairs if p.obsid in by_obs}
        keys = next(iter(rows.values())).keys()
        rows["mean"] = {k: float(np.mean([r[k] for r in rows.values()])) for k in keys}
        table[method] = rows
    return table


def markdown_table(
    table: Mapping[str, Mapping[str, Mapping[str, float]]], obsids: Sequence[str], metric: str, fmt: str
) -> str:
    head = "| method | " + " | ".join(obsids) + " | mean |"
    lines = [head, "|" + "---|" * (len(obsids) + 2)]
    for method, rows in table.items():
        cells = [format(rows[o][metric], fmt) if o in rows and metric in rows[o] else "–" for o in [*obsids, "mean"]]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def panel_figure(pair: RealPair, images: Mapping[str, np.ndarray], out_png: Path, crop: int | None = 200) -> Path:
    """input | models and baselines | held-out reference, as count rates per arcsec^2 (square-root scale).
    Images on a finer grid (SR) are shown on their own grid with the same surface-brightness scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lit_sr.utils.atomic import atomic_path

    h, w = pair.slice_counts.shape
    ref = np.where(pair.mask, pair.heldout_counts / pair.heldout_exposure_s, 0.0)
    panels = {"input 20 ks": pair.raw_rate, **images, f"held-out {pair.heldout_exposure_s / 1e3:.0f} ks": ref}
    # centre the crop on the brightest smoothed pixel
    from scipy import ndimage

    sm = ndimage.gaussian_filter(ref, 4)
    cy, cx = np.unravel_index(np.argmax(sm), sm.shape)
    half = (crop or max(h, w)) // 2
    y0, x0 = int(np.clip(cy - half, 0, max(0, h - 2 * half))), int(np.clip(cx - half, 0, max(0, w - 2 * half)))
    pix2 = pair.pixel_arcsec**2
    vmax = float(np.percentile(ref[y0 : y0 + 2 * half, x0 : x0 + 2 * half], 99.7)) / pix2 or 1.0
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for ax, (name, img) in zip(axes, panels.items()):
        f = img.shape[0] // h
        cut = img[f * y0 : f * (y0 + 2 * half), f * x0 : f * (x0 + 2 * half)] / (pix2 / f**2)
        ax.imshow(np.sqrt(np.clip(cut, 0, None)), origin="lower", cmap="magma", vmin=0, vmax=math.sqrt(vmax))
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"XMM-Newton EPIC-pn {pair.obsid}, 0.5-2 keV: count rate per arcsec$^2$ (sqrt scale), "
        f'{2 * half} x {2 * half} input pixels of {pair.pixel_arcsec:.1f}"',
        fontsize=9,
    )
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_png, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return out_png


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from lit_sr.domains.xmm.baselines import DEFAULT_SIGMA_GRID_PX

    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True, help="folder with 20ks/ and full/ FITS counts images")
    ap.add_argument("--dn", action="append", default=[], help="xmm_dn checkpoint (repeatable; label=path allowed)")
    ap.add_argument("--sr", action="append", default=[], help="xmm_sr checkpoint (repeatable; label=path allowed)")
    ap.add_argument(
        "--dn-loo",
        action="append",
        default=[],
        help="leave-one-out denoisers: label=path template with {obsid}, e.g. runs/loo_{obsid}/checkpoints/last.ckpt "
        "(each run's data.leave_out must be that ObsID)",
    )
    ap.add_argument(
        "--sr-loo",
        action="append",
        default=[],
        help="leave-one-out x2 SR runs (xmm_sr_real): label=path template with {obsid}, scored summed 2x2 "
        "(for both: several templates joined by | are averaged, an ensemble of fine-tunes)",
    )
    ap.add_argument(
        "--psf-matched",
        action="store_true",
        help="also score every SR row forward-modelled to the telescope's optics: blurred with the HR -> LR PSF "
        "matching kernel, then summed 2x2 (psf_matched_rate)",
    )
    ap.add_argument(
        "--sr-consistent-with",
        default=None,
        help="label=DN checkpoint, or leave-one-out template with {obsid} (| joins an ensemble): every SR row is "
        "also made consistent with this denoiser's output (8-fold self-ensemble, flux-conserving with "
        "--flux-conserving): its 2x2 block sums rescaled to it (scored summed 2x2, that is the denoiser's "
        "score by construction) and, with --psf-matched, --rl-iterations Richardson-Lucy steps on the PSF "
        "forward model (sr_consistent_rate)",
    )
    ap.add_argument(
        "--rl-iterations",
        default="1",
        help="Richardson-Lucy iterations of --sr-consistent-with with --psf-matched; comma-separated for several rows "
        "(1: the count with the best PSNR to the truth on the simulated validation split, "
        "reports/xmm/sr_consistency_sim.py)",
    )
    ap.add_argument("--psf-fwhm", type=float, default=6.0, help="LR King PSF FWHM (arcsec) for --psf-matched")
    ap.add_argument("--psf-beta", type=float, default=1.5, help="LR King PSF beta for --psf-matched")
    ap.add_argument(
        "--flux-conserving",
        action="store_true",
        help="also score every model row rescaled so that its total over the exposed pixels equals the slice's "
        "counts / T_slice (lit_sr.inference.flux.match_total)",
    )
    for kind in ("dn", "sr"):
        ap.add_argument(
            f"--{kind}-no-clip",
            action="append",
            default=[],
            help=f"an xmm_{kind} checkpoint run with its scaling's upper clip and output clamp removed "
            "(StretchTransform clip=False; repeatable; label=path allowed)",
        )
    ap.add_argument(
        "--sim", default="data/xmm", help="simulated dataset folder (or its parent) for the sim-tuned sigma"
    )
    ap.add_argument("--sim-sigma", type=float, default=None, help="use this sim-tuned sigma (px) instead of tuning")
    ap.add_argument("--self-ensemble", action="store_true", help="average the 8 flips/rotations (8x the time)")
    ap.add_argument("--out", default="docs", help="folder for xmm_real.md / .json and figures/")
    ap.add_argument("--panels", default="0085110101,0781350101", help="ObsIDs to draw as panels")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    pairs = load_pairs(args.data)
    obsids = [p.obsid for p in pairs]
    log.info(
        "real pairs: %s",
        ", ".join(f"{p.obsid} ({p.slice_exposure_s / 1e3:.1f} + {p.heldout_exposure_s / 1e3:.1f} ks)" for p in pairs),
    )
    grid = list(DEFAULT_SIGMA_GRID_PX)
    sim = Path(args.sim)
    if not (sim / "val").is_dir():
        found = sorted(sim.glob("*/val"))
        if not found and args.sim_sigma is None:
            raise DataFileError(sim, None, "no simulated dataset (<folder>/val/input_20ks) for the sim-tuned sigma")
        sim = found[0].parent if found else sim
    if args.sim_sigma is None:
        sigma_sim, curve_sim = tune_sigma_simulated(sim, grid)
        log.info("sigma tuned on the simulated validation split (%s): %.2f px", sim, sigma_sim)
    else:
        sigma_sim, curve_sim = float(args.sim_sigma), {}
    sigma_real, curve_real = tune_sigma_real(pairs, grid)
    log.info("sigma tuned on the real files (oracle): %.2f px", sigma_real)
    # the fair real-data baseline of a leave-one-out model: sigma tuned on the other ObsIDs' held-out counts
    sigma_loo = (
        {p.obsid: tune_sigma_real([q for q in pairs if q is not p], grid)[0] for p in pairs} if len(pairs) > 1 else {}
    )
    if sigma_loo:
        log.info("sigma tuned on the other ObsIDs (leave-one-out): %s", sigma_loo)

    predictions: dict[str, dict[str, np.ndarray]] = {
        "raw rate (20 ks)": {p.obsid: p.raw_rate for p in pairs},
        f"Gaussian, sigma {sigma_sim:.2f} px (sim-tuned)": {p.obsid: smoothed(p, sigma_sim) for p in pairs},
        f"Gaussian, sigma {sigma_real:.2f} px (real-tuned oracle)": {p.obsid: smoothed(p, sigma_real) for p in pairs},
    }
    if sigma_loo:
        predictions["Gaussian, sigma tuned on the other ObsIDs (leave-one-out)"] = {
            p.obsid: smoothed(p, sigma_loo[p.obsid]) for p in pairs
        }
    panel_images: dict[str, dict[str, np.ndarray]] = {
        p.obsid: {
            f"Gaussian {sigma_sim:.2f} px (sim)": predictions[f"Gaussian, sigma {sigma_sim:.2f} px (sim-tuned)"][
                p.obsid
            ]
        }
        for p in pairs
    }
    transform = None
    timings: dict[str, float] = {}
    native: dict[str, dict[str, np.ndarray]] = {}  # SR and leave-one-out rows on their own grid (SR: x2)
    runs = [
        ("DN", args.dn, False),
        ("DN", args.dn_no_clip, True),
        ("SR", args.sr, False),
        ("SR", args.sr_no_clip, True),
    ]
    for kind, ckpts, no_clip in runs:
        for spec in ckpts:
            label, _, path = spec.rpartition("=")
            model = load_model(path, unclipped=no_clip)
            transform = transform or model.transform
            name = (
                f"{kind} {label or model.experiment}"
                + (", no clip" if no_clip else "")
                + (" (8-fold ensemble)" if args.self_ensemble else "")
                + (", summed 2x2" if model.scale > 1 else "")
            )
            predictions[name] = {}
            t0 = time.perf_counter()
            for p in pairs:
                hr, lr = model_rate(model, p, args.self_ensemble)
                predictions[name][p.obsid] = lr
                if model.scale > 1:
                    native.setdefault(name, {})[p.obsid] = hr
                panel_images[p.obsid][f"{kind} {label}{' no clip' if no_clip else ''}".strip()] = hr
            timings[name] = time.perf_counter() - t0
            log.info("%s: %d frames in %.0f s", name, len(pairs), timings[name])
    loo_used: dict[str, dict[str, str]] = {}
    for kind, scale, specs in (("DN", 1, args.dn_loo), ("SR", 2, args.sr_loo)):
        for spec in specs:
            label, _, template = spec.rpartition("=")
            name = (
                f"{kind} {label or 'fine-tuned'} (leave-one-out)"
                + (" (8-fold ensemble)" if args.self_ensemble else "")
                + (", summed 2x2" if scale > 1 else "")
            )
            t0 = time.perf_counter()
            predictions[name], loo_used[name], native[name] = leave_one_out_rates(
                template, pairs, args.self_ensemble, scale
            )
            timings[name] = time.perf_counter() - t0
            for p in pairs:
                panel_images[p.obsid][f"{kind} {label} (LOO)".strip()] = native[name][p.obsid]
            log.info("%s: %d frames in %.0f s", name, len(pairs), timings[name])
    if args.sr_consistent_with:
        label, _, spec = args.sr_consistent_with.rpartition("=")
        label = label or "DN"
        t0 = time.perf_counter()
        if "{obsid}" in spec:
            dn_rates, loo_used[f"consistency: {label}"], _ = leave_one_out_rates(spec, pairs, True, 1)
        else:
            dn_model = load_model(spec)
            if dn_model.scale != 1:
                raise DataFileError(Path(spec), "config_resolved.yaml data.scale", f"is {dn_model.scale}; expected 1")
            dn_rates = {p.obsid: model_rate(dn_model, p, True)[1] for p in pairs}
        if args.flux_conserving:
            dn_rates = {p.obsid: flux_conserving(dn_rates[p.obsid], p) for p in pairs}
        timings[f"consistency: {label}"] = time.perf_counter() - t0
        ordered = {}
        for name, by_obs in predictions.items():
            ordered[name] = by_obs
            if not (name.startswith("SR ") and name.endswith("summed 2x2") and name in native):
                continue
            variants = [(0, f"block sums = {label}")]
            if args.psf_matched:
                variants += [(int(n), f"RL onto {label} ({int(n)} it.)") for n in str(args.rl_iterations).split(",")]
            for n_iter, what in variants:
                new = name.replace(", summed 2x2", f", consistent: {what}, summed 2x2")
                native[new] = {
                    p.obsid: sr_consistent_rate(
                        native[name][p.obsid], dn_rates[p.obsid], p, n_iter, args.psf_fwhm, args.psf_beta
                    )
                    for p in pairs
                    if p.obsid in native[name]
                }
                ordered[new] = {
                    p.obsid: native[new][p.obsid]
                    .reshape(
                        p.slice_counts.shape[0],
                        -1,
                        p.slice_counts.shape[1],
                        native[new][p.obsid].shape[1] // p.slice_counts.shape[1],
                    )
                    .sum(axis=(1, 3))
                    for p in pairs
                    if p.obsid in native[new]
                }
        predictions = ordered
    if args.psf_matched:
        ordered = {}
        for name, by_obs in predictions.items():
            ordered[name] = by_obs
            if name.endswith("summed 2x2") and name in native:
                ordered[name.replace("summed 2x2", "PSF-matched, summed 2x2")] = {
                    p.obsid: psf_matched_rate(native[name][p.obsid], p, args.psf_fwhm, args.psf_beta)
                    for p in pairs
                    if p.obsid in native[name]
                }
        predictions = ordered
    if args.flux_conserving:
        # every model row again, times one factor per frame: its total = the slice's counts / T_slice
        ordered: dict[str, dict[str, np.ndarray]] = {}
        for name, by_obs in predictions.items():
            ordered[name] = by_obs
            if name.startswith(("DN ", "SR ")) and ", consistent: " not in name:
                ordered[name + ", flux-conserving"] = {
                    p.obsid: flux_conserving(by_obs[p.obsid], p) for p in pairs if p.obsid in by_obs
                }
        predictions = ordered
    from lit_sr.data.transforms import StretchTransform

    # PSNR always in the clipped sqrt scaling of the simulated data (2e-3 counts/s), whatever the models use
    transform = StretchTransform(getattr(transform, "max_value", 2.0e-3), getattr(transform, "stretch", "sqrt"))
    table = evaluate(pairs, predictions, transform)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figs = []
    for obsid in args.panels.split(","):
        pair = next((p for p in pairs if p.obsid == obsid), None)
        if pair is not None:
            figs.append(panel_figure(pair, panel_images[obsid], out / "figures" / f"xmm_real_{obsid}.png"))
    clip = (
        {p.obsid: float((p.raw_rate[p.mask] > transform.max_value).mean()) for p in pairs}
        if hasattr(transform, "max_value")
        else {}
    )
    result = {
        "table": table,
        "sigma_sim_px": sigma_sim,
        "sigma_real_px": sigma_real,
        "sigma_leave_one_out_px": sigma_loo,
        "curve_sim": {str(k): v for k, v in curve_sim.items()},
        "curve_real": {str(k): v for k, v in curve_real.items()},
        "pairs": {
            p.obsid: {
                "slice_ks": p.slice_exposure_s / 1e3,
                "heldout_ks": p.heldout_exposure_s / 1e3,
                "exposed_fraction": float(p.mask.mean()),
                "pixel_arcsec": p.pixel_arcsec,
                "slice_counts": float(p.slice_counts[p.mask].sum()),
                "fraction_above_clip": clip.get(p.obsid, float("nan")),
            }
            for p in pairs
        },
        "timings_s": timings,
        "leave_one_out_checkpoints": loo_used,
        "self_ensemble": bool(args.self_ensemble),
        "figures": [str(f) for f in figs],
        "command": "python -m lit_sr.domains.xmm.real "
        + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    md = [
        f"Held-out scores on {len(pairs)} real XMM-Newton EPIC-pn observations (20 ks slice -> full - slice), "
        f"{result['date']}.",
        "",
        "`" + result["command"] + "`",
        "",
        "Mean held-out Poisson deviance per exposed pixel (lower is better):",
        "",
        markdown_table(table, obsids, "deviance", ".4f"),
        "",
        "Squared error relative to the raw 20 ks rate, held-out Poisson variance subtracted (< 1 is better):",
        "",
        markdown_table(table, obsids, "se_ratio", ".3f"),
        "",
        "PSNR (dB) in the scaled space (clip at max_rate, sqrt) against the held-out rate image:",
        "",
        markdown_table(table, obsids, "psnr", ".2f"),
        "",
        "Predicted / held-out counts summed over the exposed pixels:",
        "",
        markdown_table(table, obsids, "count_ratio", ".3f"),
        "",
        "Input pixels above the scaling's clip (max_rate): " + ", ".join(f"{k} {v:.1%}" for k, v in clip.items()),
    ]
    if sigma_loo:
        md += [
            "",
            "Leave-one-out smoothing widths (tuned on the other ObsIDs' held-out counts): "
            + ", ".join(f"{k} {v:.2f} px" for k, v in sigma_loo.items()),
        ]
    with open(out / "xmm_real.md", "w") as fh:
        fh.write("\n".join(md) + "\n")
    with open(out / "xmm_real.json", "w") as fh:
        json.dump(result, fh, indent=1)
    print("\n".join(md))
    return result


if __name__ == "__main__":
    main()
