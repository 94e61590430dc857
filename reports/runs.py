"""Runs as a user makes them: ``python run.py`` in a subprocess, its wall time and log.

What every report driver of ``reports/`` (the README's and docs' tables and figures) shares, so a figure is
always made from the same command a user types. Reading a finished run back (its test metrics, checkpoint,
model and data) is library code: :mod:`lit_sr.inference.run_folder`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

#: The repository root (run.py, conf/, docs/): reports are run from a checkout, never installed.
REPO = Path(__file__).resolve().parents[1]
#: Overrides of a run whose log is read by a program: no config dump, plain progress lines.
QUIET = ("print_config=false", "callbacks.progress_bar=null")


def run_py(
    args: Sequence[str],
    run_dir: str | os.PathLike,
    threads: int | None = None,
    root: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    log_name: str = "run.log",
) -> float:
    """``python run.py <args> hydra.run.dir=<run_dir>`` with the QUIET overrides; returns the wall time (s).

    The log goes to ``<run_dir>/<log_name>``. ``threads``: OMP_NUM_THREADS of the run; ``root``: its
    LIT_SR_ROOT (data and outputs). Raises RuntimeError with the tail of the log if the run fails.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("WANDB_MODE", "offline")
    if threads is not None:
        full_env["OMP_NUM_THREADS"] = str(threads)
    if root is not None:
        full_env["LIT_SR_ROOT"] = str(root)
    cmd = [sys.executable, str(REPO / "run.py"), *QUIET, *args, f"hydra.run.dir={run_dir}"]
    log_path = run_dir / log_name
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(
            f"{' '.join(cmd)} failed (exit {proc.returncode}); last lines of {log_path}:\n"
            f"{log_path.read_text()[-3000:]}"
        )
    return seconds


def write_text(path: str | os.PathLike, text: str) -> None:
    """``text`` + newline to ``path``, atomically (a report table is never half written)."""
    from lit_sr.utils.atomic import atomic_path

    with atomic_path(Path(path)) as tmp:
        Path(tmp).write_text(text + "\n")
