"""Samples per second of every domain's simulator (one process), through each DataModule's own
``simulate()`` so the figure is what simulating the default dataset costs.

    PYTHONPATH=. python benchmarks/bench_simulators.py [--samples 512]

Rows ``simulator/<data config>``: samples/s (no goal: informative); ``--workers 2`` also times the
parallel path of DataModules that expose ``simulate_blocks``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from common import compose, emit, experiments_by_data, quick
from hydra.utils import instantiate  # noqa: E402


def rate(dm, key: str, samples: int) -> tuple[float, int]:
    t = time.perf_counter()
    done = 0
    for block in dm.simulate(key):
        done += len(next(iter(block.values())))
        if done >= samples:
            break
    return done / (time.perf_counter() - t), done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=256 if quick() else 1024)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    for data, experiment in experiments_by_data().items():
        with tempfile.TemporaryDirectory() as tmp:
            cfg = compose([f"experiment={experiment}", "trainer.accelerator=cpu", f"paths.data_dir={tmp}"])
            dm = instantiate(cfg.data)
            if not hasattr(dm, "simulate"):
                emit(f"simulator/{data}", None, "samples/s", detail="no simulate() on its DataModule")
                continue
            if hasattr(dm, "sim_workers"):
                dm.sim_workers = args.workers
            key = next(iter(getattr(dm, "default_file_names", lambda: {"train": ""})()))
            value, done = rate(dm, key, args.samples)
            emit(
                f"simulator/{data}", value, "samples/s", detail=f"{done} samples of '{key}', {args.workers} process(es)"
            )


if __name__ == "__main__":
    main()
