"""Matplotlib figures of the galaxy generation evaluator: distributions of the morphology statistics
(generated vs real) and stamps per class (asinh display stretch).

Each function returns a ``matplotlib.figure.Figure``; the evaluator's ``figures()`` hands them to the loggers.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from lit_sr.domains.galaxy.morphology import STATISTICS

STAT_LABELS = {
    "flux": "flux [ADU]",
    "hlr": "half-light radius [arcsec]",
    "e": "ellipticity |g| (HSM)",
    "C": "concentration C",
    "A": "asymmetry A",
}


def _asinh(img: np.ndarray, softening: float = 10.0) -> np.ndarray:
    """asinh(x / 10 ADU): the display stretch (sky noise +-0.9, galaxy cores 3-7)."""
    return np.arcsinh(np.asarray(img, dtype=np.float64) / softening)


def statistic_histograms(real: Mapping[str, np.ndarray], fake: Mapping[str, np.ndarray]):
    """One panel per morphology statistic: histograms of real and generated values."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(STATISTICS), figsize=(3.0 * len(STATISTICS), 2.6))
    for ax, s in zip(axes, STATISTICS):
        r = np.asarray(real[s], dtype=np.float64)
        f = np.asarray(fake[s], dtype=np.float64)
        label = STAT_LABELS[s]
        if s == "flux":  # log-normal fluxes: compare log10 values
            with np.errstate(divide="ignore", invalid="ignore"):
                r, f = np.log10(r), np.log10(f)
            label = "log10 flux [ADU]"
        r, f = r[np.isfinite(r)], f[np.isfinite(f)]
        both = np.concatenate([r, f]) if r.size + f.size else np.zeros(1)
        lo, hi = np.percentile(both, [1, 99]) if both.size > 1 else (0.0, 1.0)
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 30)
        ax.hist(r, bins=bins, density=True, histtype="step", lw=1.5, label=f"real ({r.size})")
        ax.hist(f, bins=bins, density=True, histtype="step", lw=1.5, label=f"generated ({f.size})")
        ax.set_xlabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def example_grid(
    examples: Mapping[str, Mapping[int, Sequence[np.ndarray]]], class_names: Sequence[str], columns: int = 4
):
    """Rows per class: real (PSF-free, observed) and generated (PSF-free, convolved, observed) stamps.

    ``examples[kind][label]`` holds ADU stamps; kinds ``target_psf_free``, ``target``, ``output_psf_free``,
    ``output_convolved``, ``output`` (absent kinds are skipped). Shown as asinh(x / 10 ADU) on one colour scale [-1, 7].
    """
    import matplotlib.pyplot as plt

    kinds = [
        ("target_psf_free", "real, PSF-free"),
        ("target", "real, observed"),
        ("output_psf_free", "generated, PSF-free"),
        ("output_convolved", "generated, convolved"),
        ("output", "generated, observed"),
    ]
    kinds = [(k, t) for k, t in kinds if examples.get(k)]
    labels = sorted({lab for k, _ in kinds for lab in examples[k]})
    rows = [(lab, k, t) for lab in labels for k, t in kinds]
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.25 * columns + 1.6, 1.25 * len(rows)), squeeze=False)
    for r, (lab, k, title) in enumerate(rows):
        stamps = list(examples[k].get(lab, []))[:columns]
        name = class_names[lab] if 0 <= lab < len(class_names) else "all"
        for j in range(columns):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(stamps):
                ax.imshow(_asinh(stamps[j]), cmap="magma", vmin=-1.0, vmax=7.0, origin="lower", interpolation="nearest")
            else:
                ax.axis("off")
            if j == 0:
                ax.set_ylabel(f"{name}\n{title}", fontsize=7)
    fig.tight_layout()
    return fig
