"""Whole X-ray observations (FITS) through a trained DN/SR model: ``mode=predict predict=fits``.

    python run.py mode=predict experiment=xmm_sr ckpt_path=.../last.ckpt predict.input=obs.fits
    python run.py mode=predict experiment=xmm_dn ckpt_path=... predict.input=folder/ predict.exposure_ks=20

* :class:`FITSFramesDataModule` lists the input file(s) (``.fits``, ``.fits.gz``), validates every one before
  anything runs (:func:`lit_sr.domains.xmm.fits_io.read_observation`: a WCS that is celestial or SAS DETX/DETY,
  a known pixel size within 25 % of the training pixels, an exposure map or a flat exposure x a detector
  mask estimated from the counts, finite non-negative counts, readable file, at least one patch in size; one
  :class:`DataFileError` naming the file and the problem) and yields one 2-channel frame per batch in model
  space (as in training).
* :class:`XMMFramePredictor` blends patch predictions over the whole frame
  (:func:`lit_sr.inference.blend.blend_predict`) and, with ``self_ensemble``, repeats this for the 8
  flips/rotations of the frame, each undone on its output (keys ``output``, ``d4_1`` ... ``d4_7``).
* :class:`FITSPredictionWriter` writes ``<input stem>_<suffix>.fits`` per input: the prediction as a count
  rate (counts/s per output pixel, BUNIT 'count/s'), the input's WCS, celestial or detector axes (x2:
  :func:`scaled_wcs`, so every sky / detector position keeps its place), the hallucination maps as image
  extensions

  - ``ENS_STD``  standard deviation of the 8 self-ensemble predictions (count/s, output grid);
  - ``LR_DEV``   Poisson deviance of the observed input counts against the prediction forward-modelled to
    the input (PSF matching kernel for x2, 2x2 sum, x exposure), on the input grid with the input's WCS;
  - ``LR_EXPCT`` that forward-modelled expectation (counts, input grid);

  summary cards (LRDEVRAT = mean deviance / its expectation, ~1 when consistent; LRDEVFRA and LRDEVFEX =
  fraction of pixels above the threshold and its expectation; ENSRELSD = summed ensemble std / summed
  prediction) and HISTORY cards naming the checkpoint, the scaling and the exposure used. Inputs are
  never opened for writing; an existing output stops the run before any prediction (FileExistsError).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import lightning as L
import numpy as np
import torch
from astropy.io import fits
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from lit_sr.data.validate import DataFileError
from lit_sr.domains.xmm.data import count_rate, d4, model_input
from lit_sr.domains.xmm.fits_io import _COPY_KEYS, _image_header, check_pixel_scale, read_observation, scaled_wcs
from lit_sr.domains.xmm.hallucination import forward_model_to_input, lr_consistency_map
from lit_sr.domains.xmm.metrics import gap_mask
from lit_sr.domains.xmm.psf import sr_made_consistent, sr_matching_kernel
from lit_sr.inference.blend import blend_predict
from lit_sr.inference.frames import FramePredictor
from lit_sr.utils.atomic import atomic_path

log = logging.getLogger("lit_sr")

FITS_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fts")
D4_KEYS = tuple(f"d4_{i}" for i in range(1, 8))


# ------------------------------------------------------------------------------------------------
# inputs


def list_inputs(input: str | Path | None) -> list[Path]:
    """The FITS file, or the FITS files of a folder (sorted); a clear error if there are none."""
    if not input:
        raise ValueError("predict=fits needs predict.input=<FITS counts image or a folder of them>")
    path = Path(input)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(FITS_SUFFIXES))
        if not files:
            raise DataFileError(path, None, f"no FITS files ({', '.join(FITS_SUFFIXES)}) in this folder")
        return files
    if not path.is_file():
        raise DataFileError(path, None, "input not found (expected a FITS counts image or a folder of them)")
    return [path]


def exposure_for(input_path: Path, exposure: str | Path | None, n_inputs: int) -> Path | None:
    """The exposure-map file of one input: ``exposure`` itself (one input) or ``exposure/<input name>``."""
    if exposure is None:
        return None
    e = Path(exposure)
    if e.is_dir():
        candidate = e / input_path.name
        if not candidate.is_file():
            raise DataFileError(
                candidate, None, f"no exposure map named like the input {input_path.name} in the exposure folder {e}"
            )
        return candidate
    if n_inputs > 1:
        raise DataFileError(
            e,
            None,
            f"one exposure-map file for {n_inputs} inputs; pass predict.exposure=<folder of "
            "maps named like the inputs> or predict.exposure_ks=<ks>",
        )
    return e


def consistency_file_for(input_path: Path, consistent_with: str | Path | None, n_inputs: int) -> Path | None:
    """The denoiser output an SR prediction is made consistent with: ``consistent_with`` itself (one input) or
    ``consistent_with/<input stem>_dn.fits`` (the name ``predict=fits`` gives an xmm_dn output)."""
    if consistent_with is None:
        return None
    c = Path(consistent_with)
    if c.is_dir():
        stem = input_path.name
        for suf in FITS_SUFFIXES:
            if stem.lower().endswith(suf):
                stem = stem[: -len(suf)]
                break
        candidate = c / f"{stem}_dn.fits"
        if not candidate.is_file():
            raise DataFileError(
                candidate, None, f"no denoiser output for {input_path.name} (predict.consistent_with folder {c})"
            )
        return candidate
    if n_inputs != 1:
        raise ValueError(
            f"predict.consistent_with={c} is one file but there are {n_inputs} inputs; give a folder of "
            "<input stem>_dn.fits files"
        )
    if not c.is_file():
        raise DataFileError(c, None, "predict.consistent_with: file not found (a denoiser output of predict=fits)")
    return c


def pixel_scale_arcsec(wcs) -> float:
    """Mean pixel side (arcsec) of a celestial WCS."""
    from astropy.wcs.utils import proj_plane_pixel_scales

    return float(np.mean(np.abs(proj_plane_pixel_scales(wcs))) * 3600.0)


class FITSFramesDataset(Dataset):
    """Item i: ``{"frame": [2, H, W] model space, "index": i}`` from the i-th input observation."""

    def __init__(
        self,
        files: Sequence[Path],
        exposure: str | None,
        exposure_ks: float | None,
        transform: torch.nn.Module | None,
        exposure_norm_ks: float,
        patch_size: int,
        detector_mask: str = "auto",
        pixel_arcsec: float | None = None,
    ) -> None:
        self.files, self.exposure, self.exposure_ks = list(files), exposure, exposure_ks
        self.transform, self.exposure_norm_ks, self.patch_size = transform, float(exposure_norm_ks), int(patch_size)
        self.detector_mask, self.pixel_arcsec = detector_mask, pixel_arcsec

    def __len__(self) -> int:
        return len(self.files)

    def observation(self, i: int):
        path = self.files[i]
        return read_observation(
            path,
            exposure_for(path, self.exposure, len(self.files)),
            self.exposure_ks,
            min_size=self.patch_size,
            detector_mask=self.detector_mask,
            pixel_arcsec=self.pixel_arcsec,
        )

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        obs = self.observation(i)
        rate = torch.from_numpy(count_rate(obs.counts, obs.exposure_s))[None]
        frame = model_input(rate, torch.from_numpy(obs.exposure_s)[None], self.transform, self.exposure_norm_ks)
        return {"frame": frame, "index": torch.tensor(i, dtype=torch.long)}


class FITSFramesDataModule(L.LightningDataModule):
    """``predict=fits``: every input validated in ``setup``, then one frame per batch.

    Args:
        input: a FITS counts image or a folder of them (opened read-only).
        exposure: exposure-map file (one input) or folder of same-named maps; None: each file's 'EXPOSURE'.
        exposure_ks: assume this flat exposure (ks) instead.
        transform: the data transform (count rate -> model space).
        exposure_norm_ks: exposure (ks) mapped to 1 in the exposure channel (as in training).
        patch_size: the frame predictor's patch (input pixels); smaller images are refused.
        train_pixel_arcsec: pixel size of the training data; more than ``max_pixel_mismatch`` (relative) off
            is refused, more than 5 % is logged.
        detector_mask: with ``exposure_ks``: 'auto' (flat exposure x a detector mask estimated from the counts)
            or 'none' (flat everywhere).
        pixel_arcsec: pixel size for inputs whose header gives none (no celestial WCS, no SAS DETX/DETY axes).
    """

    def __init__(
        self,
        input: str,
        exposure: str | None = None,
        exposure_ks: float | None = None,
        transform: torch.nn.Module | None = None,
        exposure_norm_ks: float = 100.0,
        patch_size: int = 64,
        train_pixel_arcsec: float | None = None,
        detector_mask: str = "auto",
        pixel_arcsec: float | None = None,
        max_pixel_mismatch: float = 0.25,
    ) -> None:
        super().__init__()
        self.files = list_inputs(input)
        self.dataset = FITSFramesDataset(
            self.files, exposure, exposure_ks, transform, exposure_norm_ks, patch_size, detector_mask, pixel_arcsec
        )
        self.train_pixel_arcsec = train_pixel_arcsec
        self.max_pixel_mismatch = float(max_pixel_mismatch)

    def setup(self, stage: str | None = None) -> None:
        for i, path in enumerate(self.files):  # every input checked before any prediction is written
            obs = self.dataset.observation(i)
            check_pixel_scale(obs.pixel_arcsec, self.train_pixel_arcsec, path, self.max_pixel_mismatch)
            log.info(
                "%s: %dx%d pixels of %.4g arcsec, exposure %s",
                path,
                obs.shape[0],
                obs.shape[1],
                obs.pixel_arcsec,
                obs.exposure_source,
            )

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=1, shuffle=False, num_workers=0)


# ------------------------------------------------------------------------------------------------
# prediction


class XMMFramePredictor(FramePredictor):
    """Blended whole-frame prediction; with ``self_ensemble`` also the 8 flips/rotations (see module doc)."""

    def __init__(
        self,
        patch_size: int = 64,
        offsets: Sequence[Sequence[int]] | None = None,
        batch_size: int = 16,
        self_ensemble: bool = True,
    ) -> None:
        super().__init__(patch_size, offsets, batch_size, normaliser=None)
        self.self_ensemble = bool(self_ensemble)

    def __call__(self, model, frame: torch.Tensor, where: str = "frame") -> dict[str, torch.Tensor]:
        out = {"output": super().__call__(model, frame, where)}
        if self.self_ensemble:
            transforms = [(k, flip) for flip in (False, True) for k in range(4)][1:]
            for key, (k, flip) in zip(D4_KEYS, transforms):
                y = blend_predict(
                    model,
                    d4(frame, k, flip),
                    self.patch_size,
                    self.offsets,
                    self.batch_size,
                    where=f"{where} (flip={flip}, rot90 x{k})",
                )
                out[key] = _d4_inverse(y, k, flip)
        return out

    def attrs(self) -> dict[str, Any]:
        return {**super().attrs(), "self_ensemble": self.self_ensemble}


def _d4_inverse(y: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    y = torch.rot90(y, -k, dims=(-2, -1)) if k % 4 else y
    return torch.flip(y, dims=(-1,)) if flip else y


# ------------------------------------------------------------------------------------------------
# writing


def write_fits(
    path: Path,
    image: np.ndarray,
    header_like: fits.Header,
    wcs,
    bunit: str,
    cards: Mapping[str, tuple],
    history: Sequence[str],
    extensions: Mapping[str, tuple],
) -> Path:
    """Primary image + named extensions (array, bunit, wcs) with metadata, summary cards and HISTORY; atomic,
    never overwriting (an existing ``path`` raises FileExistsError)."""
    hdr = fits.Header()
    for key in _COPY_KEYS:
        if key in header_like:
            hdr[key] = (header_like[key], header_like.comments[key])
    hdr.extend(_image_header(wcs, bunit), update=True)
    for key, (value, comment) in cards.items():
        hdr[key] = (value, comment)
    for line in history:
        hdr.add_history(str(line))
    hdus: list = [fits.PrimaryHDU(np.asarray(image, np.float32), header=hdr)]
    for name, (arr, unit, ext_wcs) in extensions.items():
        hdus.append(fits.ImageHDU(np.asarray(arr, np.float32), header=_image_header(ext_wcs, unit), name=name))
    with atomic_path(path, overwrite=False) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True)
    return path


def consistency_maps(
    rate: np.ndarray,
    counts: np.ndarray,
    exposure_s: np.ndarray,
    scale: int,
    pixel_arcsec: float,
    psf_fwhm_arcsec: float,
    psf_beta: float,
    threshold: float = 9.0,
    gap_margin: int = 3,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """(deviance map, expected input counts, summary) of a predicted rate against the observed input counts."""
    kernel = sr_matching_kernel(pixel_arcsec, scale, psf_fwhm_arcsec, psf_beta) if scale > 1 else None
    expected = forward_model_to_input(rate, scale, exposure_s, kernel)
    mask = gap_mask(exposure_s, gap_margin) if scale > 1 else None
    dev, summary = lr_consistency_map(counts, expected, threshold, mask=mask)
    return dev, expected, summary


class FITSPredictionWriter(BasePredictionWriter):
    """Write one FITS per input (see the module docstring).

    Args:
        input, exposure, exposure_ks: as the data module's (the writer re-reads each observation's header,
            WCS, counts and exposure).
        output: output folder; None = ``output_dir`` (the run folder).
        suffix: output name ``<input stem>_<suffix>.fits``.
        scale: output grid / input grid.
        transform: the data transform (named in HISTORY).
        psf_fwhm_arcsec, psf_beta: the input PSF (the SR forward model's matching kernel).
        consistency_threshold, gap_margin: LR-consistency threshold and SR exposure-edge margin (input pixels).
        checkpoint, experiment: provenance for HISTORY.
        flux_conserving: multiply the prediction (and ENS_STD) by one factor so that its total over the exposed
            input pixels (summed back to the input grid) equals the input's counts / exposure there
            (:func:`lit_sr.inference.flux.match_total`; card FLUXFAC). The input total is an unbiased
            estimate of the field's rate (Poisson error 1/sqrt(counts)); it undoes an overall excess or
            deficit of a model trained on fields brighter or fainter than this one.
        consistent_with: SR only: a denoiser output of ``predict=fits`` (file, or a folder of
            ``<input stem>_dn.fits``), count/s per input pixel on the input grid. The x``scale`` prediction
            is made consistent with it (:mod:`lit_sr.inference.consistency`; card CONSIST): the sub-pixel
            split stays the SR's, the input-grid content becomes the denoiser's. ``consistent_rl_iterations``
            = 0: each block rescaled so its sum equals the denoiser's pixel (exact); > 0: that many
            Richardson-Lucy iterations toward (PSF-matching blur, then block sums) = the denoiser's output,
            the physical forward model. Applied after ``flux_conserving``; ENS_STD stays the SR's spread.
    """

    def __init__(
        self,
        input: str,
        exposure: str | None = None,
        exposure_ks: float | None = None,
        output: str | None = None,
        output_dir: str = ".",
        suffix: str = "pred",
        scale: int = 2,
        transform: torch.nn.Module | None = None,
        psf_fwhm_arcsec: float = 6.0,
        psf_beta: float = 1.5,
        consistency_threshold: float = 9.0,
        gap_margin: int = 3,
        checkpoint: str | None = None,
        experiment: str | None = None,
        detector_mask: str = "auto",
        pixel_arcsec: float | None = None,
        flux_conserving: bool = False,
        consistent_with: str | None = None,
        consistent_rl_iterations: int = 0,
    ) -> None:
        super().__init__(write_interval="batch")
        self.flux_conserving = bool(flux_conserving)
        if consistent_with is not None and int(scale) < 2:
            raise ValueError(
                "predict.consistent_with applies to SR (data.scale >= 2); a denoiser output is on its own grid"
            )
        self.consistent_with, self.consistent_rl_iterations = consistent_with, int(consistent_rl_iterations)
        self.input, self.exposure, self.exposure_ks = input, exposure, exposure_ks
        self.detector_mask, self.pixel_arcsec = detector_mask, pixel_arcsec
        self.output = Path(output) if output else None
        self.output_dir = Path(output_dir)
        self.suffix, self.scale, self.transform = str(suffix), int(scale), transform
        self.psf_fwhm_arcsec, self.psf_beta = float(psf_fwhm_arcsec), float(psf_beta)
        self.consistency_threshold, self.gap_margin = float(consistency_threshold), int(gap_margin)
        self.checkpoint, self.experiment = checkpoint, experiment
        self.inputs: list[Path] = []
        self.outputs: list[Path] = []
        self.summaries: dict[str, dict[str, float]] = {}

    def output_path(self, input_path: Path) -> Path:
        name = input_path.name
        for suf in FITS_SUFFIXES:
            if name.lower().endswith(suf):
                name = name[: -len(suf)]
                break
        return (self.output or self.output_dir) / f"{name}_{self.suffix}.fits"

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "predict":
            return
        self.inputs = list_inputs(self.input)
        self.outputs = [self.output_path(p) for p in self.inputs]
        for src, dst in zip(self.inputs, self.outputs):
            if dst.resolve() == src.resolve():
                raise ValueError(f"{dst}: output would replace its input; choose another predict.suffix or output")
            if dst.exists():
                raise FileExistsError(
                    f"{dst}: output file exists; refusing to overwrite it (remove it or choose "
                    "another predict.output folder / predict.suffix)"
                )
        if len(set(self.outputs)) != len(self.outputs):
            raise ValueError("two inputs map to the same output name; rename them or predict them separately")
        for src in self.inputs:  # every denoiser output found before anything is predicted
            consistency_file_for(src, self.consistent_with, len(self.inputs))

    def write_on_batch_end(
        self,
        trainer,
        pl_module,
        prediction: Mapping[str, Any],
        batch_indices,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        for j, index in enumerate(prediction["index"].tolist()):
            self.write_one(int(index), {k: v[j] for k, v in prediction.items() if torch.is_tensor(v) and v.dim() == 4})

    def write_one(self, index: int, images: Mapping[str, torch.Tensor]) -> Path:
        """Write the output of input ``index`` from physical-unit images ``{output, d4_1 ...}`` [C, H, W]."""
        src, dst = self.inputs[index], self.outputs[index]
        obs = read_observation(
            src,
            exposure_for(src, self.exposure, len(self.inputs)),
            self.exposure_ks,
            detector_mask=self.detector_mask,
            pixel_arcsec=self.pixel_arcsec,
        )
        rate = images["output"][0].detach().float().cpu().numpy().astype(np.float64)
        flux_factor = 1.0
        if self.flux_conserving:
            from lit_sr.inference.flux import match_total

            live = obs.exposure_s > 0
            in_rate = np.where(live, obs.counts / np.where(live, obs.exposure_s, 1.0), 0.0)
            scaled, f = match_total(
                torch.from_numpy(rate), torch.from_numpy(in_rate), torch.from_numpy(live * 1.0), self.scale
            )
            rate, flux_factor = scaled.numpy(), float(f)
        consist_card = None
        if self.consistent_with is not None:
            rate, consist_card = self._make_consistent(src, rate, obs)
        pix = obs.pixel_arcsec
        dev, expected, s = consistency_maps(
            rate,
            obs.counts,
            obs.exposure_s,
            self.scale,
            pix,
            self.psf_fwhm_arcsec,
            self.psf_beta,
            self.consistency_threshold,
            self.gap_margin,
        )
        out_wcs = scaled_wcs(obs.wcs, self.scale) if self.scale > 1 else obs.wcs
        extensions: dict[str, tuple] = {}
        summary = {
            "lr_consistency": s["ratio"],
            "lr_mean_deviance": s["mean_deviance"],
            "lr_expected_deviance": s["expected_mean"],
            "lr_frac_above": s["frac_above"],
            "lr_expected_frac_above": s["expected_frac_above"],
            "lr_pixels": float(s["n_pixels"]),
        }
        d4_present = [k for k in D4_KEYS if k in images]
        if d4_present:
            stack = np.stack([rate] + [flux_factor * images[k][0].detach().float().cpu().numpy() for k in d4_present])
            std = stack.std(axis=0)
            extensions["ENS_STD"] = (std, "count/s", out_wcs)
            summary["ensemble_rel_std"] = float(std.sum() / max(np.abs(rate).sum(), 1e-30))
        extensions["LR_DEV"] = (np.where(np.isfinite(dev), dev, 0.0), "", obs.wcs)
        extensions["LR_EXPCT"] = (expected, "count", obs.wcs)

        def card(v: float) -> float:
            return float(v) if math.isfinite(v) else -1.0

        cards = {
            "PREDSCAL": (self.scale, "output pixels per input pixel (per axis)"),
            "LRDEVRAT": (card(s["ratio"]), "LR consistency: mean deviance / expectation"),
            "LRDEVMEA": (card(s["mean_deviance"]), "mean Poisson deviance of the input counts"),
            "LRDEVEXP": (card(s["expected_mean"]), "its expectation under the prediction"),
            "LRDEVFRA": (card(s["frac_above"]), f"fraction of LR_DEV > {self.consistency_threshold:g}"),
            "LRDEVFEX": (card(s["expected_frac_above"]), "its expectation"),
            "LRDEVNPX": (int(s["n_pixels"]), "input pixels used (exposed, off gap edges)"),
        }
        if self.flux_conserving:
            cards["FLUXFAC"] = (flux_factor, "output x this: total = input counts/exposure")
            summary["flux_factor"] = flux_factor
        if consist_card is not None:
            cards["CONSIST"] = (consist_card, "SR made consistent with a denoiser output")
        if "ensemble_rel_std" in summary:
            cards["ENSRELSD"] = (summary["ensemble_rel_std"], "sum ENS_STD / sum prediction (8 flips/rot)")
        history = [
            f"lit_sr prediction ({self.experiment or 'model'}, x{self.scale}) of {src.name}",
            f"checkpoint: {self.checkpoint}",
            f"scaling: {type(self.transform).__name__}({self.transform.extra_repr() if self.transform is not None else ''})"
            " applied to counts/exposure (count/s); output = inverse scaling of the net output",
            f"exposure: {obs.exposure_source}",
            f"BUNIT count/s per output pixel; {'celestial' if obs.celestial else 'detector (no celestial)'} "
            "WCS of the input; x2: CDELT / 2, CRPIX' = 2 CRPIX - 0.5 (positions kept)",
            f"pixel size of the input: {obs.pixel_arcsec:.4g} arcsec",
            "extensions: ENS_STD (self-ensemble std), LR_DEV (Poisson deviance vs input), LR_EXPCT",
        ]
        if self.flux_conserving:
            history.append(
                f"flux-conserving: net output x {flux_factor:.5g} so that its total over the exposed input pixels "
                "equals the input counts / exposure there"
            )
        if consist_card is not None:
            history.append(
                f"consistent with {consistency_file_for(src, self.consistent_with, len(self.inputs))}: "
                + (
                    "each block rescaled so its sum equals the denoiser's pixel"
                    if self.consistent_rl_iterations == 0
                    else f"{self.consistent_rl_iterations} Richardson-Lucy iterations toward "
                    "PSF-matching blur + block sums = the denoiser's output"
                )
            )
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_fits(dst, rate, obs.header, out_wcs, "count/s", cards, history, extensions)
        self.summaries[str(dst)] = summary
        log.info(
            "Wrote %s (LR consistency %.3g%s)",
            dst,
            s["ratio"],
            f", ensemble rel. std {summary['ensemble_rel_std']:.3g}" if "ensemble_rel_std" in summary else "",
        )
        return dst

    def _make_consistent(self, src: Path, rate: np.ndarray, obs) -> tuple[np.ndarray, str]:
        path = consistency_file_for(src, self.consistent_with, len(self.inputs))
        with fits.open(path) as h:
            d = None if h[0].data is None else np.asarray(h[0].data, np.float64)
        if d is None or d.shape != tuple(obs.counts.shape):
            raise DataFileError(
                path,
                "HDU 0",
                f"shape {None if d is None else d.shape}; expected the input grid {tuple(obs.counts.shape)} of "
                f"{src.name} (a denoiser output, count/s per input pixel)",
            )
        if not np.isfinite(d).all():
            raise DataFileError(path, "HDU 0", "non-finite values; expected a count-rate image")
        n = self.consistent_rl_iterations
        consistent = sr_made_consistent(
            rate, d, obs.exposure_s > 0, obs.pixel_arcsec, n, self.psf_fwhm_arcsec, self.psf_beta
        )
        return consistent, "block sums" if n <= 0 else f"RL {n} iterations"

    def on_predict_end(self, trainer, pl_module) -> None:
        done = [p for p in self.outputs if p.exists()]
        log.info("predict=fits: wrote %d of %d outputs", len(done), len(self.outputs))
