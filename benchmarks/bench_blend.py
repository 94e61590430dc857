"""Time blended inference of one 1024x512 frame vs one plain non-overlapping pass.

    PYTHONPATH=. python benchmarks/bench_blend.py [--net unet|c4unet] [--patch 128] [--batch 16]

The blend runs 4 offset grids (the study's), so its cost floor is the number of patches it predicts
over the plain pass's (counted here: 135 / 32 = 4.22 for 512 x 1024 and 128 px), plus the per-pixel
weighting. Both passes normalise every patch with the SAXS training normaliser (percentiles), as
``predict=frames`` does. Plain and blended passes alternate ``--repeat`` times and the row is the
median of the per-pair ratios (a change of the shared machine's load hits both alike; a best-of-N of
a short and a long run favours the short one). Row ``blend_vs_plain``, goal <= 4.3x.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from common import emit, quick  # noqa: F401  (sys.path set up by common)

from lit_sr.data.normalise import PercentileNormaliser
from lit_sr.domains.saxs.sim import SAXSSimConfig, make_geometry, simulate_background, simulate_xray_frame
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
    ap.add_argument("--repeat", type=int, default=3 if quick() else 5, help="interleaved plain / blended pairs")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = SAXSSimConfig(height=args.height, width=args.width)
    rng = np.random.default_rng(0)
    frame = simulate_xray_frame(cfg, make_geometry(cfg, rng), rng) + simulate_background(cfg, rng)
    net = DecompositionNet("plain" if args.net == "unet" else "c4").eval()
    print(
        f"net={args.net} params={count_parameters(net):,} frame={args.height}x{args.width} "
        f"patch={args.patch} batch={args.batch} threads={torch.get_num_threads()}"
    )
    patches = []

    def counted(x):
        patches[-1] += x.shape[0]
        return net(x)

    def run(offsets) -> float:
        patches.append(0)
        t = time.perf_counter()
        out = blend_predict(
            counted, frame, args.patch, offsets=offsets, batch_size=args.batch, normaliser=PercentileNormaliser()
        )
        assert out["signal"].shape == frame.shape
        return time.perf_counter() - t

    with torch.inference_mode():
        net(torch.zeros(1, 1, args.patch, args.patch))  # warm-up
        pairs = [(run(((0, 0),)), run(DEFAULT_OFFSETS)) for _ in range(args.repeat)]
    floor = patches[1] / patches[0]
    t_plain, t_blend = min(p for p, _ in pairs), min(b for _, b in pairs)
    ratio = statistics.median(b / p for p, b in pairs)
    print(f"plain non-overlapping pass: {t_plain:.2f} s ({patches[0]} patches)")
    print(f"blended ({len(DEFAULT_OFFSETS)} offsets):      {t_blend:.2f} s ({patches[1]} patches)")
    plausible = ratio >= 0.9 * floor  # far fewer seconds per patch than the plain pass: the load changed
    emit(
        "blend_vs_plain",
        ratio,
        "x",
        "<= 4.3x",
        ratio <= 4.3 and plausible,
        ("" if plausible else "IMPLAUSIBLE: 10 % or more below the patch-count floor (load artefact), not a pass. ")
        + f"{args.height}x{args.width} frame, {args.net}, patch {args.patch}: plain {t_plain:.2f} s, blended "
        f"{t_blend:.2f} s (best of {args.repeat}; ratio: median of interleaved pairs); patch-count floor "
        f"{floor:.2f} ({patches[1]} / {patches[0]} patches)",
    )


if __name__ == "__main__":
    main()
