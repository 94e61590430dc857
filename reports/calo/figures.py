"""README figures and tables of the calorimeter GAN-SR, regenerated from runs on the reader's machine.

    python -m reports.calo.figures --out docs/figures            # 3 seeds + what-was-tried table
    python -m reports.calo.figures --out docs/figures --no-ablation --seeds 0

What it does: ``python run.py seed=S`` (the default experiment, calo_srgan) for each seed in a
subprocess, the test metrics of each run from its ``metrics.csv``, their mean ± std
(``calo_results.md``); then the seed-0 run's best checkpoint is evaluated again on the test split
in-process for the pictures: image panels (LR | SR | HR | bicubic | nearest, photons and pions),
barycentre residuals, width distributions and ROC curves (``calo_*.png``). ``--ablation`` (default
on) also trains every configuration of :data:`ABLATION` once (seed 0, with the seed-0 run's
classifier) and writes the table of what was tried (``calo_ablation.md``, the default's seed-0 run first).

The evaluation, tables and panels are library code that ``notebooks/calo.ipynb`` uses too
(:mod:`lit_sr.domains.calo.results`, :func:`lit_sr.domains.calo.plots.panel_figure`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Mapping, Sequence

import torch

from lit_sr.domains.calo.plots import panel_figure
from lit_sr.domains.calo.results import evaluate_run, gap_closed, results_table
from lit_sr.inference.run_folder import load_run, read_test_metrics
from lit_sr.utils.figures import save_figures
from reports.runs import REPO, run_py, write_text

#: Variations of the current recipe (name -> (description, Hydra overrides on top of the default)); each entry
#: is one `python run.py seed=0` run, and the seed-0 run of the default is the table's first row. These are the
#: rows of docs/calo.md's ablation that today's code reproduces; the rows measured on earlier code (no impact
#: term; the impact term at full weight in the adversarial phase; the smaller generator on that code) stay in
#: docs/calo.md with the commits they were measured on.
ABLATION: dict[str, tuple[str, list[str]]] = {
    "fp32": ("default recipe in fp32", ["trainer.precision=32-true"]),
    "short_fp32": (
        "fp32, one epoch of 625 batches: 500 pixel pre-training + 125 WGAN-GP",
        [
            "trainer.precision=32-true",
            "model.pretrain_steps=500",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=625",
        ],
    ),
}


# ----------------------------------------------------------------------------- runs
def run_recipe(
    run_dir: Path, seed: int, overrides: Sequence[str] = (), root: Path | None = None, threads: int | None = None
) -> tuple[Path, float]:
    """``python run.py seed=<seed> <overrides>`` (the default experiment) into ``run_dir``; returns
    (run_dir, wall seconds). ``root``: LIT_SR_ROOT of the run (data file and outputs), default the caller's."""
    return Path(run_dir), run_py([f"seed={seed}", *overrides], run_dir, threads=threads, root=root)


ABLATION_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("barycentre_res_cm/sr", "resolution (cm)", 4),
    ("gap", "gap closed", 2),
    ("barycentre_bias_cm/sr_x", "bias x (cm)", 3),
    ("barycentre_bias_cm/sr_y", "bias y (cm)", 3),
    ("width_w1/sr_vs_hr", "width W1 (cm)", 4),
    ("width_mean_cm/sr", "mean width (cm)", 3),
    ("energy_violation/sr", "energy violation", 3),
    ("pion_rejection/sr", "π rejection @ 90 % γ", 2),
    ("auc/sr", "AUC", 3),
    ("psnr", "PSNR (dB)", 2),
)


