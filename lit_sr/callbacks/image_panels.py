"""Image panels (e.g. input | output | target | baseline) of the first validation batch."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch

from lit_sr.utils.figures import log_figures


def panel_figure(columns: dict[str, torch.Tensor], max_rows: int, log_scale: bool = False):
    """One row per sample, one column per entry; each row shares a colour scale (its target's)."""
    import matplotlib.pyplot as plt

    names = list(columns)
    rows = min(max_rows, next(iter(columns.values())).shape[0])
    fig, axes = plt.subplots(rows, len(names), figsize=(2.0 * len(names), 2.0 * rows), squeeze=False)
    for r in range(rows):
        imgs = [columns[n][r, 0].detach().float().cpu().numpy() for n in names]
        if log_scale:
            imgs = [np.log10(np.clip(im, 1e-6, None)) for im in imgs]
        ref = imgs[names.index("target")] if "target" in names else imgs[0]
        vmin, vmax = float(np.min(ref)), float(np.max(ref)) or 1.0
        for c, (name, im) in enumerate(zip(names, imgs)):
            ax = axes[r, c]
            ax.imshow(im, vmin=vmin, vmax=vmax, cmap="viridis", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
    fig.tight_layout()
    return fig


class ImagePanelCallback(L.Callback):
    """Every ``every_n_epochs`` validation epochs, render ``pl_module.panel_images(first_val_batch)``.

    Args:
        every_n_epochs: cadence in validation epochs.
        max_rows: samples shown.
        log_scale: show log10 intensities (useful for steeply falling spectra such as SAXS).
        split_by_label: one panel per value of ``batch["label"]`` (e.g. photons and pions).
    """

    def __init__(
        self, every_n_epochs: int = 1, max_rows: int = 4, log_scale: bool = False, split_by_label: bool = True
    ) -> None:
        self.every_n_epochs = every_n_epochs
        self.max_rows = max_rows
        self.log_scale = log_scale
        self.split_by_label = split_by_label
        self._batch: dict[str, Any] | None = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and dataloader_idx == 0 and trainer.is_global_zero and not trainer.sanity_checking:
            self._batch = {k: v.detach() if torch.is_tensor(v) else v for k, v in batch.items()}

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        batch, self._batch = self._batch, None
        if batch is None or not hasattr(pl_module, "panel_images"):
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        try:
            columns = pl_module.panel_images(batch)
        except NotImplementedError:
            return
        groups = {"panels": slice(None)}
        if self.split_by_label and torch.is_tensor(batch.get("label")):
            labels = batch["label"]
            groups = {f"panels_label{int(v)}": (labels == v) for v in torch.unique(labels)}
        figures = {
            name: panel_figure({k: v[sel] for k, v in columns.items()}, self.max_rows, self.log_scale)
            for name, sel in groups.items()
        }
        log_figures(trainer, figures, prefix="val/")
