"""README figures and tables of the calorimeter GAN-SR, regenerated from runs on the reader's machine.

    python -m lit_sr.domains.calo.figures --out docs/figures            # 3 seeds + what-was-tried table
    python -m lit_sr.domains.calo.figures --out docs/figures --no-ablation --seeds 0

What it does: ``python run.py seed=S`` (the default experiment, calo_srgan) for each seed in a
subprocess, the test metrics of each run from its ``metrics.csv``, their mean ± std
(``calo_results.md``); then the seed-0 run's best checkpoint is evaluated again on the test split
in-process for the pictures: image panels (LR | SR | HR | bicubic | nearest, photons and pions),
barycentre residuals, width distributions and ROC curves (``calo_*.png``). ``--ablation`` (default
on) also trains every configuration of :data:`ABLATION` once (seed 0, with the seed-0 run's
classifier) and writes the table of what was tried (``calo_ablation.md``).

The helpers (:func:`load_run`, :func:`evaluate_run`, :func:`panel_figure`) are what
``notebooks/calo.ipynb`` uses.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from lit_sr.inference.runs import REPO, load_run, mean_std, read_test_metrics, run_py
from lit_sr.utils.figures import headless_backend, save_figures

#: position rows: (key with {s}, label, digits); columns POSITION_COLUMNS
POSITION_ROWS: tuple[tuple[str, str, int], ...] = (
    ("barycentre_res_cm/{s}", "impact-point resolution, std (cm)", 4),
    ("barycentre_q68_cm/{s}", "impact-point resolution, q68 (cm)", 4),
    ("barycentre_bias_cm/{s}_x", "bias x (cm)", 4),
    ("barycentre_bias_cm/{s}_y", "bias y (cm)", 4),
)
POSITION_COLUMNS = (
    ("lr_native", "LR barycentre (6×6, w0 tuned on val)"),
    ("lr_fit", "LR pixel fit (reference)"),
    ("sr", "SR (GAN), w0 = 4.7"),
    ("hr", "HR (truth), w0 = 4.7"),
)
#: shower rows (SR and HR)
SHOWER_ROWS: tuple[tuple[str, str, int], ...] = (
    ("width_mean_cm/{s}", "mean shower width (cm)", 3),
    ("width_w1/{s}_vs_hr", "width distribution W1 to HR (cm)", 4),
    ("energy_violation/{s}", "energy violation Σ|pool4(SR) − LR| / ΣLR", 4),
)
SEPARATION_ROWS: tuple[tuple[str, str, int], ...] = (
    ("auc/{s}", "photon/π⁰ AUC", 4),
    ("pion_rejection/{s}", "π⁰ rejection at 90 % photon efficiency", 1),
)
SEPARATION_COLUMNS = (
    ("lr_shape", "LR shape variables (logistic)"),
    ("lr_cnn", "LR-trained CNN"),
    ("sr", "SR (GAN) → HR judge"),
    ("hr", "HR → HR judge"),
)
IMAGE_ROWS: tuple[tuple[str, str], ...] = (("psnr", "PSNR (dB)"), ("ssim", "SSIM"))
#: which direction is better, for the bold entry of each row (truth columns are references, never bold)
_LOWER_IS_BETTER = ("barycentre_res_cm", "barycentre_q68_cm", "width_w1", "energy_violation")

#: What to try on the way to the resolution goal (name -> (description, Hydra overrides on top of the
#: current default)); each entry is one `python run.py seed=0` run. The rows measured before the impact
#: term existed are kept in docs/calo.md with the commit they were measured on.
ABLATION: dict[str, tuple[str, list[str]]] = {
    "default": ("current default: HR-referenced shower terms, no impact term", []),
    "impact10": ("+ impact-point term (weight 10, both phases)", ["model.impact_weight=10"]),
    "impact30_pix0.1": (
        "impact term 30 and shower terms at 0.1 in the GAN phase",
        ["model.impact_weight=30", "model.pixel_weight=0.1"],
    ),
    "impact10_long": (
        "impact term 10, 600 pre-training + 100 GAN batches",
        ["model.impact_weight=10", "model.pretrain_steps=600", "trainer.limit_train_batches=700"],
    ),
}


# ----------------------------------------------------------------------------- runs
def run_recipe(
    run_dir: Path, seed: int, overrides: Sequence[str] = (), root: Path | None = None, threads: int | None = None
) -> tuple[Path, float]:
    """``python run.py seed=<seed> <overrides>`` (the default experiment) into ``run_dir``; returns
    (run_dir, wall seconds). ``root``: LIT_SR_ROOT of the run (data file and outputs), default the caller's."""
    return Path(run_dir), run_py([f"seed={seed}", *overrides], run_dir, threads=threads, root=root)


