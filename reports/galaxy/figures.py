"""Figures and the results table of the galaxy ProGAN, and the command that regenerates them for the README.

    python -m reports.galaxy.figures --out docs/figures [--seeds 0 1 2] [--work DIR]

trains ``experiment=galaxy_progan`` (CPU recipe) once per seed (default seed 0 only: one run takes
longer than the ~6 min under which the README reports three seeds) with ``python run.py`` in subprocesses,
reads each run's test metrics (held-out real test split), samples the final generator with
``mode=predict``, and writes

* ``galaxy_results.md``: per statistic the W1 *ratio* W1(generated, real) / W1(real, real) (overall and per
  class) and the Frechet-distance *ratio*, mean +- std over the seeds, and the real/real denominators
  (means over random splits) with their spread over the splits;
* ``galaxy_samples.png``: real vs generated galaxies per class, PSF-free and convolved (+ noise);
* ``galaxy_morphology.png``: distributions of the five statistics, real vs generated (first seed);
* ``galaxy_phases.png``: the fixed-latent sample grids logged at the end of each resolution phase (first seed).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from lit_sr.domains.galaxy.morphology import STATISTICS
from lit_sr.domains.galaxy.plots import STAT_LABELS, example_grid
from lit_sr.inference.run_folder import read_test_metrics
from lit_sr.utils.figures import headless_backend
from reports.runs import REPO, run_py, write_text


# ---------------------------------------------------------------------------------------------- README
def _finished(run_dir: Path) -> bool:
    try:
        return bool(read_test_metrics(run_dir))
    except (OSError, ValueError):
        return False


def _fmt(values: Sequence[float], digits: int = 2) -> str:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return "n/a"
    if v.size == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell (a literal | would end the cell)."""
    return text.replace("|", "\\|")


def _fmt_spread(means: Sequence[float], spreads: Sequence[float]) -> str:
    """A denominator: its mean over the splits (averaged over seeds) ± its spread over the splits."""
    m = np.asarray([x for x in means if np.isfinite(x)], dtype=np.float64)
    s = np.asarray([x for x in spreads if np.isfinite(x)], dtype=np.float64)
    if m.size == 0:
        return "n/a"
    mean = m.mean()
    digits = 3 if abs(mean) < 10 else 0
    return f"{mean:.{digits}f} ± {s.mean():.{digits}f}" if s.size else f"{mean:.{digits}f}"


