"""Supervised image-to-image LightningModule: SR (scale > 1) and denoising (scale 1).

Batches follow the contract of ``lit_sr.data.base``: ``{"input": [B,Cin,h,w], "target": [B,Cout,H,W], ...}`` in the
model's space; ``transform.inverse`` returns physical units for metrics and prediction. Evaluation,
baselines and prediction come from :class:`~lit_sr.models.image_to_image.ImageToImageTask`.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from lit_sr.losses.pixel import PixelLoss
from lit_sr.models.base import LitSRModule, OptimizerFactory, SchedulerFactory, transform_hparams
from lit_sr.models.image_to_image import ImageToImageTask


class SupervisedSRModule(ImageToImageTask, LitSRModule):
    """Args:
    net: image-to-image network (e.g. ``RRDBNet``), output = scale x input size.
    loss: pixel loss module (default L1).
    scale: upsampling factor of ``net`` (1 for denoising; required, keyword-only: the data's).
    data_range: range of target values in model space for PSNR/SSIM; None = the transform's image of
        ``physical_range``.
    physical_range: [lo, hi] of meaningful physical values (from the data config).
    transform: invertible intensity transform (model space <-> physical units) or None.
    baselines: classical upsamplings evaluated beside the model ('nearest', 'bicubic').
    flux_conserving_baseline: LR pixels are sums of HR pixels (energies, counts).
    ema_decay: keep an EMA copy of ``net`` for evaluation (None: off).
    evaluator: optional domain metrics (``update(batch, images)``, ``compute()``, ``reset()``,
        optional ``figures()``), fed physical-unit images on val/test.
    image_channels: input channels that form the image (None: all); the rest are auxiliary.
    units: name of the physical units (prediction files).
    channels_last / compile: the GPU fast path (see :meth:`LitSRModule.configure_model`).
    classifier_ckpt: provenance only: the checkpoint the evaluator's classifier was loaded from (recorded in
        the hyperparameters, as for ``GANSRModule``; ``ensure_classifier`` sets it).
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module | None = None,
        *,
        scale: int,
        data_range: float | None = None,
        physical_range: Sequence[float] | None = None,
        transform: nn.Module | None = None,
        baselines: Sequence[str] = ("nearest", "bicubic"),
        flux_conserving_baseline: bool = True,
        ema_decay: float | None = None,
        evaluator: nn.Module | None = None,
        image_channels: Sequence[int] | None = None,
        units: str = "",
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_monitor: str | None = None,
        scheduler_interval: str = "epoch",
        channels_last: bool = False,
        compile: bool | dict = False,
        classifier_ckpt: str | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_monitor, scheduler_interval, channels_last, compile)
        # Only plain values go into hparams so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["net", "loss", "evaluator", "optimizer", "scheduler", "transform"])
        self.hparams["transform"] = transform_hparams(transform)
        self.net = net
        self.loss_fn = loss if loss is not None else PixelLoss("l1")
        self.init_ema(net, ema_decay)
        self.init_task(
            scale,
            data_range,
            physical_range,
            transform,
            baselines,
            flux_conserving_baseline,
            evaluator,
            image_channels,
            units,
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        pred = self.net(batch["input"])
        loss = self.loss_fn(pred, batch["target"])
        self.log("train/loss", loss, prog_bar=True, batch_size=pred.shape[0])
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.update_ema()
