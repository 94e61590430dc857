"""The adversarial engine: one manual-optimisation loop for every GAN of lit_sr.

:class:`AdversarialModule` owns what the GANs share: ``n_critic`` critic updates per batch then one
generator update, the DDP-safe update, gradient penalties that see the critic's condition, the
adversarial losses (WGAN-GP, non-saturating BCE, relativistic average, hinge), an optional
pre-training phase, EMA of the generator, gradient clipping and a step count that survives resume.
Subclasses supply small hooks:

* ``generate(batch)`` -> the fake samples the critic judges (with gradient to the generator), e.g.
  ``net(batch["input"])`` for super-resolution, ``psf(net(z, label))`` for a galaxy GAN;
* ``real_samples(batch)`` -> the real samples;
* ``critic_condition(batch)`` -> the critic's condition (an LR image, a label) or None; the critic
  is called as ``critic(x, condition=c)`` when a condition is given, ``critic(x)`` otherwise;
* ``generator_terms(batch, fake)`` -> extra weighted generator terms ``{name: (weight, value)}``
  (pixel, perceptual, ...);
* ``pretrain_loss(batch)`` -> the generator's loss during the first ``pretrain_steps`` batches.

Step counting (Lightning #17958): with manual optimisation every ``LightningOptimizer.step()``
advances ``trainer.global_step``. Only the *generator* optimiser is stepped through Lightning's
wrapper; the critic optimiser is stepped directly. Hence ``trainer.global_step`` == training batches
(pre-training included), restored from checkpoints on resume, so ``max_steps``,
``log_every_n_steps``, ``val_check_interval`` and the pre-training switch all count batches.
Consequence: the critic step bypasses the precision plugin, so fp16 mixed precision (grad scaler) is
refused; fp32 and bf16 work.

DDP (``ddp_step``): Lightning wraps the whole LightningModule in one ``DistributedDataParallel`` and,
with manual optimisation, re-arms its reducer before every ``manual_backward``. The critic step does
not use the generator (fakes are generated under no_grad) and the pre-training step does not use the
critic, so DDP must be told how to treat the idle network:

* ``"toggle"`` (default): ``toggle_optimizer`` freezes the idle network (no wasted weight gradients);
  DDP then needs ``find_unused_parameters=True``. The module says so (``ddp_find_unused_parameters``)
  and :class:`lit_sr.utils.distributed.HydraDDPStrategy` (``trainer=ddp`` / ``trainer=ddp_sim``)
  honours it, so the plain trainer configs work.
* ``"touch"``: the idle network's parameters get a ``0 * p.view(-1)[0]`` term so every hook fires
  (zero gradients) and ``find_unused_parameters=False`` works with any DDP strategy; the generator
  step also computes (and discards) the critic's weight gradients.
Measured with ``benchmarks/bench_gan_ddp.py`` (see the README's performance section).

The gradient penalty differentiates the critic w.r.t. its *input* with ``torch.autograd.grad`` (no
DDP hooks involved) and is back-propagated to the critic weights by the ordinary ``manual_backward``
of the critic loss (double backward), which the reducer sees as one backward.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from lit_sr.losses.adversarial import AdversarialLoss, gradient_penalty, make_adversarial_loss, r1_penalty
from lit_sr.models.base import LitSRModule, OptimizerFactory, build_optimizer

PENALTIES = ("auto", "gp", "r1", "none")
DDP_STEPS = ("toggle", "touch")


def default_gan_adam(params):
    """Adam(lr 1e-4, betas (0, 0.9)): the WGAN-GP paper's choice, used when no optimiser is configured."""
    return torch.optim.Adam(params, lr=1e-4, betas=(0.0, 0.9))


