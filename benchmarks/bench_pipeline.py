"""Data pipeline against the model: how much faster the DataLoader delivers a training batch than the
model trains on it, per domain, for in-memory and lazily read HDF5 splits.

    PYTHONPATH=. python benchmarks/bench_pipeline.py [--experiments calo_rrdb,saxs_equnet] [--steps 25]

Rows ``pipeline/<experiment>/<memory|lazy>``: time of a training step over time to fetch its batch,
goal >= 10x (the loader never makes the model wait, with room for faster accelerators). Both are taken
in one Lightning run on the experiment's own train loader (default loader settings): every step's fetch
(``next`` on the loader) and the step itself (``on_train_batch_start`` -> ``on_train_batch_end``) are
timed, and the median of the per-step ratios is reported. Fetch and step alternate, so a change of the
machine's load hits both alike (the shared CPUs this runs on make separate timings of the two useless).
The first steps are left out (caches, lazy initialisation). One experiment per data config
(benchmarks/common.py); default data under the repository's data/ folder (simulated once). Models are
the experiments' own (perceptual nets and evaluators switched off: they do not change the data path).
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L  # noqa: E402
import torch  # noqa: E402
from common import ROOT, bare_trainer, classifier_free_overrides, compose, emit, experiments_by_data, quick
from hydra.utils import instantiate  # noqa: E402

WARMUP = 3


class TimedLoader:
    """Iterates ``loader`` and records the seconds of every ``next``."""

    def __init__(self, loader) -> None:
        self.loader, self.fetch_s = loader, []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        it = iter(self.loader)
        while True:
            t = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            self.fetch_s.append(time.perf_counter() - t)
            yield batch


class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.step_s, self.t0 = [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.step_s.append(time.perf_counter() - self.t0)


def fetch_and_step_seconds(model, dm, steps: int) -> tuple[list[float], list[float], float]:
    """Per-step (fetch seconds, step seconds) of ``steps`` Lightning steps of ``model`` on ``dm``'s train
    loader, and the seconds ``train_dataloader()`` took (it preloads splits held in memory)."""
    t = time.perf_counter()
    timed = TimedLoader(dm.train_dataloader())
    build_s = time.perf_counter() - t
    dm.train_dataloader = lambda: timed  # the trainer asks the data module (models may read it)
    timer = StepTimer()
    trainer = bare_trainer(max_steps=steps, callbacks=[timer])
    trainer.fit(model, datamodule=dm)
    n = min(len(timer.step_s), len(timed.fetch_s))
    return timed.fetch_s[:n], timer.step_s[:n], build_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", default=None, help="comma-separated; default one per data config")
    ap.add_argument("--steps", type=int, default=15 if quick() else 40)
    args = ap.parse_args()
    names = args.experiments.split(",") if args.experiments else list(experiments_by_data().values())
    from lit_sr.data.base import H5RowsDataset

    for name in names:
        base = [f"experiment={name}", "trainer.accelerator=cpu", f"paths.data_dir={ROOT / 'data'}"]
        cfg = compose(base)
        extra = classifier_free_overrides(cfg)  # no trained classifier here
        dm = instantiate(cfg.data)
        dm.prepare_data()
        dm.setup("fit")
        modes = {"memory": []}
        if isinstance(dm.splits.get("train"), H5RowsDataset):
            modes["lazy"] = ["data.max_memory_mb=0"]
        for mode, overrides in modes.items():
            cfg_run = compose(base + extra + overrides)
            dmm = instantiate(cfg_run.data)
            dmm.setup("fit")
            torch.manual_seed(0)
            model = instantiate(cfg_run.model, _convert_="all")
            try:
                fetch, step, build_s = fetch_and_step_seconds(model, dmm, args.steps)
            except Exception as err:  # noqa: BLE001  (a model that cannot train like this: say why)
                emit(
                    f"pipeline/{name}/{mode}",
                    None,
                    "x",
                    ">= 10x",
                    None,
                    f"skipped: {type(err).__name__}: {str(err)[:120]}",
                )
                continue
            fetch, step = fetch[WARMUP:], step[WARMUP:]
            if len(step) < 3:
                emit(f"pipeline/{name}/{mode}", None, "x", ">= 10x", None, f"skipped: only {len(step)} timed steps")
                continue
            ratio = statistics.median(s / f for f, s in zip(fetch, step))
            emit(
                f"pipeline/{name}/{mode}",
                ratio,
                "x",
                ">= 10x",
                ratio >= 10.0,
                f"median over {len(step)} steps of step/fetch; fetch {statistics.median(fetch) * 1e3:.1f} ms, "
                f"step {statistics.median(step) * 1e3:.0f} ms (medians), batch {dmm.batch_size}, "
                f"loader built (preload) in {build_s:.1f} s",
            )


if __name__ == "__main__":
    main()
