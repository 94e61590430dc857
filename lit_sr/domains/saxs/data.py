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
  normalised by the ``normaliser`` (default the study's 1st/99.95th percentiles of the input patch,
  :class:`lit_sr.data.normalise.PercentileNormaliser`), the same bounds applied to s and n.
* val/test items: fixed (seeded) signal/noise pairs from separately simulated files.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from lit_sr.data.base import SPLITS, OpenH5File, SimulatedH5DataModule
from lit_sr.data.h5store import FileInfo, H5Schema
from lit_sr.data.normalise import PercentileNormaliser, apply_bounds
from lit_sr.data.rng import stream_rng
from lit_sr.data.validate import DataFileError, require_dataset, require_file
from lit_sr.domains.saxs.sim import (
    SAXSSimConfig,
    iter_saxs_frames,
    resolve_config,
    saxs_attrs,
    saxs_schema,
    write_options,
)


# --------------------------------------------------------------------------------------------
# patch cutting
# --------------------------------------------------------------------------------------------
def rotation_region(patch_size: int) -> int:
    """Side of the square read before rotating so the rotated P x P crop has no empty corner."""
    return int(math.ceil(patch_size * math.sqrt(2.0))) + 2


def rotated_crops(
    frames: np.ndarray, index: np.ndarray, top: np.ndarray, left: np.ndarray, angle: np.ndarray, patch_size: int
) -> np.ndarray:
    """Rotated P x P patches [m, P, P] (float32) of in-memory ``frames`` [n, H, W], all at once.

    Patch k is what :func:`cut_rotated_patch` returns for ``(index[k], top[k], left[k], angle[k])``: the
    rotation region at (top, left) rotated by ``angle`` degrees about its centre (bilinear, as
    ``scipy.ndimage.rotate(order=1, reshape=False)``), its central P x P crop, negatives clipped to 0.
    Only the crop's pixels are interpolated, by gathering the four neighbours from the frames.
    """
    side = rotation_region(patch_size)
    c0 = (side - patch_size) // 2
    centre = (side - 1) / 2.0
    o = np.arange(c0, c0 + patch_size, dtype=np.float64) - centre  # crop pixels about the centre
    rad = np.deg2rad(np.asarray(angle, np.float64))[:, None, None]
    cos, sin = np.cos(rad), np.sin(rad)
    oy, ox = o[None, :, None], o[None, None, :]
    # scipy's rotation: input = centre + [[c, s], [-s, c]] @ (output - centre), clamped ('nearest' mode)
    y = np.clip(centre + cos * oy + sin * ox, 0.0, side - 1.0)
    x = np.clip(centre - sin * oy + cos * ox, 0.0, side - 1.0)
    y0, x0 = np.floor(y), np.floor(x)
    wy, wx = (y - y0).astype(np.float32), (x - x0).astype(np.float32)
    # the four neighbours by flat index into the frames (one 1-D gather each); +1 stays inside the region
    _, h, w = frames.shape
    iy0, ix0 = y0.astype(np.int64), x0.astype(np.int64)
    origin = (np.asarray(index, np.int64) * h + np.asarray(top, np.int64)) * w + np.asarray(left, np.int64)
    k0 = iy0 * w
    k0 += ix0
    k0 += origin[:, None, None]
    k1 = k0 + (ix0 < side - 1)  # x1 = min(x0 + 1, side - 1)
    below = (iy0 < side - 1) * w  # y1 = min(y0 + 1, side - 1)
    flat = frames.reshape(-1)
    f00, f01 = flat[k0], flat[k1]
    k0 += below
    k1 += below
    f10, f11 = flat[k0], flat[k1]
    wx1, wy1 = 1 - wx, 1 - wy
    out = (f00 * wx1 + f01 * wx) * wy1 + (f10 * wx1 + f11 * wx) * wy
    return np.clip(out.astype(np.float32, copy=False), 0.0, None)


def cut_rotated_patch(frames, index: int, top: int, left: int, angle: float, patch_size: int) -> np.ndarray:
    """Read the rotation region at (top, left) of frame ``index``, rotate by ``angle`` degrees, crop P x P."""
    side = rotation_region(patch_size)
    region = np.asarray(frames[index, top : top + side, left : left + side], dtype=np.float32)
    zero = np.zeros(1, np.int64)
    return rotated_crops(region[None], zero, zero, zero, np.array([angle], np.float64), patch_size)[0]


