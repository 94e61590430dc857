"""LightningModule for signal/noise decomposition (SAXS bremsstrahlung background removal).

loss = D(n_hat, n) + D(s_hat, s) in normalised space with D = L1 (``loss="l1"``, the study's) or
squared error (``loss="mse"``); the study's AdamW, lr 1e-4, no weight decay, batch 16 are supplied by
the config as partials.

``warmup_loss`` / ``warmup_epochs``: train the first epochs with another D. L1 gives every pixel a
gradient of the same size, so the diffuse fog (about 20 % of the pixels carry some noise) outweighs
the sparse hits (0.2 % of the pixels, 92 % of the noise energy) and short runs learn only the fog:
after 1,000 steps from scratch L1 stays at the input's signal PSNR (29.5 dB) where squared error
reaches 37.2 dB (32 px patches, 0.12 M-parameter C4 net, lr 1e-3). Squared error alone, however,
estimates the conditional *mean*: where a bright pixel may be a hit it removes part of it, and on
clean patches near the beam it removed 11 % of the true signal. Switching to L1 (the conditional
median) after 2,000 squared-error steps cut that to 2.4 % at a cost of 0.5 dB of patch PSNR
(3,000 + 3,000 steps: 0.8 %).
``val/loss`` and ``test/loss`` always use ``loss``, so checkpoints compare across the switch.

Logged on val/test (torchmetrics objects, synchronised across devices), for three estimators:
``signal_*`` (the net), ``input_*`` (raw input as signal estimate, zero noise) and ``median_*``
(3x3 median filter with k*MAD hit clipping):
``{p}_psnr``, ``{p}_ssim`` (data_range 1.0), ``{p}_l1`` / ``{p}_noise_l1`` for the net,
``{p}_signal_l1`` / ``{p}_noise_l1`` for baselines, ``{p}_hit_precision``, ``{p}_hit_recall``
(the net's hit metrics are ``hit_precision`` / ``hit_recall``), and ``val/loss`` (monitored).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics import MeanAbsoluteError
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from lit_sr.losses.pixel import PixelLoss
from lit_sr.metrics.background import HitPrecision, HitRecall, median_hit_filter
from lit_sr.models.base import LitSRModule, OptimizerFactory, SchedulerFactory, with_batch_keys

ESTIMATORS = ("signal", "input", "median")


def _names(est: str) -> dict[str, str]:
    if est == "signal":
        return {
            "psnr": "signal_psnr",
            "ssim": "signal_ssim",
            "signal_l1": "signal_l1",
            "noise_l1": "noise_l1",
            "hit_precision": "hit_precision",
            "hit_recall": "hit_recall",
        }
    return {k: f"{est}_{k}" for k in ("psnr", "ssim", "signal_l1", "noise_l1", "hit_precision", "hit_recall")}


class DecompositionModule(LitSRModule):
    """Trains ``net`` (x -> {"signal", "noise"}, e.g. :class:`lit_sr.nets.decomposition.DecompositionNet`)."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_monitor: str | None = "val/loss",
        scheduler_interval: str = "epoch",
        hit_threshold: float = 0.05,
        median_k: float = 5.0,
        median_size: int = 3,
        data_range: float = 1.0,
        loss: str = "l1",
        warmup_loss: str | None = None,
        warmup_epochs: int = 0,
        units: str = "",
        channels_last: bool = False,
        compile: bool | dict = False,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_monitor, scheduler_interval, channels_last, compile)
        if loss not in ("l1", "mse"):
            raise ValueError(f"decomposition loss must be 'l1' (the study's) or 'mse', got {loss!r}")
        if warmup_loss not in (None, "l1", "mse"):
            raise ValueError(f"decomposition warmup_loss must be null, 'l1' or 'mse', got {warmup_loss!r}")
        # Only plain values go into hparams so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.units = units
        self.component_loss = PixelLoss(loss)
        self.warmup_component_loss = PixelLoss(warmup_loss) if warmup_loss else None
        self.metrics = nn.ModuleDict()
        for stage in ("val", "test"):
            for est in ESTIMATORS:
                self.metrics[f"{stage}_{est}"] = nn.ModuleDict(
                    {
                        "psnr": PeakSignalNoiseRatio(data_range=data_range),
                        "ssim": StructuralSimilarityIndexMeasure(data_range=data_range, kernel_size=7),
                        "signal_l1": MeanAbsoluteError(),
                        "noise_l1": MeanAbsoluteError(),
                        "hit_precision": HitPrecision(hit_threshold),
                        "hit_recall": HitRecall(hit_threshold),
                    }
                )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(x)

    def loss_fn(
        self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], component_loss: nn.Module | None = None
    ) -> torch.Tensor:
        d = component_loss or self.component_loss
        return d(out["noise"], batch["noise"]) + d(out["signal"], batch["target"])

    def in_warmup(self) -> bool:
        return self.warmup_component_loss is not None and self.current_epoch < self.hparams.warmup_epochs

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        d = self.warmup_component_loss if self.in_warmup() else self.component_loss
        loss = self.loss_fn(self(batch["input"]), batch, d)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["input"]))
        return loss

    @staticmethod
    def image(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The input image the targets decompose: its first channels (as many as the target's); further input
        channels are conditioning for the net (e.g. an absolute-energy channel), not an estimate of anything."""
        return batch["input"][:, : batch["target"].shape[1]].contiguous()

    def _estimates(self, batch: dict[str, torch.Tensor], out: dict[str, torch.Tensor]):
        x = self.image(batch)
        med_s, med_n = median_hit_filter(x, k=self.hparams.median_k, size=self.hparams.median_size)
        return {"signal": (out["signal"], out["noise"]), "input": (x, torch.zeros_like(x)), "median": (med_s, med_n)}

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        out = self(batch["input"])
        loss = self.loss_fn(out, batch)
        bs = len(batch["input"])
        self.log(f"{stage}/loss", loss, prog_bar=True, on_epoch=True, sync_dist=True, batch_size=bs)
        s, n = batch["target"], batch["noise"]
        for est, (s_hat, n_hat) in self._estimates(batch, out).items():
            m = self.metrics[f"{stage}_{est}"]
            names = _names(est)
            m["psnr"].update(s_hat, s)
            m["ssim"].update(s_hat, s)
            m["signal_l1"].update(s_hat, s)
            m["noise_l1"].update(n_hat, n)
            m["hit_precision"].update(n_hat, n)
            m["hit_recall"].update(n_hat, n)
            for key, metric in m.items():
                self.log(f"{stage}/{names[key]}", metric, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, "test")

    def predict_samples(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Signal and noise in physical units: x_n * (hi - lo) + lo with the batch's normalisation
        ``bounds`` [B, 2] (as in training), with every per-sample key of the batch."""
        out = self(batch["input"])
        lo = batch["bounds"][:, 0].to(out["signal"])[:, None, None, None]
        hi = batch["bounds"][:, 1].to(out["signal"])[:, None, None, None]
        return with_batch_keys(
            {"signal": out["signal"] * (hi - lo) + lo, "noise": out["noise"] * (hi - lo) + lo}, batch
        )

    def frame_forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(x)

    def prediction_units(self) -> dict[str, str]:
        return {"signal": self.units, "noise": self.units} if self.units else {}

    @torch.no_grad()
    def panel_images(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self(batch["input"])
        return {
            "input": self.image(batch),
            "predicted signal": out["signal"],
            "true signal": batch["target"],
            "predicted noise": out["noise"],
        }
