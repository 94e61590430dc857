"""DataModule bases: the batch contract, and simulated HDF5 data with lazy or in-memory reading.

Batch contract: ``{"input": [B, Cin, h, w], "target": [B, Cout, H, W], <per-sample keys>}``
in model space, ``H = scale * h``. A :class:`LitSRDataModule` declares, as constructor arguments that
model configs interpolate (``${data.scale}``, ``${data.in_channels}``, ...):

* ``scale``, ``in_channels``, ``out_channels``: the sizes nets are built with;
* ``image_channels``: which input channels are the image (the others are auxiliary, e.g. an exposure
  map); baselines and metrics compare those channels with the target;
* ``transform``: the invertible intensity transform physical units <-> model space;
* ``units``: the name of the physical units (written into prediction files);
* ``physical_range``: [lo, hi] of meaningful physical values; ``data_range`` for PSNR/SSIM is its
  image under the transform (never computed by hand).

:class:`SimulatedH5DataModule` adds one HDF5 file described by an :class:`~lit_sr.data.h5store.H5Schema`:
the default file is simulated once (with progress) when absent or incomplete, a user's file
(``file=...``) is validated and never modified, splits are a reproducible permutation, and each split
is an :class:`H5RowsDataset`: held in memory when it fits in ``max_memory_mb``, else read lazily from
a handle kept open per process. Subclasses declare ``schema()``, the default file and ``simulate()``,
and build batches vectorised with a picklable ``batch_builder()`` (it runs in DataLoader workers).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import h5py
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lit_sr.data.h5store import FileInfo, H5Schema, ensure_simulated, is_complete
from lit_sr.data.rng import stream_rng
from lit_sr.data.validate import DataFileError, require_file
from lit_sr.utils.errors import ConfigError
from lit_sr.utils.parallel import ordered_map

log = logging.getLogger("lit_sr")

SPLITS = ("train", "val", "test")
# h5py chunk cache per open dataset, and our cache of decoded chunks, for files read lazily.
CHUNK_CACHE_BYTES = 64 * 1024**2
LAZY_CACHE_BYTES = 256 * 1024**2

BatchBuilder = Callable[[Mapping[str, np.ndarray], np.ndarray, "np.random.Generator | None"], dict]


def pass_batch(batch: Any) -> Any:
    """``collate_fn`` for datasets whose ``__getitems__`` already returns a whole batch."""
    return batch


class LitSRDataModule(L.LightningDataModule):
    """Loader settings and the declarations of the batch contract (see the module docstring)."""

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        scale: int = 1,
        in_channels: int = 1,
        out_channels: int = 1,
        image_channels: Sequence[int] | None = None,
        transform: torch.nn.Module | None = None,
        units: str = "",
        physical_range: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers)
        self.scale = int(scale)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.image_channels = tuple(
            int(c) for c in (image_channels if image_channels is not None else range(min(in_channels, out_channels)))
        )
        if any(c < 0 or c >= self.in_channels for c in self.image_channels):
            raise ValueError(
                f"data.image_channels={list(self.image_channels)}: expected indices of the "
                f"{self.in_channels} input channels"
            )
        self.transform = transform
        self.units = units
        self.physical_range = tuple(float(v) for v in physical_range) if physical_range is not None else None
        self.splits: dict[str, Dataset] = {}

    def dataloader(self, split: str, shuffle: bool, batch_size: int | None = None) -> DataLoader:
        """A loader of ``splits[split]``. A lazily read HDF5 split is shuffled chunk-wise
        (:class:`ChunkShuffleSampler`); one held in memory, and any dataset with a ``preload()`` method,
        is preloaded here, before workers start. A dataset with ``__getitems__`` builds whole batches."""
        ds = self.splits[split]
        bs = batch_size or (self.batch_size if split == "train" else self.eval_batch_size)
        batched = callable(getattr(ds, "__getitems__", None))
        sampler = None
        if isinstance(ds, H5RowsDataset):
            if ds.in_memory:
                ds.preload()  # forked workers share these arrays instead of reading their own copies
            elif shuffle:
                sampler, shuffle = ChunkShuffleSampler(len(ds), ds.chunk_rows()), False
        elif callable(getattr(ds, "preload", None)):
            ds.preload()  # any other dataset that caches what it reads: fill the cache before workers fork
        return DataLoader(
            ds,
            batch_size=bs,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            drop_last=split == "train" and len(ds) > bs,
            collate_fn=pass_batch if batched else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self.dataloader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self.dataloader("test", False)

    def predict_dataloader(self) -> DataLoader:
        return self.dataloader("test", False)

    def check_batch(self, batch: Mapping[str, torch.Tensor], where: str = "batch") -> None:
        """Fail clearly when data and declarations disagree (e.g. a config's scale or channels)."""
        x, y = batch.get("input"), batch.get("target")
        if x is None or y is None:
            return
        if x.shape[1] != self.in_channels or y.shape[1] != self.out_channels:
            raise ConfigError(
                f"{where}: input has {x.shape[1]} channels and target {y.shape[1]}; the data config "
                f"declares in_channels={self.in_channels}, out_channels={self.out_channels}"
            )
        if tuple(y.shape[-2:]) != (x.shape[-2] * self.scale, x.shape[-1] * self.scale):
            raise ConfigError(
                f"{where}: target {tuple(y.shape[-2:])} is not scale={self.scale} x input {tuple(x.shape[-2:])}"
            )


class OpenH5File:
    """An HDF5 file and its datasets, opened on first use in each process and kept open.

    Keeping the *dataset* objects open matters: HDF5's chunk cache belongs to an open dataset, so
    ``file[name]`` per batch (a new dataset handle each time) decompresses every touched chunk again.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._h5: h5py.File | None = None
        self._datasets: dict[str, h5py.Dataset] = {}
        self._pid: int | None = None

    def get(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = h5py.File(self.path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES, rdcc_nslots=100_003)
            self._datasets = {}
            self._pid = os.getpid()
        return self._h5

    def dataset(self, name: str) -> h5py.Dataset:
        h5 = self.get()
        if name not in self._datasets:
            self._datasets[name] = h5[name]
        return self._datasets[name]

    def __getstate__(self) -> dict:  # an open handle cannot cross into a worker process
        return {"path": self.path, "_h5": None, "_datasets": {}, "_pid": None}


class H5RowsDataset(Dataset):
    """Rows ``rows`` of the datasets ``fields`` of one HDF5 file, served as whole batches.

    ``__getitems__(positions)`` (what the DataLoader calls with a batch of indices) reads every field
    for those rows and hands the arrays to ``builder(raw, rows, rng)``, which returns the batch dict
    (vectorised transforms and augmentation). ``rng`` is a stream that differs per DDP rank and per
    DataLoader worker and changes every epoch in workers (None when ``augment`` is off).

    A split whose fields fit in ``max_memory_mb`` is read into memory once (chunk by chunk straight into
    the final arrays; :meth:`preload` does it in the main process so forked DataLoader workers share
    it); larger splits are read lazily from a handle kept open, whole chunks at a time (pair them with
    :class:`ChunkShuffleSampler` so a batch touches few chunks).
    """

    def __init__(
        self,
        path: str | Path,
        rows: Sequence[int],
        fields: Sequence[str],
        builder: BatchBuilder,
        augment: bool = False,
        seed: int = 0,
        max_memory_mb: float = 1024.0,
    ) -> None:
        self.file = OpenH5File(path)
        self.indices = np.asarray(rows, dtype=np.int64)
        self.fields = tuple(fields)
        self.builder = builder
        self.augment = augment
        self.seed = int(seed)
        self.max_memory_mb = float(max_memory_mb)
        self._cache: dict[str, np.ndarray] | None = None
        self._chunks: OrderedDict | None = None  # lazy path: decoded chunks, per process
        self._chunks_pid: int | None = None
        self._rng: np.random.Generator | None = None
        self._rng_key: tuple | None = None

    @property
    def path(self) -> str:
        return self.file.path

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if not state["_cache"]:
            state["_cache"] = None  # lazy, or not read yet: each process decides and reads for itself
        state["_chunks"] = None
        return state

    def _generator(self) -> np.random.Generator | None:
        if not self.augment:
            return None
        info = torch.utils.data.get_worker_info()
        # In a worker torch's seed changes every epoch; mixing it in gives fresh draws each epoch.
        key = (torch.initial_seed() if info is not None else None,)
        if self._rng is None or key != self._rng_key:
            self._rng = stream_rng(self.seed, *(k & 0xFFFFFFFF for k in key if k is not None))
            self._rng_key = key
        return self._rng

    def nbytes(self) -> int:
        h5 = self.file.get()
        return sum(h5[n].dtype.itemsize * int(np.prod(h5[n].shape[1:], dtype=np.int64)) for n in self.fields) * len(
            self.indices
        )

    @property
    def in_memory(self) -> bool:
        """Whether this split is (or will be) held in memory (decided by ``max_memory_mb``)."""
        return self.nbytes() <= self.max_memory_mb * 1024**2

    def chunk_rows(self) -> int:
        """Samples per HDF5 chunk along the sample axis (of the shards for a sharded file; 1 if unchunked)."""
        ds = self.file.dataset(self.fields[0])
        return int(ds.chunks[0]) if ds.chunks else int(ds.attrs.get("chunk_rows", 1))

    def preload(self) -> None:
        """Read the split into memory now if it fits (e.g. in the main process before DataLoader workers
        fork, so they share the arrays instead of each reading its own copy)."""
        if self._cache is None:
            self._fill_cache()

    def _fill_cache(self) -> None:
        if not self.in_memory:
            self._cache = {}
            return
        h5 = self.file.get()
        lo, hi = int(self.indices.min()), int(self.indices.max()) + 1
        cache = {}
        for name in self.fields:
            ds = h5[name]
            out = np.empty((len(self.indices), *ds.shape[1:]), dtype=ds.dtype)
            # read chunk-sized row ranges straight into the output: no second copy of the split
            step = max(1, self.chunk_rows() if ds.chunks or "chunk_rows" in ds.attrs else 4096)
            for start in range(lo - lo % step, hi, step):
                a, b = np.searchsorted(self.indices, [start, start + step])  # indices are sorted
                if b > a:
                    out[a:b] = ds[start : min(start + step, hi)][self.indices[a:b] - start]
            cache[name] = out
        self._cache = cache

    def read(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """Every field at the given positions of the split (in the given order)."""
        if self._cache is None:
            self._fill_cache()
        if self._cache:
            return {n: self._cache[n][positions] for n in self.fields}
        return self._read_chunks(self.indices[positions])

    def _read_chunks(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Lazy read: every touched chunk is decompressed once into a small LRU of decoded chunks (all
        fields of a chunk together, ``LAZY_CACHE_BYTES`` at most), then the rows are picked in numpy:
        far cheaper than an h5py point selection of scattered rows, which inflates a chunk per row."""
        step = self.chunk_rows()
        chunk_of = rows // step
        out = {
            name: np.empty((len(rows), *self.file.dataset(name).shape[1:]), self.file.dataset(name).dtype)
            for name in self.fields
        }
        for c in np.unique(chunk_of):
            chunk = self._decoded_chunk(int(c), step)
            sel = chunk_of == c
            local = rows[sel] - int(c) * step
            for name in self.fields:
                out[name][sel] = chunk[name][local]
        return out

    def _decoded_chunk(self, c: int, step: int) -> dict[str, np.ndarray]:
        if self._chunks is None or self._chunks_pid != os.getpid():
            self._chunks, self._chunks_pid = OrderedDict(), os.getpid()
        if c in self._chunks:
            self._chunks.move_to_end(c)
            return self._chunks[c]
        chunk = {name: self.file.dataset(name)[c * step : (c + 1) * step] for name in self.fields}
        self._chunks[c] = chunk
        size = sum(a.nbytes for a in chunk.values())
        while len(self._chunks) > 1 and size * len(self._chunks) > LAZY_CACHE_BYTES:
            self._chunks.popitem(last=False)
        return chunk

    def __getitems__(self, positions: Sequence[int]) -> dict[str, torch.Tensor]:
        positions = np.asarray(positions, dtype=np.int64)
        return self.builder(self.read(positions), self.indices[positions], self._generator())

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        """One sample (the batch of one, without its batch axis)."""
        return {k: v[0] for k, v in self.__getitems__([position]).items()}


class ChunkShuffleSampler(torch.utils.data.Sampler[int]):
    """Shuffled order that reads an HDF5 file chunk by chunk: windows of ``window`` consecutive chunks (in
    a random order of windows) with the samples of each window shuffled together.

    A batch then touches at most ``window`` chunks instead of one chunk per sample, so lazily read data
    (larger than memory) costs one decompression per chunk per epoch. Samples mix within windows of
    ``window * chunk_rows`` consecutive rows; the simulators write shuffled events, so classes and
    parameters are mixed in every window. A fresh order every epoch (``set_epoch`` or the global torch
    RNG, as RandomSampler).
    """

    def __init__(self, n: int, chunk_rows: int, window: int = 8, seed: int | None = None) -> None:
        self.n, self.chunk_rows, self.window = int(n), max(1, int(chunk_rows)), max(1, int(window))
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        if self.seed is None:
            g = np.random.default_rng(int(torch.empty((), dtype=torch.int64).random_().item()))
        else:
            g = np.random.default_rng([self.seed, self.epoch])
        span = self.chunk_rows * self.window
        starts = np.arange(0, self.n, span)
        for start in g.permutation(starts):
            yield from (start + g.permutation(min(span, self.n - start))).tolist()


class SimulatedH5DataModule(LitSRDataModule):
    """HDF5 data files: simulated by default, or a user's files in the same layout.

    Two layouts: one file whose samples are split by ``split`` fractions (key ``"all"``), or one file
    per split (keys ``"train"``, ``"val"``, ``"test"``; ``default_file_names`` says which). Subclasses
    implement ``schema()``, ``default_file_names()``, ``n_default(key)``, ``simulate(key)`` (an iterator of
    blocks: dicts of arrays with the schema's names), ``simulation_attrs(key)`` and either
    ``batch_builder(augment)`` (one file split by fractions) or ``build_splits(stage)`` (their own
    datasets). Everything else (simulate once, validate, split, read) is here.

    Args:
        data_dir: folder of the default simulated files.
        file: a user's HDF5 file in the same layout, or ``{split: file}`` for per-split files (splits not
            given use the simulated default); validated, never simulated over, never modified.
        split: train/val/test fractions of a single file; the permutation is fixed by ``split_seed``.
        max_samples: use only the first N samples of the file (quick runs).
        max_memory_mb: a split up to this size is held in memory per reading process.
        augment: random augmentation of the training split (what it is: the subclass's builder).
        augment_seed: base seed of the augmentation streams (mixed with rank and worker).
        sim_workers: processes that simulate the default files (same file as one process).
        shard_gb: a default single file larger than this is written as shards of about this size behind
            one index file (HDF5 virtual datasets), read as one dataset; null: never shard.
    """

    what = "data file"

    def __init__(
        self,
        data_dir: str = "data",
        file: str | Mapping[str, str | None] | None = None,
        split: Sequence[float] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        max_samples: int | None = None,
        max_memory_mb: float = 1024.0,
        augment: bool = False,
        augment_seed: int = 0,
        sim_workers: int = 1,
        shard_gb: float | None = 4.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.sim_workers = max(1, int(sim_workers))
        self.shard_gb = shard_gb
        if len(split) != 3 or abs(sum(split) - 1.0) > 1e-6 or min(split) < 0:
            raise ValueError(f"data.split must be three non-negative fractions summing to 1, got {list(split)}")
        self.data_dir = Path(data_dir)
        self.user_file = file
        self.split = tuple(float(s) for s in split)
        self.split_seed = int(split_seed)
        self.max_samples = max_samples
        self.max_memory_mb = float(max_memory_mb)
        self.augment = bool(augment)
        self.augment_seed = int(augment_seed)
        self.info: dict[str, FileInfo] = {}

    # ------------------------------------------------------------------ subclass API
    def schema(self) -> H5Schema:
        raise NotImplementedError

    def default_file_names(self) -> dict[str, str]:
        """``{"all": name}`` (one file split by fractions) or ``{"train": ..., "val": ..., "test": ...}``."""
        raise NotImplementedError

    def n_default(self, key: str) -> int | Mapping[str, int]:
        """Samples of the default file ``key`` (or ``{group: samples}``)."""
        raise NotImplementedError

    def simulate(self, key: str) -> Iterator[Mapping[str, np.ndarray]]:
        """Blocks of the default file ``key`` in order. Default: :meth:`simulate_blocks` computed in
        ``sim_workers`` processes (results in order, so the file is the serial one)."""
        blocks = self.simulate_blocks(key)
        if blocks is None:
            raise NotImplementedError(f"{type(self).__name__} implements neither simulate() nor simulate_blocks()")
        fn, n_blocks = blocks
        return ordered_map(fn, range(n_blocks), self.sim_workers)

    def simulate_blocks(self, key: str) -> tuple[Callable[[int], Mapping[str, np.ndarray]], int] | None:
        """``(block function, number of blocks)``: block ``b`` computed on its own random streams, so
        blocks can be simulated in parallel processes (a picklable function, e.g. a functools.partial of
        a module-level one). None: only ``simulate`` (serial)."""
        return None

    def simulation_attrs(self, key: str) -> dict[str, Any]:
        """Provenance written into a default file (simulator, version, seed, config, units)."""
        return {}

    def write_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~lit_sr.data.h5store.write_h5` (chunking, compression, shapes)."""
        return {}

    def batch_builder(self, augment: bool) -> BatchBuilder:
        raise NotImplementedError

    # ------------------------------------------------------------------ files
    def user_files(self) -> dict[str, Path]:
        if self.user_file is None:
            return {}
        if isinstance(self.user_file, (str, os.PathLike)):
            return {"all": Path(self.user_file)}
        keys = set(self.default_file_names())
        unknown = sorted(set(self.user_file) - keys)
        if unknown:
            raise ConfigError(f"data.file: unknown key(s) {unknown}; expected some of {sorted(keys)}")
        return {k: Path(v) for k, v in self.user_file.items() if v}

    @property
    def paths(self) -> dict[str, Path]:
        """The file of every key: the user's where given, else the simulated default under ``data_dir``."""
        user = self.user_files()
        if "all" in user and "all" not in self.default_file_names():
            raise ConfigError(
                f"data.file: this data module reads one file per split; give "
                f"{{{', '.join(self.default_file_names())}}} instead of one file"
            )
        return {k: user.get(k, self.data_dir / name) for k, name in self.default_file_names().items()}

    @property
    def path(self) -> Path:
        """The single data file (one-file layout)."""
        return self.paths["all"]

    def prepare_data(self) -> None:
        """Simulate default files that are absent or incomplete (Lightning runs this on one process)."""
        user = self.user_files()
        for key, path in self.paths.items():
            if key in user:
                require_file(path, f"{self.what} (data.file{'' if key == 'all' else '.' + key})")
                continue
            n = self.n_default(key)
            ensure_simulated(
                path,
                self.schema(),
                n,
                lambda key=key: self.simulate(key),
                self.simulation_attrs(key),
                description=f"simulating the default {self.what} ({key})",
                shard_samples=self.shard_samples(n),
                **self.write_options(),
            )

    def shard_samples(self, n: int | Mapping[str, int]) -> int | None:
        """Samples per shard so a shard stays under ``shard_gb`` (None: one file)."""
        if not self.shard_gb or not isinstance(n, int):
            return None
        per_sample = sum(
            int(np.prod([d for d in f.shape if d], dtype=np.int64)) * np.dtype(f.dtype).itemsize
            for f in self.schema().fields
        )
        limit = int(self.shard_gb * 1024**3 // max(1, per_sample))
        return limit if n > limit else None

    def setup(self, stage: str | None = None) -> None:
        user = self.user_files()
        for key, path in self.paths.items():
            if key in self.info:
                continue
            if key not in user and not is_complete(path, self.schema()):  # never train on a half-written file
                raise DataFileError(path, None, "default dataset is missing or incomplete; run prepare_data()")
            self.info[key] = self.schema().validate(path)
            self.check_file(key, self.info[key])
        self.build_splits(stage)

    def check_file(self, key: str, info: FileInfo) -> None:
        """Checks beyond the schema (e.g. image sizes that must agree with ``scale``); default none."""

    def build_splits(self, stage: str | None) -> None:
        """One file, split by fractions into :class:`H5RowsDataset`s."""
        if self.splits:
            return
        info = self.info["all"]
        n = info.n if self.max_samples is None else min(info.n, int(self.max_samples))
        perm = np.random.default_rng(self.split_seed).permutation(n)
        n_train, n_val = int(round(self.split[0] * n)), int(round(self.split[1] * n))
        parts = {"train": perm[:n_train], "val": perm[n_train : n_train + n_val], "test": perm[n_train + n_val :]}
        for name, rows in parts.items():
            augment = self.augment and name == "train"
            self.splits[name] = H5RowsDataset(
                info.path,
                np.sort(rows),
                info.fields,
                self.batch_builder(augment),
                augment=augment,
                seed=self.augment_seed,
                max_memory_mb=self.max_memory_mb,
            )
        missing = [f.name for f in self.schema().fields if not f.required and f.name not in info.fields]
        if missing:
            log.warning("%s has no %s: metrics that need them are skipped", info.path, ", ".join(missing))
