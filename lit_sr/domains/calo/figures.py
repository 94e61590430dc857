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

#: (metric key without the stage, label, unit, digits) of the results table; LR/SR/HR columns.
TABLE_ROWS: tuple[tuple[str, str, str, int], ...] = (
    ("barycentre_res_cm/{s}", "barycentre resolution, std", "cm", 4),
    ("barycentre_q68_cm/{s}", "barycentre resolution, q68", "cm", 4),
    ("barycentre_bias_cm/{s}_x", "barycentre bias x", "cm", 4),
    ("barycentre_bias_cm/{s}_y", "barycentre bias y", "cm", 4),
    ("width_mean_cm/{s}", "mean shower width", "cm", 3),
    ("width_w1/{s}_vs_hr", "width distribution W1 to HR", "cm", 4),
    ("energy_violation/{s}", "energy violation Σ|pool4(SR) − LR| / ΣLR", "", 4),
    ("auc/{s}", "photon/pion AUC (HR-trained classifier)", "", 4),
    ("pion_rejection/{s}", "pion rejection at 90 % photon efficiency", "", 2),
)
SOURCES = (("lr_up", "LR (upsampled)"), ("sr", "SR (GAN)"), ("hr", "HR (truth)"))
IMAGE_ROWS: tuple[tuple[str, str], ...] = (("psnr", "PSNR (dB)"), ("ssim", "SSIM"))

_SHORT = ["model.pretrain_steps=150", "trainer.limit_train_batches=250"]   # the previous recipe's length
_NO_SHOWER = ["model.loss.barycentre_weight=0", "model.loss.width_weight=0"]
_NO_FEATURES = ["model.loss.feature_weight=0"]
_UNCONDITIONAL = ["model.condition_on_input=false", "model.critic.condition_channels=0"]

#: What was tried on the way to the current recipe (name -> (description, Hydra overrides on top of the
#: current default)); each entry is one `python run.py seed=0` run, in the order they were tried.
ABLATION: dict[str, tuple[str, list[str]]] = {
    "previous": ("previous recipe: ReLU generator, L1, unconditional critic, 150 + 100 batches",
                 ["model.net.energy_conservation=false", *_NO_SHOWER, *_NO_FEATURES, *_UNCONDITIONAL, *_SHORT]),
    "softmax": ("+ energy-conserving (softmax) generator", [*_NO_SHOWER, *_NO_FEATURES, *_UNCONDITIONAL, *_SHORT]),
    "softmax_cond": ("softmax + critic conditioned on LR", [*_NO_SHOWER, *_NO_FEATURES, *_SHORT]),
    "softmax_shower": ("softmax + barycentre/width loss terms (1, 1)", [*_NO_FEATURES, *_UNCONDITIONAL, *_SHORT]),
    "softmax_shower_cond": ("softmax + shower terms + conditional critic", [*_NO_FEATURES, *_SHORT]),
    "softmax_shower_bary5": ("… with barycentre weight 5", ["model.loss.barycentre_weight=5", *_NO_FEATURES, *_SHORT]),
    "softmax_shower_feat1": ("softmax + shower terms + classifier features (1), unconditional",
                             ["model.loss.feature_weight=1", *_UNCONDITIONAL, *_SHORT]),
    "softmax_shower_cond_feat5": ("softmax + shower terms + conditional critic + features (5)", [*_SHORT]),
    "bary2_width2": ("… with barycentre and width weights 2", ["model.loss.barycentre_weight=2",
                                                             "model.loss.width_weight=2", *_SHORT]),
    "default": ("… and 250 + 100 batches (**current default**)", []),
    "default_bary3_width2": ("current default with barycentre weight 3, width weight 2",
                             ["model.loss.barycentre_weight=3", "model.loss.width_weight=2"]),
}


# ----------------------------------------------------------------------------- runs
def run_recipe(run_dir: Path, seed: int, overrides: Sequence[str] = (), root: Path | None = None,
               threads: int | None = None) -> tuple[Path, float]:
    """``python run.py seed=<seed> <overrides>`` (the default experiment) into ``run_dir``; returns
    (run_dir, wall seconds). ``root``: LIT_SR_ROOT of the run (data file and outputs), default the caller's."""
    return Path(run_dir), run_py([f"seed={seed}", *overrides], run_dir, threads=threads, root=root)


def gap_closed(m: Mapping[str, float]) -> float:
    """Fraction of the LR -> HR barycentre-resolution gap closed by SR."""
    lr, sr, hr = (m[f"barycentre_res_cm/{s}"] for s in ("lr_up", "sr", "hr"))
    return (lr - sr) / (lr - hr)



def _cell(values: Sequence[float], digits: int) -> str:
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return "–"
    m, s = mean_std(values)
    return f"{m:.{digits}f}" if len(values) == 1 else f"{m:.{digits}f} ± {s:.{digits}f}"