def sample_signal_patches(
    frames,
    rng: np.random.Generator,
    n_patches: int,
    patch_size: int,
    threshold: float,
    amplitude_range: Sequence[float],
    max_tries: int = 500,
    path: str = "?",
) -> np.ndarray:
    """``n_patches`` random rotated signal patches [N, P, P] (keV), each with sum > threshold (keV) and
    amplitude-rescaled (log-uniform), drawn together: each round draws a frame, a position and an angle
    for every patch still missing, cuts them at once and keeps those above the threshold.

    Every patch is, as in a one-at-a-time rejection sampler, the first accepted of independent candidates
    (the same distribution). ``frames`` is an in-memory array [n, H, W] (one gather for all candidates)
    or an HDF5 dataset (one region read per candidate). With ``n_patches=1`` the random stream is used
    exactly as by one call of :func:`sample_signal_patch`.
    """
    n, h, w = frames.shape
    side = rotation_region(patch_size)
    if h < side or w < side:
        raise DataFileError(
            path,
            "xray",
            f"frames {h}x{w} are too small for rotated {patch_size}x{patch_size} patches (need at least {side}x{side})",
        )
    out = np.empty((n_patches, patch_size, patch_size), np.float32)
    missing = np.arange(n_patches)
    in_memory = isinstance(frames, np.ndarray)
    for _ in range(max_tries):
        if len(missing) == 0:
            break
        m = len(missing)
        i = rng.integers(n, size=m)
        top, left = rng.integers(0, h - side + 1, size=m), rng.integers(0, w - side + 1, size=m)
        angle = rng.uniform(0.0, 360.0, size=m)
        if in_memory:
            p = rotated_crops(frames, i, top, left, angle, patch_size)
        else:
            regions = np.stack(
                [
                    np.asarray(frames[a, t : t + side, l : l + side], np.float32)
                    for a, t, l in zip(i.tolist(), top.tolist(), left.tolist())
                ]
            )
            zero = np.zeros(m, np.int64)
            p = rotated_crops(regions, np.arange(m), zero, zero, angle, patch_size)
        ok = p.sum(axis=(1, 2), dtype=np.float64) > threshold
        out[missing[ok]] = p[ok]
        missing = missing[~ok]
    if len(missing):
        raise RuntimeError(
            f"{path}: no signal patch with integrated intensity > {threshold} keV in {max_tries} "
            "draws; lower signal_threshold"
        )
    lo, hi = amplitude_range
    gain = np.exp(rng.uniform(math.log(lo), math.log(hi), size=n_patches)).astype(np.float32)
    return out * gain[:, None, None]


def sample_signal_patch(
    frames,
    rng: np.random.Generator,
    patch_size: int,
    threshold: float,
    amplitude_range: Sequence[float],
    max_tries: int = 500,
    path: str = "?",
) -> np.ndarray:
    """A random rotated signal patch with sum > threshold (keV), amplitude-rescaled (log-uniform)."""
    return sample_signal_patches(frames, rng, 1, patch_size, threshold, amplitude_range, max_tries, path)[0]


def signal_mask(signal: np.ndarray, threshold: float, dilation: int, smooth: int = 9) -> np.ndarray:
    """Pixels of a frame where the X-ray signal is present: local mean > threshold (keV), dilated."""
    m = ndimage.uniform_filter(np.asarray(signal, np.float32), smooth, mode="nearest") > threshold
    if dilation > 0:
        m = ndimage.binary_dilation(m, iterations=int(dilation))
    return m


def extract_noise_pool(
    path: str | Path,
    n_patches: int,
    patch_size: int,
    rng: np.random.Generator,
    mask_threshold: float,
    mask_dilation: int,
    max_masked_fraction: float,
    noise_source: str = "full",
    max_tries_per_patch: int = 50,
) -> np.ndarray:
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
            out.extend(frame[t : t + P, l : l + P] for t, l in picks)
    if not out:
        raise DataFileError(
            path,
            "full",
            f"no {P}x{P} position has a masked fraction <= {max_masked_fraction}; "
            "raise max_masked_fraction or mask_threshold, or use larger frames",
        )
    pool = np.stack(out).astype(np.float32)
    if len(pool) < n_patches:  # some frames had no usable position: fill from the others
        pool = pool[rng.integers(0, len(pool), n_patches)]
    return pool


