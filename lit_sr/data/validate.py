"""Checks on user-supplied HDF5 files. Every failure names the file, the field and what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from lit_sr.utils.errors import DataFileError  # noqa: F401  (re-exported: raised by every check here)


def require_file(path: str | Path, what: str = "data file") -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataFileError(path, None, f"{what} not found (expected an existing HDF5 file)")
    return path


def require_dataset(
    h5, path: str | Path, name: str, ndim: int | None = None, tail_shape: Sequence[int | None] | None = None
):
    """Return dataset ``name`` of an open h5py File, checking its rank and trailing dimensions.

    ``tail_shape`` gives the expected trailing dimensions (None = any size), e.g. (24, 24).
    """
    if name not in h5:
        have = ", ".join(sorted(h5.keys())) or "none"
        raise DataFileError(path, name, f"dataset missing (datasets present: {have})")
    ds = h5[name]
    if ndim is not None and ds.ndim != ndim:
        raise DataFileError(path, name, f"expected {ndim} dimensions, found shape {ds.shape}")
    if tail_shape is not None:
        tail = tuple(ds.shape[len(ds.shape) - len(tail_shape) :])
        for got, want in zip(tail, tail_shape):
            if want is not None and got != want:
                want_s = "x".join("*" if w is None else str(w) for w in tail_shape)
                raise DataFileError(path, name, f"expected trailing shape {want_s}, found shape {ds.shape}")
    return ds


def require_finite(ds, path: str | Path, name: str, chunk: int = 65536) -> None:
    """Scan a dataset block by block (memory bounded) and fail at the first NaN/Inf."""
    n = ds.shape[0] if ds.ndim else 1
    for start in range(0, n, chunk):
        block = np.asarray(ds[start : start + chunk])
        bad = ~np.isfinite(block)
        if bad.any():
            local = tuple(int(i) for i in np.argwhere(bad)[0])
            value = block[local]
            index = (local[0] + start, *local[1:])
            raise DataFileError(path, name, f"non-finite value {value} at index {index} (expected finite numbers)")


def require_same_length(path: str | Path, lengths: dict[str, int]) -> int:
    values = set(lengths.values())
    if len(values) != 1:
        desc = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise DataFileError(path, ",".join(lengths), f"datasets must have the same number of events, found {desc}")
    return values.pop()
