"""Regression of a per-sample quantity from one image key, and the loader that freezes the trained net.

A baseline that learns a physical quantity directly from the LR image (the calorimeter's impact point,
``impact_cm``) is what a model that reaches the same quantity through an SR image has to beat. The
checkpoint's hyperparameters record the target key, the number of outputs, the image size and the data
transform, so :func:`load_frozen_regressor` can check that a checkpoint fits the configured net and task.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torchmetrics import Metric

from lit_sr.models.base import LitSRModule, OptimizerFactory, SchedulerFactory, transform_hparams
from lit_sr.models.classifier import load_frozen_net


class ResidualMoments(Metric):
    """Per-output sums of the residual r = prediction - target and of r² (DDP: summed over processes).

    ``compute()`` -> dict: ``loss`` (mean over samples of |r|², summed over outputs, the training loss),
    ``residual_std`` (the standard deviation of r averaged over outputs), ``residual_mean`` [outputs]."""

    full_state_update = False

    def __init__(self, num_outputs: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("s1", default=torch.zeros(num_outputs, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("s2", default=torch.zeros(num_outputs, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, residuals: torch.Tensor) -> None:
        r = residuals.detach().double().reshape(residuals.shape[0], -1)
        self.s1 += r.sum(0)
        self.s2 += (r * r).sum(0)
        self.n += r.shape[0]

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.n.clamp_min(1.0)
        mean = self.s1 / n
        var = (self.s2 / n - mean**2).clamp_min(0.0) * (n / (n - 1).clamp_min(1.0))
        return {"loss": (self.s2 / n).sum(), "residual_std": var.sqrt().mean(), "residual_mean": mean}


class RegressorModule(LitSRModule):
    """Mean squared error of ``net(batch[image_key])`` against ``batch[target_key]`` (a vector per sample).

    Loss: the mean over samples of |prediction - target|², summed over the ``num_outputs`` components (in the
    target's units squared). Logs ``train/loss`` and ``{val,test}/loss``, ``{val,test}/residual_std`` (the
    standard deviation of prediction - target, averaged over components) and ``{val,test}/residual_mean_<i>``.

    Args:
        net: the network, ``num_outputs`` values per sample (e.g. a :class:`lit_sr.nets.classifier.CNNClassifier`
            with ``num_classes = num_outputs``).
        target_key: the batch key regressed (e.g. ``impact_cm``), shape [B] or [B, num_outputs].
        num_outputs: components of the target.
        image_size: image size the net is trained on (checked when loaded).
        image_key: batch key holding the images ('input' = the LR image).
        transform: the data's intensity transform (recorded, so the frozen net knows its input space).
        lr_decay: ``cosine``: the learning rate decays to 0 along a cosine over the run's optimiser steps
            (``trainer.estimated_stepping_batches``, so a budget in epochs sets it), stepped per batch;
            None: the ``scheduler`` factory (or none).
    """

    def __init__(
        self,
        net: nn.Module,
        target_key: str,
        num_outputs: int = 1,
        image_size: int | None = None,
        image_key: str = "input",
        transform: nn.Module | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_monitor: str | None = None,
        scheduler_interval: str = "epoch",
        lr_decay: str | None = None,
        channels_last: bool = False,
        compile: bool | dict = False,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_monitor, scheduler_interval, channels_last, compile)
        if int(num_outputs) < 1:
            raise ValueError(f"RegressorModule num_outputs must be >= 1, got {num_outputs}")
        if lr_decay not in (None, "cosine"):
            raise ValueError(f"RegressorModule lr_decay={lr_decay!r}; expected 'cosine' or null")
        if lr_decay is not None and scheduler is not None:
            raise ValueError("RegressorModule: give lr_decay or scheduler, not both")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "transform"])
        self.hparams["transform"] = transform_hparams(transform)
        self.net = net
        self.transform = transform
        self.target_key, self.image_key = str(target_key), str(image_key)
        self.num_outputs = int(num_outputs)
        self.lr_decay = lr_decay
        self.moments = nn.ModuleDict({s: ResidualMoments(self.num_outputs) for s in ("val", "test")})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self) -> dict[str, Any]:
        out = super().configure_optimizers()
        if self.lr_decay == "cosine":
            total = self.trainer.estimated_stepping_batches
            if not math.isfinite(total) or total < 1:
                raise ValueError(f"lr_decay=cosine needs a finite number of training steps; the trainer gives {total}")
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(out["optimizer"], T_max=int(total))
            out["lr_scheduler"] = {"scheduler": sched, "interval": "step"}
        return out

    def residuals(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """prediction - target, [B, num_outputs]."""
        pred = self.net(batch[self.image_key]).reshape(-1, self.num_outputs)
        target = batch[self.target_key].to(pred.dtype).reshape(-1, self.num_outputs)
        return pred - target

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        r = self.residuals(batch)
        loss = r.pow(2).sum(1).mean()
        if self.step_logs_written:  # (tens of thousands of steps: log only those the loggers keep)
            self.log("train/loss", loss, prog_bar=True, batch_size=r.shape[0])
        return loss

    def _eval(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        self.moments[stage].update(self.residuals(batch))

    def _log_eval(self, stage: str) -> None:
        m = self.moments[stage].compute()
        values = {f"{stage}/loss": m["loss"], f"{stage}/residual_std": m["residual_std"]}
        values.update({f"{stage}/residual_mean_{i}": v for i, v in enumerate(m["residual_mean"])})
        self.log_dict({k: float(v) for k, v in values.items()}, prog_bar=stage == "val")
        self.moments[stage].reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def predict_samples(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {"prediction": self.net(batch[self.image_key]).reshape(-1, self.num_outputs)}
        for key in (self.target_key, "index"):
            if key in batch:
                out[key] = batch[key]
        return out


def load_frozen_regressor(
    ckpt_path: str | None,
    net: nn.Module,
    target_key: str | None = None,
    num_outputs: int | None = None,
    image_size: int | None = None,
    map_location: str | torch.device = "cpu",
) -> nn.Module | None:
    """Load the weights of a :class:`RegressorModule` checkpoint into ``net`` and freeze it (eval, no grad).

    Checks that the checkpoint is a regressor of ``target_key`` with ``num_outputs`` outputs and
    ``image_size`` (each when given) and that its state dict matches ``net``; any mismatch raises one
    ``ValueError`` naming the file, what was found and what was expected. The returned net gets
    ``input_transform``, ``image_size`` and ``target_key`` attributes. ``ckpt_path`` None (the setup stage
    trained no regressor: the data lack the target) returns None, and the evaluator skips that row.
    """
    if ckpt_path is None:
        return None
    net, hp = load_frozen_net(
        ckpt_path,
        net,
        "regressor",
        "target_key",
        {"target_key": target_key, "num_outputs": num_outputs, "image_size": image_size},
        map_location,
        module_class="RegressorModule",
    )
    net.target_key = hp["target_key"]
    return net
