"""What every image-to-image model (SR with scale > 1, denoising with scale 1) does besides training.

:class:`ImageToImageTask` is mixed into the supervised module and the GAN-SR module, so both share
one evaluation: the loss, PSNR/SSIM of the model beside classical baselines (``val/psnr`` vs
``val/bicubic_psnr``, with a fixed ``data_range`` in model space), the domain evaluator, prediction
in physical units and image panels.

Batch contract (``lit_sr.data.base``): ``input`` [B, Cin, h, w] may carry auxiliary channels (an exposure map):
``image_channels`` picks the image, which baselines and metrics compare with ``target`` [B, Cout, H, W].
The evaluator gets ``update(batch, images)`` with ``images`` a dict of physical-unit tensors:
``input`` (the image channels), ``input_up`` (flux-conserving nearest upsampling to the target grid),
``output``, ``target`` and one entry per baseline; it takes what it needs.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from lit_sr.metrics.image import image_quality, upsample_baseline
from lit_sr.models.base import log_evaluation, resolve_data_range, with_batch_keys

STAGES = ("val", "test")


class ImageToImageTask:
    """Mixin for a ``LitSRModule`` that owns ``self.net``, ``self.loss_fn`` and ``eval_net``."""

    def init_task(
        self,
        scale: int,
        data_range: float | None,
        physical_range: Sequence[float] | None,
        transform: nn.Module | None,
        baselines: Sequence[str],
        flux_conserving_baseline: bool,
        evaluator: nn.Module | None,
        image_channels: Sequence[int] | None,
        units: str,
    ) -> None:
        self.scale = int(scale)
        self.transform = transform
        self.units = units
        self.image_channels = tuple(int(c) for c in image_channels) if image_channels is not None else None
        self.baselines = tuple(baselines) if self.scale > 1 else ("input",)
        self.flux_conserving = bool(flux_conserving_baseline)
        self.evaluator = evaluator
        self.data_range = resolve_data_range(data_range, physical_range, transform)
        self.metrics = nn.ModuleDict(
            {
                stage: nn.ModuleDict(
                    {
                        "model": image_quality(self.data_range, prefix=f"{stage}/"),
                        **{b: image_quality(self.data_range, prefix=f"{stage}/{b}_") for b in self.baselines},
                    }
                )
                for stage in STAGES
            }
        )

    # ------------------------------------------------------------------ helpers
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.eval_net(x)

    def image_of(self, x: torch.Tensor) -> torch.Tensor:
        """The image channels of an input (auxiliary channels such as exposure maps dropped)."""
        return x if self.image_channels is None else x[:, list(self.image_channels)]

    def to_physical(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform.inverse(x) if self.transform is not None else x

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(x) if self.transform is not None else x

    def baseline(self, lr: torch.Tensor, mode: str) -> torch.Tensor:
        """Classical estimate from the input's image channels, in model space, computed in physical
        units so sums are conserved."""
        lr = self.image_of(lr)
        if mode == "input":
            return lr
        return self.to_model(upsample_baseline(self.to_physical(lr), self.scale, mode, self.flux_conserving))

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        lr, hr = batch["input"], batch["target"]
        sr = self.eval_net(lr)
        n = lr.shape[0]
        self.log(f"{stage}/loss", self.loss_fn(sr, hr), prog_bar=stage == "val", batch_size=n, sync_dist=True)
        metrics = self.metrics[stage]
        metrics["model"].update(sr, hr)
        baselines = {b: self.baseline(lr, b) for b in self.baselines}
        for b, est in baselines.items():
            metrics[b].update(est, hr)
        self.log_dict(metrics["model"], batch_size=n)
        for b in self.baselines:
            self.log_dict(metrics[b], batch_size=n)
        if self.evaluator is not None:
            self.evaluator.update(batch, self.physical_images(batch, sr, baselines))
        return sr

    def physical_images(
        self,
        batch: dict[str, torch.Tensor],
        sr: torch.Tensor | None = None,
        baselines: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The evaluator's ``images``: input, input_up, output (when ``sr`` is given), target and
        baselines in physical units."""
        lr = self.to_physical(self.image_of(batch["input"]))
        images = {"input": lr, "input_up": upsample_baseline(lr, self.scale, "nearest", self.flux_conserving)}
        if "target" in batch:
            images["target"] = self.to_physical(batch["target"])
        if sr is not None:
            images["output"] = self.to_physical(sr)
        for b, est in (baselines or {}).items():
            if b != "input":
                images[b] = self.to_physical(est)
        return images

    def _prepare_evaluator(self) -> None:
        """Tune the evaluator's baselines on the validation split, once, before the first val/test pass."""
        if self.evaluator is None or self.evaluator.prepared:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        splits = getattr(datamodule, "splits", None)
        if splits is not None and "val" not in splits:  # mode=test sets up the test split only
            datamodule.setup("validate")
        loader = datamodule.val_dataloader() if datamodule is not None else None

        def pairs():
            for batch in loader or ():
                batch = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                yield batch, self.physical_images(batch)

        with torch.no_grad():
            self.evaluator.prepare(pairs())

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_start(self) -> None:
        self._prepare_evaluator()

    def on_test_start(self) -> None:
        self._prepare_evaluator()

    def on_validation_epoch_end(self) -> None:
        log_evaluation(self, self.evaluator, "val")

    def on_test_epoch_end(self) -> None:
        log_evaluation(self, self.evaluator, "test")

    # ------------------------------------------------------------------ prediction
    def predict_samples(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Output, input image and target in physical units, with every per-sample key of the batch."""
        out = {
            "output": self.to_physical(self.eval_net(batch["input"])),
            "input": self.to_physical(self.image_of(batch["input"])),
        }
        if "target" in batch:
            out["target"] = self.to_physical(batch["target"])
        return with_batch_keys(out, batch)

    def frame_outputs_to_physical(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: self.to_physical(v) for k, v in outputs.items()}

    def prediction_units(self) -> dict[str, str]:
        return {k: self.units for k in ("output", "input", "target")} if self.units else {}

    @torch.no_grad()
    def panel_images(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        lr, hr = batch["input"], batch["target"]
        sr = self.eval_net(lr)
        panels = {
            "input": self.baseline(lr, "nearest") if self.scale > 1 else self.image_of(lr),
            "output": sr,
            "target": hr,
        }
        if self.scale > 1 and "bicubic" in self.baselines:
            panels["bicubic"] = self.baseline(lr, "bicubic")
        return panels
