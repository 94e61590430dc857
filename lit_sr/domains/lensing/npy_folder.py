"""Reader for LR/HR pairs shared as one ``.npy`` file per image (the layout used by DeepLense SR datasets).

Layout::

    <folder>/LR/<name>.npy     one LR image, 2-D [h, w] or [1, h, w], any real numeric dtype
    <folder>/HR/<name>.npy     the matching HR image, [2h, 2w] (or [1, 2h, 2w]); same file names as LR/
    <folder>/labels.csv        optional: header line ``name,label`` then one row per pair

In ``labels.csv`` ``name`` is the file name (``lens_001.npy``) or its stem (``lens_001``) and ``label`` is an
integer class index or, when ``class_names`` is given, one of the class names. When the file exists every pair
needs exactly one row and every row must name an existing pair.

Validation (:func:`scan_npy_pairs`) opens each file memory-mapped (header and shape only) and, with
``check_finite=True``, reads one file at a time to look for NaN/Inf, so memory stays bounded for large folders.
Each problem raises :class:`lit_sr.data.validate.DataFileError` naming the file, the field and what was expected.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lit_sr.data.validate import DataFileError

LABELS_FILE = "labels.csv"
SR_FACTOR = 2
_MAX_LISTED = 5


@dataclass(frozen=True)
class NpyPairIndex:
    """Validated index of an LR/HR npy folder; ``labels`` is int64 [N] or None (no labels.csv)."""

    folder: Path
    names: tuple[str, ...]  # file names (with .npy), sorted; the same in LR/ and HR/
    lr_shape: tuple[int, int]  # (h, w) of every LR image
    hr_shape: tuple[int, int]  # (2h, 2w) of every HR image
    labels: np.ndarray | None
    class_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def lr_path(self, i: int) -> Path:
        return self.folder / "LR" / self.names[i]

    def hr_path(self, i: int) -> Path:
        return self.folder / "HR" / self.names[i]


def _open_image(path: Path, split: str) -> np.ndarray:
    """Memory-mapped image as a 2-D array view; errors name the file."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataFileError(path, split, f"cannot be read as a numeric .npy array ({err})") from None
    if not isinstance(arr, np.ndarray):
        raise DataFileError(path, split, "expected a single array (.npy), found an archive")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataFileError(path, split, f"expected a real numeric dtype, found {arr.dtype}")
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise DataFileError(path, split, f"expected one image of shape [h, w] or [1, h, w], found shape {arr.shape}")
    return arr


def _check_finite(arr: np.ndarray, path: Path, split: str, rows_per_chunk: int = 1024) -> None:
    for start in range(0, arr.shape[0], rows_per_chunk):
        block = np.asarray(arr[start : start + rows_per_chunk], dtype=np.float64)
        bad = ~np.isfinite(block)
        if bad.any():
            i, j = (int(v) for v in np.argwhere(bad)[0])
            raise DataFileError(
                path,
                split,
                f"non-finite value {block[i, j]} at (row, column) ({start + i}, {j}) (expected finite numbers)",
            )


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _MAX_LISTED else "")


def _read_labels(path: Path, names: tuple[str, ...], class_names: Sequence[str] | None) -> np.ndarray:
    by_stem = {Path(n).stem: n for n in names}
    allowed = (
        f"0..{len(class_names) - 1} or one of {list(class_names)}"
        if class_names is not None
        else "a non-negative integer"
    )
    labels: dict[str, int] = {}
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:2]] != ["name", "label"]:
            raise DataFileError(path, "header", f"expected the header line 'name,label', found {header}")
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) < 2:
                raise DataFileError(path, f"line {line_no}", f"expected 'name,label', found {row}")
            raw_name, raw_label = row[0].strip(), row[1].strip()
            name = raw_name if raw_name in names else by_stem.get(raw_name)
            if name is None:
                raise DataFileError(path, f"line {line_no}", f"name {raw_name!r} matches no LR/HR pair")
            if name in labels:
                raise DataFileError(path, f"line {line_no}", f"second label for {name}")
            if class_names is not None and raw_label in class_names:
                value = list(class_names).index(raw_label)
            else:
                try:
                    value = int(raw_label)
                except ValueError:
                    value = None
                n_classes = len(class_names) if class_names is not None else None
                if value is None or value < 0 or (n_classes is not None and value >= n_classes):
                    raise DataFileError(
                        path,
                        f"line {line_no}",
                        f"label {raw_label!r} of {name} is outside the classes (allowed: {allowed})",
                    )
            labels[name] = value
    missing = [n for n in names if n not in labels]
    if missing:
        raise DataFileError(path, "label", f"no label for {len(missing)} pair(s): {_listing(missing)}")
    return np.array([labels[n] for n in names], dtype=np.int64)


