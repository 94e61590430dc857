"""SAXS background removal data: patch pipeline of the study and the Lightning DataModule.

Files (see :mod:`lit_sr.domains.saxs.sim` for the layout): datasets ``xray`` (X-ray-only shots),
``full`` (full shots) and ``signal`` (the X-ray part of each full shot, used only to mask the signal
region of the full shot, exactly as the study used a matching X-ray-only shot).

Patch pipeline
* signal patch: a random X-ray-only frame, a random centre and a random angle (uniform in [0, 360));
  a square of side ceil(P*sqrt(2))+2 is read, rotated (bilinear, ``scipy.ndimage.rotate``) and its
  central P x P crop kept, so no corner is empty. Kept only if its sum exceeds
  ``signal_threshold`` keV (else redrawn); amplitude multiplied by a log-uniform factor.
* noise patch: mask = dilate(uniform_filter(signal, 9) > mask_threshold keV, mask_dilation px); a
  random position of a full shot is accepted if at most ``max_masked_fraction`` of the patch is
  masked; masked pixels are set to 0. No rotation, no amplitude change. A pool is extracted once in
  ``setup``. (Sparse signal photons outside the mask stay in the noise patch, as with real data;
  ``noise_source="background"`` uses the simulator's exact background ``full - signal`` instead.)
* training item: fresh signal patch + a fresh random noise patch from the pool; input = s + n;
  normalised by :func:`normalise_patch` of the input, the same bounds applied to s and n.
* val/test items: fixed (seeded) signal/noise pairs from separately simulated files.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Sequence

import h5py
import lightning as L
import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import DataLoader, Dataset

from lit_sr.data.rng import stream_rng
from lit_sr.domains.saxs.sim import is_complete, simulate_saxs_file
from lit_sr.data.validate import DataFileError, require_dataset, require_file

LOWER_PERCENTILE = 1.0
UPPER_PERCENTILE = 99.95


# --------------------------------------------------------------------------------------------
# normalisation shared by training and inference
# --------------------------------------------------------------------------------------------
def normalise_patch(x: torch.Tensor | np.ndarray, lower: float = LOWER_PERCENTILE, upper: float = UPPER_PERCENTILE,
                    eps: float = 1e-6):
    """Percentile normalisation over the last two dims: returns (xn, lo, hi).

    lo/hi are the ``lower``/``upper`` percentiles (linear interpolation, as numpy) of each image;
    xn = clip((x - lo) / (hi - lo), 0, 1). lo, hi have the shape of x without its last two dims.
    If hi - lo < eps (a flat patch) hi is set to lo + eps so the mapping stays invertible.
    """
    t = torch.as_tensor(x)
    if not t.is_floating_point():
        t = t.float()
    flat = t.reshape(*t.shape[:-2], -1)
    q = torch.tensor([lower / 100.0, upper / 100.0], dtype=flat.dtype, device=flat.device)
    qs = torch.quantile(flat, q, dim=-1)           # [2, ...]
    lo, hi = qs[0], torch.maximum(qs[1], qs[0] + eps)
    xn = apply_bounds(t, lo, hi)
    return xn, lo, hi


def apply_bounds(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """(x - lo) / (hi - lo) clipped to [0, 1]; lo/hi broadcast over the last two dims."""
    lo_, hi_ = torch.as_tensor(lo)[..., None, None], torch.as_tensor(hi)[..., None, None]
    return ((torch.as_tensor(x) - lo_) / (hi_ - lo_)).clamp(0.0, 1.0)


def denormalise(xn: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Inverse of the (unclipped) normalisation: xn * (hi - lo) + lo, bounds over the last two dims."""
    lo_, hi_ = torch.as_tensor(lo)[..., None, None], torch.as_tensor(hi)[..., None, None]
    return xn * (hi_ - lo_) + lo_


# --------------------------------------------------------------------------------------------
# patch cutting
# --------------------------------------------------------------------------------------------
def rotation_region(patch_size: int) -> int:
    """Side of the square read before rotating so the rotated P x P crop has no empty corner."""
    return int(math.ceil(patch_size * math.sqrt(2.0))) + 2


