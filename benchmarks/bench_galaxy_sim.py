"""Throughput of the galsim galaxy simulator (galaxies/s) for the default config, one process.

Usage: PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_galaxy_sim.py [--galaxies N] [--noiseless]

Prints galaxies/s over the run, the mean time per galaxy of each class, and the time projected for
``DEFAULT_SET_SIZE`` galaxies (the default training-set size, chosen to simulate in < 60 s).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from lit_sr.domains.galaxy.sim import (
    DEFAULT_SET_SIZE,
    LABEL_NAMES,
    GalaxySimConfig,
    simulate_galaxies,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--galaxies", type=int, default=DEFAULT_SET_SIZE)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--noiseless", action="store_true")
    args = ap.parse_args()
    cfg = dataclasses.replace(GalaxySimConfig(), add_noise=not args.noiseless)
    labels, block_times = [], []
    t0 = time.perf_counter()
    last = t0
    for block in simulate_galaxies(args.galaxies, args.seed, cfg):
        now = time.perf_counter()
        block_times.append((now - last) / block["label"].size)
        labels.append(block["label"])
        last = now
    total = time.perf_counter() - t0
    rate = args.galaxies / total
    print(
        f"{args.galaxies} galaxies ({cfg.stamp_size}x{cfg.stamp_size}, noise={cfg.add_noise}) in {total:.1f} s: "
        f"{rate:.1f} galaxies/s"
    )
    counts = np.bincount(np.concatenate(labels), minlength=cfg.n_classes)
    print("per class:", ", ".join(f"{name} {n}" for name, n in zip(LABEL_NAMES, counts)))
    print(f"per-block ms/galaxy: min {1e3 * min(block_times):.1f}, max {1e3 * max(block_times):.1f}")
    print(f"projected default set ({DEFAULT_SET_SIZE} galaxies): {DEFAULT_SET_SIZE / rate:.1f} s on one core")


if __name__ == "__main__":
    main()
