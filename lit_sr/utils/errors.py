"""The errors a user fixes in their own input or config: ``python run.py`` prints their message alone.

Every bad-input check raises one of these with a message that names the file or config key, the field
and what was expected; the runner (``lit_sr.cli.main``) ends the run with that one message and exit
code 1 instead of a traceback through Lightning and Hydra (``HYDRA_FULL_ERROR=1`` shows the trace).
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Base of the errors caused by the user's input files or config (not by a bug of the code)."""


class DataFileError(UserError, ValueError):
    """A data file cannot be used as it is; the message says which file, which field and why."""

    def __init__(self, path: str | Path, field: str | None, problem: str) -> None:
        where = f"{path}" + (f" [{field}]" if field else "")
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.field = field


class ConfigError(UserError, ValueError):
    """A config value (or combination) that cannot work; the message names the key, the value and what is
    expected, e.g. ``mode=test needs a trained model: add ckpt_path=...``."""
