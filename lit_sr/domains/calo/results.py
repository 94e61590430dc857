"""A finished calorimeter run's results: its physics evaluator over a split (:func:`evaluate_run`, with
examples for image panels) and the markdown tables of its test metrics over seeds (:func:`results_table`).

What ``notebooks/calo.ipynb`` shows and ``reports/calo/figures.py`` (the docs' tables) writes.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from lit_sr.metrics.stats import mean_std

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
    ("lr_regressor", "LR CNN regressor (trained on LR)"),
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


def _row(label: str, cells: Mapping[str, str], columns: Sequence[tuple[str, str]]) -> str:
    """A table row with ``cells`` (source -> text) in their columns, the others empty."""
    return f"| {label} | " + " | ".join(cells.get(s, "") for s, _ in columns) + " |"


def results_table(runs: Sequence[Mapping[str, float]]) -> str:
    """Markdown tables, mean ± std over runs (one run: the value): impact point (LR analyses, the LR
    regressor, SR, HR),
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
    lines.append(_row("LR-barycentre → HR gap closed by SR", {"sr": f"{_cell(gaps, 1)} %"}, POSITION_COLUMNS))
    lines.append(_row("tuned LR w0 (validation split)", {"lr_native": _cell(w0s, 1)}, POSITION_COLUMNS))
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
