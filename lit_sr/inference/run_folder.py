"""A finished run's folder, read back: its test metrics (``metrics.csv``), the checkpoint it tested, and its
model and data rebuilt from ``config_resolved.yaml``.

What notebooks, a domain's evaluation commands (e.g. the calorimeter learning curves) and the report drivers
of ``reports/`` use to look at a run made by ``python run.py``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any


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
