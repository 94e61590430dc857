"""Data pipeline against the model: training batches/s the DataLoader delivers (default loader settings)
over training steps/s the model takes, per domain, for in-memory and lazily read HDF5 splits.

    PYTHONPATH=. python benchmarks/bench_pipeline.py [--experiments calo_rrdb,saxs_equnet] [--batches 60]

Rows ``pipeline/<experiment>/<memory|lazy>``: the ratio, goal >= 10x (the loader never makes the model
wait, with room for faster accelerators). One experiment per data config (benchmarks/common.py);
default data under the repository's data/ folder (simulated once). Models are the experiments' own
(perceptual nets and evaluators switched off: they do not change the data path).
"""

from __future__ import annotations

import argparse
import time

from common import ROOT, compose, emit, experiments_by_data, lightning_step_seconds, quick

import torch  # noqa: E402
from hydra.utils import instantiate  # noqa: E402


def loader_rate(loader, n: int) -> float:
    it = iter(loader)
    for _ in range(2):  # warm-up: workers, caches, the first chunks
        next(it)
    t = time.perf_counter()
    done = 0
    for _ in range(n):
        try:
            next(it)
        except StopIteration:
            it = iter(loader)
            next(it)
        done += 1
    return done / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", default=None, help="comma-separated; default one per data config")
    ap.add_argument("--batches", type=int, default=30 if quick() else 100)
    ap.add_argument("--steps", type=int, default=12 if quick() else 25)
    args = ap.parse_args()
    names = args.experiments.split(",") if args.experiments else list(experiments_by_data().values())
    for name in names:
        base = [f"experiment={name}", "trainer.accelerator=cpu", f"paths.data_dir={ROOT / 'data'}"]
        cfg = compose(base)
        extra = []
        # no trained classifier here: drop whatever would load one (evaluator, perceptual and feature terms)
        if "classifier_ckpt" in cfg.model:
            extra += ["model.evaluator=null", "setup_hook=null"]
        if "perceptual_net" in cfg.model:
            extra += ["model.perceptual_net=null"]
        if "feature_net" in cfg.model.get("loss", {}):
            extra += ["model.loss.feature_net=null", "model.loss.feature_weight=0"]
        modes = {"memory": []}
        dm = instantiate(cfg.data)
        dm.prepare_data()
        dm.setup("fit")
        from lit_sr.data.base import H5RowsDataset

        if isinstance(dm.splits.get("train"), H5RowsDataset):
            modes["lazy"] = ["data.max_memory_mb=0"]
        cfg_model = compose(base + extra)
        torch.manual_seed(0)
        batches = [b for b, _ in zip(dm.train_dataloader(), range(8))]
        try:
            model = instantiate(cfg_model.model, _convert_="all")
            step_s = lightning_step_seconds(model, torch.utils.data.DataLoader(batches, batch_size=None), args.steps)
        except Exception as err:  # a model that needs its data module at fit time (e.g. ProGAN's PSF)
            for mode in modes:
                emit(f"pipeline/{name}/{mode}", None, "x", ">= 10x", None,
                     f"skipped: the model does not train on a bare loader ({type(err).__name__}: {str(err)[:80]})")
            continue
        for mode, overrides in modes.items():
            dmm = instantiate(compose(base + overrides).data)
            dmm.setup("fit")
            rate = loader_rate(dmm.train_dataloader(), args.batches)
            ratio = rate * step_s
            emit(f"pipeline/{name}/{mode}", ratio, "x", ">= 10x", ratio >= 10.0,
                 f"data {rate:.1f} batches/s, model {1.0 / step_s:.2f} steps/s, batch {dmm.batch_size}")


if __name__ == "__main__":
    main()