def make_batch(
    signal: np.ndarray | torch.Tensor, noise: np.ndarray | torch.Tensor, normaliser: PercentileNormaliser | None = None
) -> dict[str, torch.Tensor]:
    """Normalised training batch from keV patches [B, P, P]: input = s + n, bounds per patch from the input.

    Keys: ``input``, ``target`` (signal), ``noise`` [B, 1, P, P] and ``bounds`` [B, 2] (keV of 0 and 1)."""
    normaliser = normaliser or PercentileNormaliser()
    s = torch.as_tensor(np.asarray(signal, np.float32))[:, None]
    n = torch.as_tensor(np.asarray(noise, np.float32))[:, None]
    xn, (lo, hi) = normaliser(s + n)  # lo, hi: [B, 1]
    return {
        "input": xn,
        "target": apply_bounds(s, lo, hi, normaliser.clip),
        "noise": apply_bounds(n, lo, hi, normaliser.clip),
        "bounds": torch.cat([lo, hi], dim=1).float(),
    }


def make_item(
    signal: np.ndarray | torch.Tensor, noise: np.ndarray | torch.Tensor, normaliser: PercentileNormaliser | None = None
) -> dict[str, torch.Tensor]:
    """Normalised training item from keV patches [P, P] (:func:`make_batch` of one, without the batch axis)."""
    batch = make_batch(np.asarray(signal, np.float32)[None], np.asarray(noise, np.float32)[None], normaliser)
    return {k: v[0] for k, v in batch.items()}


# --------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------
class SAXSTrainDataset(Dataset):
    """``length`` items; each cuts a fresh signal patch and draws a fresh noise patch from the pool.

    Batches are built whole (``__getitems__``, what the DataLoader calls with the indices of a batch):
    the signal patches of a batch are cut together (:func:`sample_signal_patches`) and normalised
    together. The X-ray-only frames are read into memory on first use when they fit in
    ``max_memory_mb`` (per process), else every candidate region is read from the file.
    """

    def __init__(
        self,
        path: str | Path,
        noise_pool: np.ndarray,
        length: int,
        patch_size: int = 128,
        signal_threshold: float = 2.0e4,
        amplitude_range: Sequence[float] = (0.1, 10.0),
        seed: int = 0,
        normaliser: PercentileNormaliser | None = None,
        max_memory_mb: float = 1024.0,
    ) -> None:
        self.file = OpenH5File(path)
        self.normaliser = normaliser
        self.noise_pool = noise_pool
        self.length = int(length)
        self.patch_size = int(patch_size)
        self.signal_threshold = float(signal_threshold)
        self.amplitude_range = tuple(float(a) for a in amplitude_range)
        self.seed = int(seed)
        self.max_memory_mb = float(max_memory_mb)
        self._frames: np.ndarray | None = None
        self._rng = None
        self._rng_pid = None

    def __len__(self) -> int:
        return self.length

    def __getstate__(self) -> dict:  # each worker reads (or not) its own copy of the frames
        return {**self.__dict__, "_frames": None, "_rng": None, "_rng_pid": None}

    def _generator(self) -> np.random.Generator:
        # torch.initial_seed() differs per worker and per epoch (fresh DataLoader base seed), so the
        # stream does not repeat between epochs; stream_rng adds rank and worker id.
        if self._rng is None or self._rng_pid != os.getpid():
            self._rng = stream_rng(self.seed, torch.initial_seed() & 0xFFFFFFFF)
            self._rng_pid = os.getpid()
        return self._rng

    def preload(self) -> None:
        """Read the frames into memory now if they fit (before DataLoader workers fork, so they share them)."""
        self.frames()

    def frames(self):
        """The X-ray-only frames: an in-memory array if they fit in ``max_memory_mb``, else the HDF5 dataset."""
        if self._frames is not None:
            return self._frames
        ds = self.file.dataset("xray")
        if ds.dtype.itemsize * int(np.prod(ds.shape, dtype=np.int64)) <= self.max_memory_mb * 1024**2:
            self._frames = np.asarray(ds[...], np.float32)
            return self._frames
        return ds

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        rng = self._generator()
        s = sample_signal_patches(
            self.frames(),
            rng,
            len(indices),
            self.patch_size,
            self.signal_threshold,
            self.amplitude_range,
            path=self.file.path,
        )
        n = self.noise_pool[rng.integers(len(self.noise_pool), size=len(indices))]
        return make_batch(s, n, self.normaliser)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        """One item (the batch of one, without its batch axis)."""
        return {k: v[0] for k, v in self.__getitems__([idx]).items()}


