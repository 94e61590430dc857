"""Time the SAXS decomposition nets: inference and one AdamW training step, study size by default.

    PYTHONPATH=. python benchmarks/bench_saxs_nets.py [--patch 128] [--batch 16] [--threads 2]

Prints parameters, the forward time of one patch and the time of one training step (forward,
backward, AdamW) of a batch, for the C4 UNet (28/56/112/224 regular fields) and the plain UNet
(32/64/128/256 maps). On 2 idle CPU cores (2026-11-23): C4 19 s per step, plain 1.7 s.
"""

from __future__ import annotations

import argparse
import time

import torch

from lit_sr.nets.decomposition import DecompositionNet
from lit_sr.nets.unet import count_parameters


def _time(fn, repeat: int) -> float:
    fn()  # warm-up (allocations, kernel choice)
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    for backend in ("c4", "plain"):
        net = DecompositionNet(backend, noise_activation="relu_st")
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.0)
        one = torch.rand(1, 1, a.patch, a.patch)
        batch = torch.rand(a.batch, 1, a.patch, a.patch)

        def infer() -> None:
            with torch.no_grad():
                net(one)

        def step() -> None:
            out = net(batch)
            loss = out["noise"].abs().mean() + out["signal"].abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        print(
            f"{backend:5s} params={count_parameters(net):,} patch={a.patch} threads={torch.get_num_threads()}: "
            f"forward of 1 patch {_time(infer, a.repeat):.2f} s, "
            f"training step of {a.batch} {_time(step, a.repeat):.2f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
