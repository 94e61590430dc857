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
    print(
        "BENCH " + json.dumps({"name": name, "value": value, "unit": unit, "goal": goal, "ok": ok, "detail": detail}),
        flush=True,
    )


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


# ------------------------------------------------------------------------------------------------
# timing training steps: a window of batches, optimiser steps counted by torch itself

WARMUP = 5  # batches before the timed window (first-call costs, caches, allocator)

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
#: the clock of the timed windows: "wall" (``time.perf_counter``, the default) or "cpu" (``time.process_time``:
#: CPU seconds of every thread of the process; with one torch thread, the work done whatever else runs on the
#: machine). Set by ``use_clock``.
CLOCK = "wall"


def use_clock(name: str) -> None:
    """Time the windows of :class:`Window` with the ``CLOCKS[name]`` seconds."""
    global CLOCK
    if name not in CLOCKS:
        raise SystemExit(f"--clock must be one of {', '.join(CLOCKS)}, got {name!r}")
    CLOCK = name


def add_timing_arguments(ap) -> None:
    """``--threads`` and ``--clock`` of the timing benches; :func:`apply_timing_arguments` applies them."""
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default torch's); 1 on a crowded machine: no waits on descheduled threads",
    )
    ap.add_argument(
        "--clock",
        default="wall",
        choices=tuple(CLOCKS),
        help="'wall' or 'cpu' (process CPU seconds; with --threads 1 the work done, whatever the machine's load)",
    )


def apply_timing_arguments(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    use_clock(args.clock)


def bare_trainer(**kwargs):
    """A CPU Trainer with nothing a timing does not need (no logger, checkpoints, progress bar, summary,
    validation); ``kwargs`` add to or override these."""
    import lightning as L

    options = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    return L.Trainer(**(options | kwargs))


class StepCounter:
    """Counts every ``torch.optim`` optimiser step of the process while ``active``."""

    def __init__(self) -> None:
        self.active, self.steps = False, 0
        from torch.optim.optimizer import register_optimizer_step_post_hook

        register_optimizer_step_post_hook(self._hook)

    def _hook(self, optimizer, args, kwargs) -> None:
        if self.active:
            self.steps += 1

    def start(self) -> None:
        self.active, self.steps = True, 0

    def stop(self) -> int:
        self.active = False
        return self.steps


COUNTER = StepCounter()


class Window:
    """Timed window of a run: from the start of batch ``WARMUP`` to the end of batch ``n_batches - 1``."""

    def __init__(self, n_batches: int) -> None:
        self.n_batches, self.t0, self.seconds, self.steps = n_batches, None, None, None

    def batch_start(self, i: int) -> None:
        if i == WARMUP:
            COUNTER.start()
            self.t0 = CLOCKS[CLOCK]()

    def batch_end(self, i: int) -> None:
        if i == self.n_batches - 1:
            self.seconds = CLOCKS[CLOCK]() - self.t0
            self.steps = COUNTER.stop()

    @property
    def per_step(self) -> float:
        return self.seconds / self.steps


def lightning_run(module, loader, n_batches: int, **trainer_kwargs) -> Window:
    """``n_batches`` training batches of ``module`` under a plain CPU Trainer (no logging, checkpoints or
    validation; ``trainer_kwargs`` e.g. ``precision``); the timed window of :class:`Window`."""
    import lightning as L

    class LightningWindow(L.Callback):
        def __init__(self) -> None:
            self.batches = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            window.batch_start(self.batches)  # own count: batch_idx restarts every epoch

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            window.batch_end(self.batches)
            self.batches += 1

    window = Window(n_batches)
    trainer = bare_trainer(max_steps=n_batches, callbacks=[LightningWindow()], **trainer_kwargs)
    trainer.fit(module, loader)
    if window.seconds is None:
        raise RuntimeError(f"the Lightning run stopped before batch {n_batches} (max_steps counts something else?)")
    return window


def classifier_free_overrides(cfg) -> list[str]:
    """Overrides that drop whatever would load a trained classifier (evaluator, perceptual and feature
    terms): a bench times the training step, not the setup stage."""
    extra = []
    if "classifier_ckpt" in cfg.model:
        extra += ["model.evaluator=null", "setup_hook=null"]
    if "perceptual_net" in cfg.model:
        extra += ["model.perceptual_net=null"]
    if "feature_net" in cfg.model.get("loss", {}):
        extra += ["model.loss.feature_net=null", "model.loss.feature_weight=0"]
    return extra


def compose(overrides: list[str]):
    """The run.py config for these overrides (conf/ of this checkout), resolved."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    import lit_sr  # noqa: F401  (config resolvers)

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = hydra_compose(
            "config", overrides=overrides + ["hydra.run.dir=/tmp/lit_sr_bench"], return_hydra_config=True
        )
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