def gap_closed(m: Mapping[str, float]) -> float:
    """Fraction of the (native LR barycentre -> HR) resolution gap closed by SR (negative: SR is worse
    than the LR analysis)."""
    lr, sr, hr = (m[f"barycentre_res_cm/{s}"] for s in ("lr_native", "sr", "hr"))
    return (lr - sr) / (lr - hr)


def _cell(values: Sequence[float | None], digits: int, bold: bool = False) -> str:
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return "–"
    m, s = mean_std([float(v) for v in values])
    text = f"{m:.{digits}f}" if len(values) == 1 else f"{m:.{digits}f} ± {s:.{digits}f}"
    return f"**{text}**" if bold else text


def rejection_cell(
    values: Sequence[float | None], lower_limits: Sequence[float | None], digits: int = 1, bold: bool = False
) -> str:
    """Rejection over runs; runs where no pion passed give lower limits: all of them -> "> min",
    some of them -> the mean marked with ≥ (a lower limit on the mean)."""
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return "–"
    limits = [bool(f) for f in lower_limits]
    if all(limits):
        text = f"> {min(values):.0f}"
    else:
        text = _cell(values, digits)
        if any(limits):
            text = "≥ " + text
    return f"**{text}**" if bold else text


def _best(runs: Sequence[Mapping[str, float]], key: str, sources: Sequence[str]) -> str | None:
    """The source (not the HR truth) with the best mean of ``key`` over runs."""
    means = {}
    for s in sources:
        vals = [r.get(key.format(s=s)) for r in runs]
        if s != "hr" and vals and all(v is not None and math.isfinite(v) for v in vals):
            means[s] = float(np.mean(vals))
    if not means:
        return None
    if key.startswith("barycentre_bias"):
        return min(means, key=lambda s: abs(means[s]))
    lower = key.startswith(_LOWER_IS_BETTER)
    return (min if lower else max)(means, key=means.get)


def results_table(runs: Sequence[Mapping[str, float]]) -> str:
    """Markdown tables, mean ± std over runs (one run: the value): impact point (LR analyses, SR, HR),
    shower shape (SR, HR), photon/π⁰ separation (LR analyses, SR, HR), image metrics. The best
    non-truth entry of each row is bold."""
    n = len(runs)
    lines = [
        "| impact point, test split | " + " | ".join(label for _, label in POSITION_COLUMNS) + " |",
        "|---|" + "---|" * len(POSITION_COLUMNS),
    ]
    for key, label, digits in POSITION_ROWS:
        best = _best(runs, key, [s for s, _ in POSITION_COLUMNS])
        cells = [_cell([r.get(key.format(s=s)) for r in runs], digits, s == best) for s, _ in POSITION_COLUMNS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    gaps = [100 * gap_closed(r) for r in runs if all(f"barycentre_res_cm/{s}" in r for s in ("lr_native", "sr", "hr"))]
    w0s = [r.get("tuned/lr_native_w0") for r in runs]
    lines.append(f"| LR-barycentre → HR gap closed by SR | | | {_cell(gaps, 1)} % | |")
    lines.append(f"| tuned LR w0 (validation split) | {_cell(w0s, 1)} | | | |")
    lines += ["", "| shower shape, test split | SR (GAN) | HR (truth) |", "|---|---|---|"]
    for key, label, digits in SHOWER_ROWS:
        cells = []
        for s in ("sr", "hr"):
            vals = [r.get(key.format(s=s)) for r in runs]
            cells.append(
                "0" if s == "hr" and "w1" in key else _cell(vals, digits) if any(v is not None for v in vals) else "–"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| photon/π⁰ separation, test split | " + " | ".join(label for _, label in SEPARATION_COLUMNS) + " |",
        "|---|" + "---|" * len(SEPARATION_COLUMNS),
    ]
    for key, label, digits in SEPARATION_ROWS:
        best = _best(runs, key, [s for s, _ in SEPARATION_COLUMNS])
        cells = []
        for s, _ in SEPARATION_COLUMNS:
            vals = [r.get(key.format(s=s)) for r in runs]
            if key.startswith("pion_rejection"):
                flags = [r.get(f"pion_rejection_lower_limit/{s}", 0.0) for r in runs]
                cells.append(rejection_cell(vals, flags, digits, s == best))
            else:
                cells.append(_cell(vals, digits, s == best))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "| image metric (log1p(E / 0.1 GeV) space) | SR (GAN) | nearest | bicubic |", "|---|---|---|---|"]
    for key, label in IMAGE_ROWS:
        cells = [
            _cell([r.get(k) for r in runs], 3 if key == "ssim" else 2)
            for k in (key, f"nearest_{key}", f"bicubic_{key}")
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"{n} runs: mean ± standard deviation over seeds" if n > 1 else "1 run")
    return "\n".join(lines)


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


