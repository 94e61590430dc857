"""Figures of X-ray predictions read from FITS files: the panel input | model | target | LR deviance | ensemble
spread of one field (count rate per arcsec², square-root scale) that ``mode=predict predict=fits`` wrote.

What ``notebooks/xmm.ipynb`` shows and ``reports/xmm/figures.py`` writes for the docs.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lit_sr.utils.atomic import atomic_path
from lit_sr.utils.figures import headless_backend

headless_backend()


def _rate(path: Path) -> tuple[np.ndarray, float]:
    """Count rate per arcsec^2 of a counts FITS (its EXPOSURE extension) and its pixel size (arcsec)."""
    from astropy.io import fits
    from astropy.wcs import WCS

    from lit_sr.domains.xmm.predict import pixel_scale_arcsec

    with fits.open(path) as h:
        counts, expo = h[0].data.astype(np.float64), h["EXPOSURE"].data.astype(np.float64)
        pix = pixel_scale_arcsec(WCS(h[0].header).celestial)
    rate = np.divide(counts, expo, out=np.zeros_like(counts), where=expo > 0)
    return rate / pix**2, pix


def panel_figure(input_fits: Path, target_fits: Path, prediction_fits: Path, title: str, out_png: Path) -> Path:
    """input | model | target (count rate per arcsec^2, square-root scale) | LR_DEV | ENS_STD, from FITS files."""
    import matplotlib.pyplot as plt
    from astropy.io import fits
    from astropy.wcs import WCS

    from lit_sr.domains.xmm.predict import pixel_scale_arcsec

    lr, _ = _rate(input_fits)
    tgt, _ = _rate(target_fits)
    with fits.open(prediction_fits) as h:
        pix = pixel_scale_arcsec(WCS(h[0].header).celestial)
        model = h[0].data.astype(np.float64) / pix**2
        dev = h["LR_DEV"].data.astype(np.float64)
        ens = h["ENS_STD"].data.astype(np.float64) / pix**2 if "ENS_STD" in h else None
        ratio = h[0].header.get("LRDEVRAT", float("nan"))
    vmax = float(np.percentile(tgt, 99.9)) or 1.0
    cols = [
        ("input (20 ks)", lr, "sqrt"),
        ("model", model, "sqrt"),
        ("target", tgt, "sqrt"),
        (f"LR deviance (ratio {ratio:.2f})", dev, "dev"),
    ]
    if ens is not None:
        cols.append(("ensemble std", ens, "std"))
    fig, axes = plt.subplots(1, len(cols), figsize=(3.1 * len(cols), 3.4))
    for ax, (name, img, kind) in zip(axes, cols):
        if kind == "dev":
            im = ax.imshow(img, origin="lower", cmap="viridis", vmin=0, vmax=9)
            label = "Poisson deviance"
        else:
            top = math.sqrt(vmax) if kind == "sqrt" else math.sqrt(float(np.percentile(img, 99.9)) or 1e-30)
            im = ax.imshow(np.sqrt(np.clip(img, 0, None)), origin="lower", cmap="magma", vmin=0, vmax=top)
            label = "sqrt(count/s/arcsec$^2$)"
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).set_label(label, fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return out_png