class AdversarialModule(LitSRModule):
    """Args:
    net: the generator.
    critic: critic / discriminator returning one score per sample; conditional critics take
        ``condition=`` (see the module docstring).
    adversarial_loss: 'wgan-gp', 'bce' (non-saturating), 'ragan' (relativistic average), 'hinge', or
        a loss object.
    penalty: 'auto' (WGAN-GP's gradient penalty for 'wgan-gp', none otherwise), 'gp', 'r1' or 'none'.
    gp_weight: weight of the penalty (lambda of WGAN-GP; gamma/2 of R1).
    drift_weight: weight of E[D(real)^2] in the critic loss (ProGAN's drift term, 1e-3), 0 = off.
    generator_optimizer / critic_optimizer: optimiser partials; default Adam(1e-4, betas=(0, 0.9)).
    n_critic: critic updates per batch (same batch each time), then one generator update.
    generator_adversarial_weight / critic_adversarial_weight: weights of the adversarial terms.
    pretrain_steps: the first batches train the generator alone with ``pretrain_loss``.
    ema_decay: keep an EMA of the generator for evaluation and sampling (None: off).
    gradient_clip_val / gradient_clip_algorithm: clipping applied by hand before each step.
    ddp_step: 'toggle' or 'touch' (see the module docstring).
    channels_last / compile: the GPU fast path (see :meth:`LitSRModule.configure_model`; compiles the
        generator and the critic).
    """

    compile_targets = ("net", "critic")

    def __init__(
        self,
        net: nn.Module,
        critic: nn.Module,
        adversarial_loss: str | AdversarialLoss = "wgan-gp",
        penalty: str = "auto",
        gp_weight: float = 10.0,
        drift_weight: float = 0.0,
        generator_optimizer: OptimizerFactory | None = None,
        critic_optimizer: OptimizerFactory | None = None,
        n_critic: int = 1,
        generator_adversarial_weight: float = 1.0,
        critic_adversarial_weight: float = 1.0,
        pretrain_steps: int = 0,
        ema_decay: float | None = None,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        ddp_step: str = "toggle",
        channels_last: bool = False,
        compile: bool | dict = False,
    ) -> None:
        super().__init__(optimizer=generator_optimizer, channels_last=channels_last, compile=compile)
        if n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {n_critic}")
        if penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {', '.join(PENALTIES)}, got {penalty!r}")
        if ddp_step not in DDP_STEPS:
            raise ValueError(f"ddp_step must be 'toggle' or 'touch', got {ddp_step!r}")
        self.automatic_optimization = False
        self.net = net
        self.critic = critic
        self.adversarial = make_adversarial_loss(adversarial_loss)
        if penalty == "auto":
            penalty = "gp" if self.adversarial.uses_gradient_penalty else "none"
        self.penalty = penalty
        self._critic_optimizer_factory = critic_optimizer
        self.n_critic = int(n_critic)
        self.w_adv_g, self.w_adv_d = generator_adversarial_weight, critic_adversarial_weight
        self.w_penalty, self.w_drift = gp_weight, drift_weight
        self.pretrain_steps = int(pretrain_steps)
        self.gradient_clip_val = gradient_clip_val
        self.gradient_clip_algorithm = gradient_clip_algorithm
        self.ddp_step = ddp_step
        self.init_ema(net, ema_decay)

    # ------------------------------------------------------------------ hooks for subclasses
    def generate(self, batch: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def real_samples(self, batch: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def critic_condition(self, batch: dict[str, Any]) -> torch.Tensor | None:
        return None

    def generator_terms(self, batch: dict[str, Any], fake: torch.Tensor) -> dict[str, tuple[float, torch.Tensor]]:
        return {}

    def pretrain_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__}: pretrain_steps > 0 needs pretrain_loss()")

    def batch_size_of(self, batch: dict[str, Any]) -> int:
        return int(self.real_samples(batch).shape[0])

    # ------------------------------------------------------------------ optimisers and DDP
    def configure_optimizers(self):
        g = build_optimizer(self.net.parameters(), self._optimizer_factory or default_gan_adam)["optimizer"]
        d = build_optimizer(self.critic.parameters(), self._critic_optimizer_factory or default_gan_adam)["optimizer"]
        return [g, d]

    @property
    def ddp_find_unused_parameters(self) -> bool:
        """What DDP needs for this module's update (read by HydraDDPStrategy)."""
        return self.ddp_step == "toggle"

    def on_fit_start(self) -> None:
        precision = str(getattr(self.trainer, "precision", ""))
        if precision.startswith("16"):
            raise ValueError(
                f"{type(self).__name__}: precision={precision!r} is not supported (the critic optimiser "
                "is stepped outside Lightning's grad scaler); use 32-true or bf16-mixed"
            )

    # ------------------------------------------------------------------ helpers
    @property
    def batches_seen(self) -> int:
        """Training batches processed so far (== trainer.global_step, see the module docstring)."""
        return self.trainer.global_step if self._trainer is not None else 0

    @property
    def pretraining(self) -> bool:
        return self.batches_seen < self.pretrain_steps

    def critic_score(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        return self.critic(x) if condition is None else self.critic(x, condition=condition)

    @staticmethod
    def _zero_touch(module: nn.Module) -> torch.Tensor | float:
        """0 * one element of every trainable parameter: gives DDP's reducer a (zero) gradient for each."""
        terms = [p.view(-1)[:1].sum() for p in module.parameters() if p.requires_grad]
        return torch.stack(terms).sum() * 0.0 if terms else 0.0

    def _step(self, optimizer, loss: torch.Tensor, through_lightning: bool) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.gradient_clip_val:
            self.clip_gradients(
                optimizer,
                gradient_clip_val=self.gradient_clip_val,
                gradient_clip_algorithm=self.gradient_clip_algorithm,
            )
        if through_lightning:
            optimizer.step()  # LightningOptimizer: advances trainer.global_step by one
        else:
            optimizer.optimizer.step()  # raw optimiser: does not advance global_step

    def _update(self, optimizer, idle: nn.Module, loss_fn, through_lightning: bool) -> dict[str, torch.Tensor]:
        """One optimiser update; the idle network is frozen ('toggle') or touched ('touch') for DDP."""
        toggle = self.ddp_step == "toggle"
        if toggle:
            self.toggle_optimizer(optimizer)
        out = loss_fn()
        loss = out["loss"] if toggle else out["loss"] + self._zero_touch(idle)
        self._step(optimizer, loss, through_lightning)
        if toggle:
            self.untoggle_optimizer(optimizer)
        return out

    # ------------------------------------------------------------------ losses
    def critic_loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            fake = self.generate(batch)
        real = self.real_samples(batch)
        cond = self.critic_condition(batch)
        real_logits, fake_logits = self.critic_score(real, cond), self.critic_score(fake, cond)
        adv = self.adversarial.critic_loss(real_logits, fake_logits)
        out = {
            "adv": adv,
            "loss": self.w_adv_d * adv,
            "real": real_logits.detach().mean(),
            "fake": fake_logits.detach().mean(),
        }
        critic = functools.partial(self.critic_score, condition=cond)
        if self.penalty == "gp":
            out["gp"] = gradient_penalty(critic, real, fake)
        elif self.penalty == "r1":
            out["r1"] = r1_penalty(critic, real)
        for name in ("gp", "r1"):
            if name in out:
                out["loss"] = out["loss"] + self.w_penalty * out[name]
        if self.w_drift:
            out["drift"] = real_logits.pow(2).mean()
            out["loss"] = out["loss"] + self.w_drift * out["drift"]
        return out

    def generator_loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        fake = self.generate(batch)
        cond = self.critic_condition(batch)
        fake_logits = self.critic_score(fake, cond)
        real_logits = None
        if self.adversarial.needs_real_for_generator:
            with torch.no_grad():
                real_logits = self.critic_score(self.real_samples(batch), cond)
        adv = self.adversarial.generator_loss(real_logits, fake_logits)
        out = {"adv": adv, "loss": self.w_adv_g * adv}
        for name, (weight, value) in self.generator_terms(batch, fake).items():
            out[name] = value
            out["loss"] = out["loss"] + weight * value
        return out

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        n = self.batch_size_of(batch)
        if self.pretraining:
            out = self._update(opt_g, self.critic, lambda: {"loss": self.pretrain_loss(batch)}, through_lightning=True)
            self.update_ema()
            if self.step_logs_written:
                self.log_dict({"train/pretrain_loss": out["loss"].detach(), "train/pretraining": 1.0}, batch_size=n)
            return
        for _ in range(self.n_critic):
            d = self._update(opt_d, self.net, lambda: self.critic_loss(batch), through_lightning=False)
        g = self._update(opt_g, self.critic, lambda: self.generator_loss(batch), through_lightning=True)
        self.update_ema()
        self.log("train/loss", g["loss"].detach(), prog_bar=True, batch_size=n)  # every step: the progress bar
        if not self.step_logs_written:  # the diagnostics only on the steps whose values the loggers get
            return
        logs = {
            "train/loss_d": d["loss"].detach(),
            "train/adv_d": d["adv"].detach(),
            "train/critic_real": d["real"],
            "train/critic_fake": d["fake"],
            "train/loss_g": g["loss"].detach(),
            "train/adv_g": g["adv"].detach(),
            "train/pretraining": 0.0,
        }
        for name in ("gp", "r1", "drift"):
            if name in d:
                logs[f"train/{name}"] = d[name].detach()
        if self.adversarial.uses_gradient_penalty:
            logs["train/wasserstein"] = -d["adv"].detach()  # E[D(real)] - E[D(fake)]
        for name, value in g.items():
            if name not in ("adv", "loss"):
                logs[f"train/{name}"] = value.detach()
        self.log_dict(logs, batch_size=n)
