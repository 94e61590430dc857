"""Throughput of the calorimeter shower simulator (events/s, photons and pions separately).

Usage: PYTHONPATH=. python benchmarks/bench_calo_sim.py --events 4000 [--spot-fraction 1.0] [--noiseless]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from lit_sr.domains.calo.sim import CaloSimConfig, gflash_spot_count, simulate_showers


def bench(n_photons: int, n_pions: int, config: CaloSimConfig, noise: bool, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` events/s and the mean HR energy sum in GeV."""
    best = float("inf")
    out = {}
    for r in range(repeats):
        t0 = time.perf_counter()
        out = simulate_showers(n_photons, n_pions, seed=1234 + r, config=config, noise=noise)
        best = min(best, time.perf_counter() - t0)
    return (n_photons + n_pions) / best, float(out["hr"].sum(axis=(1, 2)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=4000, help="events per class")
    ap.add_argument("--spot-fraction", type=float, default=CaloSimConfig().spot_fraction)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--noiseless", action="store_true")
    args = ap.parse_args()
    cfg = dataclasses.replace(CaloSimConfig(), spot_fraction=args.spot_fraction)
    print(f"spots per {cfg.energy_gev:g} GeV shower: {int(gflash_spot_count(cfg.energy_gev, cfg))}")
    rates = {}
    for name, (nph, npi) in {"photons": (args.events, 0), "pions": (0, args.events)}.items():
        rate, mean_e = bench(nph, npi, cfg, not args.noiseless, args.repeats)
        rates[name] = rate
        print(f"{name:8s} {args.events:7d} events  {rate:8.0f} events/s  mean HR sum {mean_e:6.2f} GeV")
    per_event = 0.5 * (1 / rates["photons"] + 1 / rates["pions"])
    print(f"projected default dataset (20k + 20k): {40000 * per_event:.1f} s on one core")


if __name__ == "__main__":
    main()