def scan_npy_pairs(
    folder: str | Path, class_names: Sequence[str] | None = None, check_finite: bool = True
) -> NpyPairIndex:
    """Validate ``folder`` (layout in the module doc) and return its :class:`NpyPairIndex`.

    Raises DataFileError for: a missing LR/ or HR/ subfolder, no pairs, names present on one side only, a file
    that is not one numeric 2-D image, shapes differing within LR/ or within HR/, HR not exactly 2x LR,
    NaN/Inf (with ``check_finite``), and bad or missing labels.
    """
    folder = Path(folder)
    for split in ("LR", "HR"):
        if not (folder / split).is_dir():
            raise DataFileError(
                folder / split,
                None,
                f"missing {split} subfolder (expected {folder}/LR and {folder}/HR holding one .npy image per file)",
            )
    lr_names = {p.name for p in (folder / "LR").glob("*.npy")}
    hr_names = {p.name for p in (folder / "HR").glob("*.npy")}
    only_lr, only_hr = sorted(lr_names - hr_names), sorted(hr_names - lr_names)
    if only_lr or only_hr:
        parts = []
        if only_lr:
            parts.append(f"{len(only_lr)} in LR/ without HR partner: {_listing(only_lr)}")
        if only_hr:
            parts.append(f"{len(only_hr)} in HR/ without LR partner: {_listing(only_hr)}")
        raise DataFileError(folder, "names", "unmatched file names; " + "; ".join(parts))
    names = tuple(sorted(lr_names))
    if not names:
        raise DataFileError(folder, None, "no .npy pairs found in LR/ and HR/")
    shapes: dict[str, tuple[Path, tuple[int, int]]] = {}
    for name in names:
        for split in ("LR", "HR"):
            path = folder / split / name
            arr = _open_image(path, split)
            shape = tuple(int(s) for s in arr.shape)
            if split not in shapes:
                shapes[split] = (path, shape)
            elif shape != shapes[split][1]:
                first_path, first_shape = shapes[split]
                raise DataFileError(
                    path,
                    "shape",
                    f"shape {shape} differs from {first_shape} of {first_path.name} "
                    f"(all {split} images must have one shape)",
                )
            if check_finite:
                _check_finite(arr, path, split)
            del arr
        lr_shape, hr_shape = shapes["LR"][1], shapes["HR"][1]
        if hr_shape != (SR_FACTOR * lr_shape[0], SR_FACTOR * lr_shape[1]):
            raise DataFileError(
                folder / "HR" / name,
                "shape",
                f"HR shape {hr_shape} is not {SR_FACTOR}x the LR shape {lr_shape} of LR/{name} "
                f"(expected {(SR_FACTOR * lr_shape[0], SR_FACTOR * lr_shape[1])})",
            )
    labels_path = folder / LABELS_FILE
    labels = _read_labels(labels_path, names, class_names) if labels_path.is_file() else None
    return NpyPairIndex(
        folder=folder,
        names=names,
        lr_shape=shapes["LR"][1],
        hr_shape=shapes["HR"][1],
        labels=labels,
        class_names=tuple(class_names) if class_names is not None else None,
    )


def load_npy_pair(index: NpyPairIndex, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Pair ``i`` of ``index`` as float32 arrays (lr [h, w], hr [2h, 2w]); a leading axis of 1 is dropped."""
    if not -len(index) <= i < len(index):
        raise IndexError(f"pair index {i} out of range for {len(index)} pairs in {index.folder}")
    lr = np.array(_open_image(index.lr_path(i), "LR"), dtype=np.float32)  # a copy: the memory map is released
    hr = np.array(_open_image(index.hr_path(i), "HR"), dtype=np.float32)
    if lr.shape != index.lr_shape or hr.shape != index.hr_shape:
        raise DataFileError(
            index.lr_path(i),
            "shape",
            f"shapes changed since the scan: LR {lr.shape}, HR {hr.shape}, expected {index.lr_shape}, {index.hr_shape}",
        )
    return lr, hr
