"""HDF5 datasets described by a schema: validation, atomic simulated writes, completeness.

A :class:`H5Schema` lists the datasets of a file (:class:`Field`: name, per-sample shape, dtype,
value checks, units). It validates a user's file block by block (memory stays flat whatever the
file size) and raises one :class:`~lit_sr.data.validate.DataFileError` naming the file, the field and
what was expected. :func:`write_h5` writes simulated blocks atomically, chunked and compressed, with
provenance attributes and ``complete = True`` written last, so a killed simulation is never mistaken
for a dataset (:func:`is_complete`), and :func:`ensure_simulated` re-simulates such a file.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import h5py
import numpy as np

from lit_sr.data.validate import DataFileError, require_dataset, require_file
from lit_sr.utils.atomic import atomic_path
from lit_sr.utils.progress import track

log = logging.getLogger("lit_sr")

COMPLETE_ATTR = "complete"
# Bytes read per block during validation: keeps the resident memory flat for files larger than RAM.
VALIDATION_BLOCK_BYTES = 16 * 1024**2


@dataclass(frozen=True)
class Field:
    """One dataset of a file: ``N`` samples of ``shape`` (None = any size, e.g. a user's image size).

    Args:
        name: dataset name in the file.
        shape: per-sample shape; () for one number per sample.
        dtype: numpy dtype used when writing simulated files.
        required: a user's file must have it (optional fields switch metrics off when absent).
        finite: reject NaN / Inf.
        nonnegative: reject values below 0 (counts, energies).
        allowed: allowed values (class labels); ``allowed_names`` name them in messages.
        units: physical units (written to the file's attributes).
        per_sample_key: travels into batches and prediction files beside the images.
        group: fields of one group have one entry per sample each (the same length); a file may hold
            several groups (e.g. X-ray-only frames and full shots).
    """

    name: str
    shape: tuple[int | None, ...] = ()
    dtype: str = "float32"
    required: bool = True
    finite: bool = True
    nonnegative: bool = False
    allowed: tuple[int, ...] | None = None
    allowed_names: tuple[str, ...] | None = None
    units: str = ""
    per_sample_key: bool = True
    group: str = "samples"
    description: str = ""

    def allowed_text(self) -> str:
        values = [
            str(v) if self.allowed_names is None else f"{v} ({n})"
            for v, n in zip(self.allowed, self.allowed_names or self.allowed)
        ]
        return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " or " + values[-1]


@dataclass
class FileInfo:
    """What validation found: samples per group (``n``: of the first group), fields present, shapes per sample."""

    path: Path
    n: int
    fields: tuple[str, ...]
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    lengths: dict[str, int] = field(default_factory=dict)


def _rows_per_block(ds: h5py.Dataset) -> int:
    row_bytes = max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64)))
    return max(1, VALIDATION_BLOCK_BYTES // row_bytes)


class H5Schema:
    """The datasets of one kind of file; ``validate`` checks a file against it."""

    def __init__(self, fields: Sequence[Field], what: str = "data file") -> None:
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise ValueError(f"H5Schema: duplicate field names in {names}")
        self.fields = tuple(fields)
        self.what = what

    def __getitem__(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def validate(self, path: str | Path, check_values: bool = True) -> FileInfo:
        """Check layout and values of ``path``; raise DataFileError (file, field, expectation) on the first problem."""
        path = require_file(path, self.what)
        try:
            h5 = h5py.File(path, "r")
        except OSError as err:
            raise DataFileError(path, None, f"cannot be opened as HDF5 ({err})") from err
        with h5:
            lengths: dict[str, int] = {}
            shapes: dict[str, tuple[int, ...]] = {}
            for f in self.fields:
                if f.name not in h5:
                    if f.required:
                        require_dataset(h5, path, f.name)  # raises "dataset missing (present: ...)"
                    continue
                ds = require_dataset(h5, path, f.name, ndim=1 + len(f.shape), tail_shape=f.shape or None)
                lengths[f.name] = ds.shape[0]
                shapes[f.name] = tuple(ds.shape[1:])
            groups: dict[str, dict[str, int]] = {}
            for f in self.fields:
                if f.name in lengths:
                    groups.setdefault(f.group, {})[f.name] = lengths[f.name]
            n_of: dict[str, int] = {}
            for group, members in groups.items():
                values = set(members.values())
                if len(values) > 1:
                    desc = ", ".join(f"{k}={v}" for k, v in members.items())
                    raise DataFileError(
                        path,
                        ",".join(members),
                        f"datasets must have the same number of samples (one entry per event/image), found {desc}",
                    )
                n_of[group] = values.pop()
            empty = [g for g, v in n_of.items() if v == 0]
            if not n_of or empty:
                names = ",".join(k for k in lengths if self[k].group in empty) or None
                raise DataFileError(path, names, "contains no samples (expected N > 0)")
            n = next(iter(n_of.values()))
            if check_values:
                for f in self.fields:
                    if f.name in lengths:
                        self._check_values(h5[f.name], path, f)
        return FileInfo(path=path, n=n, fields=tuple(lengths), shapes=shapes, lengths=n_of)

    @staticmethod
    def _check_values(ds: h5py.Dataset, path: Path, f: Field) -> None:
        if not (f.finite or f.nonnegative or f.allowed is not None):
            return
        rows = _rows_per_block(ds)
        for start in range(0, ds.shape[0], rows):
            block = np.asarray(ds[start : start + rows])
            if f.finite and np.issubdtype(block.dtype, np.floating):
                bad = ~np.isfinite(block)
                if bad.any():
                    local = tuple(int(i) for i in np.argwhere(bad)[0])
                    index = (local[0] + start, *local[1:])
                    raise DataFileError(
                        path, f.name, f"non-finite value {block[local]} at index {index} (expected finite numbers)"
                    )
            if f.nonnegative and block.size and block.min() < 0:
                local = tuple(int(i) for i in np.unravel_index(int(block.argmin()), block.shape))
                index = (local[0] + start, *local[1:])
                raise DataFileError(
                    path,
                    f.name,
                    f"negative value {block[local]} at index {index} "
                    f"(expected values >= 0{' ' + f.units if f.units else ''})",
                )
            if f.allowed is not None:
                found = np.unique(block)
                unknown = np.setdiff1d(found, np.asarray(f.allowed))
                if unknown.size:
                    raise DataFileError(path, f.name, f"expected values {f.allowed_text()}, found {found[:10]}")


def write_h5(
    path: str | Path,
    schema: H5Schema,
    n: int | Mapping[str, int],
    blocks: Iterable[Mapping[str, np.ndarray]],
    attrs: Mapping[str, Any] | None = None,
    description: str | None = None,
    chunk_rows: int = 1024,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    compression: str | None = "gzip",
    progress: bool = True,
) -> Path:
    """Write simulated samples, arriving as blocks of arrays, atomically to ``path``.

    ``n``: samples of the file (one group) or ``{group: samples}``. ``shapes`` gives per-sample shapes
    the schema leaves open (None). Required fields are created before the first block (so an empty
    group still has its datasets), optional ones when a block first carries them; all are chunked along the sample axis (``chunk_rows`` samples per chunk) and,
    unless ``compression=None``, gzip-compressed with the shuffle filter. A block holds arrays for any
    subset of fields; each field is appended in order. ``attrs`` (simulator, version, seed, config, ...;
    dicts and lists stored as JSON) are written, then ``complete = True`` last. The file appears at
    ``path`` only when complete and with exactly the announced number of samples.
    """
    path = Path(path)
    shapes = dict(shapes or {})
    counts = dict(n) if isinstance(n, Mapping) else {group: int(n) for group in {f.group for f in schema.fields}}
    blocks = _started(blocks)
    total = sum(counts.values())
    opts = dict(compression="gzip", compression_opts=4, shuffle=True) if compression == "gzip" else {}

    def create(h5: h5py.File, f: Field, shape: tuple[int, ...]) -> None:
        rows = counts.get(f.group, 0)
        ds = h5.create_dataset(
            f.name,
            shape=(rows, *shape),
            dtype=f.dtype,
            chunks=(min(rows, chunk_rows), *shape) if rows else None,
            **(opts if rows else {}),
        )
        if f.units:
            ds.attrs["units"] = f.units

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        cursor: dict[str, int] = {}
        for f in schema.fields:  # required fields exist even when their group is empty
            if f.required:
                shape = tuple(shapes.get(f.name, f.shape))
                if any(s is None for s in shape):
                    raise ValueError(f"write_h5: the per-sample shape of {f.name!r} is open ({f.shape}); pass shapes=")
                create(h5, f, shape)
                cursor[f.name] = 0
        for block in track(
            blocks,
            total,
            description or f"writing {path.name}",
            unit="samples",
            enabled=progress,
            weight=lambda b: len(next(iter(b.values()))),
        ):
            for name, arr in block.items():
                if name not in cursor:
                    if name not in schema.names:
                        raise ValueError(f"simulated block has {name!r}, which is not in the schema {schema.names}")
                    create(h5, schema[name], tuple(np.asarray(arr).shape[1:]))  # optional, created when first given
                    cursor[name] = 0
                ds = h5[name]
                start = cursor[name]
                stop = start + len(arr)
                if stop > ds.shape[0]:
                    raise ValueError(
                        f"{path}: simulation produced more {name!r} samples than the {ds.shape[0]} announced"
                    )
                ds[start:stop] = np.asarray(arr, dtype=ds.dtype)
                cursor[name] = stop
        short = {k: (c, h5[k].shape[0]) for k, c in cursor.items() if c != h5[k].shape[0]}
        if short:
            raise ValueError(f"{path}: simulation produced fewer samples than announced (written, expected): {short}")
        for key, value in (attrs or {}).items():
            h5.attrs[key] = json.dumps(value) if isinstance(value, (dict, list, tuple)) else value
        h5.attrs[COMPLETE_ATTR] = True  # last: a file without it was never finished
    return path


def _started(blocks: Iterable[Mapping[str, np.ndarray]]) -> Iterator[Mapping[str, np.ndarray]]:
    """The blocks with the first one computed now, before any output file is opened: a simulator that
    forks worker processes on its first block must not fork while an HDF5 file is open (the children
    would keep its descriptor and its lock)."""
    blocks = iter(blocks)
    first = next(blocks, None)
    return iter(()) if first is None else itertools.chain([first], blocks)


def _take(blocks: Iterator[Mapping[str, np.ndarray]], n: int, carry: list) -> Iterator[dict[str, np.ndarray]]:
    """Exactly ``n`` samples from a stream of blocks; what is left of the last block goes to ``carry``."""
    left = n
    while left > 0:
        block = carry.pop() if carry else next(blocks, None)
        if block is None:
            return
        m = len(next(iter(block.values())))
        if m > left:
            yield {k: v[:left] for k, v in block.items()}
            carry.append({k: v[left:] for k, v in block.items()})
            return
        yield dict(block)
        left -= m


def write_sharded_h5(
    path: str | Path,
    schema: H5Schema,
    n: int,
    blocks: Iterable[Mapping[str, np.ndarray]],
    shard_samples: int,
    attrs: Mapping[str, Any] | None = None,
    description: str | None = None,
    progress: bool = True,
    **write_kwargs: Any,
) -> Path:
    """Write ``n`` samples as shards of ``shard_samples`` (``<stem>.shard000.h5``, ...), each complete on its
    own, plus ``path``: an index file whose HDF5 virtual datasets map the shards into one dataset per
    field, so readers open ``path`` as if it were one file. One group of fields only.
    """
    if len({f.group for f in schema.fields}) != 1:
        raise ValueError("write_sharded_h5: one group of fields only")
    path = Path(path)
    stream = iter(
        track(
            _started(blocks),
            n,
            description or f"writing {path.name}",
            unit="samples",
            enabled=progress,
            weight=lambda b: len(next(iter(b.values()))),
        )
    )
    carry: list = []
    shards: list[tuple[Path, int]] = []
    for k, start in enumerate(range(0, n, shard_samples)):
        m = min(shard_samples, n - start)
        shard = path.with_name(f"{path.stem}.shard{k:03d}{path.suffix}")
        write_h5(
            shard,
            schema,
            m,
            _take(stream, m, carry),
            attrs={**(attrs or {}), "shard": k},
            progress=False,
            **write_kwargs,
        )
        shards.append((shard, m))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        with h5py.File(shards[0][0], "r") as first:
            layouts = {name: (first[name].shape[1:], first[name].dtype, first[name].chunks) for name in first}
        for name, (shape, dtype, chunks) in layouts.items():
            layout = h5py.VirtualLayout(shape=(n, *shape), dtype=dtype)
            start = 0
            for shard, m in shards:
                # relative source names: the library finds them beside the index file
                layout[start : start + m] = h5py.VirtualSource(shard.name, name, shape=(m, *shape))
                start += m
            ds = h5.create_virtual_dataset(name, layout)
            ds.attrs["chunk_rows"] = int(chunks[0]) if chunks else 1
            if name in schema.names and schema[name].units:
                ds.attrs["units"] = schema[name].units
        for key, value in (attrs or {}).items():
            h5.attrs[key] = json.dumps(value) if isinstance(value, (dict, list, tuple)) else value
        h5.attrs["shards"] = json.dumps([s.name for s, _ in shards])
        h5.attrs[COMPLETE_ATTR] = True
    return path


def is_complete(path: str | Path, schema: H5Schema | None = None) -> bool:
    """True if ``path`` opens as HDF5, has ``complete`` == True and (with a schema) every required
    dataset, with one length per group."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as h5:
            if not bool(h5.attrs.get(COMPLETE_ATTR, False)):
                return False
            shards = json.loads(h5.attrs["shards"]) if "shards" in h5.attrs else []
            if not all(is_complete(path.with_name(name)) for name in shards):
                return False  # a missing shard would read as fill values: never train on that
            if schema is None:
                return True
            lengths: dict[str, set[int]] = {}
            for f in schema.fields:
                obj = h5.get(f.name)
                if obj is None and not f.required:
                    continue
                if not isinstance(obj, h5py.Dataset) or obj.ndim < 1:
                    return False
                lengths.setdefault(f.group, set()).add(obj.shape[0])
            return all(len(v) == 1 for v in lengths.values())
    except (OSError, KeyError, ValueError):
        return False


def ensure_simulated(
    path: str | Path,
    schema: H5Schema,
    n: int | Mapping[str, int],
    simulate: Callable[[], Iterator[Mapping[str, np.ndarray]]],
    attrs: Mapping[str, Any],
    description: str,
    shard_samples: int | None = None,
    **write_kwargs: Any,
) -> Path:
    """Simulate ``path`` once: nothing to do if complete; an incomplete file (killed run) is replaced.

    With ``shard_samples`` (and more samples than that) the data go to shards behind one index file
    (:func:`write_sharded_h5`)."""
    path = Path(path)
    if is_complete(path, schema):
        return path
    if path.exists():
        log.warning("%s is incomplete (interrupted simulation?); simulating it again", path)
        path.unlink()
    log.info("%s -> %s", description, path)
    if shard_samples and isinstance(n, int) and n > shard_samples:
        return write_sharded_h5(
            path, schema, n, simulate(), shard_samples, attrs=attrs, description=description, **write_kwargs
        )
    return write_h5(path, schema, n, simulate(), attrs=attrs, description=description, **write_kwargs)
