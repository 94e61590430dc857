"""Shared by the benchmark scripts: one machine-readable line per result, read by ``run_all.py``.

Every script prints its figures for people and, for each result, a line
``BENCH {"name": ..., "value": ..., "unit": ..., "goal": ..., "ok": ...}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from a checkout
    sys.path.insert(0, str(ROOT))


def emit(name: str, value: float | None, unit: str, goal: str = "", ok: bool | None = None, detail: str = "") -> None:
    """Print one result for people and one BENCH line for run_all.py."""
    shown = "skipped" if value is None else f"{value:.4g} {unit}"
    verdict = "" if ok is None else ("  [goal met]" if ok else "  [goal NOT met]")
    print(f"{name}: {shown}{f'  (goal {goal})' if goal else ''}{verdict}{f'  {detail}' if detail else ''}", flush=True)
    print("BENCH " + json.dumps({"name": name, "value": value, "unit": unit, "goal": goal, "ok": ok,
                                 "detail": detail}), flush=True)


def best_time(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> float:
    """Best wall time of ``repeat`` calls after ``warmup`` calls (seconds)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def quick() -> bool:
    return os.environ.get("QUICK", "") not in ("", "0")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def lightning_step_seconds(module, loader, steps: int, warmup: int = 5) -> float:
    """Seconds per training step of ``module`` under a plain Lightning Trainer (CPU, no logging or
    checkpoints), timed from step ``warmup`` to the end."""
    import lightning as L

    class Timer(L.Callback):
        t0 = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            # global_step, not batch_idx: batch_idx restarts every epoch, which restarted the clock and
            # made Lightning look several times faster than the bare loop on short loaders
            if self.t0 is None and trainer.global_step == warmup:
                self.t0 = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            self.seconds = (time.perf_counter() - self.t0) / (trainer.global_step - warmup)

    timer = Timer()
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(module, loader)
    return timer.seconds


def compose(overrides: list[str]):
    """The run.py config for these overrides (conf/ of this checkout), resolved."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    import lit_sr  # noqa: F401  (config resolvers)

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = hydra_compose("config", overrides=overrides + ["hydra.run.dir=/tmp/lit_sr_bench"],
                            return_hydra_config=True)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def experiments_by_data() -> dict[str, str]:
    """One experiment per data config (the first in name order that trains an image model, not a
    classifier): the pipelines to benchmark."""
    import yaml

    out: dict[str, str] = {}
    for path in sorted((ROOT / "conf" / "experiment").glob("*.yaml")):
        if "classifier" in path.stem:
            continue
        text = yaml.safe_load(path.read_text()) or {}
        for entry in text.get("defaults", []):
            if isinstance(entry, dict):
                for key, value in entry.items():
                    if key.strip() in ("override /data",) and value not in out:
                        out[value] = path.stem
        # experiments that take their data from a base recipe
        for entry in text.get("defaults", []):
            if isinstance(entry, str) and entry.startswith("base/"):
                base = yaml.safe_load((ROOT / "conf" / "experiment" / f"{entry}.yaml").read_text()) or {}
                for e in base.get("defaults", []):
                    if isinstance(e, dict) and "override /data" in e and e["override /data"] not in out:
                        out[e["override /data"]] = path.stem
    return out
