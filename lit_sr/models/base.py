"""Pieces every lit_sr LightningModule shares: optimiser/scheduler from config, EMA of the trained net,
prediction of samples and of whole frames, and the image-panel hook.

Optimisers and schedulers arrive as ``functools.partial`` objects (Hydra ``_partial_: true``) so the
config names the class and its arguments while the module supplies the parameters.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Any, Callable, Iterable, Mapping, Sequence

import lightning as L
import torch
from torch import nn

from lit_sr.metrics.evaluator import Evaluator
from lit_sr.models.ema import EMA

log = logging.getLogger("lit_sr")

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]

# Batch keys that are model inputs/targets, not per-sample metadata.
IMAGE_KEYS = ("input", "target", "frame")


#: the steps that evaluate or predict: run in fp32 whatever the trainer's precision (see ``evaluate_in_fp32``)
EVALUATION_STEPS = ("validation_step", "test_step", "predict_step")


def _to_fp32(value: Any) -> Any:
    """``value`` with every reduced-precision float tensor (bf16, fp16) in it cast to float32 (dicts,
    lists and tuples walked); everything else unchanged."""
    if torch.is_tensor(value):
        return value.float() if value.is_floating_point() and value.element_size() < 4 else value
    if isinstance(value, Mapping):
        return type(value)((k, _to_fp32(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_to_fp32(v) for v in value)
    return value


def evaluate_in_fp32(step: Callable) -> Callable:
    """Wrap an evaluation step so it runs in fp32 even when the trainer trains in ``bf16-mixed``: autocast
    is switched off (on the CPU and on the module's device) and, under a ``*-mixed`` trainer precision,
    reduced-precision float tensors of the batch are cast to float32, so the net, the loss, PSNR/SSIM
    accumulation and the domain's physics metrics see fp32 (the weights of a mixed-precision run are
    fp32 already). Under a ``*-true`` precision (the weights themselves bf16/fp16) the batch is left as
    it is: there is no fp32 net to run."""
    if getattr(step, "_runs_in_fp32", False):
        return step

    @functools.wraps(step)
    def wrapper(self: L.LightningModule, *args: Any, **kwargs: Any) -> Any:
        trainer = self._trainer
        mixed = trainer is not None and str(getattr(trainer, "precision", "")).endswith("-mixed")
        with contextlib.ExitStack() as stack:
            for device_type in dict.fromkeys(("cpu", self.device.type)):
                stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
            if mixed:
                args, kwargs = _to_fp32(args), _to_fp32(kwargs)
            return step(self, *args, **kwargs)

    wrapper._runs_in_fp32 = True  # type: ignore[attr-defined]
    return wrapper


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    optimizer: OptimizerFactory | None,
    scheduler: SchedulerFactory | None = None,
    monitor: str | None = None,
    interval: str = "epoch",
) -> dict[str, Any]:
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
    out: dict[str, Any] = {"class": f"{type(transform).__module__}.{type(transform).__qualname__}"}
    for key, value in vars(transform).items():
        if not key.startswith("_") and key != "training" and isinstance(value, (int, float, str, bool)):
            out[key] = value
    return out


def resolve_data_range(
    data_range: float | None, physical_range: Sequence[float] | None, transform: torch.nn.Module | None
) -> float:
    """``data_range`` for PSNR/SSIM in model space: given, or the transform's image of ``physical_range``."""
    if data_range is not None:
        return float(data_range)
    if physical_range is None:
        raise ValueError("data_range: give model.data_range or data.physical_range ([lo, hi] in physical units)")
    lo, hi = (torch.tensor(float(v)) for v in physical_range)
    if transform is not None:
        lo, hi = transform(lo), transform(hi)
    value = float(hi - lo)
    if not value > 0:
        raise ValueError(f"data_range from physical_range {list(physical_range)} is {value}; expected > 0")
    return value


