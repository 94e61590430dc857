"""Atomic file writes: a file is either absent, the old version, or complete; never half-written."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class AtomicFile:
    """A temporary file beside ``path`` that becomes ``path`` on :meth:`commit` (or vanishes on :meth:`abort`).

    The rename is atomic on POSIX when both live on one filesystem, which is why the temporary file is
    created in the destination folder. With ``overwrite=False`` an existing ``path`` raises
    FileExistsError before anything is written, and again at commit if one appeared meanwhile
    (nothing the user owns is replaced). For writers whose work spans several calls (callbacks).
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool = True) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not overwrite and self.path.exists():
            raise FileExistsError(f"{self.path}: refusing to overwrite an existing file")
        fd, tmp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".partial", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp_name)

    def commit(self) -> Path:
        with open(self.tmp, "rb+") as fh:  # flush to disk before the rename makes it visible
            os.fsync(fh.fileno())
        if not self.overwrite and self.path.exists():
            self.abort()
            raise FileExistsError(f"{self.path}: appeared while writing; refusing to overwrite it")
        # mkstemp creates 0600; give the file the permissions a plain open() would (umask), so colleagues
        # sharing a project folder on a cluster can read checkpoints and outputs
        os.chmod(self.tmp, 0o666 & ~_umask())
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self.tmp.exists():
            self.tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    On any exception the temporary file is removed and ``path`` is untouched. With
    ``overwrite=False`` an existing ``path`` raises FileExistsError before anything is written.
    """
    target = AtomicFile(path, overwrite)
    try:
        yield target.tmp
        target.commit()
    finally:
        target.abort()