def ablation_table(rows: Sequence[tuple[str, str, Mapping[str, float], float]]) -> str:
    """Markdown table: configuration, overrides, metrics (SR, test split), training wall time."""
    head = "| configuration | " + " | ".join(label for _, label, _ in ABLATION_COLUMNS) + " | run time (s) |"
    lines = [head, "|---|" + "---|" * (len(ABLATION_COLUMNS) + 1)]
    for name, desc, m, seconds in rows:
        cells = []
        for key, _, digits in ABLATION_COLUMNS:
            v = gap_closed(m) if key == "gap" else m.get(key)
            cells.append("–" if v is None else f"{v:.{digits}f}")
        lines.append(f"| {desc} | " + " | ".join(cells) + f" | {seconds:.0f} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- evaluation in-process


@torch.no_grad()
def evaluate_run(
    module, datamodule, split: str = "test", n_panel: int = 4, oracle: bool = False
) -> tuple[Any, dict[str, Any]]:
    """Run ``module`` over a split with its physics evaluator (baselines tuned on the validation split
    first, as in training; then computed); returns (evaluator, examples).

    ``examples``: GeV images of the first ``n_panel`` photons and pions of the split: ``input``
    (LR), ``input_up``, ``output`` (SR), ``target`` (HR), ``bicubic``, ``nearest`` and ``label``.
    ``oracle``: also evaluate the HR image rescaled block by block to the LR crystal energies (the
    best any exactly energy-conserving SR can do) as the ``output`` of a second evaluator without
    judges; it is ``examples["oracle_evaluator"]``.
    """
    from lit_sr.domains.calo.evaluator import CaloPhysicsEvaluator
    from lit_sr.domains.calo.metrics import conserve_energy

    datamodule.prepare_data()
    datamodule.setup("fit")
    evaluator = module.evaluator
    if not evaluator.prepared:
        evaluator.prepare((b, module.physical_images(b)) for b in datamodule.dataloader("val", shuffle=False))
    evaluator.reset()
    loader = datamodule.dataloader(split, shuffle=False)
    best = CaloPhysicsEvaluator(factor=evaluator.factor, w0=evaluator.w0, baselines=()) if oracle else None
    kept: dict[str, list[torch.Tensor]] = {}
    for batch in loader:
        lr = batch["input"]
        sr = module.eval_net(lr)
        baselines = {b: module.baseline(lr, b) for b in module.baselines}
        images = module.physical_images(batch, sr, baselines)
        evaluator.update(batch, images)
        if best is not None:
            best.update(
                batch,
                {"input": images["input"], "output": conserve_energy(images["target"], images["input"], module.scale)},
            )
        if sum(len(v) for v in kept.get("label", [])) < 400:
            for k, v in images.items():
                kept.setdefault(k, []).append(v)
            kept.setdefault("label", []).append(batch["label"])
    evaluator.compute()
    cat = {k: torch.cat(v) for k, v in kept.items()}
    pick = torch.cat([torch.nonzero(cat["label"] == c).flatten()[:n_panel] for c in (0, 1)])
    examples: dict[str, Any] = {k: v[pick] for k, v in cat.items()}
    if best is not None:
        best.compute()
        examples["oracle_evaluator"] = best
    return evaluator, examples


def panel_figure(
    examples: Mapping[str, torch.Tensor],
    columns: Sequence[tuple[str, str]] = (
        ("input_up", "LR (6×6)"),
        ("output", "SR (GAN)"),
        ("target", "HR (truth)"),
        ("bicubic", "bicubic"),
        ("nearest", "nearest"),
    ),
    floor_gev: float = 1e-3,
):
    """Rows of events (photons first, then pions), columns LR | SR | HR | baselines; log10 GeV colours
    shared per row (its HR's range)."""

    headless_backend()
    import matplotlib.pyplot as plt

    labels = examples["label"].tolist()
    n = len(labels)
    fig, axes = plt.subplots(
        n, len(columns), figsize=(1.7 * len(columns) + 0.8, 1.7 * n), squeeze=False, constrained_layout=True
    )
    for r in range(n):
        ref = np.log10(np.clip(examples["target"][r, 0].numpy(), floor_gev, None))
        vmin, vmax = float(ref.min()), float(ref.max())
        for c, (key, title) in enumerate(columns):
            img = np.log10(np.clip(examples[key][r, 0].numpy(), floor_gev, None))
            im = axes[r, c].imshow(img, vmin=vmin, vmax=vmax, cmap="magma", interpolation="nearest")
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(title, fontsize=9)
            if c == 0:
                axes[r, c].set_ylabel("photon" if labels[r] == 0 else "π⁰", fontsize=9)
        fig.colorbar(im, ax=axes[r, -1], fraction=0.046, label="log10 E / GeV" if r == n - 1 else None)
    return fig


def write_figures(evaluator, examples: Mapping[str, torch.Tensor], out: Path, prefix: str = "calo_") -> list[Path]:
    """The panels and the evaluator's physics plots as PNG files in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    figs = {"panels": panel_figure(examples), **evaluator.figures()}
    return save_figures(figs, out, prefix)


def _write(path: Path, text: str) -> None:
    from lit_sr.utils.atomic import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(text + "\n")


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
    p.add_argument("--reuse", action="store_true", help="reuse finished runs in --work instead of training again")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the runs (default: torch's)")
    a = p.parse_args(argv)
    root = Path(os.environ.get("LIT_SR_ROOT", REPO))
    work = a.work or root / "outputs" / "figures_calo"

    def one(run_dir: Path, seed: int, overrides: Sequence[str]) -> tuple[dict[str, float], float]:
        if a.reuse and (run_dir / "metrics.csv").is_file() and (run_dir / "seconds.txt").is_file():
            try:
                return read_test_metrics(run_dir), float((run_dir / "seconds.txt").read_text())
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
            f"seed {seed}: {s:.0f} s, resolution {m['barycentre_res_cm/sr']:.4f} cm "
            f"(LR barycentre {m.get('barycentre_res_cm/lr_native', float('nan')):.4f} cm), "
            f"rejection {m['pion_rejection/sr']:.2f}",
            flush=True,
        )
    table = results_table(runs)
    table += "\n\nWall time of `python run.py` (simulation of the data file excluded when it existed): " + ", ".join(
        f"seed {s}: {t:.0f} s" for s, t in zip(a.seeds, times)
    )
    _write(a.out / "calo_results.md", table)
    print(table)

    first = work / f"seed{a.seeds[0]}"
    module, datamodule = load_run(first)
    evaluator, examples = evaluate_run(module, datamodule)
    for path in write_figures(evaluator, examples, a.out):
        print("wrote", path)

    if a.ablation and ABLATION:
        clf = first / "classifier" / "classifier.ckpt"
        rows = []
        for name, (desc, overrides) in ABLATION.items():
            m, s = one(work / "ablation" / name, 0, [*overrides, f"model.classifier_ckpt={clf}"])
            rows.append((name, desc, m, s))
        text = ablation_table(rows)
        _write(a.out / "calo_ablation.md", text)
        print(text)


if __name__ == "__main__":
    main()