class SAXSPairDataset(Dataset):
    """Fixed signal/noise patch pairs (keV) for validation and test (whole batches via ``__getitems__``)."""

    def __init__(self, signal: np.ndarray, noise: np.ndarray, normaliser: PercentileNormaliser | None = None) -> None:
        if signal.shape != noise.shape:
            raise ValueError(f"signal {signal.shape} and noise {noise.shape} patches differ in shape")
        self.signal, self.noise, self.normaliser = signal, noise, normaliser

    def __len__(self) -> int:
        return len(self.signal)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, np.int64)
        return make_batch(self.signal[idx], self.noise[idx], self.normaliser)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        return make_item(self.signal[idx], self.noise[idx], self.normaliser)


def fixed_pairs(
    path: str | Path,
    n: int,
    patch_size: int,
    seed: int,
    signal_threshold: float,
    amplitude_range: Sequence[float],
    mask_threshold: float,
    mask_dilation: int,
    max_masked_fraction: float,
    noise_source: str = "full",
    normaliser: PercentileNormaliser | None = None,
) -> SAXSPairDataset:
    """Reproducible (per seed) held-out pairs cut from the X-ray-only and full shots of ``path``."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xE7A1])
    noise = extract_noise_pool(
        path, n, patch_size, rng, mask_threshold, mask_dilation, max_masked_fraction, noise_source
    )
    with h5py.File(require_file(path, "SAXS file"), "r") as h5:
        frames = require_dataset(h5, path, "xray", ndim=3)
        signal = np.stack(
            [
                sample_signal_patch(frames, rng, patch_size, signal_threshold, amplitude_range, path=str(path))
                for _ in range(n)
            ]
        )
    return SAXSPairDataset(signal, noise[rng.permutation(len(noise))[:n]], normaliser)


# --------------------------------------------------------------------------------------------
# DataModule
# --------------------------------------------------------------------------------------------
class SAXSDataModule(SimulatedH5DataModule):
    """SAXS background removal data (batches: input, target = signal, noise, bounds).

    Default data (simulated by ``prepare_data`` under ``data_dir`` if absent or incomplete):
    ``saxs_train.h5`` with ``n_xray_frames`` X-ray-only + ``n_full_frames`` full shots, and
    ``saxs_val.h5`` / ``saxs_test.h5`` with ``n_eval_frames`` of each, all of ``frame_shape``
    (default 256 x 512: the whole default set simulates in ~1-2 s; the simulator's own default is
    the Jungfrau 512 x 1024). Each file has its own seed derived from ``seed`` so val/test frames are
    separate from the training frames. Give ``train_file``/``val_file``/``test_file`` to use existing
    files instead (they are validated, never simulated over).

    ``sim``: further :class:`~lit_sr.domains.saxs.sim.SAXSSimConfig` fields of the default files (e.g.
    ``{bragg_pairs: 8}``), simulated under ``<file_prefix>_{train,val,test}.h5`` (give a prefix of their
    own so they do not mix with the default ``saxs_*`` files).
    """

    SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}
    what = "SAXS file"

    def __init__(
        self,
        data_dir: str = "data/saxs",
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        frame_shape: Sequence[int] = (256, 512),
        n_xray_frames: int = 16,
        n_full_frames: int = 16,
        n_eval_frames: int = 4,
        photon_energy: float = 8.0,
        patch_size: int = 128,
        n_train_signal_patches: int = 1024,
        n_noise_patches: int = 512,
        n_val_patches: int = 64,
        n_test_patches: int = 64,
        signal_threshold: float = 2.0e4,
        amplitude_range: Sequence[float] = (0.1, 10.0),
        mask_threshold: float = 1.0,
        mask_dilation: int = 8,
        max_masked_fraction: float = 0.05,
        noise_source: str = "full",
        normaliser: PercentileNormaliser | None = None,
        seed: int = 0,
        batch_size: int = 16,
        persistent_workers: bool = False,
        file_prefix: str = "saxs",
        sim: Mapping[str, Any] | None = None,
        **kwargs,
    ) -> None:
        kwargs.setdefault("units", "keV")
        kwargs.setdefault("physical_range", (0.0, 1.0))  # model space: each patch normalised to [0, 1]
        super().__init__(
            data_dir=data_dir,
            file={"train": train_file, "val": val_file, "test": test_file},
            batch_size=batch_size,
            persistent_workers=persistent_workers,
            **kwargs,
        )
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
        self.normaliser = normaliser or PercentileNormaliser()
        self.seed = int(seed)
        self.file_prefix = str(file_prefix)
        self.sim = dict(sim or {})
        fixed = {"height", "width", "photon_energy"} & set(self.sim)
        if fixed:
            raise ValueError(f"data.sim: set {sorted(fixed)} with data.frame_shape / data.photon_energy instead")
        self._sim_config()  # unknown fields fail here, not at the first simulation
        self.train_set = self.val_set = self.test_set = None

    @property
    def files(self) -> dict[str, Path]:
        return self.paths

    # ------------------------------------------------------------------ SimulatedH5DataModule API
    def schema(self) -> H5Schema:
        return saxs_schema()

    def default_file_names(self) -> dict[str, str]:
        return {split: f"{self.file_prefix}_{split}.h5" for split in SPLITS}

    def _sim_config(self) -> SAXSSimConfig:
        try:
            return resolve_config(
                height=self.frame_shape[0], width=self.frame_shape[1], photon_energy=self.photon_energy, **self.sim
            )
        except TypeError as e:
            raise ValueError(f"data.sim: expected fields of SAXSSimConfig, got {sorted(self.sim)} ({e})") from None

    def _seed(self, split: str) -> int:
        return self.seed * 1000 + self.SPLIT_SEEDS[split]

    def _frames(self, split: str) -> tuple[int, int]:
        return (self.n_xray_frames, self.n_full_frames) if split == "train" else (self.n_eval_frames,) * 2

    def n_default(self, key: str) -> dict[str, int]:
        n_x, n_f = self._frames(key)
        return {"xray": n_x, "full": n_f}

    def simulate(self, key: str):
        return iter_saxs_frames(*self._frames(key), self._seed(key), self._sim_config())

    def simulation_attrs(self, key: str) -> dict:
        return saxs_attrs(self._seed(key), self._sim_config())

    def write_options(self) -> dict:
        return write_options(self._sim_config())

    def check_file(self, key: str, info: FileInfo) -> None:
        if info.shapes["full"] != info.shapes["signal"]:
            raise DataFileError(
                info.path,
                "signal",
                f"expected the frame shape of 'full' {info.shapes['full']}, found {info.shapes['signal']}",
            )

    def _pair_kwargs(self) -> dict:
        return dict(
            patch_size=self.patch_size,
            signal_threshold=self.signal_threshold,
            amplitude_range=self.amplitude_range,
            mask_threshold=self.mask_threshold,
            mask_dilation=self.mask_dilation,
            max_masked_fraction=self.max_masked_fraction,
            noise_source=self.noise_source,
            normaliser=self.normaliser,
        )

    def build_splits(self, stage: str | None) -> None:
        paths = self.paths
        if stage in (None, "fit") and self.train_set is None:
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, 0x7001])
            pool = extract_noise_pool(
                paths["train"],
                self.n_noise_patches,
                self.patch_size,
                rng,
                self.mask_threshold,
                self.mask_dilation,
                self.max_masked_fraction,
                self.noise_source,
            )
            self.train_set = SAXSTrainDataset(
                paths["train"],
                pool,
                self.n_train_signal_patches,
                self.patch_size,
                self.signal_threshold,
                self.amplitude_range,
                self.seed,
                self.normaliser,
                max_memory_mb=self.max_memory_mb,
            )
            self.splits["train"] = self.train_set
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = fixed_pairs(
                paths["val"], self.n_val_patches, seed=self.seed * 1000 + 1, **self._pair_kwargs()
            )
            self.splits["val"] = self.val_set
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = fixed_pairs(
                paths["test"], self.n_test_patches, seed=self.seed * 1000 + 2, **self._pair_kwargs()
            )
            self.splits["test"] = self.test_set
