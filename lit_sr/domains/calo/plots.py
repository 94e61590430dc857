"""Matplotlib figures for the calorimeter physics metrics (Agg backend, no display needed).

Each function returns a ``matplotlib.figure.Figure``; loggers take it as is (``close`` it after).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from lit_sr.utils.figures import headless_backend

headless_backend()
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from lit_sr.metrics.stats import roc_auc, roc_curve  # noqa: E402

_LABELS = {
    "sr": "SR",
    "hr": "HR",
    "lr_native": "LR barycentre (6×6)",
    "lr_fit": "LR pixel fit",
    "lr_shape": "LR shape logistic",
    "lr_cnn": "LR-trained CNN",
    "lr_regressor": "LR CNN regressor",
}
_COLORS = {
    "sr": "tab:red",
    "hr": "black",
    "lr_native": "tab:blue",
    "lr_fit": "tab:cyan",
    "lr_shape": "tab:green",
    "lr_cnn": "tab:blue",
    "lr_regressor": "tab:purple",
}


def _np(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


def barycentre_residuals(residuals: Mapping[str, torch.Tensor], bins: int = 60, limit_cm: float = 2.2) -> "plt.Figure":
    """Histograms of position - impact (cm) in x and y for each source (a barycentre, the LR pixel fit or the
    LR regressor's output); residuals: source -> [N, 2]."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    edges = np.linspace(-limit_cm, limit_cm, bins + 1)
    for s, r in residuals.items():
        r = _np(r).reshape(-1, 2)
        for k, ax in enumerate(axes):
            if len(r):
                ax.hist(
                    np.clip(r[:, k], -limit_cm, limit_cm),
                    bins=edges,
                    histtype="step",
                    color=_COLORS.get(s),
                    label=f"{_LABELS.get(s, s)} (std {r[:, k].std():.3f} cm)",
                )
    for k, ax in enumerate(axes):
        ax.set_xlabel(f"position - impact, {'xy'[k]} [cm]")
        ax.set_ylabel("events")
        ax.legend(fontsize=7)
    return fig


def width_distributions(widths: Mapping[str, torch.Tensor], bins: int = 50) -> "plt.Figure":
    """Normalised histograms of the shower width (cm) for each source."""
    fig, ax = plt.subplots(figsize=(5, 3.6), constrained_layout=True)
    arrays = {s: _np(w).ravel() for s, w in widths.items()}
    allv = np.concatenate([a for a in arrays.values() if a.size] or [np.zeros(1)])
    hi = max(float(np.quantile(allv, 0.995)), 1e-3)
    edges = np.linspace(0.0, hi, bins + 1)
    for s, a in arrays.items():
        if a.size:
            ax.hist(
                np.clip(a, 0, hi),
                bins=edges,
                histtype="step",
                density=True,
                color=_COLORS.get(s),
                label=_LABELS.get(s, s),
            )
    ax.set_xlabel("shower width [cm]")
    ax.set_ylabel("normalised events")
    ax.legend(fontsize=7)
    return fig


def roc_curves(scores: Mapping[str, tuple[torch.Tensor, torch.Tensor]], photon_efficiency: float = 0.9) -> "plt.Figure":
    """Pion rejection vs photon efficiency for each source; scores: source -> (pion scores, labels)."""
    fig, ax = plt.subplots(figsize=(5, 3.6), constrained_layout=True)
    for s, (sc, y) in scores.items():
        sc, y = _np(sc), _np(y)
        if len(sc) == 0:
            continue
        photon = y == 0
        # photons are the signal, selected by a low pion score
        eff_pi, eff_g = roc_curve(-sc, photon)  # (false = pion, true = photon efficiency)
        with np.errstate(divide="ignore"):
            rej = np.where(eff_pi > 0, 1.0 / np.maximum(eff_pi, 1e-300), np.nan)
        ax.plot(eff_g, rej, color=_COLORS.get(s), label=f"{_LABELS.get(s, s)} (AUC {roc_auc(sc, ~photon):.3f})")
    ax.axvline(photon_efficiency, color="grey", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("photon efficiency")
    ax.set_ylabel("pion rejection (1 / pion efficiency)")
    ax.legend(fontsize=7)
    return fig


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