def cut_rotated_patch(frames, index: int, top: int, left: int, angle: float, patch_size: int) -> np.ndarray:
    """Read the rotation region at (top, left) of frame ``index``, rotate by ``angle`` degrees, crop P x P."""
    side = rotation_region(patch_size)
    region = np.asarray(frames[index, top:top + side, left:left + side], dtype=np.float32)
    rot = ndimage.rotate(region, angle, reshape=False, order=1, mode="nearest")
    c = (side - patch_size) // 2
    return np.clip(rot[c:c + patch_size, c:c + patch_size], 0.0, None)


def sample_signal_patch(frames, rng: np.random.Generator, patch_size: int, threshold: float,
                        amplitude_range: Sequence[float], max_tries: int = 500, path: str = "?") -> np.ndarray:
    """A random rotated signal patch with sum > threshold (keV), amplitude-rescaled (log-uniform)."""
    n, h, w = frames.shape
    side = rotation_region(patch_size)
    if h < side or w < side:
        raise DataFileError(path, "xray", f"frames {h}x{w} are too small for rotated {patch_size}x{patch_size} "
                                          f"patches (need at least {side}x{side})")
    for _ in range(max_tries):
        i = int(rng.integers(n))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        p = cut_rotated_patch(frames, i, top, left, float(rng.uniform(0.0, 360.0)), patch_size)
        if float(p.sum(dtype=np.float64)) > threshold:
            lo, hi = amplitude_range
            return p * np.float32(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    raise RuntimeError(f"{path}: no signal patch with integrated intensity > {threshold} keV in {max_tries} draws; "
                       "lower signal_threshold")


def signal_mask(signal: np.ndarray, threshold: float, dilation: int, smooth: int = 9) -> np.ndarray:
    """Pixels of a frame where the X-ray signal is present: local mean > threshold (keV), dilated."""
    m = ndimage.uniform_filter(np.asarray(signal, np.float32), smooth, mode="nearest") > threshold
    if dilation > 0:
        m = ndimage.binary_dilation(m, iterations=int(dilation))
    return m


def extract_noise_pool(path: str | Path, n_patches: int, patch_size: int, rng: np.random.Generator,
                       mask_threshold: float, mask_dilation: int, max_masked_fraction: float,
                       noise_source: str = "full", max_tries_per_patch: int = 50) -> np.ndarray:
    """Noise patches [N, P, P] (keV) from the full shots of ``path`` with the signal region masked."""
    if noise_source not in ("full", "background"):
        raise ValueError(f"noise_source must be 'full' or 'background', got {noise_source!r}")
    P = patch_size
    with h5py.File(require_file(path, "SAXS file"), "r") as h5:
        full = require_dataset(h5, path, "full", ndim=3)
        sig = require_dataset(h5, path, "signal", ndim=3)
        if full.shape != sig.shape:
            raise DataFileError(path, "signal", f"expected the shape of 'full' {full.shape}, found {sig.shape}")
        n, h, w = full.shape
        if n == 0 or h < P or w < P:
            raise DataFileError(path, "full", f"need at least one frame of at least {P}x{P}, found shape {full.shape}")
        per_frame = [int(v) for v in np.diff(np.linspace(0, n_patches, n + 1).round())]
        out = []
        for i in range(n):
            f = np.asarray(full[i], np.float32)
            s = np.asarray(sig[i], np.float32)
            mask = signal_mask(s, mask_threshold, mask_dilation)
            frame = f - s if noise_source == "background" else f
            frame = np.where(mask, 0.0, np.clip(frame, 0.0, None)).astype(np.float32)
            # masked fraction of every P x P window via a summed-area table
            ii = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
            frac = (ii[P:, P:] - ii[:-P, P:] - ii[P:, :-P] + ii[:-P, :-P]) / float(P * P)
            ok = np.argwhere(frac <= max_masked_fraction)
            if len(ok) == 0:
                continue
            picks = ok[rng.integers(0, len(ok), per_frame[i])]
            out.extend(frame[t:t + P, l:l + P] for t, l in picks)
    if not out:
        raise DataFileError(path, "full", f"no {P}x{P} position has a masked fraction <= {max_masked_fraction}; "
                                          "raise max_masked_fraction or mask_threshold, or use larger frames")
    pool = np.stack(out).astype(np.float32)
    if len(pool) < n_patches:  # some frames had no usable position: fill from the others
        pool = pool[rng.integers(0, len(pool), n_patches)]
    return pool


def make_item(signal: np.ndarray | torch.Tensor, noise: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
    """Normalised training item from keV patches [P, P]: input = s + n, bounds from the input."""
    s = torch.as_tensor(np.asarray(signal, np.float32))
    n = torch.as_tensor(np.asarray(noise, np.float32))
    xn, lo, hi = normalise_patch(s + n)
    return {"input": xn[None], "target": apply_bounds(s, lo, hi)[None], "noise": apply_bounds(n, lo, hi)[None],
            "bounds": torch.stack([lo, hi]).float()}


# --------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------
class _LazyH5:
    """Opens an HDF5 file on first use in each process (DataLoader workers get their own handle)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._h5 = None
        self._pid = None

    def get(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._h5

    def __getstate__(self):  # never pickle an open handle
        return {"path": self.path, "_h5": None, "_pid": None}


class SAXSTrainDataset(Dataset):
    """``length`` items; each cuts a fresh signal patch and draws a fresh noise patch from the pool."""

    def __init__(self, path: str | Path, noise_pool: np.ndarray, length: int, patch_size: int = 128,
                 signal_threshold: float = 2.0e4, amplitude_range: Sequence[float] = (0.1, 10.0), seed: int = 0) -> None:
        self.file = _LazyH5(path)
        self.noise_pool = noise_pool
        self.length = int(length)
        self.patch_size = int(patch_size)
        self.signal_threshold = float(signal_threshold)
        self.amplitude_range = tuple(float(a) for a in amplitude_range)
        self.seed = int(seed)
        self._rng = None
        self._rng_pid = None

    def __len__(self) -> int:
        return self.length

    def _generator(self) -> np.random.Generator:
        # torch.initial_seed() differs per worker and per epoch (fresh DataLoader base seed), so the
        # stream does not repeat between epochs; stream_rng adds rank and worker id.
        if self._rng is None or self._rng_pid != os.getpid():
            self._rng = stream_rng(self.seed, torch.initial_seed() & 0xFFFFFFFF)
            self._rng_pid = os.getpid()
        return self._rng

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        rng = self._generator()
        frames = self.file.get()["xray"]
        s = sample_signal_patch(frames, rng, self.patch_size, self.signal_threshold, self.amplitude_range,
                                path=self.file.path)
        n = self.noise_pool[int(rng.integers(len(self.noise_pool)))]
        return make_item(s, n)


class SAXSPairDataset(Dataset):
    """Fixed signal/noise patch pairs (keV) for validation and test."""

    def __init__(self, signal: np.ndarray, noise: np.ndarray) -> None:
        if signal.shape != noise.shape:
            raise ValueError(f"signal {signal.shape} and noise {noise.shape} patches differ in shape")
        self.signal, self.noise = signal, noise

    def __len__(self) -> int:
        return len(self.signal)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        return make_item(self.signal[idx], self.noise[idx])


def fixed_pairs(path: str | Path, n: int, patch_size: int, seed: int, signal_threshold: float,
                amplitude_range: Sequence[float], mask_threshold: float, mask_dilation: int,
                max_masked_fraction: float, noise_source: str = "full") -> SAXSPairDataset:
    """Reproducible (per seed) held-out pairs cut from the X-ray-only and full shots of ``path``."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xE7A1])
    noise = extract_noise_pool(path, n, patch_size, rng, mask_threshold, mask_dilation, max_masked_fraction, noise_source)
    with h5py.File(require_file(path, "SAXS file"), "r") as h5:
        frames = require_dataset(h5, path, "xray", ndim=3)
        signal = np.stack([sample_signal_patch(frames, rng, patch_size, signal_threshold, amplitude_range, path=str(path))
                           for _ in range(n)])
    return SAXSPairDataset(signal, noise[rng.permutation(len(noise))[:n]])


# --------------------------------------------------------------------------------------------
# DataModule
# --------------------------------------------------------------------------------------------
class SAXSDataModule(L.LightningDataModule):
    """SAXS background removal data (batches: input, target = signal, noise, bounds).

    Default data (simulated by ``prepare_data`` under ``data_dir`` if absent or incomplete):
    ``saxs_train.h5`` with ``n_xray_frames`` X-ray-only + ``n_full_frames`` full shots, and
    ``saxs_val.h5`` / ``saxs_test.h5`` with ``n_eval_frames`` of each, all of ``frame_shape``
    (default 256 x 512: the whole default set simulates in ~1-2 s; the simulator's own default is
    the Jungfrau 512 x 1024). Each file has its own seed derived from ``seed`` so val/test frames are
    separate from the training frames. Give ``train_file``/``val_file``/``test_file`` to use existing
    files instead (they are validated, never simulated over).
    """

    SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}

    def __init__(self, data_dir: str = "data/saxs", train_file: str | None = None, val_file: str | None = None,
                 test_file: str | None = None, frame_shape: Sequence[int] = (256, 512), n_xray_frames: int = 16,
                 n_full_frames: int = 16, n_eval_frames: int = 4, photon_energy: float = 8.0,
                 patch_size: int = 128, n_train_signal_patches: int = 1024, n_noise_patches: int = 512,
                 n_val_patches: int = 64, n_test_patches: int = 64, signal_threshold: float = 2.0e4,
                 amplitude_range: Sequence[float] = (0.1, 10.0), mask_threshold: float = 1.0,
                 mask_dilation: int = 8, max_masked_fraction: float = 0.05, noise_source: str = "full",
                 seed: int = 0, batch_size: int = 16, num_workers: int = 0, pin_memory: bool = False,
                 persistent_workers: bool = False) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.files = {
            "train": Path(train_file) if train_file else self.data_dir / "saxs_train.h5",
            "val": Path(val_file) if val_file else self.data_dir / "saxs_val.h5",
            "test": Path(test_file) if test_file else self.data_dir / "saxs_test.h5",
        }
        self.user_files = {"train": bool(train_file), "val": bool(val_file), "test": bool(test_file)}
        self.frame_shape = tuple(int(v) for v in frame_shape)
        self.n_xray_frames, self.n_full_frames, self.n_eval_frames = n_xray_frames, n_full_frames, n_eval_frames
        self.photon_energy = float(photon_energy)
        self.patch_size = int(patch_size)
        self.n_train_signal_patches, self.n_noise_patches = n_train_signal_patches, n_noise_patches
        self.n_val_patches, self.n_test_patches = n_val_patches, n_test_patches
        self.signal_threshold = float(signal_threshold)
        self.amplitude_range = tuple(float(a) for a in amplitude_range)
        self.mask_threshold, self.mask_dilation = float(mask_threshold), int(mask_dilation)
        self.max_masked_fraction = float(max_masked_fraction)
        self.noise_source = noise_source
        self.seed = int(seed)
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers
        self.train_set = self.val_set = self.test_set = None

    def _pair_kwargs(self) -> dict:
        return dict(patch_size=self.patch_size, signal_threshold=self.signal_threshold,
                    amplitude_range=self.amplitude_range, mask_threshold=self.mask_threshold,
                    mask_dilation=self.mask_dilation, max_masked_fraction=self.max_masked_fraction,
                    noise_source=self.noise_source)

    def prepare_data(self) -> None:
        for split, path in self.files.items():
            if self.user_files[split]:
                require_file(path, f"{split} SAXS file")
                continue
            if path.exists() and is_complete(path):
                continue
            n_x, n_f = (self.n_xray_frames, self.n_full_frames) if split == "train" else (self.n_eval_frames,) * 2
            simulate_saxs_file(path, n_x, n_f, seed=self.seed * 1000 + self.SPLIT_SEEDS[split],
                               height=self.frame_shape[0], width=self.frame_shape[1], photon_energy=self.photon_energy)

    def _check(self, split: str) -> Path:
        path = require_file(self.files[split], f"{split} SAXS file")
        if not self.user_files[split] and not is_complete(path):
            raise DataFileError(path, None, "incomplete simulation (no 'complete' attribute); run prepare_data()")
        return path

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            path = self._check("train")
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, 0x7001])
            pool = extract_noise_pool(path, self.n_noise_patches, self.patch_size, rng, self.mask_threshold,
                                      self.mask_dilation, self.max_masked_fraction, self.noise_source)
            self.train_set = SAXSTrainDataset(path, pool, self.n_train_signal_patches, self.patch_size,
                                              self.signal_threshold, self.amplitude_range, self.seed)
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = fixed_pairs(self._check("val"), self.n_val_patches, seed=self.seed * 1000 + 1,
                                       **self._pair_kwargs())
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = fixed_pairs(self._check("test"), self.n_test_patches, seed=self.seed * 1000 + 2,
                                        **self._pair_kwargs())

    def _loader(self, ds, shuffle: bool) -> DataLoader:
        return DataLoader(ds, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          pin_memory=self.pin_memory,
                          persistent_workers=self.persistent_workers and self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False)
