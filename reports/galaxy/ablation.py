"""Ablation table of galaxy ProGAN recipes: the all-class ratios of each recipe's finished runs side by side.

    python -m reports.galaxy.ablation --run "recipe A=<run dir>" --run "recipe A=<run dir of another seed>" \
        --run "recipe B=<run dir>" [--out docs/figures/galaxy_ablation.md]

Each ``--run`` is ``LABEL=RUN_DIR`` of a finished ``experiment=galaxy_progan`` run (its test metrics, held-out
test split); runs with the same label are seeds of one recipe and give mean ± std. Columns: the W1 ratios of the
five morphology statistics and the Fréchet-distance ratio (all classes), the worst of the six, and the training
wall time (``time/fit_seconds`` of the last validation; the setup stage that trains the classifier is not in it).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from lit_sr.domains.galaxy.morphology import STATISTICS
from lit_sr.domains.galaxy.plots import STAT_LABELS
from lit_sr.inference.run_folder import read_test_metrics
from reports.galaxy.figures import _cell, _fmt
from reports.quality_vs_time import TIME_KEY, curve
from reports.runs import write_text

COLUMNS = [*(f"w1_ratio/{s}" for s in STATISTICS), "fd_ratio"]


def ablation_table(recipes: Mapping[str, Sequence[Path]]) -> str:
    """Markdown: one row per recipe, mean ± std over its runs of every all-class ratio (goal: W1 ≤ 3, FD ≤ 5)."""
    head = [_cell(STAT_LABELS[s]) for s in STATISTICS]
    lines = [
        "| recipe | runs | "
        + " | ".join(f"W1 ratio, {h}" for h in head)
        + " | FD ratio | worst W1 ratio | training (min, 1 thread) |",
        "|---|---:|" + "---:|" * (len(head) + 3),
    ]
    for label, dirs in recipes.items():
        metrics = [read_test_metrics(d) for d in dirs]
        cells = [_fmt([m.get(k, np.nan) for m in metrics]) for k in COLUMNS]
        # the worst of the statistics that were measured (n/a ones, e.g. HSM failures, are left out)
        worst = _fmt([np.nanmax([m.get(f"w1_ratio/{s}", np.nan) for s in STATISTICS]) for m in metrics])
        minutes = _fmt([curve(d, TIME_KEY)[-1][0] / 60 for d in dirs], 1)
        lines.append(f"| {_cell(label)} | {len(dirs)} | " + " | ".join(cells) + f" | {worst} | {minutes} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, help="LABEL=RUN_DIR; repeat (same label = seeds)")
    p.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    a = p.parse_args(argv)
    recipes: dict[str, list[Path]] = {}
    for spec in a.run:
        label, sep, path = spec.rpartition("=")
        if not sep or not label:
            raise SystemExit(f"--run {spec!r}: expected LABEL=RUN_DIR")
        recipes.setdefault(label, []).append(Path(path))
    text = ablation_table(recipes)
    if a.out:
        write_text(a.out, text)
    print(text)


if __name__ == "__main__":
    main()
