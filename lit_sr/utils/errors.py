"""The error every bad-input check raises: it names the file, the field and what was expected."""

from __future__ import annotations

from pathlib import Path


class DataFileError(ValueError):
    """A data file cannot be used as it is; the message says which file, which field and why."""

    def __init__(self, path: str | Path, field: str | None, problem: str) -> None:
        where = f"{path}" + (f" [{field}]" if field else "")
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.field = field