def per_sample_keys(batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Every tensor of a batch that is not an image (labels, positions, physical parameters, index)."""
    n = next(v.shape[0] for k, v in batch.items() if torch.is_tensor(v) and k in IMAGE_KEYS)
    return {
        k: v
        for k, v in batch.items()
        if k not in IMAGE_KEYS and torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == n
    }


def with_batch_keys(outputs: dict[str, Any], batch: Mapping[str, Any]) -> dict[str, Any]:
    """``outputs`` plus every per-sample key of the batch; a batch key named like an output (e.g. the
    true ``noise`` beside the predicted one) is kept as ``<key>_true``."""
    merged = dict(outputs)
    for k, v in per_sample_keys(batch).items():
        merged[f"{k}_true" if k in outputs else k] = v
    return merged


def log_evaluation(module: L.LightningModule, evaluator: Evaluator | None, stage: str) -> None:
    """Compute ``evaluator`` (collective under DDP), log its finite values as ``<stage>/<name>`` (every
    rank logs the same reduced value), its figures after validation, then reset it. Sanity-check passes
    only reset."""
    if evaluator is None:
        return
    if module.trainer.sanity_checking:
        evaluator.reset()
        return
    values, skipped = evaluator.results()
    if skipped:  # too few events of a class, no successful fit: not a number to log
        log.info("%s: not logged (not finite): %s", stage, ", ".join(skipped))
    module.log_dict({f"{stage}/{k}": v for k, v in values.items()})
    figures = evaluator.figures()
    if figures:
        from lit_sr.utils.figures import log_figures  # matplotlib only when figures are due

        log_figures(module.trainer, figures, prefix=f"{stage}/")
    evaluator.reset()


class LitSRModule(L.LightningModule):
    """Base class: optimiser/scheduler from config, EMA, prediction and the image-panel hook.

    Subclasses implement ``panel_images(batch)`` returning an ordered dict of column name ->
    Tensor[B, C, H, W] (all columns at one display size); ``ImagePanelCallback`` renders and logs them.

    Prediction: ``predict_step`` serves two kinds of batches. Sample batches (the batch contract) go to
    ``predict_samples``. Frame batches (``{"frame": [B, C, H, W], ...}`` from a frames data module, in
    model space) go through ``frame_predictor`` (e.g. :class:`lit_sr.inference.frames.FramePredictor`:
    blended patches), which the runner (``lit_sr.cli.predict``) sets from ``predict.frame_predictor``;
    outputs are returned in physical units by ``frame_outputs_to_physical``.
    """

    frame_predictor: Callable | None = None
    #: submodules that ``compile=true`` compiles (subclasses with several trained nets extend it)
    compile_targets: tuple[str, ...] = ("net",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every subclass's evaluation steps (``EVALUATION_STEPS``, also those it inherits from a mixin such
        as ``ImageToImageTask``) run in fp32 under mixed precision (:func:`evaluate_in_fp32`): bf16 may
        train, but metrics are never computed in bf16. Lightning's own placeholder steps stay unwrapped
        (it checks whether a step is overridden to decide whether to run the loop)."""
        super().__init_subclass__(**kwargs)
        for name in EVALUATION_STEPS:
            step = getattr(cls, name, None)
            if step is not None and step is not getattr(L.LightningModule, name, None):
                setattr(cls, name, evaluate_in_fp32(step))

    def __init__(
        self,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_monitor: str | None = None,
        scheduler_interval: str = "epoch",
        channels_last: bool = False,
        compile: bool | Mapping[str, Any] = False,
    ) -> None:
        super().__init__()
        self.channels_last = bool(channels_last)
        self.compile_options = dict(compile) if isinstance(compile, Mapping) else ({} if compile else None)
        self._optimizer_factory = optimizer
        self._scheduler_factory = scheduler
        self._scheduler_monitor = scheduler_monitor
        self._scheduler_interval = scheduler_interval
        self.ema: EMA | None = None

    def configure_optimizers(self) -> dict[str, Any]:
        return build_optimizer(
            self.parameters(),
            self._optimizer_factory,
            self._scheduler_factory,
            self._scheduler_monitor,
            self._scheduler_interval,
        )

    # ------------------------------------------------------------------ GPU fast path
    def configure_model(self) -> None:
        """``channels_last``: NHWC weights (and batches, see ``on_after_batch_transfer``), what tensor cores
        want for convolutions; ``compile``: ``torch.compile`` the trained nets in place (their state dict
        keys stay the same, so checkpoints are interchangeable with uncompiled runs)."""
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        if self.compile_options is not None and not getattr(self, "_compiled", False):
            for name in self.compile_targets:
                module = getattr(self, name, None)
                if isinstance(module, nn.Module):
                    module.compile(**self.compile_options)
            self._compiled = True

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.channels_last and isinstance(batch, dict):
            batch = {
                k: v.contiguous(memory_format=torch.channels_last)
                if torch.is_tensor(v) and v.dim() == 4 and v.is_floating_point()
                else v
                for k, v in batch.items()
            }
        return batch

    # ------------------------------------------------------------------ logging
    @property
    def step_logs_written(self) -> bool:
        """Whether values logged in the current training step reach the loggers. Lightning writes on-step
        values every ``trainer.log_every_n_steps`` batches (and when the run is told to stop) and drops the
        rest, while every ``self.log`` call costs its bookkeeping (~0.3 ms of Python per value): a step
        that logs many diagnostics logs them only when they are written. True outside a trainer."""
        trainer = self._trainer
        if trainer is None or trainer.fast_dev_run:
            return True
        connector = getattr(trainer, "_logger_connector", None)  # Lightning's own rule, when it has one
        return bool(getattr(connector, "should_update_logs", True))

    # ------------------------------------------------------------------ EMA
    def init_ema(self, net: nn.Module, decay: float | None) -> None:
        """Keep an exponential moving average of ``net`` for evaluation and prediction (None: off)."""
        self.ema = EMA(net, decay) if decay else None

    @property
    def eval_net(self) -> nn.Module:
        """The network used for evaluation and prediction: the EMA copy when enabled."""
        return self.ema.shadow if self.ema is not None else self.net

    def update_ema(self) -> None:
        if self.ema is not None:
            self.ema.update(self.net)

    # ------------------------------------------------------------------ prediction
    @evaluate_in_fp32
    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        if "frame" in batch:
            return self.predict_frames(batch)
        return self.predict_samples(batch)

    def predict_samples(self, batch: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} does not predict sample batches")

    def frame_forward(self, x: torch.Tensor) -> Any:
        """The model applied to a batch of patches in model space (what the frame predictor blends)."""
        return self.eval_net(x)

    def frame_outputs_to_physical(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return outputs

    def prediction_units(self) -> dict[str, str]:
        """Physical units of the predicted images, by output key (written into prediction files)."""
        return {}

    @torch.no_grad()
    def predict_frames(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.frame_predictor is None:
            raise RuntimeError(
                f"{type(self).__name__}: frame batches need a frame predictor (predict=frames, or "
                "predict.frame_predictor in the predict config)"
            )
        results = []
        for frame in batch["frame"]:
            out = self.frame_predictor(self.frame_forward, frame.to(self.device))
            results.append(out if isinstance(out, dict) else {"output": out})
        merged = {k: torch.stack([r[k] for r in results]) for k in results[0]}
        return with_batch_keys(self.frame_outputs_to_physical(merged), batch)

    @torch.no_grad()
    def panel_images(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError
