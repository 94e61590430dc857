"""Quality against wall-clock time: a run's headline validation metric against ``time/fit_seconds`` (logged by
the default ``WallClock`` callback at every validation), several runs on one plot.

    python run.py experiment=lensing_srgan +trainer.val_check_interval=28      # validate every 28 steps
    python -m reports.quality_vs_time --metric val/psnr --run SRGAN=<run> --run ESRGAN=<run> --out docs/figures/lensing_gan_time

Writes ``<out>.png`` (metric against seconds, one line per run) and ``<out>.md`` (the points as a table).
Time counts from the start of ``fit`` (a setup stage that trains a PSNR model or classifiers first is not in it:
its cost is printed in the run's log).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from reports.runs import write_text

TIME_KEY = "time/fit_seconds"


def curve(run_dir: str | Path, metric: str) -> list[tuple[float, int, float]]:
    """(seconds, step, value) of every ``metrics.csv`` row that has both ``time/fit_seconds`` and ``metric``."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics.csv (is {run_dir} a run folder?)")
    points = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            t, v = row.get(TIME_KEY, ""), row.get(metric, "")
            if t and v and math.isfinite(float(v)):
                points.append((float(t), int(float(row.get("step") or 0)), float(v)))
    if not points:
        raise ValueError(
            f"{path}: no row with both {TIME_KEY!r} and {metric!r} (validated with the WallClock callback?)"
        )
    return sorted(points)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", required=True, help="LABEL=RUN_DIR; repeat")
    p.add_argument("--metric", default="val/psnr")
    p.add_argument("--out", required=True, help="output path without extension")
    p.add_argument("--log-y", action="store_true", help="logarithmic metric axis (ratios spanning decades)")
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    lines = [f"| run | step | wall seconds | {args.metric} |", "|---|---:|---:|---:|"]
    for spec in args.run:
        label, _, run_dir = spec.partition("=")
        pts = curve(run_dir, args.metric)
        ax.plot([t for t, _, _ in pts], [v for _, _, v in pts], marker="o", ms=3, label=label)
        lines += [f"| {label} | {s} | {t:.0f} | {v:.4g} |" for t, s, v in pts]
    ax.set_xlabel("wall-clock seconds since fit start")
    ax.set_ylabel(args.metric)
    if args.log_y:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out.with_suffix(".png"), dpi=120)
    write_text(out.with_suffix(".md"), "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
