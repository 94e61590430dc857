"""Send matplotlib figures to whichever loggers are configured, and always to PNG files.

CSV has no image channel, so PNGs under ``<log_dir>/figures/`` keep every run's plots inspectable.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Mapping

import matplotlib


def headless_backend() -> None:
    """Agg for scripts and batch jobs (clusters and CI have no display); a Jupyter kernel keeps its inline
    backend, so notebooks show the figures that plt.show() draws."""
    if "ipykernel" not in sys.modules:
        matplotlib.use("Agg")


headless_backend()
import matplotlib.pyplot as plt  # noqa: E402

from lit_sr.utils.atomic import atomic_path  # noqa: E402


def figure_dir(trainer) -> Path:
    # Not trainer.log_dir: it broadcasts, and figures are written on rank 0 alone (deadlock under DDP).
    return Path(trainer.default_root_dir) / "figures"


def log_figures(trainer, figures: Mapping[str, "plt.Figure"], prefix: str = "") -> None:
    """Log each figure on global rank 0 (W&B image, TensorBoard figure, PNG file), then close it."""
    if not trainer.is_global_zero:
        for fig in figures.values():
            plt.close(fig)
        return
    step = trainer.global_step
    epoch = trainer.current_epoch
    out_dir = figure_dir(trainer)
    for name, fig in figures.items():
        tag = f"{prefix}{name}"
        for logger in trainer.loggers:
            kind = type(logger).__name__
            if kind == "WandbLogger":
                import wandb

                logger.experiment.log({tag: wandb.Image(fig), "trainer/global_step": step})
            elif kind == "TensorBoardLogger":
                logger.experiment.add_figure(tag, fig, global_step=step, close=False)
        path = out_dir / f"{tag.replace('/', '_')}_epoch{epoch:04d}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=80, bbox_inches="tight")
        plt.close(fig)


def save_figure(fig: "plt.Figure", path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (tight bounding box), close it, return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def save_figures(
    figures: Mapping[str, "plt.Figure"], out_dir: str | Path, prefix: str = "", dpi: int = 110
) -> list[Path]:
    """:func:`save_figure` for each named figure: ``<out_dir>/<prefix><name>.png``."""
    return [save_figure(fig, Path(out_dir) / f"{prefix}{name}.png", dpi) for name, fig in figures.items()]
