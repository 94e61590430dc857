"""Where an SR model gains or loses light: the mean over test lenses of sum(SR - HR) in rings about the image centre,
as a share of each lens's total HR flux, plus the total, the share of negative pixels and the median peak ratio.

    python -m reports.lensing.flux_rings /work/runs/c18/rrdb_s0 /work/runs/lensgain/esrgan_task1e-1_s0

The first run's config gives the data (test split); every run's generator is loaded from its last checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import torch

from reports.lensing.paired import RunScorer

#: ring edges in HR pixels from the image centre (the HR image is 96 px: 48 px to the edge midpoints)
EDGES = (0, 12, 24, 36, 48, 70)


def ring_shares(sr: torch.Tensor, hr: torch.Tensor, edges: Sequence[float] = EDGES) -> list[float]:
    """Mean over lenses of sum over each ring of (SR - HR) / sum(HR); [B, 1, H, W] physical images."""
    h, w = hr.shape[-2:]
    y, x = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    r = torch.hypot(x, y)
    total = hr.flatten(1).sum(1)
    return [
        float(((sr - hr)[..., (r >= a) & (r < b)].sum(-1).flatten(1).sum(1) / total).mean())
        for a, b in zip(edges[:-1], edges[1:])
    ]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    args = p.parse_args(argv)
    scorer = RunScorer(args.runs[0])
    hr = torch.cat([scorer.transform.inverse(b["target"]) for b in scorer.batches]).double()
    hr_shares = [-v for v in ring_shares(torch.zeros_like(hr), hr)]
    print(f"rings (HR px) {list(EDGES)}; HR share per ring {[round(v, 3) for v in hr_shares]}")
    print(f"HR: negative pixels {float((hr < 0).double().mean()):.3f}")
    for run in args.runs:
        net = scorer.generator(run)
        with torch.no_grad():
            sr = torch.cat([scorer.transform.inverse(net(b["input"])) for b in scorer.batches]).double()
        shares = ring_shares(sr, hr)
        total = float(((sr.flatten(1).sum(1) - hr.flatten(1).sum(1)) / hr.flatten(1).sum(1)).mean())
        peak = float((sr.flatten(1).amax(1) / hr.flatten(1).amax(1)).median())
        print(
            f"{run.name}: (SR-HR)/sum HR per ring {[round(v, 4) for v in shares]}, total {total:+.4f}, "
            f"negative pixels {float((sr < 0).double().mean()):.3f}, median peak ratio {peak:.3f}"
        )


if __name__ == "__main__":
    main()
