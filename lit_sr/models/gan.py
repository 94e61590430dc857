"""GAN super-resolution LightningModule (SRGAN / ESRGAN / WGAN-GP family), manual optimisation.

Reused by every domain: the generator, critic, adversarial loss, perceptual feature net and loss
weights come from config; evaluation (PSNR/SSIM of model vs nearest/bicubic baselines, EMA weights,
physics evaluator, image panels, prediction in physical units) is inherited from
:class:`~lit_sr.models.supervised.SupervisedSRModule`.

Defaults are the calorimeter study's (Erdmann et al. 2022):
    generator  L = 1e-4 * L_WGAN + 1e-9 * L_perceptual (+ pixel_weight * L_pixel, default 0)
    critic     L = 10 * L_WGAN + 10 * L_GP
    Adam(lr=1e-4, betas=(0, 0.9)) for both, n_critic = 1.

Step counting (Lightning #17958): with manual optimisation every ``LightningOptimizer.step()``
advances ``trainer.global_step``; two optimisers and ``n_critic`` critic steps would make it count
1 + n_critic per batch. Here only the *generator* optimiser is stepped through Lightning's wrapper;
the critic optimiser is stepped directly (``opt_d.optimizer.step()``). Hence ``trainer.global_step``
== number of training batches (pre-training included), and ``max_steps``, ``log_every_n_steps``,
``val_check_interval`` and checkpoint ``every_n_train_steps`` all count batches. Consequence: the
critic step bypasses the precision plugin, so fp16 mixed precision (grad scaler) is refused; fp32 and
bf16 work.

DDP (see ``ddp_step``): Lightning wraps the whole LightningModule in one ``DistributedDataParallel``
and, with manual optimisation, re-arms its reducer before every ``manual_backward``. Without
unused-parameter detection every backward must then produce a gradient for *every* trainable
parameter of the module, otherwise the next backward fails with "Expected to have finished reduction
in the prior iteration ... parameters that were not used in producing loss". The critic step does
not use the generator (fake images are generated under no_grad) and the pre-training step does not
use the critic.
  * ``ddp_step="touch"`` (default): no ``toggle_optimizer``; the losses of those steps get a
    ``0 * p.view(-1)[0]`` term per parameter of the idle network, so all hooks fire (zero gradients,
    cleared by the next ``zero_grad``) and plain ``strategy=ddp`` (find_unused_parameters=False)
    works. The generator step uses the critic naturally (its weight gradients are computed and
    discarded). Cost: one extra all-reduce of zeros per idle network -- the same buckets
    find_unused_parameters would reduce -- and no graph traversal per backward.
  * ``ddp_step="toggle"``: ``toggle_optimizer``/``untoggle_optimizer`` freeze the idle network
    (no wasted weight gradients) but need ``strategy=ddp_find_unused_parameters_true`` under DDP,
    which walks the autograd graph before every backward.
  Measured (Trainer on 2 CPU processes, gloo, 1 thread each, study generator 32 features x 5 RRDBs,
  default critic, perceptual net, batch 32 per process, WGAN-GP, n_critic=1, 20 timed batches, three
  runs each on a shared 2-core machine): "touch" + strategy=ddp 1.23 / 1.22 / 0.91 s per batch,
  "toggle" + ddp_find_unused_parameters_true 1.21 / 1.14 / 1.05 s per batch -- equal within the
  noise (the generator's forward/backward dominates; the wasted critic weight gradients of "touch"
  and the graph walk of find_unused are both small). Parameters were bit-identical across ranks and
  between the two modes after 25 steps; "toggle" with plain strategy=ddp fails with the
  unused-parameter error. On an idle machine (``benchmarks/bench_gan_ddp.py``, 2026-11-23, one run,
  25 steps timed from batch 5) "touch" was slower: 0.655 vs 0.559 s per batch (17 %), so the wasted
  weight gradients are not free; "toggle" + find_unused is the faster choice when the strategy can be
  set. "touch" stays the default because it runs with the default ``ddp`` trainer config and needs
  no strategy coupling.
The gradient penalty differentiates the critic w.r.t. its *input* with ``torch.autograd.grad``
(no DDP hooks involved) and is back-propagated to the critic weights by the ordinary
``manual_backward`` of the critic loss (double backward), which the reducer sees as one backward.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from lit_sr.losses.adversarial import AdversarialLoss, make_adversarial_loss
from lit_sr.losses.perceptual import PerceptualLoss
from lit_sr.domains.calo.metrics import conserve_energy
from lit_sr.models.base import OptimizerFactory, build_optimizer, transform_hparams
from lit_sr.models.supervised import SupervisedSRModule


def _adam_gan(params):
    return torch.optim.Adam(params, lr=1e-4, betas=(0.0, 0.9))


class EnergyConservingGenerator(nn.Module):
    """Wraps a generator so every scale x scale block of its output sums to the LR crystal (physical units).

    Works in the model space of ``transform`` (output mapped to physical units, rescaled with
    :func:`~lit_sr.domains.calo.metrics.conserve_energy`, mapped back).
    """

    def __init__(self, net: nn.Module, scale: int, transform: nn.Module | None = None) -> None:
        super().__init__()
        self.net = net
        self.scale = scale
        self.transform = transform

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        sr = self.net(lr)
        if self.transform is None:
            return conserve_energy(sr, lr, self.scale)
        out = conserve_energy(self.transform.inverse(sr), self.transform.inverse(lr), self.scale)
        return self.transform(out)


class GANSRModule(SupervisedSRModule):
    """Args (beyond :class:`SupervisedSRModule`'s ``scale, data_range, transform, baselines,
    flux_conserving_baseline, ema_decay, evaluator``):
        net: generator (e.g. ``lit_sr.nets.generators.calo_generator()``).
        critic: critic / discriminator returning one logit per image (``lit_sr.nets.critic.Critic``).
        adversarial_loss: 'wgan-gp', 'bce' (non-saturating) or 'ragan' (relativistic average), or a loss object.
        perceptual_net: frozen feature net (``load_frozen_classifier(...)``) or None (no perceptual term).
        perceptual_reduction: 'mean' or 'sum' over the features (see ``PerceptualLoss``).
        loss: pixel loss (L1 default) for the optional pixel term and the pre-training phase.
        generator_optimizer / critic_optimizer: optimiser partials; default Adam(1e-4, betas=(0, 0.9)).
        n_critic: critic updates per batch (same batch each time), then one generator update.
        generator_adversarial_weight, perceptual_weight, pixel_weight: generator loss weights.
        critic_adversarial_weight, gp_weight: critic loss weights (gp only for 'wgan-gp'; lambda).
        pretrain_steps: first batches train the generator alone with the pixel loss.
        gradient_clip_val / gradient_clip_algorithm: clipping applied by hand before each step.
        energy_conservation: rescale SR blocks to the LR crystal energies (off by default, as in the study).
        ddp_step: 'touch' or 'toggle' (see the module docstring).
        classifier_ckpt: provenance only: the classifier checkpoint the perceptual net / evaluator were
            loaded from (recorded in the hyperparameters, so a GAN checkpoint names its classifier).
    """

    def __init__(self, net: nn.Module, critic: nn.Module, adversarial_loss: str | AdversarialLoss = "wgan-gp",
                 perceptual_net: nn.Module | None = None, perceptual_reduction: str = "mean",
                 loss: nn.Module | None = None, scale: int = 4, data_range: float = 1.0,
                 transform: nn.Module | None = None, baselines: Sequence[str] = ("nearest", "bicubic"),
                 flux_conserving_baseline: bool = True, ema_decay: float | None = None,
                 evaluator: nn.Module | None = None, generator_optimizer: OptimizerFactory | None = None,
                 critic_optimizer: OptimizerFactory | None = None, n_critic: int = 1,
                 generator_adversarial_weight: float = 1e-4, perceptual_weight: float = 1e-9,
                 pixel_weight: float = 0.0, critic_adversarial_weight: float = 10.0, gp_weight: float = 10.0,
                 pretrain_steps: int = 0, gradient_clip_val: float | None = None,
                 gradient_clip_algorithm: str = "norm", energy_conservation: bool = False,
                 ddp_step: str = "touch", classifier_ckpt: str | None = None) -> None:
        if energy_conservation:
            net = EnergyConservingGenerator(net, scale, transform)
        super().__init__(net=net, loss=loss, scale=scale, data_range=data_range, transform=transform,
                         baselines=baselines, flux_conserving_baseline=flux_conserving_baseline,
                         ema_decay=ema_decay, evaluator=evaluator, optimizer=generator_optimizer)
        # Plain values only (checkpoints load with weights_only=True): the transform as the dict the
        # parent stores, not the module object.
        self.save_hyperparameters(ignore=["net", "critic", "perceptual_net", "loss", "evaluator", "transform",
                                          "generator_optimizer", "critic_optimizer", "adversarial_loss"])
        self.hparams["transform"] = transform_hparams(transform)
        self.hparams["adversarial_loss"] = adversarial_loss if isinstance(adversarial_loss, str) else type(
            adversarial_loss).__name__
        if n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {n_critic}")
        if ddp_step not in ("touch", "toggle"):
            raise ValueError(f"ddp_step must be 'touch' or 'toggle', got {ddp_step!r}")
        self.automatic_optimization = False
        self.critic = critic
        self.adversarial = make_adversarial_loss(adversarial_loss)
        self.perceptual = PerceptualLoss(perceptual_net, perceptual_reduction) if perceptual_net is not None else None
        self._critic_optimizer_factory = critic_optimizer
        self.n_critic = int(n_critic)
        self.w_adv_g, self.w_perc, self.w_pix = generator_adversarial_weight, perceptual_weight, pixel_weight
        self.w_adv_d, self.w_gp = critic_adversarial_weight, gp_weight
        self.pretrain_steps = int(pretrain_steps)
        self.gradient_clip_val = gradient_clip_val
        self.gradient_clip_algorithm = gradient_clip_algorithm
        self.ddp_step = ddp_step
        if evaluator is not None and getattr(evaluator, "classifier", None) is not None \
                and getattr(evaluator, "classifier_transform", None) is None:
            evaluator.classifier_transform = transform  # classifier trained in the data's model space

    # ------------------------------------------------------------------ optimisers
    def configure_optimizers(self):
        g = build_optimizer(self.net.parameters(), self._optimizer_factory or _adam_gan)["optimizer"]
        d = build_optimizer(self.critic.parameters(), self._critic_optimizer_factory or _adam_gan)["optimizer"]
        return [g, d]

    def on_fit_start(self) -> None:
        precision = str(getattr(self.trainer, "precision", ""))
        if precision.startswith("16"):
            raise ValueError(f"GANSRModule: precision={precision!r} is not supported (the critic optimiser is "
                             "stepped outside Lightning's grad scaler); use 32-true or bf16-mixed")

    # ------------------------------------------------------------------ helpers
    @property
    def batches_seen(self) -> int:
        """Training batches processed so far (== trainer.global_step, see the module docstring)."""
        return self.trainer.global_step if self._trainer is not None else 0

    @property
    def pretraining(self) -> bool:
        return self.batches_seen < self.pretrain_steps

    @staticmethod
    def _zero_touch(module: nn.Module) -> torch.Tensor | float:
        """0 * one element of every trainable parameter: gives DDP's reducer a (zero) gradient for each."""
        terms = [p.view(-1)[:1].sum() for p in module.parameters() if p.requires_grad]
        return torch.stack(terms).sum() * 0.0 if terms else 0.0

    def _classifier_space(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space images -> the perceptual net's input space (its own transform if it has one)."""
        tr = getattr(self.perceptual.feature_net, "input_transform", None)
        if tr is None or self.transform is None:
            return x
        return tr(self.transform.inverse(x))

    def _step(self, optimizer, loss: torch.Tensor, through_lightning: bool) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val,
                                gradient_clip_algorithm=self.gradient_clip_algorithm)
        if through_lightning:
            optimizer.step()  # LightningOptimizer: advances trainer.global_step by one
        else:
            optimizer.optimizer.step()  # raw optimiser: does not advance global_step

    # ------------------------------------------------------------------ training
    def critic_loss(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            sr = self.net(lr)
        real, fake = self.critic(hr), self.critic(sr)
        adv = self.adversarial.critic_loss(real, fake)
        out = {"adv": adv, "loss": self.w_adv_d * adv, "real": real.detach().mean(), "fake": fake.detach().mean()}
        if self.adversarial.uses_gradient_penalty:
            gp = self.adversarial.gradient_penalty(self.critic, hr, sr)
            out["gp"] = gp
            out["loss"] = out["loss"] + self.w_gp * gp
        return out

    def generator_loss(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        sr = self.net(lr)
        fake = self.critic(sr)
        real = None
        if self.adversarial.needs_real_for_generator:
            with torch.no_grad():
                real = self.critic(hr)
        adv = self.adversarial.generator_loss(real, fake)
        out = {"adv": adv, "loss": self.w_adv_g * adv}
        if self.perceptual is not None and self.w_perc:
            out["perceptual"] = self.perceptual(self._classifier_space(sr), self._classifier_space(hr))
            out["loss"] = out["loss"] + self.w_perc * out["perceptual"]
        if self.w_pix:
            out["pixel"] = self.loss_fn(sr, hr)
            out["loss"] = out["loss"] + self.w_pix * out["pixel"]
        return out

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        lr, hr = batch["input"], batch["target"]
        n = lr.shape[0]
        toggle = self.ddp_step == "toggle"
        if self.pretraining:
            if toggle:
                self.toggle_optimizer(opt_g)
            pixel = self.loss_fn(self.net(lr), hr)
            extra = 0.0 if toggle else self._zero_touch(self.critic)
            self._step(opt_g, pixel + extra, through_lightning=True)
            if toggle:
                self.untoggle_optimizer(opt_g)
            self.log_dict({"train/pixel": pixel.detach(), "train/pretraining": 1.0}, batch_size=n)
            return

        for _ in range(self.n_critic):
            if toggle:
                self.toggle_optimizer(opt_d)
            d = self.critic_loss(lr, hr)
            extra = 0.0 if toggle else self._zero_touch(self.net)
            self._step(opt_d, d["loss"] + extra, through_lightning=False)
            if toggle:
                self.untoggle_optimizer(opt_d)

        if toggle:
            self.toggle_optimizer(opt_g)
        g = self.generator_loss(lr, hr)
        self._step(opt_g, g["loss"], through_lightning=True)
        if toggle:
            self.untoggle_optimizer(opt_g)

        logs = {"train/loss_d": d["loss"].detach(), "train/adv_d": d["adv"].detach(),
                "train/critic_real": d["real"], "train/critic_fake": d["fake"],
                "train/loss_g": g["loss"].detach(), "train/adv_g": g["adv"].detach(), "train/pretraining": 0.0}
        if "gp" in d:
            logs["train/gp"] = d["gp"].detach()
            logs["train/wasserstein"] = -d["adv"].detach()  # E[D(real)] - E[D(fake)]
        for k in ("perceptual", "pixel"):
            if k in g:
                logs[f"train/{k}"] = g[k].detach()
        self.log_dict(logs, batch_size=n)
        self.log("train/loss", g["loss"].detach(), prog_bar=True, batch_size=n)
