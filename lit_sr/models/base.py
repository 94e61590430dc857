"""Pieces every lit_sr LightningModule shares: optimiser/scheduler from config and image panels.

Optimisers and schedulers arrive as ``functools.partial`` objects (Hydra ``_partial_: true``) so the
config names the class and its arguments while the module supplies the parameters.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import lightning as L
import torch

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


def build_optimizer(params: Iterable[torch.nn.Parameter], optimizer: OptimizerFactory | None,
                    scheduler: SchedulerFactory | None = None, monitor: str | None = None,
                    interval: str = "epoch") -> dict[str, Any]:
    """Return a Lightning optimiser dict; defaults to Adam(lr=1e-4) when no factory is configured."""
    params = [p for p in params if p.requires_grad]
    opt = optimizer(params) if optimizer is not None else torch.optim.Adam(params, lr=1e-4)
    out: dict[str, Any] = {"optimizer": opt}
    if scheduler is not None:
        sched: dict[str, Any] = {"scheduler": scheduler(opt), "interval": interval}
        if monitor is not None:
            sched["monitor"] = monitor
        out["lr_scheduler"] = sched
    return out


def transform_hparams(transform: torch.nn.Module | None) -> dict[str, Any] | None:
    """An intensity transform as plain values for hparams (checkpoints then load with weights_only=True)."""
    if transform is None:
        return None
    return {"scale": float(getattr(transform, "scale", 1.0)), "log": bool(getattr(transform, "log", False))}


class LitSRModule(L.LightningModule):
    """Base class: optimiser/scheduler from config and the image-panel hook.

    Subclasses implement ``panel_images(batch)`` returning an ordered dict of column name ->
    Tensor[B, C, H, W] (all columns at one display size); ``ImagePanelCallback`` renders and logs them.
    """

    def __init__(self, optimizer: OptimizerFactory | None = None, scheduler: SchedulerFactory | None = None,
                 scheduler_monitor: str | None = None, scheduler_interval: str = "epoch") -> None:
        super().__init__()
        self._optimizer_factory = optimizer
        self._scheduler_factory = scheduler
        self._scheduler_monitor = scheduler_monitor
        self._scheduler_interval = scheduler_interval

    def configure_optimizers(self) -> dict[str, Any]:
        return build_optimizer(self.parameters(), self._optimizer_factory, self._scheduler_factory,
                               self._scheduler_monitor, self._scheduler_interval)

    @torch.no_grad()
    def panel_images(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError
