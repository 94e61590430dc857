"""Atomic file writes: a file is either absent, the old version, or complete; never half-written."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    The rename is atomic on POSIX when both live on one filesystem, which is why the temporary
    file is created in the destination folder. On any exception the temporary file is removed and
    ``path`` is untouched. With ``overwrite=False`` an existing ``path`` raises FileExistsError
    before anything is written (nothing the user owns is replaced).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path}: refusing to overwrite an existing file")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:  # flush to disk before the rename makes it visible
            os.fsync(fh.fileno())
        if not overwrite and path.exists():
            raise FileExistsError(f"{path}: appeared while writing; refusing to overwrite it")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
