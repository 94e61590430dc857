"""Throughput of the XMM-Newton EPIC-pn simulator for the default config (fields/s and images/s).

One field = 3 count images (20 ks LR, 50 ks LR, 100 ks HR) + a source list. Measured twice: simulation
only (in memory) and the full dataset writer (FITS files in a temporary folder, removed afterwards).

Usage: OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_xmm_sim.py [--fields 100] [--lr-size 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from lit_sr.domains.xmm.sim import (
    PRODUCTS,
    XMMSimConfig,
    simulate_field,
    write_xmm_dataset,
)

DEFAULT_DATASET = {"train": 400, "val": 50, "test": 50}  # write_xmm_dataset's default n_fields


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fields", type=int, default=100)
    ap.add_argument("--lr-size", type=int, default=XMMSimConfig().lr_size)
    args = ap.parse_args()
    cfg = dataclasses.replace(XMMSimConfig(), lr_size=args.lr_size)
    n_img = len(PRODUCTS)

    simulate_field(cfg, 0, "warmup", 0)  # PSF stamp libraries are cached once
    t0 = time.perf_counter()
    for k in range(args.fields):
        simulate_field(cfg, 0, "bench", k)
    sim_rate = args.fields / (time.perf_counter() - t0)
    print(
        f"simulate only  : {sim_rate:7.1f} fields/s  {n_img * sim_rate:7.1f} images/s  "
        f"(LR {cfg.lr_size}x{cfg.lr_size}, HR {cfg.hr_size}x{cfg.hr_size})"
    )

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_xmm_dataset(Path(tmp) / "ds", {"bench": args.fields}, config=cfg, seed=0, progress=False)
        write_rate = args.fields / (time.perf_counter() - t0)
    print(f"write FITS     : {write_rate:7.1f} fields/s  {n_img * write_rate:7.1f} images/s")
    n_default = sum(DEFAULT_DATASET.values())
    print(f"projected default dataset {DEFAULT_DATASET} ({n_default} fields): {n_default / write_rate:.1f} s")


if __name__ == "__main__":
    main()
