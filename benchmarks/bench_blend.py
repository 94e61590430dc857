"""Time blended inference of one 1024x512 frame vs one plain non-overlapping pass.

    PYTHONPATH=. python benchmarks/bench_blend.py [--net unet|c4unet] [--patch 128] [--batch 16]

The blend runs 4 offset grids (the study's), so its cost floor is ~4x the plain pass (plus extra
edge cells of the shifted grids and the per-pixel weighting). Both passes normalise every patch with
the SAXS training normaliser (percentiles), as ``predict=frames`` does. Row ``blend_vs_plain``, goal
<= 4.3x.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lit_sr.domains.saxs.sim import SAXSSimConfig, make_geometry, simulate_background, simulate_xray_frame
from common import emit, quick  # noqa: F401  (sys.path set up by common)
from lit_sr.data.normalise import PercentileNormaliser
from lit_sr.inference.blend import DEFAULT_OFFSETS, blend_predict
from lit_sr.nets.decomposition import DecompositionNet
from lit_sr.nets.unet import count_parameters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", choices=["unet", "c4unet"], default="unet")
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=2 if quick() else 3, help="best of N timings")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = SAXSSimConfig(height=args.height, width=args.width)
    rng = np.random.default_rng(0)
    frame = simulate_xray_frame(cfg, make_geometry(cfg, rng), rng) + simulate_background(cfg, rng)
    net = DecompositionNet("plain" if args.net == "unet" else "c4").eval()
    print(f"net={args.net} params={count_parameters(net):,} frame={args.height}x{args.width} "
          f"patch={args.patch} batch={args.batch} threads={torch.get_num_threads()}")
    with torch.inference_mode():
        net(torch.zeros(1, 1, args.patch, args.patch))          # warm-up
        t_plain = t_blend = float("inf")
        for _ in range(args.repeat):
            t = time.perf_counter()
            plain = blend_predict(net, frame, args.patch, offsets=((0, 0),), batch_size=args.batch,
                                  normaliser=PercentileNormaliser())
            t_plain = min(t_plain, time.perf_counter() - t)
            t = time.perf_counter()
            blended = blend_predict(net, frame, args.patch, offsets=DEFAULT_OFFSETS, batch_size=args.batch,
                                    normaliser=PercentileNormaliser())
            t_blend = min(t_blend, time.perf_counter() - t)
    assert blended["signal"].shape == plain["signal"].shape == frame.shape
    print(f"plain non-overlapping pass: {t_plain:.2f} s")
    print(f"blended ({len(DEFAULT_OFFSETS)} offsets):      {t_blend:.2f} s")
    ratio = t_blend / t_plain
    emit("blend_vs_plain", ratio, "x", "<= 4.3x", ratio <= 4.3,
         f"{args.height}x{args.width} frame, {args.net}, patch {args.patch}: plain {t_plain:.2f} s, "
         f"blended {t_blend:.2f} s (floor {len(DEFAULT_OFFSETS)})")


if __name__ == "__main__":
    main()
