"""GAN super-resolution (SRGAN / ESRGAN / WGAN-GP family) on the adversarial engine.

The generator maps the LR input to SR; the critic judges SR against HR, optionally conditioned on the
LR input (``condition_on_input``: the critic sees whether an output fits its input). Generator terms
beside the adversarial one: a pixel loss and a perceptual loss on the features of a frozen network
(our own domain classifier: no pretrained VGG). Evaluation, baselines and prediction are the
supervised module's (:class:`~lit_sr.models.image_to_image.ImageToImageTask`).

Loss weights default to a plain sum (adversarial and perceptual terms weighted 1, no pixel term);
every recipe states its own, e.g. the calorimeter study (Erdmann et al., EPJC 83 (2023) 1001) in
conf/experiment/calo_srgan.yaml: generator 1e-4 L_WGAN + 1e-9 L_perceptual, critic 10 L_WGAN + 10 L_GP.
``scale`` has no default: it is the data's (``${data.scale}`` in conf/model/gan.yaml).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
from torch import nn

from lit_sr.losses.adversarial import AdversarialLoss
from lit_sr.losses.perceptual import PerceptualLoss
from lit_sr.losses.pixel import PixelLoss, RelativeFluxLoss
from lit_sr.losses.task import ClassifierTaskLoss
from lit_sr.models.adversarial import AdversarialModule
from lit_sr.models.base import OptimizerFactory, transform_hparams
from lit_sr.models.image_to_image import ImageToImageTask

log = logging.getLogger("lit_sr")


class GANSRModule(ImageToImageTask, AdversarialModule):
    """Args (beyond :class:`~lit_sr.models.adversarial.AdversarialModule`'s and the image-to-image task's
    ``scale, data_range, physical_range, transform, baselines, flux_conserving_baseline, evaluator,
    image_channels, units``):
        perceptual_net: frozen feature net (``load_frozen_classifier(...)``) or None (no perceptual term).
        perceptual_reduction: 'mean' or 'sum' over the features (see ``PerceptualLoss``).
        loss: pixel loss (L1 default) of the pixel term and of the pre-training phase.
        scale: upsampling factor of ``net`` (required, keyword-only: the data's).
        generator_adversarial_weight, critic_adversarial_weight: weights of the adversarial terms (default 1).
        perceptual_weight, pixel_weight: generator loss weights (default 1 and 0: the pixel term is off).
        task_net: frozen classifier (logits) of the task term, or None (no task term): the cross-entropy of
            its posterior on SR against the batch's ``label`` (``task_target='label'``; batches without labels
            fall back to ``'hr'``, logged once) or against its posterior on HR (``'hr'``), weight ``task_weight``
            (see ``ClassifierTaskLoss``). Never the evaluator's judge.
        flux_weight: weight of the relative total-flux error of SR against HR in physical units (mean over
            samples of |sum SR / sum HR - 1|, ``RelativeFluxLoss``); 0 = off.
        condition_on_input: the critic gets the LR input (its image channels, in model space) as
            condition (needs a critic built with ``condition_channels``).
        classifier_ckpt: provenance only: the checkpoint the perceptual net / evaluator were loaded
            from (recorded in the hyperparameters, so a GAN checkpoint names its classifier).
    """

    def __init__(
        self,
        net: nn.Module,
        critic: nn.Module,
        adversarial_loss: str | AdversarialLoss = "wgan-gp",
        *,
        scale: int,
        perceptual_net: nn.Module | None = None,
        perceptual_reduction: str = "mean",
        loss: nn.Module | None = None,
        data_range: float | None = None,
        physical_range: Sequence[float] | None = None,
        transform: nn.Module | None = None,
        baselines: Sequence[str] = ("nearest", "bicubic"),
        flux_conserving_baseline: bool = True,
        ema_decay: float | None = None,
        evaluator: nn.Module | None = None,
        image_channels: Sequence[int] | None = None,
        units: str = "",
        generator_optimizer: OptimizerFactory | None = None,
        critic_optimizer: OptimizerFactory | None = None,
        n_critic: int = 1,
        generator_adversarial_weight: float = 1.0,
        perceptual_weight: float = 1.0,
        pixel_weight: float = 0.0,
        task_net: nn.Module | None = None,
        task_target: str = "label",
        task_weight: float = 0.0,
        flux_weight: float = 0.0,
        critic_adversarial_weight: float = 1.0,
        penalty: str = "auto",
        gp_weight: float = 10.0,
        drift_weight: float = 0.0,
        pretrain_steps: int = 0,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        condition_on_input: bool = False,
        ddp_step: str = "toggle",
        classifier_ckpt: str | None = None,
        channels_last: bool = False,
        compile: bool | dict = False,
    ) -> None:
        super().__init__(
            net=net,
            critic=critic,
            adversarial_loss=adversarial_loss,
            penalty=penalty,
            gp_weight=gp_weight,
            drift_weight=drift_weight,
            generator_optimizer=generator_optimizer,
            critic_optimizer=critic_optimizer,
            n_critic=n_critic,
            generator_adversarial_weight=generator_adversarial_weight,
            critic_adversarial_weight=critic_adversarial_weight,
            pretrain_steps=pretrain_steps,
            ema_decay=ema_decay,
            gradient_clip_val=gradient_clip_val,
            gradient_clip_algorithm=gradient_clip_algorithm,
            ddp_step=ddp_step,
            channels_last=channels_last,
            compile=compile,
        )
        # Plain values only (checkpoints load with weights_only=True).
        self.save_hyperparameters(
            ignore=[
                "net",
                "critic",
                "perceptual_net",
                "task_net",
                "loss",
                "evaluator",
                "transform",
                "generator_optimizer",
                "critic_optimizer",
                "adversarial_loss",
            ]
        )
        self.hparams["transform"] = transform_hparams(transform)
        self.hparams["adversarial_loss"] = (
            adversarial_loss if isinstance(adversarial_loss, str) else type(adversarial_loss).__name__
        )
        self.loss_fn = loss if loss is not None else PixelLoss("l1")
        self.perceptual = PerceptualLoss(perceptual_net, perceptual_reduction) if perceptual_net is not None else None
        self.w_perc, self.w_pix = perceptual_weight, pixel_weight
        self.task = ClassifierTaskLoss(task_net, task_target) if task_net is not None else None
        self.w_task = task_weight
        self._task_fallback_logged = False
        self.w_flux = flux_weight
        self.flux_loss = RelativeFluxLoss()
        if task_weight and task_net is None:
            raise ValueError(f"GANSRModule: task_weight={task_weight} needs a task_net (a frozen classifier)")
        if (
            task_net is not None
            and evaluator is not None
            and any(task_net is j for j in getattr(evaluator, "judges", {}).values())
        ):
            raise ValueError(
                "GANSRModule: the task_net is one of the evaluator's judges; a judge must stay independent"
            )
        self.condition_on_input = bool(condition_on_input)
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
        if (
            evaluator is not None
            and getattr(evaluator, "classifier", None) is not None
            and getattr(evaluator, "classifier_transform", None) is None
        ):
            evaluator.classifier_transform = transform  # classifier trained in the data's model space

    # ------------------------------------------------------------------ engine hooks
    def generate(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.net(batch["input"])

    def real_samples(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["target"]

    def critic_condition(self, batch: dict[str, Any]) -> torch.Tensor | None:
        return self.image_of(batch["input"]) if self.condition_on_input else None

    def pretrain_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.loss_fn(self.net(batch["input"]), batch["target"])

    def generator_terms(self, batch: dict[str, Any], fake: torch.Tensor) -> dict[str, tuple[float, torch.Tensor]]:
        hr = batch["target"]
        terms: dict[str, tuple[float, torch.Tensor]] = {}
        if self.perceptual is not None and self.w_perc:
            terms["perceptual"] = (
                self.w_perc,
                self.perceptual(self._classifier_space(fake), self._classifier_space(hr)),
            )
        if self.w_pix:
            terms["pixel"] = (self.w_pix, self.loss_fn(fake, hr))
        if self.w_flux:
            terms["flux"] = (self.w_flux, self.flux_loss(self.to_physical(fake), self.to_physical(hr)))
        if self.task is not None and self.w_task:
            tr = getattr(self.task.classifier, "input_transform", None)
            labels, target = batch.get("label"), None
            if labels is None and self.task.target == "label":  # data without labels (a user's folder)
                target = "hr"
                if not self._task_fallback_logged:
                    log.info(
                        "Task term: the batches carry no 'label'; it uses the classifier's posterior on HR as "
                        "its target instead (model.task_target=hr)"
                    )
                    self._task_fallback_logged = True
            terms["task"] = (
                self.w_task,
                self.task(self._to_space(fake, tr), labels, self._to_space(hr, tr), target),
            )
        return terms

    def _to_space(self, x: torch.Tensor, input_transform: nn.Module | None) -> torch.Tensor:
        """Model-space images -> a frozen net's input space (its own ``input_transform`` if it has one)."""
        if input_transform is None or self.transform is None:
            return x
        return input_transform(self.transform.inverse(x))

    def _classifier_space(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space images -> the perceptual net's input space (its own transform if it has one)."""
        return self._to_space(x, getattr(self.perceptual.feature_net, "input_transform", None))
