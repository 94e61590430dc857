"""HSM ellipticity |g| of real and generated galaxies, observed and PSF-free, per class: where an ellipticity
W1 ratio comes from.

    python -m reports.galaxy.shapes <run dir> [<run dir> ...] [--out docs/figures/galaxy_shapes.md]

For each finished galaxy ProGAN run (``experiment=galaxy_progan*``): the held-out test stamps, observed
(``image``: PSF + noise, what the evaluator's ``w1_ratio/e`` measures) and PSF-free (``image_psf_free``),
and as many generated stamps with the same labels from the run's tested (EMA) generator, observed (through the
run's PSF layer and noise, as the evaluator gets them) and PSF-free. Per set and class: mean |g|, median,
90th percentile and the HSM failure rate (``lit_sr.domains.galaxy.morphology.adaptive_ellipticity``, the
evaluator's measurement).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lit_sr.domains.galaxy.morphology import adaptive_ellipticity, growth_curve_radii
from lit_sr.inference.run_folder import load_run
from reports.runs import write_text


def ellipticities(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HSM |g| per stamp [N] (NaN where HSM failed) and the failure mask, with the evaluator's size guess."""
    radii = growth_curve_radii(images, [0.5])
    g1, g2, _ = adaptive_ellipticity(images, guess_sigma_pix=radii[:, 0] / 1.1774)
    g = np.hypot(g1, g2)
    return g, ~np.isfinite(g)


def stamp_sets(run_dir: Path, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """{set name: stamps [N, S, S] in ADU} and the labels [N] of the run's test split."""
    module, dm = load_run(run_dir)
    dm.prepare_data()
    dm.setup("test")
    observed, psf_free, labels = [], [], []
    for batch in dm.test_dataloader():
        observed.append(module.to_physical(batch["image"]))
        psf_free.append(module.to_physical(batch["image_psf_free"]))
        labels.append(batch["label"])
    lab = torch.cat(labels)
    phase = module.schedule.n_phases - 1
    fake = module.sample_eval(
        lab if module.conditional else None, len(lab), None, torch.Generator().manual_seed(seed), phase, 1.0
    )
    sets = {
        "real, observed": torch.cat(observed),
        "real, PSF-free": torch.cat(psf_free),
        "generated, observed": fake["observed"],
        "generated, PSF-free": fake["psf_free"],
    }
    return {k: v[:, 0].detach().cpu().numpy() for k, v in sets.items()}, lab.numpy()


def shape_table(runs: Sequence[Path], class_names: Sequence[str] = ("disk", "bulge", "irregular")) -> str:
    """Markdown table: one row per run, stamp set and class (all classes first)."""
    lines = [
        "| run | stamps | class | N | mean \\|g\\| | median | 90th percentile | HSM failures |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        sets, labels = stamp_sets(run)
        for name, images in sets.items():
            g, failed = ellipticities(images)
            groups = [("all", np.ones(len(g), bool))] + [(c, labels == i) for i, c in enumerate(class_names)]
            for cname, sel in groups:
                gs = g[sel & ~failed]
                q50, q90 = np.percentile(gs, [50, 90]) if gs.size else (np.nan, np.nan)
                lines.append(
                    f"| {run.name} | {name} | {cname} | {int(sel.sum())} | {np.mean(gs):.3f} | {q50:.3f} | "
                    f"{q90:.3f} | {100 * failed[sel].mean():.1f} % |"
                )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="finished galaxy ProGAN run folders")
    p.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    a = p.parse_args(argv)
    text = shape_table(a.runs)
    print(text)
    if a.out is not None:
        write_text(a.out, text)


if __name__ == "__main__":
    main()
