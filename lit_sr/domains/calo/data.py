"""Calorimeter LR/HR pairs from HDF5: lazy reader, validation, D4 augmentation and the DataModule.

File layout (written by ``calo_sim.write_calo_h5`` or by a user): ``hr`` (N,24,24) and ``lr`` (N,6,6)
in GeV, ``label`` (N,) 0 photon / 1 pion, ``impact_cm`` (N,2) true (x, y) in cm from the window
centre (x along columns), ``energy_gev`` (N,). ``impact_cm``, ``label`` and ``energy_gev`` are
optional for user files; metrics that need them are then skipped.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

import h5py
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lit_sr.data.rng import stream_rng
from lit_sr.data.transforms import IntensityTransform
from lit_sr.data.validate import (DataFileError, require_dataset, require_file, require_finite,
                                  require_same_length)

log = logging.getLogger(__name__)

OPTIONAL_FIELDS = ("label", "impact_cm", "energy_gev")
# h5py chunk cache per open file, for files read lazily batch by batch.
CHUNK_CACHE_BYTES = 256 * 1024**2


def validate_calo_file(path: str | Path, hr_pixels: int = 24, lr_pixels: int = 6,
                       check_finite: bool = True) -> dict[str, Any]:
    """Check a calorimeter file's layout and values; return {n, fields present}.

    Raises DataFileError naming the file, the dataset and what was expected.
    """
    path = require_file(path, "calorimeter data file")
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise DataFileError(path, None, f"cannot be opened as HDF5 ({err})") from err
    with h5:
        hr = require_dataset(h5, path, "hr", ndim=3, tail_shape=(hr_pixels, hr_pixels))
        lr = require_dataset(h5, path, "lr", ndim=3, tail_shape=(lr_pixels, lr_pixels))
        lengths = {"hr": hr.shape[0], "lr": lr.shape[0]}
        present = []
        for name in OPTIONAL_FIELDS:
            if name in h5:
                tail = (2,) if name == "impact_cm" else ()
                ds = require_dataset(h5, path, name, ndim=1 + len(tail), tail_shape=tail or None)
                lengths[name] = ds.shape[0]
                present.append(name)
        n = require_same_length(path, lengths)
        if n == 0:
            raise DataFileError(path, "hr", "contains no events (expected N > 0)")
        if check_finite:
            for name in ("hr", "lr", *[p for p in present if p != "label"]):
                require_finite(h5[name], path, name)
        if "label" in present:
            labels = np.unique(h5["label"][:])
            if not set(labels.tolist()) <= {0, 1}:
                raise DataFileError(path, "label", f"expected values 0 (photon) or 1 (pion), found {labels[:10]}")
    return {"n": n, "fields": present}


class CaloPairDataset(Dataset):
    """Lazy HDF5 reader of LR/HR pairs; every worker process opens its own file handle.

    ``augment`` applies a random element of the square's symmetry group D4 (flips, transposition)
    to LR, HR and ``impact_cm`` alike; valid because the detector is a square grid hit at normal
    incidence and the window is centred. The random stream differs per DDP rank and worker.
    """

    def __init__(self, path: str | Path, indices: Sequence[int], transform: IntensityTransform,
                 fields_present: Sequence[str] = OPTIONAL_FIELDS, augment: bool = False, seed: int = 0,
                 max_memory_mb: float = 1024.0) -> None:
        self.path = str(path)
        self.max_memory_mb = max_memory_mb
        self._cache: dict[str, np.ndarray] | None = None
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform
        self.fields = tuple(fields_present)
        self.augment = augment
        self.seed = seed
        self._h5: h5py.File | None = None
        self._rng: np.random.Generator | None = None
        self._rng_key: tuple | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def _file(self) -> h5py.File:
        if self._h5 is None:  # opened lazily, i.e. inside the worker that reads
            self._h5 = h5py.File(self.path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES, rdcc_nslots=100_003)
        return self._h5

    def _generator(self) -> np.random.Generator:
        info = torch.utils.data.get_worker_info()
        # In a worker torch's seed changes every epoch; mixing it in gives fresh flips each epoch.
        key = (torch.initial_seed() if info is not None else None,)
        if self._rng is None or key != self._rng_key:
            self._rng = stream_rng(self.seed, *(k & 0xFFFFFFFF for k in key if k is not None))
            self._rng_key = key
        return self._rng

    def __getstate__(self) -> dict:  # h5py handles cannot be pickled into workers
        state = dict(self.__dict__)
        state["_h5"] = None
        state["_cache"] = None
        return state

    def _rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The requested events of every field.

        A split that fits in ``max_memory_mb`` is read whole on first use (in the process that reads):
        random batches from a gzip-chunked file otherwise cost one chunk inflation per event.
        Larger files are read batch by batch with one sorted fancy-index read per dataset.
        """
        names = ("hr", "lr", *self.fields)
        h5 = self._file()
        if self._cache is None:
            nbytes = sum(h5[n].dtype.itemsize * int(np.prod(h5[n].shape[1:])) for n in names) * len(self.indices)
            if nbytes <= self.max_memory_mb * 1024**2:
                lo, hi = int(self.indices.min()), int(self.indices.max()) + 1
                self._cache = {n: h5[n][lo:hi][self.indices - lo] for n in names}
                self._row_of = {int(r): k for k, r in enumerate(self.indices)}
            else:
                self._cache = {}
        if self._cache:
            pos = np.fromiter((self._row_of[int(r)] for r in rows), dtype=np.int64, count=len(rows))
            return {n: self._cache[n][pos] for n in names}
        order = np.argsort(rows, kind="stable")
        unique_rows, inverse = np.unique(rows[order], return_inverse=True)
        restore = np.empty_like(order)
        restore[order] = np.arange(len(order))
        return {n: h5[n][unique_rows][inverse][restore] for n in names}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([i])[0]

    def __getitems__(self, items: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """Batched read (DataLoader calls this with a whole batch of indices)."""
        rows = self.indices[np.asarray(items, dtype=np.int64)]
        data = self._rows(rows)
        return [self._item({name: arr[k] for name, arr in data.items()}, int(rows[k])) for k in range(len(rows))]

    def _item(self, raw: dict[str, np.ndarray], row: int) -> dict[str, torch.Tensor]:
        hr = torch.from_numpy(np.asarray(raw["hr"], dtype=np.float32))[None]
        lr = torch.from_numpy(np.asarray(raw["lr"], dtype=np.float32))[None]
        impact = np.asarray(raw["impact_cm"], dtype=np.float32).copy() if "impact_cm" in raw else None
        if self.augment:
            flip_x, flip_y, transpose = self._generator().integers(0, 2, size=3)
            if transpose:  # swap rows and columns: x <-> y
                hr, lr = hr.transpose(-1, -2), lr.transpose(-1, -2)
                if impact is not None:
                    impact = impact[::-1].copy()
            if flip_x:  # reverse columns: x -> -x
                hr, lr = hr.flip(-1), lr.flip(-1)
                if impact is not None:
                    impact[0] = -impact[0]
            if flip_y:  # reverse rows: y -> -y
                hr, lr = hr.flip(-2), lr.flip(-2)
                if impact is not None:
                    impact[1] = -impact[1]
        item = {"input": self.transform(lr.contiguous()), "target": self.transform(hr.contiguous()),
                "index": torch.tensor(row, dtype=torch.long)}
        if "label" in raw:
            item["label"] = torch.tensor(int(raw["label"]), dtype=torch.long)
        if impact is not None:
            item["impact_cm"] = torch.from_numpy(impact)
        if "energy_gev" in raw:
            item["energy_gev"] = torch.tensor(float(raw["energy_gev"]), dtype=torch.float32)
        return item


class CaloDataModule(L.LightningDataModule):
    """Calorimeter SR data: simulates the default file once under ``data_dir`` if absent.

    Args:
        data_dir: folder of the default simulated file.
        file: a user's HDF5 file in the same layout (never simulated, never modified).
        n_per_class: events per class (photons, pions) of the default file.
        sim_seed: simulator seed of the default file (part of its name).
        sim: keyword overrides of ``CaloSimConfig`` (energy_gev, noise in MeV, ...).
        split: train/val/test fractions; the permutation is fixed by ``split_seed``.
        transform: intensity transform GeV -> model space (default divide by 20 GeV).
        augment: random D4 symmetry on the training split.
        max_events: use only the first N events of the file (quick runs).
        max_memory_mb: a split up to this size is held in memory per reading process.
    """

    def __init__(self, data_dir: str = "data", file: str | None = None, n_per_class: int = 20000,
                 sim_seed: int = 0, sim: dict | None = None, split: Sequence[float] = (0.8, 0.1, 0.1),
                 split_seed: int = 0, transform: IntensityTransform | None = None, augment: bool = True,
                 batch_size: int = 64, eval_batch_size: int | None = None, num_workers: int = 0,
                 pin_memory: bool = False, max_events: int | None = None, augment_seed: int = 0,
                 max_memory_mb: float = 1024.0) -> None:
        super().__init__()
        if len(split) != 3 or abs(sum(split) - 1.0) > 1e-6 or min(split) < 0:
            raise ValueError(f"data.split must be three non-negative fractions summing to 1, got {list(split)}")
        self.data_dir = Path(data_dir)
        self.user_file = file
        self.n_per_class = n_per_class
        self.sim_seed = sim_seed
        self.sim_overrides = dict(sim or {})
        self.split = tuple(split)
        self.split_seed = split_seed
        self.transform = transform if transform is not None else IntensityTransform(20.0)
        self.augment = augment
        self.augment_seed = augment_seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.max_events = max_events
        self.max_memory_mb = max_memory_mb
        self.info: dict[str, Any] = {}
        self.splits: dict[str, CaloPairDataset] = {}

    # ------------------------------------------------------------------ files
    def sim_config(self):
        from lit_sr.domains.calo.sim import CaloSimConfig

        known = {f.name for f in fields(CaloSimConfig)}
        unknown = sorted(set(self.sim_overrides) - known)
        if unknown:
            raise ValueError(f"data.sim: unknown simulator option(s) {unknown}; known: {sorted(known)}")
        return CaloSimConfig(**self.sim_overrides)

    @property
    def path(self) -> Path:
        if self.user_file is not None:
            return Path(self.user_file)
        from lit_sr.domains.calo.sim import SIMULATOR_VERSION

        tag = "_".join(f"{k}{v}" for k, v in sorted(self.sim_overrides.items()))
        name = f"calo_{self.n_per_class}x2_seed{self.sim_seed}_v{SIMULATOR_VERSION}{'_' + tag if tag else ''}.h5"
        return self.data_dir / name

    def prepare_data(self) -> None:
        """Simulate the default file if it is absent or was left incomplete (runs on rank 0 only)."""
        if self.user_file is not None:
            require_file(self.user_file, "calorimeter data file (data.file)")
            return
        from lit_sr.domains.calo.sim import is_complete_calo_file, write_calo_h5

        path = self.path
        if is_complete_calo_file(path):
            return
        if path.exists():
            log.warning("%s is incomplete (interrupted simulation?); simulating it again", path)
            path.unlink()
        log.info("Simulating the default calorimeter dataset: %d photons + %d pions -> %s",
                 self.n_per_class, self.n_per_class, path)
        write_calo_h5(path, self.n_per_class, self.sim_seed, self.sim_config(), progress=True)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        path = self.path
        if self.user_file is None:
            from lit_sr.domains.calo.sim import is_complete_calo_file

            if not is_complete_calo_file(path):  # never train on a half-written file
                raise DataFileError(path, None, "default dataset is missing or incomplete; run prepare_data()")
        self.info = validate_calo_file(path)
        n = self.info["n"] if self.max_events is None else min(self.info["n"], int(self.max_events))
        perm = np.random.default_rng(self.split_seed).permutation(n)
        n_train = int(round(self.split[0] * n))
        n_val = int(round(self.split[1] * n))
        parts = {"train": perm[:n_train], "val": perm[n_train:n_train + n_val], "test": perm[n_train + n_val:]}
        for name, idx in parts.items():
            self.splits[name] = CaloPairDataset(path, np.sort(idx), self.transform, self.info["fields"],
                                                augment=self.augment and name == "train", seed=self.augment_seed,
                                                max_memory_mb=self.max_memory_mb)
        missing = [f for f in OPTIONAL_FIELDS if f not in self.info["fields"]]
        if missing:
            log.warning("%s has no %s: metrics that need them are skipped", path, ", ".join(missing))

    # ------------------------------------------------------------------ loaders
    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(self.splits[split], batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0,
                          drop_last=shuffle and len(self.splits[split]) > batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", False, self.eval_batch_size)
