"""Save ``last.ckpt`` when the scheduler announces preemption or the end of the time limit, then let the
job end (or be requeued by submitit), so the requeued job resumes where it stopped.

SLURM sends a signal some time before it kills a job (``--signal``; submitit's ``signal_delay_s``):
SIGUSR2 under submitit (its requeue signal), SIGUSR1 by Lightning's convention, SIGTERM at the end.
The handler only sets a flag; at the end of the current training batch every rank agrees on it (one
all-reduce of a boolean), the checkpoint is written (atomically, by the trainer's checkpoint IO), and
the previous handler of that signal runs (submitit's requeue) or, without one, the process exits with
status 128 + signal. The runner resumes from ``<run dir>/checkpoints/last.ckpt`` when it finds one
(``resume: auto``).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import lightning as L

log = logging.getLogger("lit_sr")

DEFAULT_SIGNALS = ("SIGUSR1", "SIGUSR2", "SIGTERM")


class PreemptionCheckpoint(L.Callback):
    """Args:
    dirpath: folder of ``last.ckpt`` (the checkpoint callbacks' folder).
    signals: signal names to handle.
    """

    def __init__(self, dirpath: str, signals: tuple[str, ...] | list[str] = DEFAULT_SIGNALS) -> None:
        self.dirpath = Path(dirpath)
        self.signals = tuple(signals)
        self._pending: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self._pending = signum  # act at the end of the batch, never inside a step

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or threading.current_thread() is not threading.main_thread():
            return
        for name in self.signals:
            signum = getattr(signal, name, None)
            if signum is not None:
                self._previous[signum] = signal.signal(signum, self._handler)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._handler:
                signal.signal(signum, previous)
        self._previous.clear()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        stop = trainer.strategy.reduce_boolean_decision(self._pending is not None, all=False)
        if not stop:
            return
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(str(path))
        signum = self._pending or signal.SIGTERM
        name = signal.Signals(signum).name
        log.warning(
            "%s received: saved %s at step %d; the run resumes from it when started again in this folder",
            name,
            path,
            trainer.global_step,
        )
        previous = self._previous.get(signum)
        self.teardown(trainer, pl_module, "fit")
        if callable(previous):
            previous(signum, None)  # e.g. submitit: requeue this job, then exit
        sys.exit(128 + int(signum))
