"""Throughput of the strong-lens simulator (lenses/s) for the default config, with and without reuse.

"reuse": cosmology distances, pixel grid, PSF, light models and one lenstronomy ImageModel per point-mass count are
built once; "no reuse": all of them are rebuilt for every lens (the images are identical, see the tests).

Usage: PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_lensing_sim.py [--lenses 96] [--no-reuse-lenses 48]
       [--image-size 150] [--repeats 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lit_sr.domains.lensing.sim import LABEL_NAMES, LensSimConfig, LensSimulator, concatenate_blocks, simulate_lenses


def bench(n: int, config: LensSimConfig, image_size: int, reuse: bool, repeats: int) -> tuple[float, dict]:
    """Best-of-``repeats`` lenses/s and the simulated arrays of the last run."""
    LensSimulator(config, image_size).block(999, 0, 3)  # import lenstronomy and compile its numba kernels first
    best, out = float("inf"), {}
    for r in range(repeats):
        t0 = time.perf_counter()
        out = concatenate_blocks(simulate_lenses(n, seed=1234 + r, config=config, image_size=image_size, reuse=reuse))
        best = min(best, time.perf_counter() - t0)
    return n / best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lenses", type=int, default=96, help="lenses for the reuse run (2 blocks of 48)")
    ap.add_argument("--no-reuse-lenses", type=int, default=48)
    ap.add_argument("--image-size", type=int, default=LensSimConfig().image_size)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    cfg = LensSimConfig()
    rates = {}
    for reuse, n in ((True, args.lenses), (False, args.no_reuse_lenses)):
        rate, out = bench(n, cfg, args.image_size, reuse, args.repeats)
        rates[reuse] = rate
        subs = {
            name: round(float(out["n_subhalos"][out["label"] == k].mean()), 1) for k, name in enumerate(LABEL_NAMES)
        }
        print(
            f"reuse={reuse!s:5s} {n:5d} lenses {args.image_size}x{args.image_size}: {rate:6.1f} lenses/s "
            f"({1e3 / rate:5.1f} ms/lens); mean point masses per class {subs}; "
            f"median theta_E {np.median(out['theta_e_arcsec']):.2f} arcsec"
        )
    print(
        f"reuse speed-up x{rates[True] / rates[False]:.2f}; "
        f"30k lenses with reuse: {30000 / rates[True] / 60:.1f} min on one core"
    )


if __name__ == "__main__":
    main()
