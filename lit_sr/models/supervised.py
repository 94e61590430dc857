"""Supervised image-to-image LightningModule: SR (scale > 1) and denoising (scale 1).

Batches follow the contract of DESIGN.md: ``{"input": [B,C,h,w], "target": [B,C,H,W], ...}`` in the
model's space; ``transform.inverse`` returns physical units for physics metrics and prediction.
The same PSNR/SSIM are logged for classical baselines (nearest, bicubic) beside the model's so the
gain is visible on the dashboard, e.g. ``val/psnr`` vs ``val/bicubic_psnr``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from lit_sr.losses.pixel import PixelLoss
from lit_sr.metrics.image import image_quality, upsample_baseline
from lit_sr.models.base import LitSRModule, OptimizerFactory, SchedulerFactory, transform_hparams
from lit_sr.models.ema import EMA

STAGES = ("val", "test")


class SupervisedSRModule(LitSRModule):
    """Args:
        net: image-to-image network (e.g. ``RRDBNet``), output = scale x input size.
        loss: pixel loss module (default L1).
        scale: upsampling factor of ``net`` (1 for denoising).
        data_range: range of target values in model space, fixed for PSNR/SSIM.
        transform: invertible intensity transform (model space <-> physical units) or None.
        baselines: classical upsamplings evaluated beside the model ('nearest', 'bicubic').
        flux_conserving_baseline: LR pixels are sums of HR pixels (energies, counts).
        ema_decay: keep an EMA copy of ``net`` for evaluation (None: off).
        evaluator: optional domain metrics (``update(images, impact_cm, labels, lr_gev)``,
            ``compute()``, ``reset()``, ``figures()``), fed physical-unit images on val/test.
        output_names: names of the net output(s) written by ``predict``.
    """

    def __init__(self, net: nn.Module, loss: nn.Module | None = None, scale: int = 4, data_range: float = 1.0,
                 transform: nn.Module | None = None, baselines: Sequence[str] = ("nearest", "bicubic"),
                 flux_conserving_baseline: bool = True, ema_decay: float | None = None,
                 evaluator: nn.Module | None = None, optimizer: OptimizerFactory | None = None,
                 scheduler: SchedulerFactory | None = None, scheduler_monitor: str | None = None,
                 scheduler_interval: str = "epoch") -> None:
        super().__init__(optimizer, scheduler, scheduler_monitor, scheduler_interval)
        # Only plain values go into hparams so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["net", "loss", "evaluator", "optimizer", "scheduler", "transform"])
        self.hparams["transform"] = transform_hparams(transform)
        self.net = net
        self.loss_fn = loss if loss is not None else PixelLoss("l1")
        self.scale = int(scale)
        self.transform = transform
        self.baselines = tuple(baselines) if scale > 1 else ("input",)
        self.flux_conserving = flux_conserving_baseline
        self.ema = EMA(net, ema_decay) if ema_decay else None
        self.evaluator = evaluator
        self.metrics = nn.ModuleDict({
            stage: nn.ModuleDict({
                "model": image_quality(data_range, prefix=f"{stage}/"),
                **{b: image_quality(data_range, prefix=f"{stage}/{b}_") for b in self.baselines},
            })
            for stage in STAGES
        })

    # ------------------------------------------------------------------ helpers
    @property
    def eval_net(self) -> nn.Module:
        """The network used for evaluation and prediction: the EMA copy when enabled."""
        return self.ema.shadow if self.ema is not None else self.net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.eval_net(x)

    def to_physical(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform.inverse(x) if self.transform is not None else x

    def baseline(self, lr: torch.Tensor, mode: str) -> torch.Tensor:
        """Classical estimate in model space, computed in physical units so sums are conserved."""
        if mode == "input":
            return lr
        up = upsample_baseline(self.to_physical(lr), self.scale, mode, self.flux_conserving)
        return self.transform(up) if self.transform is not None else up

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        pred = self.net(batch["input"])
        loss = self.loss_fn(pred, batch["target"])
        self.log("train/loss", loss, prog_bar=True, batch_size=pred.shape[0])
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.net)

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        lr, hr = batch["input"], batch["target"]
        sr = self.eval_net(lr)
        n = lr.shape[0]
        self.log(f"{stage}/loss", self.loss_fn(sr, hr), prog_bar=stage == "val", batch_size=n, sync_dist=True)
        metrics = self.metrics[stage]
        metrics["model"].update(sr, hr)
        for b in self.baselines:
            metrics[b].update(self.baseline(lr, b), hr)
        self.log_dict(metrics["model"], batch_size=n)
        for b in self.baselines:
            self.log_dict(metrics[b], batch_size=n)
        if self.evaluator is not None:
            self.update_evaluator(batch, sr)
        return sr

    def update_evaluator(self, batch: dict[str, torch.Tensor], sr: torch.Tensor) -> None:
        lr_phys = self.to_physical(batch["input"])
        images = {"lr_up": upsample_baseline(lr_phys, self.scale, "nearest", self.flux_conserving),
                  "sr": self.to_physical(sr), "hr": self.to_physical(batch["target"])}
        self.evaluator.update(images, batch.get("impact_cm"), batch.get("label"), lr_phys)

    def _log_evaluator(self, stage: str) -> None:
        if self.evaluator is None:
            return
        values = self.evaluator.compute()
        # compute() already reduced over ranks, so every rank logs the same value
        self.log_dict({f"{stage}/{k}": float(v) for k, v in values.items()})
        if stage == "val" and not self.trainer.sanity_checking and hasattr(self.evaluator, "figures"):
            from lit_sr.utils.figures import log_figures  # matplotlib only when figures are due
            log_figures(self.trainer, self.evaluator.figures(), prefix=f"{stage}/")
        self.evaluator.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_evaluator("val")

    def on_test_epoch_end(self) -> None:
        self._log_evaluator("test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Model output (and the batch's inputs/targets) in physical units, for HDF5 export."""
        out = {"output": self.to_physical(self.eval_net(batch["input"])), "input": self.to_physical(batch["input"])}
        if "target" in batch:
            out["target"] = self.to_physical(batch["target"])
        for key in ("label", "impact_cm", "index"):
            if key in batch:
                out[key] = batch[key]
        return out

    @torch.no_grad()
    def panel_images(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        lr, hr = batch["input"], batch["target"]
        sr = self.eval_net(lr)
        panels = {"input": self.baseline(lr, "nearest") if self.scale > 1 else lr, "output": sr, "target": hr}
        if self.scale > 1 and "bicubic" in self.baselines:
            panels["bicubic"] = self.baseline(lr, "bicubic")
        return panels
