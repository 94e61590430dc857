"""Wall-clock seconds logged beside the validation metrics, so a run's quality can be read against time.

Each validation pass logs ``time/fit_seconds``: seconds since ``fit`` started on this process (training,
validation and checkpointing included; a setup stage that trains classifiers or a PSNR model before ``fit`` is
not counted). ``metrics.csv`` then holds the headline validation metric and the wall time in the same row
(``python -m reports.quality_vs_time`` draws the curves). On resume the clock restarts at 0.
"""

from __future__ import annotations

import time

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback


class WallClock(Callback):
    """Logs ``time/fit_seconds`` (wall seconds since fit start) at the end of every validation pass."""

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.monotonic()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._start is None or trainer.sanity_checking:
            return
        pl_module.log("time/fit_seconds", time.monotonic() - self._start, rank_zero_only=True, sync_dist=False)
