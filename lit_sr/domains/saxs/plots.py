"""Matplotlib figures of SAXS background removal on whole frames (keV): a frame before and after, the radial
profiles I(r) of several estimators against the truth, residual maps.

Each function returns a ``matplotlib.figure.Figure``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from lit_sr.utils.figures import headless_backend

headless_backend()


def _log_img(a: np.ndarray, floor: float = 1.0) -> np.ndarray:
    return np.log10(np.clip(a, floor, None))


def frame_figure(
    full: np.ndarray, signal_est: np.ndarray, background_est: np.ndarray, truth: np.ndarray, title: str = ""
):
    """One frame: input | cleaned signal | true signal | removed background (log10 keV)."""
    import matplotlib.pyplot as plt

    panels = (
        ("input (full shot)", full),
        ("cleaned signal", signal_est),
        ("true signal", truth),
        ("removed background", background_est),
    )
    vmax = float(np.log10(max(full.max(), 10.0)))
    fig, axes = plt.subplots(2, 2, figsize=(10, 5.6), constrained_layout=True)
    for ax, (name, img) in zip(axes.flat, panels):
        im = ax.imshow(_log_img(img), vmin=0.0, vmax=vmax, cmap="magma", interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes, shrink=0.8, label="log10 keV per pixel")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def profile_figure(edges: np.ndarray, profiles: Mapping[str, np.ndarray], truth: np.ndarray):
    """I(r) of every estimator (top) and its relative error to the true profile (bottom)."""
    import matplotlib.pyplot as plt

    r = np.sqrt(edges[:-1] * edges[1:])
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(6, 5.5), sharex=True, constrained_layout=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    top.loglog(r, truth, "k-", lw=2, label="true signal")
    for name, prof in profiles.items():
        top.loglog(r, prof, marker=".", lw=1, label=name)
        bottom.semilogx(r, prof / truth - 1.0, marker=".", lw=1, label=name)
    bottom.axhspan(-0.1, 0.1, color="grey", alpha=0.15, lw=0)
    bottom.axhline(0.0, color="k", lw=0.8)
    bottom.set_ylim(-0.6, 1.5)
    top.set_ylabel("I(r) [keV / px]")
    bottom.set_ylabel("relative error")
    bottom.set_xlabel("r from the beam [px]")
    top.legend(fontsize=7)
    return fig


def residual_figure(residuals: Mapping[str, np.ndarray], scale_kev: float = 50.0):
    """Maps of (estimate - true signal) in keV for several estimators, symmetric log colour scale."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import SymLogNorm

    n = len(residuals)
    fig, axes = plt.subplots(n, 1, figsize=(7, 2.1 * n + 0.4), squeeze=False, constrained_layout=True)
    norm = SymLogNorm(linthresh=1.0, vmin=-scale_kev, vmax=scale_kev)
    for ax, (name, res) in zip(axes[:, 0], residuals.items()):
        im = ax.imshow(res, norm=norm, cmap="RdBu_r", interpolation="nearest")
        ax.set_title(f"{name}: estimate − true signal (Σ|res| = {np.abs(res).sum() / 1e3:.0f} MeV)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[:, 0], shrink=0.8, label="keV per pixel")
    return fig
