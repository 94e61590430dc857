"""XMM-Newton EPIC-pn denoising (x1) and super-resolution (x2) data: FITS field folders -> batches.

Folder layout (written by :func:`lit_sr.domains.xmm.sim.write_xmm_dataset`, or a user's folder in the
same layout, ``data.root=...``)::

    <root>/<split>/<input tag>/field_XXXXXX.fits    counts (primary HDU) + 'EXPOSURE' (s) [+ 'EXPECTED', 'BACKGROUND']
    <root>/<split>/<dn tag>/field_XXXXXX.fits       denoising target (input grid, longer exposure)
    <root>/<split>/<sr tag>/field_XXXXXX.fits       super-resolution target (grid 2x finer, PSF 2x narrower)
    <root>/<split>/sources/field_XXXXXX.fits        optional truth table 'SOURCES' (simulations)

Tags default to the simulator's (``input_20ks``, ``target_50ks``, ``target_100ks_x2``, ``sources``).

Batches (model space, the batch contract of ``lit_sr.data.base``):

* ``input`` [B, 2, h, w]: channel 0 = ``transform(counts / exposure)`` (count rate, counts/s/pixel; 0 where
  the exposure is 0), channel 1 = detector mask x exposure_ks / ``exposure_norm_ks`` (auxiliary);
* ``target`` [B, 1, H, W]: ``transform(target counts / target exposure)``; ``task`` dn (H = h) or sr (H = 2h);
* ``index`` [B]; on val/test splits also the evaluator's per-sample keys, in physical units:
  ``counts_in`` [B,1,h,w], ``exposure_in`` (s), ``counts_target`` [B,1,H,W], ``exposure_target`` (s),
  ``bkg_in`` / ``bkg_target`` (expected background counts, if the files have 'BACKGROUND'), ``rate_true``
  (noiseless target count rate, if 'EXPECTED'), and the true sources padded to ``max_sources``:
  ``src_xy`` [B,S,2] (0-based input-grid pixels x, y; NaN padding), ``src_rate`` (counts/s, 0 padding),
  ``src_kind`` (0 point, 1 cluster, 2 galaxy, -1 padding), ``src_extent`` (arcsec).

Training fields may be cut into random ``train_patch`` x ``train_patch`` crops (input pixels) and get a
random flip/rotation (the 8 symmetries of the square; the exposure channel turns with the image).
A split is held in memory after its first pass when it fits in ``max_memory_mb``, else read per item.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from astropy.io import fits
from scipy import ndimage
from torch.utils.data import Dataset

from lit_sr.data.base import LitSRDataModule
from lit_sr.data.rng import stream_rng
from lit_sr.data.transforms import StretchTransform
from lit_sr.data.validate import DataFileError
from lit_sr.domains.xmm.fits_io import EXPOSURE_EXTNAME, _check_2d, _check_finite_nonneg
from lit_sr.domains.xmm.sim import (
    HR_FACTOR,
    KIND_CODES,
    XMM_SIM_VERSION,
    XMMSimConfig,
    is_complete_xmm_dataset,
    product_tags,
    write_xmm_dataset,
)

log = logging.getLogger("lit_sr")

TASKS = {"dn": 1, "sr": HR_FACTOR}  # task -> scale
OPTIONAL_HDUS = ("EXPECTED", "BACKGROUND")
SOURCE_MARGIN_PIX = 2.0  # true sources kept this far (input pixels) outside the image
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
RAW_MAPS = ("counts_in", "exposure_in", "counts_target", "exposure_target")  # what a training item is built from


# ------------------------------------------------------------------------------------------------
# reading one field


def read_image_file(path: str | Path, optional: Sequence[str] = OPTIONAL_HDUS) -> dict[str, np.ndarray]:
    """Counts (primary HDU), 'EXPOSURE' (s) and the ``optional`` image HDUs present, as float32 arrays.

    Every problem (unreadable or truncated file, no 2-D image, NaN or negative pixels, no exposure, an
    extension on another grid) raises one :class:`DataFileError` naming the file and the HDU.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(path, None, "file not found (expected a FITS counts image of the dataset layout)")
    out: dict[str, np.ndarray] = {}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(path, mode="readonly", memmap=False) as hdul:
                names = [h.name for h in hdul]
                out["counts"] = None if hdul[0].data is None else np.array(hdul[0].data)
                for name in (EXPOSURE_EXTNAME, *optional):
                    if name in names:
                        data = hdul[name].data
                        out[name] = None if data is None else np.array(data)
        trunc = [str(w.message) for w in caught if "truncat" in str(w.message).lower()]
    except (OSError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise DataFileError(path, "HDU 0", f"not a readable FITS file ({type(exc).__name__}: {exc})") from exc
    if trunc:
        raise DataFileError(path, "HDU 0", f"file is truncated ({trunc[0]}); re-create or re-download it")
    counts = _check_2d(out.pop("counts"), path, "HDU 0 (PRIMARY)", "counts image").astype(np.float32)
    _check_finite_nonneg(counts, path, "HDU 0 (PRIMARY)", "counts image")
    if EXPOSURE_EXTNAME not in out:
        raise DataFileError(
            path,
            f"HDU '{EXPOSURE_EXTNAME}'",
            f"no exposure map (HDUs: {names}); every file of a dataset needs an 'EXPOSURE' image extension in s",
        )
    arrays = {"counts": counts}
    for name, data in out.items():
        field = f"HDU '{name}'"
        arr = _check_2d(data, path, field, f"{name.lower()} image").astype(np.float32)
        _check_finite_nonneg(arr, path, field, f"{name.lower()} image")
        if arr.shape != counts.shape:
            raise DataFileError(
                path,
                field,
                f"shape {arr.shape} differs from the counts image {counts.shape}; expected the same pixel grid",
            )
        arrays[name] = arr
    return arrays


def read_sources(path: str | Path) -> dict[str, np.ndarray]:
    """True sources of a field (table 'SOURCES'): x, y (input-grid pixels), rate (counts/s), kind, extent (arcsec)."""
    path = Path(path)
    try:
        with fits.open(path, mode="readonly", memmap=False) as hdul:
            if "SOURCES" not in [h.name for h in hdul]:
                raise DataFileError(path, "HDU 'SOURCES'", "no 'SOURCES' table (expected the simulator's truth table)")
            table = hdul["SOURCES"].data
            cols = {c.upper() for c in table.columns.names}
            need = {"X_LR", "Y_LR", "RATE", "KIND"}
            if not need <= cols:
                raise DataFileError(
                    path,
                    "HDU 'SOURCES'",
                    f"missing column(s) {sorted(need - cols)}; expected {sorted(need)} (+ EXTENT)",
                )
            kind_names = np.char.strip(np.char.decode(np.asarray(table["KIND"]).astype("S"), "ascii"))
            kind = np.array([KIND_CODES.get(str(k), -1) for k in kind_names], np.int64)
            return {
                "x": np.asarray(table["X_LR"], np.float64),
                "y": np.asarray(table["Y_LR"], np.float64),
                "rate": np.asarray(table["RATE"], np.float64),
                "kind": kind,
                "extent": np.asarray(table["EXTENT"], np.float64) if "EXTENT" in cols else np.zeros(len(kind)),
            }
    except DataFileError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise DataFileError(path, "HDU 'SOURCES'", f"not a readable FITS table ({type(exc).__name__}: {exc})") from exc


def count_rate(counts: np.ndarray, exposure_s: np.ndarray) -> np.ndarray:
    """counts / exposure (counts/s/pixel), 0 where the exposure is 0 (chip gaps, outside the field of view)."""
    rate = np.zeros_like(counts, dtype=np.float32)
    live = exposure_s > 0
    rate[live] = counts[live] / exposure_s[live]
    return rate


def model_input(
    rate: torch.Tensor, exposure_s: torch.Tensor, transform: torch.nn.Module | None, exposure_norm_ks: float
) -> torch.Tensor:
    """The 2-channel network input [..., 2, h, w] from a count rate and an exposure map [..., 1, h, w]:
    channel 0 = transform(rate), channel 1 = (exposure > 0) x exposure_ks / exposure_norm_ks."""
    image = transform(rate) if transform is not None else rate
    expo = torch.where(exposure_s > 0, exposure_s / (1e3 * exposure_norm_ks), torch.zeros_like(exposure_s))
    return torch.cat([image, expo.to(image.dtype)], dim=-3)


def d4(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """Horizontal flip (if ``flip``) then ``k`` counter-clockwise quarter turns of the last two axes."""
    if flip:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k, dims=(-2, -1)) if k % 4 else x


# ------------------------------------------------------------------------------------------------
# dataset


class XMMFieldsDataset(Dataset):
    """The fields of one split. Item: ``input``, ``target``, ``index`` (+ truth keys, see the module doc).

    Args:
        files: per field ``{"input": path, "target": path, "sources": path | None}``.
        scale: target grid / input grid (1 or 2).
        transform: count rate (counts/s/pixel) -> model space.
        exposure_norm_ks: exposure (ks) mapped to 1 in the exposure channel.
        with_truth: add the evaluator's per-sample keys.
        max_sources: true sources kept per field (brightest first), padded to this length.
        train_patch: random crops of this many input pixels (None: whole fields).
        augment: random flip / quarter turn per item.
        seed: base seed of the crop / augmentation stream (mixed with rank and worker).
        cache: keep fields in memory after their first read.
        optional_hdus: image HDUs every file of the split has beyond counts and exposure.
        crop_bias: fraction of training crops centred on a pixel drawn with probability proportional to the
            squared input counts in the 5x5 box around it (bright sources), the rest uniform; sources cover
            ~1 % of the pixels, so short CPU runs otherwise hardly see them.
    """

    def __init__(
        self,
        files: Sequence[Mapping[str, Path | None]],
        scale: int,
        transform: torch.nn.Module | None,
        exposure_norm_ks: float = 100.0,
        with_truth: bool = False,
        max_sources: int = 256,
        train_patch: int | None = None,
        augment: bool = False,
        seed: int = 0,
        cache: bool = True,
        optional_hdus: Sequence[str] = (),
        crop_bias: float = 0.0,
    ) -> None:
        if not 0.0 <= crop_bias <= 1.0:
            raise ValueError(f"data.crop_bias must be in [0, 1], got {crop_bias}")
        self.files = [dict(f) for f in files]
        self.scale = int(scale)
        self.transform = transform
        self.exposure_norm_ks = float(exposure_norm_ks)
        self.with_truth = bool(with_truth)
        self.max_sources = int(max_sources)
        self.train_patch = int(train_patch) if train_patch else None
        self.augment = bool(augment)
        self.seed = int(seed)
        self.cache = bool(cache)
        self.optional_hdus = tuple(optional_hdus)
        self.crop_bias = float(crop_bias)
        self._crop_cdf: dict[int, np.ndarray] = {}
        self.has_sources = all(f.get("sources") is not None for f in self.files) and len(self.files) > 0
        self._fields: dict[int, dict[str, np.ndarray]] = {}
        self._rng: np.random.Generator | None = None
        self._rng_key: Any = None
        self._warned_truncation = False

    def __len__(self) -> int:
        return len(self.files)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fields": {}, "_rng": None, "_crop_cdf": {}}  # each worker fills its own cache

    def _generator(self) -> np.random.Generator:
        info = torch.utils.data.get_worker_info()
        key = torch.initial_seed() if info is not None else None  # changes every epoch in workers
        if self._rng is None or key != self._rng_key:
            self._rng = stream_rng(self.seed, *(() if key is None else (key & 0xFFFFFFFF,)))
            self._rng_key = key
        return self._rng

    def read_field(self, i: int) -> dict[str, np.ndarray]:
        """Arrays of field ``i`` (physical units), validated; cached when ``cache``."""
        if i in self._fields:
            return self._fields[i]
        f = self.files[i]
        need = self.optional_hdus if self.with_truth else ()
        inp = read_image_file(f["input"], need)
        tgt = read_image_file(f["target"], need)
        for name in need:
            for path, arrays in ((f["input"], inp), (f["target"], tgt)):
                if name not in arrays:
                    raise DataFileError(
                        path,
                        f"HDU '{name}'",
                        "missing, but the first file of this split has it; "
                        "expected the same HDUs in every file of a split",
                    )
        h, w = inp["counts"].shape
        if tgt["counts"].shape != (self.scale * h, self.scale * w):
            raise DataFileError(
                f["target"],
                "HDU 0 (PRIMARY)",
                f"target is {tgt['counts'].shape[0]}x"
                f"{tgt['counts'].shape[1]} pixels; expected {self.scale * h}x{self.scale * w} "
                f"(scale {self.scale} x the input {h}x{w} of {f['input']})",
            )
        out = {
            "counts_in": inp["counts"],
            "exposure_in": inp[EXPOSURE_EXTNAME],
            "counts_target": tgt["counts"],
            "exposure_target": tgt[EXPOSURE_EXTNAME],
        }
        if self.with_truth:
            if "BACKGROUND" in need:
                out["bkg_in"], out["bkg_target"] = inp["BACKGROUND"], tgt["BACKGROUND"]
            if "EXPECTED" in need:
                out["rate_true"] = count_rate(tgt["EXPECTED"], tgt[EXPOSURE_EXTNAME])
            if self.has_sources:
                out.update(self._padded_sources(read_sources(f["sources"]), h, w, f["sources"]))
        if self.cache:
            self._fields[i] = out
        return out

    def _padded_sources(self, src: dict[str, np.ndarray], h: int, w: int, path: Path) -> dict[str, np.ndarray]:
        m = SOURCE_MARGIN_PIX
        keep = (src["x"] >= -0.5 - m) & (src["x"] < w - 0.5 + m) & (src["y"] >= -0.5 - m) & (src["y"] < h - 0.5 + m)
        idx = np.flatnonzero(keep)
        if len(idx) > self.max_sources:
            if not self._warned_truncation:
                log.warning(
                    "%s: %d true sources, keeping the %d brightest (data.max_sources)", path, len(idx), self.max_sources
                )
                self._warned_truncation = True
            idx = idx[np.argsort(-src["rate"][idx], kind="stable")[: self.max_sources]]
        s = self.max_sources
        xy = np.full((s, 2), np.nan, np.float32)
        rate, extent = np.zeros(s, np.float32), np.zeros(s, np.float32)
        kind = np.full(s, -1, np.int64)
        n = len(idx)
        xy[:n, 0], xy[:n, 1] = src["x"][idx], src["y"][idx]
        rate[:n], kind[:n], extent[:n] = src["rate"][idx], src["kind"][idx], src["extent"][idx]
        return {"src_xy": xy, "src_rate": rate, "src_kind": kind, "src_extent": extent}

    def _bright_cdf(self, i: int, counts: np.ndarray) -> np.ndarray:
        """Cumulative crop-centre weights of field ``i``: (input counts in the 5x5 box)^2, flattened."""
        if i not in self._crop_cdf:
            box = ndimage.uniform_filter(counts.astype(np.float64), size=5, mode="constant") * 25.0
            self._crop_cdf[i] = np.cumsum(np.round(box, 6).ravel() ** 2)
        return self._crop_cdf[i]

    def preload(self) -> None:
        """Read every field now when the split is cached (``cache``): e.g. in the main process before
        DataLoader workers fork, so they share the arrays, and so the first epoch does not wait for files."""
        if self.cache:
            for i in range(len(self.files)):
                self.read_field(i)

    def _crop_and_turn(self, i: int, a: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """The raw maps of item ``i`` (counts and exposure, input and target grids) cut to the item's random
        crop and given its random flip / quarter turn, as views where possible. The rate, the transform and
        the exposure channel are pixel-wise, so they are applied to the whole batch after this."""
        maps = {name: torch.from_numpy(a[name]) for name in RAW_MAPS}
        if self.train_patch or self.augment:
            rng = self._generator()
            if self.train_patch:
                p, s = self.train_patch, self.scale
                h, w = a["counts_in"].shape
                if p > min(h, w):
                    raise ValueError(f"data.train_patch={p} is larger than the fields ({h}x{w} input pixels)")
                top, left = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
                if self.crop_bias and rng.random() < self.crop_bias:
                    cdf = self._bright_cdf(int(i), a["counts_in"])
                    if cdf[-1] > 0:
                        cy, cx = divmod(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), w)
                        top = min(max(cy - p // 2 + int(rng.integers(-(p // 4), p // 4 + 1)), 0), h - p)
                        left = min(max(cx - p // 2 + int(rng.integers(-(p // 4), p // 4 + 1)), 0), w - p)
                for name, m in maps.items():
                    f = s if name.endswith("_target") else 1
                    maps[name] = m[f * top : f * (top + p), f * left : f * (left + p)]
            if self.augment:
                k, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
                maps = {name: d4(m, k, flip) for name, m in maps.items()}
        return maps

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A whole batch (what the DataLoader calls with the indices of a batch): every item is cropped and
        turned on its raw maps, in the order and with the random draws of one-at-a-time items, then the
        count rates, the transform and the exposure channel are computed once for the stacked batch."""
        indices = [int(i) for i in indices]
        fields = [self.read_field(i) for i in indices]
        per_item = [self._crop_and_turn(i, a) for i, a in zip(indices, fields)]
        raw = {name: torch.stack([m[name] for m in per_item]).numpy() for name in RAW_MAPS}  # [B, H, W]
        rate_in = torch.from_numpy(count_rate(raw["counts_in"], raw["exposure_in"]))[:, None]
        rate_t = torch.from_numpy(count_rate(raw["counts_target"], raw["exposure_target"]))[:, None]
        x = model_input(rate_in, torch.from_numpy(raw["exposure_in"])[:, None], self.transform, self.exposure_norm_ks)
        y = self.transform(rate_t) if self.transform is not None else rate_t
        batch = {"input": x.contiguous(), "target": y.contiguous(), "index": torch.tensor(indices, dtype=torch.long)}
        if self.with_truth:
            for name in (
                "counts_in",
                "exposure_in",
                "counts_target",
                "exposure_target",
                "bkg_in",
                "bkg_target",
                "rate_true",
            ):
                if name in fields[0]:
                    batch[name] = torch.from_numpy(np.stack([a[name] for a in fields]))[:, None]
            for name in ("src_xy", "src_rate", "src_kind", "src_extent"):
                if name in fields[0]:
                    batch[name] = torch.from_numpy(np.stack([a[name] for a in fields]))
        return batch

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        """One item (the batch of one, without its batch axis)."""
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


# ------------------------------------------------------------------------------------------------
# data module


def batch_contract_defaults(kwargs: dict[str, Any], transform: torch.nn.Module) -> None:
    """Fill in the XMM batch contract where the config leaves it out: 2 input channels (rate, exposure),
    1 target channel in counts/s, ``transform`` as the intensity transform and [0, its max_value] as the
    physical range."""
    kwargs.setdefault("in_channels", 2)
    kwargs.setdefault("out_channels", 1)
    kwargs.setdefault("image_channels", [0])
    kwargs.setdefault("units", "counts/s")
    if kwargs.get("transform") is None:
        kwargs["transform"] = transform
    if kwargs.get("physical_range") is None:
        kwargs["physical_range"] = (0.0, getattr(kwargs["transform"], "max_value", 1.0))


class XMMDataModule(LitSRDataModule):
    """Simulated (default) or user XMM fields for denoising (``task=dn``) or x2 SR (``task=sr``).

    Args (beyond the loader settings and the batch-contract declarations of ``LitSRDataModule``):
        data_dir: folder of the simulated default datasets (``${paths.data_dir}/xmm``).
        root: a user's dataset folder in the layout of the module doc (validated, never written); None =
            the simulated default, simulated once by ``prepare_data``.
        task: 'dn' (target: the longer exposure on the input grid) or 'sr' (target: 2x finer grid).
        task_scales: scale of each task (the data config derives ``scale`` from it).
        n_fields: fields per split of the default dataset.
        sim_seed: simulation seed of the default dataset.
        lr_size, pixel_arcsec, psf_fwhm_arcsec, psf_beta: simulator geometry and optics (input grid, arcsec);
            ``sim`` holds any other :class:`~lit_sr.domains.xmm.sim.XMMSimConfig` override.
        exposure_norm_ks: exposure (ks) that maps to 1 in the exposure channel.
        tags: sub-folder names {input, dn, sr, sources}; None = the simulator's for its exposures.
        train_patch: random training crops of this many input pixels (None: whole fields).
        crop_bias: fraction of training crops centred on bright pixels (see :class:`XMMFieldsDataset`).
        max_sources: padded length of the true-source keys.
        augment / augment_seed: random flips / quarter turns of training items and their stream's seed.
        max_memory_mb: a split up to this size is kept in memory after its first pass.
        max_fields: use only the first N fields of each split (quick runs).
        patch_size: input pixels per patch of whole-frame prediction (``predict=fits``).
        max_rate: count rate (counts/s/pixel) mapped to 1 by the default transform (the data config builds
            its ``transform`` from it).
    """

    def __init__(
        self,
        data_dir: str = "data/xmm",
        root: str | None = None,
        task: str = "sr",
        task_scales: Mapping[str, int] | None = None,
        n_fields: Mapping[str, int] | None = None,
        sim_seed: int = 0,
        lr_size: int = 64,
        pixel_arcsec: float = 4.1,
        psf_fwhm_arcsec: float = 6.0,
        psf_beta: float = 1.5,
        sim: Mapping[str, Any] | None = None,
        exposure_norm_ks: float = 100.0,
        tags: Mapping[str, str] | None = None,
        train_patch: int | None = None,
        crop_bias: float = 0.0,
        max_sources: int = 256,
        augment: bool = True,
        augment_seed: int = 0,
        max_memory_mb: float = 1024.0,
        max_fields: int | None = None,
        patch_size: int | None = None,
        max_rate: float = 2e-3,
        progress: bool = True,
        **kwargs: Any,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"data.task={task!r}: expected one of {sorted(TASKS)} (dn = denoising x1, sr = x2)")
        scales = dict(task_scales or TASKS)
        if int(scales.get(task, -1)) != TASKS[task]:
            raise ValueError(f"data.task_scales[{task}]={scales.get(task)}: the {task} task has scale {TASKS[task]}")
        kwargs.setdefault("scale", TASKS[task])
        if int(kwargs["scale"]) != TASKS[task]:
            raise ValueError(f"data.scale={kwargs['scale']} does not match data.task={task} (scale {TASKS[task]})")
        batch_contract_defaults(kwargs, StretchTransform(max_rate, "sqrt"))
        super().__init__(**kwargs)
        if self.in_channels != 2 or self.out_channels != 1:
            raise ValueError(
                f"data.in_channels/out_channels = {self.in_channels}/{self.out_channels}: the XMM data "
                "has 2 input channels (image, exposure) and 1 target channel"
            )
        self.data_dir = Path(data_dir)
        self.root = Path(root) if root else None
        self.task = task
        self.n_fields = {k: int(v) for k, v in (n_fields or {"train": 400, "val": 50, "test": 50}).items()}
        self.sim_seed = int(sim_seed)
        self.sim_overrides = {
            "lr_size": int(lr_size),
            "pixel_arcsec": float(pixel_arcsec),
            "psf_fwhm_arcsec": float(psf_fwhm_arcsec),
            "psf_beta": float(psf_beta),
            "write_expected": True,
            **dict(sim or {}),
        }
        self.exposure_norm_ks = float(exposure_norm_ks)
        self.pixel_arcsec, self.psf_fwhm_arcsec, self.psf_beta = (
            float(pixel_arcsec),
            float(psf_fwhm_arcsec),
            float(psf_beta),
        )
        self.tags = dict(tags) if tags else None
        self.train_patch = int(train_patch) if train_patch else None
        self.crop_bias = float(crop_bias)
        self.max_sources = int(max_sources)
        self.augment = bool(augment)
        self.augment_seed = int(augment_seed)
        self.max_memory_mb = float(max_memory_mb)
        self.max_fields = int(max_fields) if max_fields else None
        self.patch_size = int(patch_size) if patch_size else int(lr_size)
        self.max_rate = float(max_rate)
        self.progress = bool(progress)

    # ------------------------------------------------------------------ simulated default
    def sim_config(self) -> XMMSimConfig:
        known = set(XMMSimConfig.__dataclass_fields__)
        unknown = sorted(set(self.sim_overrides) - known)
        if unknown:
            raise ValueError(f"data.sim: unknown simulator option(s) {unknown}; known: {sorted(known)}")
        return XMMSimConfig.from_json(self.sim_overrides)

    @property
    def default_root(self) -> Path:
        """``<data_dir>/sim_v<version>_seed<s>_<train>-<val>-<test>_<config hash>``."""
        config = self.sim_config().to_json()
        digest = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]
        counts = "-".join(str(self.n_fields[k]) for k in sorted(self.n_fields, key=_split_order))
        return self.data_dir / f"sim_v{XMM_SIM_VERSION}_seed{self.sim_seed}_{counts}_{digest}"

    @property
    def dataset_root(self) -> Path:
        return self.root if self.root is not None else self.default_root

    def folder_tags(self) -> dict[str, str]:
        tags = product_tags(self.sim_config())
        default = {"input": tags["input"], "dn": tags["target"], "sr": tags["sr"], "sources": tags["sources"]}
        if self.tags:
            unknown = sorted(set(self.tags) - set(default))
            if unknown:
                raise ValueError(f"data.tags: unknown key(s) {unknown}; expected some of {sorted(default)}")
            default.update(self.tags)
        return default

    def prepare_data(self) -> None:
        """Simulate the default dataset once (with progress); a user's ``root`` is only checked to exist."""
        if self.root is not None:
            if not self.root.is_dir():
                raise DataFileError(self.root, None, "dataset folder not found (expected <root>/<split>/<tag>/*.fits)")
            return
        config = self.sim_config()
        if not is_complete_xmm_dataset(self.default_root, config, self.sim_seed, self.n_fields):
            log.info("Simulating the default XMM dataset (%s fields) into %s", self.n_fields, self.default_root)
            self.default_root.parent.mkdir(parents=True, exist_ok=True)
            write_xmm_dataset(self.default_root, self.n_fields, config, self.sim_seed, progress=self.progress)

    # ------------------------------------------------------------------ splits
    def split_files(self, split: str) -> list[dict[str, Path | None]]:
        """Validated file list of ``split``: the same field names in the input and target folders."""
        root, tags = self.dataset_root, self.folder_tags()
        if self.root is None and not is_complete_xmm_dataset(root):
            raise DataFileError(root, None, "default dataset is missing or incomplete; run prepare_data()")
        folders = {"input": root / split / tags["input"], "target": root / split / tags[self.task]}
        for what, folder in folders.items():
            if not folder.is_dir():
                raise DataFileError(
                    folder,
                    None,
                    f"{what} folder of split '{split}' not found (expected "
                    f"<root>/{split}/{tags['input' if what == 'input' else self.task]}/"
                    "*.fits; set data.tags to name other folders)",
                )
        names = {
            what: sorted(p.name for p in folder.iterdir() if p.suffix == ".fits") for what, folder in folders.items()
        }
        if not names["input"]:
            raise DataFileError(folders["input"], None, "no .fits files")
        if names["input"] != names["target"]:
            missing = sorted(set(names["input"]) ^ set(names["target"]))
            raise DataFileError(
                folders["target"],
                None,
                f"field files differ from {folders['input']} (e.g. {missing[:3]}); expected the same file names",
            )
        src_dir = root / split / tags["sources"]
        files = []
        for name in names["input"][: self.max_fields]:
            src = src_dir / name
            files.append(
                {
                    "input": folders["input"] / name,
                    "target": folders["target"] / name,
                    "sources": src if src.is_file() else None,
                }
            )
        return files

    def setup(self, stage: str | None = None) -> None:
        splits = STAGE_SPLITS.get(stage or "", ("train", "val", "test"))
        for split in splits:
            if split in self.splits:
                continue
            files = self.split_files(split)
            first = read_image_file(files[0]["input"])
            optional = tuple(name for name in OPTIONAL_HDUS if name in first)
            train = split == "train"
            per_field = 4 * first["counts"].size * (4 + 4 * self.scale**2)  # float32 input/target maps + truth
            cache = len(files) * per_field <= self.max_memory_mb * 1024**2
            self.splits[split] = XMMFieldsDataset(
                files,
                self.scale,
                self.transform,
                self.exposure_norm_ks,
                with_truth=not train,
                max_sources=self.max_sources,
                train_patch=self.train_patch if train else None,
                augment=self.augment and train,
                seed=self.augment_seed,
                cache=cache,
                optional_hdus=optional,
                crop_bias=self.crop_bias if train else 0.0,
            )
            if not train and not self.splits[split].has_sources:
                log.warning(
                    "%s has no '%s' truth tables: flux recovery, completeness and FWHM are skipped",
                    self.dataset_root / split,
                    self.folder_tags()["sources"],
                )

    def predict_dataloader(self):
        return self.dataloader("test", False)


def _split_order(name: str) -> tuple[int, str]:
    order = {"train": 0, "val": 1, "test": 2}
    return order.get(name, 3), name
