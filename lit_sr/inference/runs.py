"""Finished runs as a user makes them: run ``python run.py`` in a subprocess, read its test metrics back,
rebuild its model and data from the run folder.

What every domain's ``figures`` module (the README's tables and figures) and notebook share, so a
figure is always made from the same command a user types.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[2]
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


def read_test_metrics(run_dir: str | os.PathLike) -> dict[str, float]:
    """The ``test/*`` values of a finished run's ``metrics.csv``, without the prefix."""
    path = Path(run_dir) / "metrics.csv"
    out: dict[str, float] = {}
    with open(path) as fh:
        for row in csv.DictReader(fh):
            for k, v in row.items():
                if k.startswith("test/") and v not in ("", None):
                    out[k[len("test/") :]] = float(v)
    if not out:
        raise ValueError(f"{path}: no test/ metrics (did the run finish its test?)")
    return out


def best_checkpoint(run_dir: str | os.PathLike) -> Path:
    """The checkpoint a run tested: ``checkpoints/epoch*.ckpt`` (best or final), else ``last.ckpt``."""
    ckpts = sorted((Path(run_dir) / "checkpoints").glob("epoch*.ckpt"))
    if ckpts:
        return ckpts[-1]
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise FileNotFoundError(f"{run_dir}/checkpoints: no checkpoint (expected epoch*.ckpt or last.ckpt)")
    return last


def load_run(run_dir: str | os.PathLike, ckpt: str | os.PathLike | None = None) -> tuple[Any, Any]:
    """(LightningModule with the run's tested weights in eval mode, its data module), rebuilt from the
    run's ``config_resolved.yaml``."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from lit_sr.inference.frames import load_module_weights

    cfg = OmegaConf.load(Path(run_dir) / "config_resolved.yaml")
    module = instantiate(cfg.model, _convert_="all")
    load_module_weights(module, ckpt or best_checkpoint(run_dir))
    module.eval()
    return module, instantiate(cfg.data)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0