def results_table(
    metrics: Sequence[Mapping[str, float]],
    class_names: Sequence[str],
    seeds: Sequence[int],
    commands: Sequence[str],
    timings: Sequence[float],
) -> str:
    """Markdown: the ratios (model distance / real-real distance) per statistic, overall and per class, the
    Frechet-distance ratio, and the real/real denominators with their spread over the random splits."""
    cols = ["all", *class_names]
    over = f"mean ± std over seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else f"seed {seeds[0]} (one run)"
    n_splits = next((int(m["n_splits"]) for m in metrics if np.isfinite(m.get("n_splits", np.nan))), None)
    splits = f"{n_splits} random real/real splits" if n_splits else "random real/real splits"
    lines = [
        f"**Ratios**, not distances: W1(generated, real_a) / W1(real_b, real_a) and FD(generated, real_a) / "
        f"FD(real_b, real_a) on the held-out test split, real_a and real_b two disjoint random halves of the "
        f"real stamps, numerator and denominator each averaged over {splits} (1.0 = as close as independent "
        f"real data; goal <= 2); {over}.",
        "",
        "| ratio to real/real | " + " | ".join(cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for s in STATISTICS:
        row = [_fmt([m.get(f"w1_ratio/{s}" + ("" if c == "all" else f"/{c}"), np.nan) for m in metrics]) for c in cols]
        lines.append(f"| W1 ratio, {_cell(STAT_LABELS[s])} | " + " | ".join(row) + " |")
    row = [_fmt([m.get("fd_ratio" + ("" if c == "all" else f"/{c}"), np.nan) for m in metrics]) for c in cols]
    lines.append("| Frechet-distance ratio (classifier features) | " + " | ".join(row) + " |")
    pairs = [_fmt([m.get("n_pairs" + ("" if c == "all" else f"/{c}"), np.nan) for m in metrics], 0) for c in cols]
    lines.append("| images per compared set (m) | " + " | ".join(pairs) + " |")
    lines += [
        "",
        f"The denominators: W1(real_b, real_a) in the statistic's units and FD(real_b, real_a), mean over "
        f"the {splits} ± their standard deviation over the splits (both averaged over the seeds).",
        "",
        "| real/real denominator | " + " | ".join(cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for s in STATISTICS:
        row = [
            _fmt_spread(
                [m.get(f"w1_real/{s}" + ("" if c == "all" else f"/{c}"), np.nan) for m in metrics],
                [m.get(f"w1_real_std/{s}" + ("" if c == "all" else f"/{c}"), np.nan) for m in metrics],
            )
            for c in cols
        ]
        lines.append(f"| W1(real_b, real_a), {_cell(STAT_LABELS[s])} | " + " | ".join(row) + " |")
    row = [
        _fmt_spread(
            [m.get("fd_real" + ("" if c == "all" else f"/{c}"), np.nan) for m in metrics],
            [m.get("fd_real_std" + ("" if c == "all" else f"/{c}"), np.nan) for m in metrics],
        )
        for c in cols
    ]
    lines.append("| FD(real_b, real_a), classifier features | " + " | ".join(row) + " |")
    lines += ["", "Commands (one per seed; the run trains the classifier, the GAN through all phases, then tests):", ""]
    lines += [f"    {c}" for c in commands]
    lines += [
        "",
        "Wall time per run (training + test, measured on a 2-core machine shared with other jobs): "
        + ", ".join(f"{t / 60:.1f} min" for t in timings),
    ]
    return "\n".join(lines) + "\n"


def samples_figure(
    samples_h5: Path,
    data_file: Path,
    test_rows: np.ndarray,
    class_names: Sequence[str],
    columns: int = 4,
    seed: int = 0,
):
    """Real (test split) vs generated stamps per class: PSF-free, convolved / observed."""
    import h5py

    rng = np.random.default_rng(seed)
    examples: dict[str, dict[int, list[np.ndarray]]] = {
        k: {} for k in ("target_psf_free", "target", "output_psf_free", "output_convolved", "output")
    }
    with h5py.File(data_file, "r") as h5:
        labels = h5["label"][np.sort(test_rows)]
        rows = np.sort(test_rows)
        for c in range(len(class_names)):
            pick = np.sort(rng.choice(rows[labels == c], columns, replace=False))
            examples["target"][c] = list(h5["image"][pick])
            if "image_psf_free" in h5:
                examples["target_psf_free"][c] = list(h5["image_psf_free"][pick])
    with h5py.File(samples_h5, "r") as h5:
        lab = h5["label"][()]
        for c in range(len(class_names)):
            idx = np.flatnonzero(lab == c)[:columns]
            examples["output_psf_free"][c] = list(h5["psf_free"][idx][:, 0])
            examples["output_convolved"][c] = list(h5["convolved"][idx][:, 0])
            if "observed" in h5:
                examples["output"][c] = list(h5["observed"][idx][:, 0])
    return example_grid({k: v for k, v in examples.items() if v}, class_names, columns)


def phases_figure(run_dir: Path):
    """The phase-end sample grids of one run side by side (PNG files logged during training)."""
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    files = sorted(
        (run_dir / "figures").glob("train_samples_phase*.png"),
        key=lambda p: int(p.name.split("phase")[1].split("_")[0]),
    )
    fig, axes = plt.subplots(1, max(1, len(files)), figsize=(4.0 * max(1, len(files)), 6.0), squeeze=False)
    for ax, path in zip(axes[0], files):
        ax.imshow(mpimg.imread(path))
        ax.axis("off")
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("docs/figures"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument(
        "--work",
        type=Path,
        default=None,
        help="folder of the runs and data (default <repository>/outputs/galaxy_figures)",
    )
    ap.add_argument("--extra", nargs="*", default=[], help="extra Hydra overrides for every run")
    args = ap.parse_args(argv)
    import h5py

    headless_backend()
    import matplotlib.pyplot as plt

    out = args.out.resolve()
    work = (args.work or REPO / "outputs" / "galaxy_figures").resolve()
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    common = ["experiment=galaxy_progan", f"paths.root_dir={work}", "trainer.accelerator=cpu", *args.extra]
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    metrics, commands, timings, run_dirs = [], [], [], []
    for seed in args.seeds:
        run_dir = work / f"galaxy_progan_seed{seed}"
        cmd = [*common, f"seed={seed}"]
        if not _finished(run_dir):
            timings.append(run_py(cmd, run_dir, threads=threads))
        else:
            timings.append(
                float(json.loads((run_dir / "wall_time.json").read_text())["seconds"])
                if (run_dir / "wall_time.json").is_file()
                else float("nan")
            )
        (run_dir / "wall_time.json").write_text(json.dumps({"seconds": timings[-1]}))
        commands.append("python run.py " + " ".join(c for c in cmd if not c.startswith("paths.")))
        metrics.append(read_test_metrics(run_dir))
        run_dirs.append(run_dir)
    class_names = ["disk", "bulge", "irregular"]
    write_text(out / "galaxy_results.md", results_table(metrics, class_names, args.seeds, commands, timings))

    first = run_dirs[0]
    samples = first / "predict" / "samples.h5"
    if not samples.is_file():
        run_py(
            [
                *common,
                "mode=predict",
                f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}",
                "predict.num_samples=60",
                "predict.seed=0",
            ],
            first / "predict",
            threads=threads,
        )
    data_file = next((work / "data").glob("galaxy_*.h5"))
    with h5py.File(data_file, "r") as h5:
        n = h5["label"].shape[0]
    perm = np.random.default_rng(0).permutation(n)  # the data module's split (split_seed 0, fractions 0.5/0.1/0.4)
    test_rows = perm[int(round(0.5 * n)) + int(round(0.1 * n)) :]
    fig = samples_figure(samples, data_file, test_rows, class_names)
    fig.savefig(out / "galaxy_samples.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    morph = sorted((first / "figures").glob("test_morphology_epoch*.png"))
    if morph:
        img = plt.imread(morph[-1])
        plt.imsave(out / "galaxy_morphology.png", img)
    fig = phases_figure(first)
    fig.savefig(out / "galaxy_phases.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    print((out / "galaxy_results.md").read_text())


if __name__ == "__main__":
    main()