def ablation_table(rows: Sequence[tuple[str, str, Mapping[str, float], float | None]]) -> str:
    """Markdown table: configuration, overrides, metrics (SR, test split), training wall time ("–": a reused
    run whose time was not recorded)."""
    head = "| configuration | " + " | ".join(label for _, label, _ in ABLATION_COLUMNS) + " | run time (s) |"
    lines = [head, "|---|" + "---|" * (len(ABLATION_COLUMNS) + 1)]
    for name, desc, m, seconds in rows:
        cells = []
        for key, _, digits in ABLATION_COLUMNS:
            v = gap_closed(m) if key == "gap" else m.get(key)
            cells.append("–" if v is None else f"{v:.{digits}f}")
        lines.append(f"| {desc} | " + " | ".join(cells) + f" | {'–' if seconds is None else f'{seconds:.0f}'} |")
    return "\n".join(lines)


def write_figures(evaluator, examples: Mapping[str, torch.Tensor], out: Path, prefix: str = "calo_") -> list[Path]:
    """The panels and the evaluator's physics plots as PNG files in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    figs = {"panels": panel_figure(examples), **evaluator.figures()}
    return save_figures(figs, out, prefix)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "figures")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--work",
        type=Path,
        default=None,
        help="folder of the runs (default $LIT_SR_ROOT/outputs/figures_calo or ./outputs/figures_calo)",
    )
    p.add_argument("--ablation", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--reuse",
        action="store_true",
        help="reuse finished runs in --work (<work>/seed<S>, <work>/ablation/<name>: metrics.csv, config_resolved.yaml, "
        "checkpoints/) instead of training again",
    )
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the runs (default: torch's)")
    a = p.parse_args(argv)
    root = Path(os.environ.get("LIT_SR_ROOT", REPO))
    work = a.work or root / "outputs" / "figures_calo"

    def one(run_dir: Path, seed: int, overrides: Sequence[str]) -> tuple[dict[str, float], float | None]:
        if a.reuse and (run_dir / "metrics.csv").is_file():
            # a finished run (e.g. a mode=test re-test of a trained run); its wall time if this script recorded it
            seconds = run_dir / "seconds.txt"
            try:
                return read_test_metrics(run_dir), float(seconds.read_text()) if seconds.is_file() else None
            except ValueError:
                pass
        print(f"python run.py seed={seed} {' '.join(overrides)} -> {run_dir}", flush=True)
        _, seconds = run_recipe(run_dir, seed, overrides, threads=a.threads)
        (run_dir / "seconds.txt").write_text(f"{seconds:.1f}\n")
        return read_test_metrics(run_dir), seconds

    runs, times = [], []
    for seed in a.seeds:
        m, s = one(work / f"seed{seed}", seed, [])
        runs.append(m)
        times.append(s)
        print(
            f"seed {seed}: {'?' if s is None else f'{s:.0f}'} s, resolution {m['barycentre_res_cm/sr']:.4f} cm "
            f"(LR barycentre {m.get('barycentre_res_cm/lr_native', float('nan')):.4f} cm, "
            f"LR regressor {m.get('barycentre_res_cm/lr_regressor', float('nan')):.4f} cm), "
            f"rejection {m['pion_rejection/sr']:.2f}",
            flush=True,
        )
    table = results_table(runs)
    if any(t is not None for t in times):
        table += (
            "\n\nWall time of `python run.py` (simulation of the data file excluded when it existed): "
            + ", ".join(f"seed {s}: {t:.0f} s" for s, t in zip(a.seeds, times) if t is not None)
        )
    write_text(a.out / "calo_results.md", table)
    print(table)

    first = work / f"seed{a.seeds[0]}"
    module, datamodule = load_run(first)
    evaluator, examples = evaluate_run(module, datamodule)
    for path in write_figures(evaluator, examples, a.out):
        print("wrote", path)

    if a.ablation and ABLATION:
        clf = first / "classifier" / "classifier.ckpt"
        rows = [("default", f"default recipe (bf16), seed {a.seeds[0]}", runs[0], times[0])]
        for name, (desc, overrides) in ABLATION.items():
            m, s = one(work / "ablation" / name, 0, [*overrides, f"model.classifier_ckpt={clf}"])
            rows.append((name, desc, m, s))
        text = ablation_table(rows)
        write_text(a.out / "calo_ablation.md", text)
        print(text)


if __name__ == "__main__":
    main()
