"""Sampling a generative model with ``mode=predict predict=samples``: seeds in, images out.

* :class:`SamplingDataModule` yields batches ``{"index": [B], "seed": [B], "label": [B], "psf": [B, K, K]}``
  (label only for conditional models, psf only when ``predict.psf`` overrides the model's PSF). The
  model draws sample i from ``(seed, i)`` alone, so files do not depend on the batch size.
* :class:`SamplesH5Writer` writes every predicted key (images in physical units, labels, index, seed)
  to one HDF5 file (atomically; never over an existing file) with the model's ``prediction_attrs()``,
  and optionally a FITS cube of the images (``fits: true``).
* :func:`resolve_psf`: ``predict.psf`` as a ``.npy``/FITS kernel file or Moffat parameters
  ``{fwhm_pix | fwhm_arcsec + pixel_scale_arcsec, beta, size}``.

Bad requests fail before any sampling with one message naming the key: ``predict.label`` for an
unconditional model or outside the class list, a ``predict.psf`` that is not a normalised odd kernel or
is larger than the stamp.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lit_sr.inference.writers import H5PredictionWriter, _output_path, _refuse_existing
from lit_sr.nets.psf import load_psf, moffat_psf, validate_psf
from lit_sr.utils.atomic import atomic_path

log = logging.getLogger("lit_sr")


MOFFAT_KEYS = ("fwhm_pix", "fwhm_arcsec", "pixel_scale_arcsec", "beta", "size", "oversample")


def resolve_psf(
    spec: str | Path | Mapping[str, Any] | None,
    image_size: int | None = None,
    key: str = "predict.psf",
    defaults: Mapping[str, Any] | None = None,
) -> torch.Tensor | None:
    """``spec`` -> a kernel [K, K] (sum 1) or None.

    A string is a ``.npy`` or FITS file (:func:`lit_sr.nets.psf.load_psf`, not renormalised: it must
    sum to 1). A mapping gives a Moffat: ``fwhm_pix`` (or ``fwhm_arcsec`` and ``pixel_scale_arcsec``),
    ``beta``, odd ``size``, ``oversample`` (default 1, pixel centres). ``defaults``: Moffat parameters the
    spec falls back on (the training data's ``psf_beta``, ``psf_size``, ``pixel_scale_arcsec`` in
    conf/predict/samples.yaml; null values are ignored).
    """
    if spec is None:
        return None
    if isinstance(spec, (str, Path)):
        kernel = load_psf(spec, normalise=False)
    elif isinstance(spec, Mapping):
        known = set(MOFFAT_KEYS)
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(f"{key}: unknown Moffat parameter(s) {unknown}; expected {sorted(known)}")
        given = {k: v for k, v in (defaults or {}).items() if v is not None and k in known}
        spec = {**given, **spec}
        for needed in ("beta", "size"):
            if needed not in spec:
                raise ValueError(f"{key}: a Moffat PSF needs {needed} (none given, and the data name none)")
        if "fwhm_pix" in spec:
            fwhm = float(spec["fwhm_pix"])
        elif "fwhm_arcsec" in spec and "pixel_scale_arcsec" in spec:
            fwhm = float(spec["fwhm_arcsec"]) / float(spec["pixel_scale_arcsec"])
        else:
            raise ValueError(f"{key}: a Moffat PSF needs fwhm_pix, or fwhm_arcsec and pixel_scale_arcsec")
        try:
            kernel = moffat_psf(fwhm, float(spec["beta"]), int(spec["size"]), int(spec.get("oversample", 1)))
        except ValueError as err:
            raise ValueError(f"{key}: {err}") from err
    else:
        raise ValueError(f"{key} must be a kernel file (.npy/.fits) or Moffat parameters, got {type(spec).__name__}")
    try:
        validate_psf(kernel, (image_size, image_size) if image_size else None, what=key)
    except ValueError as err:
        raise ValueError(f"{spec}: {err}" if isinstance(spec, (str, Path)) else str(err)) from err
    return kernel


class SampleSeeds(Dataset):
    """Sample indices 0..n-1 with their seed, label and PSF, served as whole batches."""

    def __init__(self, num_samples: int, seed: int, labels: np.ndarray | None, psf: torch.Tensor | None) -> None:
        self.n = int(num_samples)
        self.seed = int(seed)
        self.labels = labels
        self.psf = psf

    def __len__(self) -> int:
        return self.n

    def __getitems__(self, positions: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(positions, dtype=np.int64)
        batch = {"index": torch.from_numpy(idx), "seed": torch.full((len(idx),), self.seed, dtype=torch.int64)}
        if self.labels is not None:
            batch["label"] = torch.from_numpy(self.labels[idx])
        if self.psf is not None:
            batch["psf"] = self.psf.expand(len(idx), *self.psf.shape).contiguous()
        return batch

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([position]).items()}


def _pass(batch: Any) -> Any:
    return batch


class SamplingDataModule(L.LightningDataModule):
    """Seeds (and labels, PSF) for ``mode=predict`` of a generative model.

    Args:
        num_samples: samples to draw.
        label: class index or name for every sample; None = classes in turn (0, 1, ..., K-1, 0, ...)
            for a conditional model, no label for an unconditional one.
        seed: seed of the samples (sample i is drawn from (seed, i)).
        batch_size: samples per forward pass.
        conditional: whether the model is class-conditional (``${model.conditional}``).
        class_names: the model's classes (``${model.class_names}``).
        psf: PSF override (see :func:`resolve_psf`); None = the model's own.
        image_size: stamp side (PSFs larger than this are refused).
        psf_defaults: Moffat parameters a ``psf`` mapping falls back on (the training data's).
    """

    def __init__(
        self,
        num_samples: int = 16,
        label: int | str | None = None,
        seed: int = 0,
        batch_size: int = 64,
        conditional: bool = True,
        class_names: Sequence[str] | None = None,
        psf: str | Mapping[str, Any] | None = None,
        image_size: int | None = None,
        psf_defaults: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if int(num_samples) < 1:
            raise ValueError(f"predict.num_samples must be >= 1, got {num_samples}")
        if int(seed) < 0:
            raise ValueError(f"predict.seed must be >= 0, got {seed}")
        self.num_samples, self.seed, self.batch_size = int(num_samples), int(seed), max(1, int(batch_size))
        self.conditional = bool(conditional)
        self.class_names = [str(c) for c in class_names] if class_names else []
        self.label = self._label_index(label)
        self.psf = resolve_psf(psf, image_size, defaults=psf_defaults)
        self.dataset: SampleSeeds | None = None

    def _label_index(self, label: int | str | None) -> int | None:
        if label is None:
            return None
        if not self.conditional:
            raise ValueError(
                f"predict.label={label}: the model is unconditional (model.conditional=false) and cannot "
                "sample a given class; remove predict.label"
            )
        k = len(self.class_names)
        if isinstance(label, str) and not label.lstrip("-").isdigit():
            if label not in self.class_names:
                raise ValueError(
                    f"predict.label={label!r} is not a class; expected one of {self.class_names} or an index 0..{k - 1}"
                )
            return self.class_names.index(label)
        index = int(label)
        if not 0 <= index < k:
            raise ValueError(
                f"predict.label={index} is outside the class list: expected 0..{k - 1} "
                f"({', '.join(f'{i} {n}' for i, n in enumerate(self.class_names))})"
            )
        return index

    def labels(self) -> np.ndarray | None:
        if not self.conditional:
            return None
        if not self.class_names:
            raise ValueError("a conditional model needs predict.class_names (the model's class list)")
        if self.label is not None:
            return np.full(self.num_samples, self.label, dtype=np.int64)
        return np.arange(self.num_samples, dtype=np.int64) % len(self.class_names)

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            self.dataset = SampleSeeds(self.num_samples, self.seed, self.labels(), self.psf)

    def predict_dataloader(self) -> DataLoader:
        self.setup("predict")
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False, collate_fn=_pass)


class SamplesH5Writer(H5PredictionWriter):
    """HDF5 of samples (every predicted key) plus the model's ``prediction_attrs()``; optional FITS cube.

    Args:
        output: HDF5 file name in ``output_dir`` or absolute path (default ``samples.h5``).
        output_dir: the run's folder.
        fits: also write ``<stem>.fits``: one image HDU per image key ([N, H, W], BUNIT = units) and a
            ``SAMPLES`` table of index, label and seed.
        attrs: extra file attributes (checkpoint, experiment, ...).
    """

    def __init__(
        self,
        output: str | None = "samples.h5",
        output_dir: str = ".",
        fits: bool = False,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(output=output or "samples.h5", output_dir=output_dir)
        self.typed_attrs = dict(attrs or {})  # written with their types (the base class writes strings)
        self.fits = bool(fits)
        self.fits_path: Path | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "predict" and self.fits:
            self.fits_path = _output_path(
                self.output, "samples.h5", self.output_dir, trainer.global_rank, trainer.world_size
            ).with_suffix(".fits")
            _refuse_existing(self.fits_path)

    def on_predict_end(self, trainer, pl_module) -> None:
        if self._h5 is not None:
            extra = dict(self.typed_attrs)
            extra.update(pl_module.prediction_attrs() if hasattr(pl_module, "prediction_attrs") else {})
            for key, value in extra.items():
                if value is None:
                    self._h5.attrs[key] = ""
                elif isinstance(value, np.ndarray):
                    self._h5.attrs[key] = value
                elif isinstance(value, (list, tuple, dict)):
                    self._h5.attrs[key] = json.dumps(value)
                else:
                    self._h5.attrs[key] = value
        super().on_predict_end(trainer, pl_module)
        if self.fits and self.path is not None and self.path.exists():
            write_fits_cube(self.path, self.fits_path)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)


def write_fits_cube(h5_path: str | Path, fits_path: str | Path) -> Path:
    """Images of a samples HDF5 ([N, 1, H, W] or [N, H, W]) as FITS image HDUs + a SAMPLES table."""
    from astropy.io import fits

    hdus = [fits.PrimaryHDU()]
    with h5py.File(h5_path, "r") as h5:
        for key, value in h5.attrs.items():
            if isinstance(value, (int, float, str, np.integer, np.floating, bool, np.bool_)) and len(key) <= 8:
                hdus[0].header[key.upper()] = value
        hdus[0].header["SRCFILE"] = Path(h5_path).name
        columns = []
        for key in h5:
            ds = h5[key]
            if ds.ndim >= 3:
                cube = ds[()].reshape(ds.shape[0], *ds.shape[-2:]).astype(np.float32)
                hdu = fits.ImageHDU(cube, name=key.upper()[:68])
                if "units" in ds.attrs:
                    hdu.header["BUNIT"] = str(ds.attrs["units"])
                hdus.append(hdu)
            elif ds.ndim == 1:
                columns.append(fits.Column(name=key, format="K", array=ds[()].astype(np.int64)))
        if columns:
            hdus.append(fits.BinTableHDU.from_columns(columns, name="SAMPLES"))
        if "training_psf" in h5.attrs:
            hdus.append(fits.ImageHDU(np.asarray(h5.attrs["training_psf"], dtype=np.float32), name="TRAINPSF"))
    fits_path = Path(fits_path)
    with atomic_path(fits_path, overwrite=False) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True, output_verify="silentfix")  # tmp exists (mkstemp)
    log.info("Wrote the FITS cube %s", fits_path)
    return fits_path
