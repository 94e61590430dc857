"""Training progress that also works without a terminal (SLURM logs, CI, ``| tee``).

Lightning's Rich bar redraws in place and prints nothing at all when stdout is not a TTY, so a
10-hour job writing to a log file showed no progress. :func:`progress_bar` (the default callback)
returns the Rich bar on a terminal and :class:`LogProgress` otherwise: plain log lines every
``every_n_steps`` training steps or ``every_seconds`` (whichever comes first) with epoch, step/total,
it/s, ETA, the training loss and the monitored metric, plus one line per validation.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

from lit_sr.utils.progress import format_seconds, is_terminal

log = logging.getLogger("lit_sr")


def _fmt(value: Any) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


class LogProgress(ProgressBar):
    """Plain-text progress lines on global rank 0 (see the module docstring).

    Args:
        every_n_steps: log every N training steps (None: about every 5 % of the run).
        every_seconds: log at least this often while training.
        monitor: the monitored metric to show (e.g. ``val/loss``), when logged.
    """

    def __init__(
        self, every_n_steps: int | None = None, every_seconds: float = 60.0, monitor: str | None = None
    ) -> None:
        super().__init__()
        self.every_n_steps = every_n_steps
        self.every_seconds = float(every_seconds)
        self.monitor = monitor
        self._enabled = True
        self._start = 0.0
        self._last = 0.0
        self._last_step = -1

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _total_steps(self, trainer) -> int | None:
        if trainer.max_steps and trainer.max_steps > 0:
            return int(trainer.max_steps)
        per_epoch = self.total_train_batches
        if per_epoch is None or per_epoch == float("inf") or trainer.max_epochs in (None, -1):
            return None
        return int(per_epoch) * int(trainer.max_epochs)

    def _metrics(self, trainer) -> str:
        metrics = trainer.callback_metrics
        keys = [k for k in ("train/loss", self.monitor) if k and k in metrics]
        return ", ".join(f"{k}={_fmt(metrics[k])}" for k in dict.fromkeys(keys))

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = self._last = time.perf_counter()
        if trainer.is_global_zero and self._enabled:
            total = self._total_steps(trainer)
            log.info(
                "training: %s steps%s",
                total if total is not None else "?",
                f" ({trainer.max_epochs} epochs)" if trainer.max_epochs not in (None, -1) else "",
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not (trainer.is_global_zero and self._enabled):
            return
        step = trainer.global_step
        total = self._total_steps(trainer)
        now = time.perf_counter()
        every = self.every_n_steps or (max(1, total // 20) if total else 50)
        if step == self._last_step or not (
            step % every == 0 or now - self._last >= self.every_seconds or (total and step >= total)
        ):
            return
        elapsed = now - self._start
        rate = step / elapsed if elapsed > 0 else float("nan")
        eta = (total - step) / rate if total and rate > 0 else float("nan")
        where = f"{step}/{total}" if total else f"{step}"
        pct = f" ({100.0 * step / total:.0f} %)" if total else ""
        extra = self._metrics(trainer)
        log.info(
            "epoch %d step %s%s, %.3g it/s, elapsed %s, ETA %s%s",
            trainer.current_epoch,
            where,
            pct,
            rate,
            format_seconds(elapsed),
            format_seconds(eta),
            f", {extra}" if extra else "",
        )
        self._last, self._last_step = now, step

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and self._enabled and not trainer.sanity_checking:
            extra = self._metrics(trainer)
            log.info(
                "validation after epoch %d step %d%s",
                trainer.current_epoch,
                trainer.global_step,
                f": {extra}" if extra else "",
            )

    def on_predict_start(self, trainer, pl_module) -> None:
        self._start = self._last = time.perf_counter()

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not (trainer.is_global_zero and self._enabled):
            return
        done, total = batch_idx + 1, int(sum(trainer.num_predict_batches))
        now = time.perf_counter()
        if done == total or done % max(1, total // 10) == 0 or now - self._last >= self.every_seconds:
            elapsed = now - self._start
            eta = (total - done) * elapsed / done
            log.info(
                "predict: batch %d/%d (%.0f %%), elapsed %s, ETA %s",
                done,
                total,
                100.0 * done / total,
                format_seconds(elapsed),
                format_seconds(eta),
            )
            self._last = now

    def on_test_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and self._enabled:
            log.info("test done (%d batches)", int(sum(trainer.num_test_batches)))


def progress_bar(
    monitor: str | None = None, every_n_steps: int | None = None, every_seconds: float = 60.0
) -> ProgressBar:
    """The Rich bar on a terminal, :class:`LogProgress` lines otherwise."""
    if is_terminal():
        return RichProgressBar()
    return LogProgress(every_n_steps=every_n_steps, every_seconds=every_seconds, monitor=monitor)