def results_table(runs: Sequence[Mapping[str, float]]) -> str:
    """Markdown table, mean ± std over runs (one run: the value) for LR, SR and HR."""
    n = len(runs)
    head = "| test metric | " + " | ".join(label for _, label in SOURCES) + " |"
    lines = [head, "|---|" + "---|" * len(SOURCES)]
    for key, label, unit, digits in TABLE_ROWS:
        cells = []
        for s, _ in SOURCES:
            k = key.format(s=s)
            vals = [r.get(k) for r in runs]
            cells.append("0" if s == "hr" and "w1" in key else
                         ("–" if all(v is None for v in vals) else _cell(vals, digits)))
        lines.append(f"| {label}{f' ({unit})' if unit else ''} | " + " | ".join(cells) + " |")
    gaps = [gap_closed(r) for r in runs]
    lines.append(f"| LR → HR resolution gap closed by SR | | {_cell([100 * g for g in gaps], 1)} % | |")
    lines.append("")
    lines.append("| image metric (log1p(E / 0.1 GeV) space) | SR (GAN) | nearest | bicubic |")
    lines.append("|---|---|---|---|")
    for key, label in IMAGE_ROWS:
        cells = [_cell([r.get(k) for r in runs], 3 if key == "ssim" else 2)
                 for k in (key, f"nearest_{key}", f"bicubic_{key}")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"{n} run{'s' if n > 1 else ''}: mean ± standard deviation over seeds" if n > 1 else "1 run")
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
def evaluate_run(module, datamodule, split: str = "test", n_panel: int = 4,
                 oracle: bool = False) -> tuple[Any, dict[str, Any]]:
    """Run ``module`` over a split with its physics evaluator (computed); returns (evaluator, examples).

    ``examples``: GeV images of the first ``n_panel`` photons and pions of the split: ``input``
    (LR), ``input_up``, ``output`` (SR), ``target`` (HR), ``bicubic``, ``nearest`` and ``label``.
    ``oracle``: also evaluate the HR image rescaled block by block to the LR crystal energies (the
    best any exactly energy-conserving SR can do); its evaluator is ``examples["oracle_evaluator"]``.
    """
    from lit_sr.domains.calo.metrics import CaloPhysicsEvaluator, conserve_energy

    datamodule.prepare_data()
    datamodule.setup("test" if split == "test" else "fit")
    loader = datamodule.dataloader(split, shuffle=False)
    evaluator = module.evaluator
    evaluator.reset()
    best = CaloPhysicsEvaluator(evaluator.classifier, evaluator.classifier_transform, factor=evaluator.factor,
                                sources=("sr",), w0=evaluator.bary_log["sr"].w0) if oracle else None
    kept: dict[str, list[torch.Tensor]] = {}
    for batch in loader:
        lr = batch["input"]
        sr = module.eval_net(lr)
        baselines = {b: module.baseline(lr, b) for b in module.baselines}
        images = module.physical_images(batch, sr, baselines)
        evaluator.update(batch, images)
        if best is not None:
            best.update(batch, {"input": images["input"],
                                "output": conserve_energy(images["target"], images["input"], module.scale)})
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


def cross_classifier_separation(sr_run: Path, classifier_run: Path) -> dict[str, float]:
    """AUC and pion rejection of ``sr_run``'s SR showers judged by the classifier of ``classifier_run``
    (trained with another seed): the generator was trained to match its own classifier's features, so
    this is the stricter measure of the separation."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from lit_sr.domains.calo.metrics import CaloPhysicsEvaluator
    from lit_sr.models.classifier import load_frozen_classifier

    module, datamodule = load_run(sr_run)
    cfg = OmegaConf.load(Path(sr_run) / "config_resolved.yaml").classifier.model
    classifier = load_frozen_classifier(str(Path(classifier_run) / "classifier" / "classifier.ckpt"),
                                        instantiate(cfg.net), list(cfg.class_names), cfg.image_size)
    own = module.evaluator
    module.evaluator = CaloPhysicsEvaluator(classifier, None, w0=own.bary_log["sr"].w0, factor=own.factor)
    evaluator, _ = evaluate_run(module, datamodule)
    return {k: float(v) for k, v in evaluator.compute().items() if k.startswith(("auc/", "pion_rejection/"))}


def panel_figure(examples: Mapping[str, torch.Tensor], columns: Sequence[tuple[str, str]] = (
        ("input_up", "LR (6×6)"), ("output", "SR (GAN)"), ("target", "HR (truth)"), ("bicubic", "bicubic"),
        ("nearest", "nearest")), floor_gev: float = 1e-3):
    """Rows of events (photons first, then pions), columns LR | SR | HR | baselines; log10 GeV colours
    shared per row (its HR's range)."""

    headless_backend()
    import matplotlib.pyplot as plt

    labels = examples["label"].tolist()
    n = len(labels)
    fig, axes = plt.subplots(n, len(columns), figsize=(1.7 * len(columns) + 0.8, 1.7 * n), squeeze=False,
                             constrained_layout=True)
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
    p.add_argument("--work", type=Path, default=None,
                   help="folder of the runs (default $LIT_SR_ROOT/outputs/figures_calo or ./outputs/figures_calo)")
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
        print(f"seed {seed}: {s:.0f} s, resolution {m['barycentre_res_cm/sr']:.4f} cm, "
              f"rejection {m['pion_rejection/sr']:.2f}", flush=True)
    table = results_table(runs)
    table += ("\n\nWall time of `python run.py` (simulation of the data file excluded when it existed): "
              + ", ".join(f"seed {s}: {t:.0f} s" for s, t in zip(a.seeds, times)))
    _write(a.out / "calo_results.md", table)
    print(table)

    if len(a.seeds) > 1:
        lines = ["", "Separation judged by the classifier of another seed (the generator matched its own "
                     "classifier's features):", ""]
        for sr_seed, clf_seed in zip(a.seeds, a.seeds[1:] + a.seeds[:1]):
            m = cross_classifier_separation(work / f"seed{sr_seed}", work / f"seed{clf_seed}")
            lines.append(f"* SR of seed {sr_seed}, classifier of seed {clf_seed}: pion rejection "
                         f"{m['pion_rejection/sr']:.2f} (LR {m['pion_rejection/lr_up']:.2f}), AUC {m['auc/sr']:.3f}")
        table += "\n".join(lines)
        _write(a.out / "calo_results.md", table)
        print("\n".join(lines), flush=True)

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
