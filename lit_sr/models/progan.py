"""Progressive, optionally class-conditional WGAN-GP with an observation model between generator and critic.

:class:`ProGANModule` runs on the adversarial engine (:class:`~lit_sr.models.adversarial.AdversarialModule`):
the critic judges ``observe(generator(z, label))`` against real stamps, both at the resolution of the
current phase (Karras et al. 2018; Dia et al. 2019 for the PSF layer).

Forward model of a fake (``observe``), in physical units (``transform.inverse`` of the generator
output, which lives in the data's model space):

1. the generator's PSF-free image at the phase resolution r, softly limited to ``model_range`` in
   model space (:func:`soft_clamp`: identity inside, smooth saturation outside, never a zero
   gradient; keeps exponential inverse transforms finite), is upsampled (nearest: surface brightness per native pixel is kept) to
   the stamp size S;
2. through the ``observation`` model (the instrument, a domain's module given by config; None: the
   image is observed as it is): ``observation(x, psf=None, eps=None)`` returns the noise-free
   ``convolved`` image and the ``observed`` one (with noise drawn from ``eps``, reparameterised so
   gradients pass); e.g. the galaxy domain's ``PSFObservation``, the survey's PSF and CCD noise. It may also have ``psf_of(batch)`` (per-sample PSFs a batch carries, or None),
   ``setup(datamodule)`` (called at fit, e.g. to take the training set's PSF), ``has_noise`` and
   ``attrs()`` (recorded in sample files);
3. averaged over (S / r)^2 blocks back to r (the same pooling the real stamps get), then ``transform``.

Real stamps: ``batch['image']`` (model space, [B, 1, S, S]) -> physical -> averaged to r; during a
fade-in they are mixed as the networks are, (1 - alpha) * up2(pool2(x_r)) + alpha * x_r, so the critic
sees real and fake data of the same effective resolution.

Schedule (:class:`ProgressiveSchedule`, from the config): phase p trains resolution 4 * 2**p for
``fade_images[p]`` images with alpha rising linearly from 0 to 1, then ``stable_images[p]`` images at
alpha = 1, with ``batch_size[p]`` images per step. The data loader delivers ``max(batch_size)`` stamps
per batch and each step uses the first ``batch_size[p]`` (shuffled) of them: one loader, no reloading,
and ``trainer.global_step`` still counts batches. The progress ``images_seen`` is a buffer (in the
state dict, so ``mode=predict`` and ``mode=test`` know the phase) and also written to the checkpoint
under ``progan`` with the phase and alpha; phase and alpha are pure functions of it, so a resumed run
continues mid-phase with exactly the alpha it stopped at. With ``stop_at_end`` the trainer stops when
the schedule is done.

Conditioning: ``conditional=True`` builds the generator and critic (given as partials, e.g.
``_partial_: true`` configs) with ``num_classes=len(class_names)`` (label embedding joined to the
latent; projection critic); ``False`` with ``num_classes=0``.

Evaluation (val/test): for every real batch the EMA generator (when ``ema_decay`` is set) draws one
fake per real stamp, with the real stamp's label when conditional, from seeded latents (the same
fakes every epoch); ``{stage}/critic_gap`` (critic(real) - critic(fake) at the current phase) is
logged, and the ``evaluator`` gets ``update(batch, images)`` with physical-unit ``images``:
``output`` (observed fake: PSF + noise, full stamp size), ``output_psf_free``, ``output_convolved``,
``target`` (the real stamp) and, when the batch has it, ``target_psf_free``; ``batch['label_generated']``
holds the fakes' labels (conditional models only). Sample grids (fixed latents, PSF-free and
observed, one row pair per class) are logged at every validation and when a phase ends.

Sampling (``predict_samples``): batches of ``index`` and ``seed`` (and ``label``, ``psf``) from
:class:`lit_sr.inference.samples.SamplingDataModule`; latent and noise of sample i come from
``numpy.random.default_rng([seed, i])``, so a sample does not depend on the batch size.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lit_sr.losses.adversarial import AdversarialLoss
from lit_sr.models.adversarial import AdversarialModule
from lit_sr.models.base import OptimizerFactory, log_evaluation, transform_hparams

log = logging.getLogger("lit_sr")

STAGES = ("val", "test")


def default_progan_adam(params):
    """Adam(lr 1e-3, betas (0, 0.99), eps 1e-8): the ProGAN paper's optimiser."""
    return torch.optim.Adam(params, lr=1e-3, betas=(0.0, 0.99), eps=1e-8)


def soft_clamp(y: torch.Tensor, lo: float, hi: float, sharpness: float = 5.0) -> torch.Tensor:
    """lo + softplus_k(y - lo) - softplus_k(y - hi), softplus_k(t) = log(1 + exp(k t)) / k.

    ~y well inside [lo, hi] (slope 1 - sigmoid(-k d) at distance d from both ends), saturating at lo and
    hi outside. Unlike a hard clamp the gradient decays smoothly, as exp(-k d) beyond a bound (torch's
    softplus is exactly linear past k d = 20, where it would be < 2e-9 anyway), so generator pixels that
    start outside the data range still learn to come back.
    """
    return lo + F.softplus(y - lo, beta=sharpness) - F.softplus(y - hi, beta=sharpness)


class ProgressiveSchedule:
    """Images per phase (fade-in, then stable) and the batch size of each phase.

    Args:
        fade_images: images during which alpha rises from 0 to 1, per phase (phase 0 must have 0).
        stable_images: images at alpha = 1 after the fade, per phase.
        batch_size: images per training step, per phase.
    """

    def __init__(self, fade_images: Sequence[int], stable_images: Sequence[int], batch_size: Sequence[int]) -> None:
        self.fade = [int(v) for v in fade_images]
        self.stable = [int(v) for v in stable_images]
        self.batch = [int(v) for v in batch_size]
        n = len(self.fade)
        if not n or len(self.stable) != n or len(self.batch) != n:
            raise ValueError(
                f"model.schedule: fade_images, stable_images and batch_size need one entry per phase "
                f"(same length), got {len(self.fade)}, {len(self.stable)}, {len(self.batch)}"
            )
        if self.fade[0] != 0:
            raise ValueError(
                f"model.schedule.fade_images[0] must be 0 (phase 0 has nothing to fade from), got {self.fade[0]}"
            )
        if min(self.fade) < 0 or min(self.stable) < 0 or min(self.batch) < 1:
            raise ValueError("model.schedule: images must be >= 0 and batch sizes >= 1")
        if any(f + s == 0 for f, s in zip(self.fade, self.stable)):
            raise ValueError("model.schedule: every phase needs fade_images + stable_images > 0")
        self.starts = np.concatenate([[0], np.cumsum([f + s for f, s in zip(self.fade, self.stable)])]).astype(np.int64)

    @property
    def n_phases(self) -> int:
        return len(self.fade)

    @property
    def total_images(self) -> int:
        return int(self.starts[-1])

    def state(self, images_seen: int) -> tuple[int, float]:
        """(phase, alpha) after ``images_seen`` training images; (last phase, 1.0) once the schedule is done."""
        seen = int(images_seen)
        if seen >= self.total_images:
            return self.n_phases - 1, 1.0
        phase = int(np.searchsorted(self.starts, seen, side="right") - 1)
        into = seen - int(self.starts[phase])
        fade = self.fade[phase]
        alpha = 1.0 if fade == 0 or into >= fade else into / fade
        return phase, float(alpha)

    def as_dict(self) -> dict[str, list[int]]:
        return {"fade_images": list(self.fade), "stable_images": list(self.stable), "batch_size": list(self.batch)}


def _build(net: nn.Module | Callable[..., nn.Module], num_classes: int, what: str) -> nn.Module:
    """A net config given as a partial is built with ``num_classes``; a built net must agree."""
    if isinstance(net, nn.Module):
        have = int(getattr(net, "num_classes", 0))
        if have != num_classes:
            raise ValueError(
                f"model.{what} has num_classes={have} but model.conditional asks for {num_classes}; "
                f"give the net config as a partial (_partial_: true) so the module builds it"
            )
        return net
    return net(num_classes=num_classes)


class ProGANModule(AdversarialModule):
    """Progressive GAN on the adversarial engine (see the module docstring).

    Args (beyond the engine's ``adversarial_loss, penalty, gp_weight, drift_weight, n_critic,
    generator/critic optimisers, ema_decay, gradient clipping, ddp_step``):
        net, critic: :class:`~lit_sr.nets.progan.ProGenerator` / ``ProCritic`` or partials building them.
        conditional: class-conditional generator and projection critic.
        class_names: label names (their number sizes the label embeddings).
        schedule: ``{fade_images, stable_images, batch_size}`` lists, one entry per phase (4x4, 8x8, ...).
        transform: physical units <-> model space (the data's); None = identity.
        units: physical units of the images (written into sample files).
        observation: the instrument between the generator and the critic (see the module docstring), e.g.
            the galaxy domain's ``PSFObservation``; None = observed as generated.
        model_range: [lo, hi] soft limits of generator outputs in model space before the inverse transform
            (None = off); ``range_sharpness`` the k of :func:`soft_clamp`.
        evaluator: metrics on generated vs real stamps (see the module docstring) or None.
        eval_seed: seed of the evaluation latents and noise.
        grid_columns: samples per class in the logged sample grids (0 = no grids).
        stop_at_end: stop training when the schedule is done.
        classifier_ckpt: provenance of the evaluator's classifier (recorded in the hyperparameters).
    """

    def __init__(
        self,
        net: nn.Module | Callable[..., nn.Module],
        critic: nn.Module | Callable[..., nn.Module],
        conditional: bool = True,
        class_names: Sequence[str] | None = None,
        schedule: Mapping[str, Sequence[int]] | None = None,
        transform: nn.Module | None = None,
        units: str = "",
        observation: nn.Module | None = None,
        model_range: Sequence[float] | None = (-2.0, 6.0),
        range_sharpness: float = 5.0,
        evaluator: nn.Module | None = None,
        eval_seed: int = 1234,
        grid_columns: int = 6,
        stop_at_end: bool = True,
        adversarial_loss: str | AdversarialLoss = "wgan-gp",
        penalty: str = "auto",
        gp_weight: float = 10.0,
        drift_weight: float = 1e-3,
        n_critic: int = 1,
        generator_optimizer: OptimizerFactory | None = None,
        critic_optimizer: OptimizerFactory | None = None,
        ema_decay: float | None = 0.999,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        ddp_step: str = "toggle",
        classifier_ckpt: str | None = None,
    ) -> None:
        self.conditional = bool(conditional)
        self.class_names = [str(c) for c in class_names] if class_names is not None else None
        if self.conditional and not self.class_names:
            raise ValueError("model.conditional=true needs model.class_names (the data's class list)")
        k = len(self.class_names) if self.conditional else 0
        net = _build(net, k, "net")
        critic = _build(critic, k, "critic")
        super().__init__(
            net=net,
            critic=critic,
            adversarial_loss=adversarial_loss,
            penalty=penalty,
            gp_weight=gp_weight,
            drift_weight=drift_weight,
            generator_optimizer=generator_optimizer or default_progan_adam,
            critic_optimizer=critic_optimizer or default_progan_adam,
            n_critic=n_critic,
            pretrain_steps=0,
            ema_decay=ema_decay,
            gradient_clip_val=gradient_clip_val,
            gradient_clip_algorithm=gradient_clip_algorithm,
            ddp_step=ddp_step,
        )
        self.save_hyperparameters(
            ignore=[
                "net",
                "critic",
                "evaluator",
                "transform",
                "observation",
                "generator_optimizer",
                "critic_optimizer",
                "adversarial_loss",
            ]
        )
        self.hparams["transform"] = transform_hparams(transform)
        if schedule is None:
            n = net.max_depth + 1
            schedule = {"fade_images": [0] + [800] * (n - 1), "stable_images": [800] * n, "batch_size": [16] * n}
        self.schedule = ProgressiveSchedule(**schedule)
        if self.schedule.n_phases != net.max_depth + 1:
            raise ValueError(
                f"model.schedule has {self.schedule.n_phases} phases but the generator grows through "
                f"{net.max_depth + 1} resolutions (4x4 .. {net.max_resolution}x{net.max_resolution}); "
                "give one entry per resolution"
            )
        if critic.max_depth != net.max_depth:
            raise ValueError(f"model.critic has {critic.max_depth + 1} resolutions, the generator {net.max_depth + 1}")
        self.transform = transform
        self.units = units
        self.latent_dim = int(net.latent_dim)
        self.image_size = int(net.max_resolution)
        self.observation = observation
        self.model_range = tuple(float(v) for v in model_range) if model_range is not None else None
        if self.model_range is not None and not self.model_range[0] < self.model_range[1]:
            raise ValueError(f"model.model_range must be [lo, hi] with lo < hi, got {list(self.model_range)}")
        self.range_sharpness = float(range_sharpness)
        self.evaluator = evaluator
        self.eval_seed = int(eval_seed)
        self.grid_columns = int(grid_columns)
        self.stop_at_end = bool(stop_at_end)
        self.register_buffer("images_seen", torch.zeros((), dtype=torch.int64))
        self._logged_phase: int | None = None

    # ------------------------------------------------------------------ progress
    @property
    def phase_state(self) -> tuple[int, float]:
        """(phase, alpha) of the current progress; the resolution is 4 * 2**phase."""
        return self.schedule.state(int(self.images_seen))

    def resolution(self, phase: int) -> int:
        return 4 * 2**phase

    @property
    def finished(self) -> bool:
        return int(self.images_seen) >= self.schedule.total_images

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        phase, alpha = self.phase_state
        checkpoint["progan"] = {
            "images_seen": int(self.images_seen),
            "phase": phase,
            "alpha": alpha,
            "resolution": self.resolution(phase),
            "schedule": self.schedule.as_dict(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict")
        if isinstance(state, dict) and "psf_layer.psf" in state and self.observation is not None:
            # checkpoints from before the observation model left this module: the PSF buffer moved
            state["observation.psf_layer.psf"] = state.pop("psf_layer.psf")
        stored = checkpoint.get("progan")
        if stored and stored.get("schedule") != self.schedule.as_dict():
            log.warning(
                "The checkpoint was trained with schedule %s, this run uses %s: phase and alpha follow the "
                "new schedule from images_seen=%d",
                stored.get("schedule"),
                self.schedule.as_dict(),
                stored.get("images_seen", -1),
            )

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        if stage == "fit" and hasattr(self.observation, "setup"):
            self.observation.setup(getattr(self.trainer, "datamodule", None))

    def on_fit_start(self) -> None:
        super().on_fit_start()
        dm = getattr(self.trainer, "datamodule", None)
        bs = getattr(dm, "batch_size", None)
        need = max(self.schedule.batch)
        if bs is not None and bs < need:
            raise ValueError(
                f"data.batch_size={bs} is smaller than the largest model.schedule.batch_size ({need}); "
                f"set data.batch_size={need} (each step uses the first batch_size[phase] stamps)"
            )

    # ------------------------------------------------------------------ spaces
    def to_physical(self, y: torch.Tensor) -> torch.Tensor:
        return self.transform.inverse(y) if self.transform is not None else y

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(x) if self.transform is not None else x

    def pool(self, x: torch.Tensor, resolution: int) -> torch.Tensor:
        f = x.shape[-1] // resolution
        return F.avg_pool2d(x, f) if f > 1 else x

    def observe(
        self, y: torch.Tensor, psf: torch.Tensor | None = None, eps: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Generator output (model space, any phase resolution) -> physical ``psf_free``, ``convolved`` and
        ``observed`` stamps at the full stamp size (see the module docstring)."""
        if self.model_range is not None:
            y = soft_clamp(y, *self.model_range, self.range_sharpness)
        x = self.to_physical(y)
        f = self.image_size // x.shape[-1]
        if f > 1:
            x = F.interpolate(x, scale_factor=f, mode="nearest")
        if self.observation is None:
            if psf is not None:
                raise ValueError("predict.psf: this model has no observation model (model.observation=null)")
            return {"psf_free": x, "convolved": x, "observed": x}
        return {"psf_free": x, **self.observation(x, psf=psf, eps=eps)}

    @property
    def noisy(self) -> bool:
        """Whether the observation adds noise (then ``observed`` differs from ``convolved``)."""
        return self.observation is not None and bool(getattr(self.observation, "has_noise", True))

    def _batch_psf(self, batch: Mapping[str, Any]) -> torch.Tensor | None:
        """The per-sample PSFs the observation takes from a training or evaluation batch (or None)."""
        psf_of = getattr(self.observation, "psf_of", None)
        return psf_of(batch) if psf_of is not None else None

    def _labels(self, batch: Mapping[str, Any]) -> torch.Tensor | None:
        if not self.conditional:
            return None
        if "label" not in batch:
            raise ValueError("model.conditional=true needs a 'label' in every batch (class indices)")
        return batch["label"].long()

    # ------------------------------------------------------------------ engine hooks
    def generate(self, batch: dict[str, Any]) -> torch.Tensor:
        phase, alpha = self.phase_state
        n = batch["image"].shape[0]
        z = torch.randn(n, self.latent_dim, device=self.device)
        y = self.net(z, self._labels(batch), depth=phase, alpha=alpha)
        observed = self.observe(y, self._batch_psf(batch))["observed"]
        return self.to_model(self.pool(observed, self.resolution(phase)))

    def real_samples(self, batch: dict[str, Any]) -> torch.Tensor:
        phase, alpha = self.phase_state
        x = self.pool(self.to_physical(batch["image"]), self.resolution(phase))
        if phase > 0 and alpha < 1.0:
            x = (1.0 - alpha) * F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest") + alpha * x
        return self.to_model(x)

    def critic_condition(self, batch: dict[str, Any]) -> torch.Tensor | None:
        return self._labels(batch)

    def critic_score(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        phase, alpha = self.phase_state
        return self.critic(x, condition=condition, depth=phase, alpha=alpha)

    def batch_size_of(self, batch: dict[str, Any]) -> int:
        return int(batch["image"].shape[0])

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        phase, alpha = self.phase_state
        if self._logged_phase is not None and phase != self._logged_phase:
            self._log_grid(f"train/samples_phase{self._logged_phase}", self._logged_phase, 1.0)
        self._logged_phase = phase
        b = self.schedule.batch[phase]
        n_all = batch["image"].shape[0]
        if n_all > b:  # the phase's batch size: the first b (shuffled) stamps of the loader's batch
            batch = {
                k: v[:b] if torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == n_all else v for k, v in batch.items()
            }
        n = batch["image"].shape[0]
        super().training_step(batch, batch_idx)
        self.images_seen += n * self.trainer.world_size  # the schedule counts images over all processes
        if self.step_logs_written:
            self.log_dict(
                {
                    "train/phase": float(phase),
                    "train/alpha": float(alpha),
                    "train/resolution": float(self.resolution(phase)),
                    "train/images_seen": float(self.images_seen),
                },
                batch_size=n,
            )
        if self.stop_at_end and self.finished:
            self.trainer.should_stop = True

    def on_train_end(self) -> None:
        if self._logged_phase is not None:
            phase, alpha = self.phase_state
            self._log_grid(f"train/samples_phase{phase}", phase, alpha)

    # ------------------------------------------------------------------ evaluation
    def _seeded(self, *key: int) -> torch.Generator:
        return torch.Generator().manual_seed(int(np.random.SeedSequence([self.eval_seed, *key]).generate_state(1)[0]))

    @torch.no_grad()
    def sample_eval(
        self,
        labels: torch.Tensor | None,
        n: int,
        psf: torch.Tensor | None,
        gen: torch.Generator,
        phase: int | None = None,
        alpha: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """Seeded fakes (EMA generator) in physical units at the full stamp size."""
        if phase is None:
            phase, alpha = self.phase_state
        z = torch.randn(n, self.latent_dim, generator=gen).to(self.device)
        eps = torch.randn(n, 1, self.image_size, self.image_size, generator=gen).to(self.device)
        y = self.eval_net(z, labels if self.conditional else None, depth=phase, alpha=alpha)
        return self.observe(y, psf, eps)

    def _eval_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> None:
        phase, _ = self.phase_state
        n = batch["image"].shape[0]
        labels = self._labels(batch)
        fake = self.sample_eval(labels, n, self._batch_psf(batch), self._seeded(STAGES.index(stage), batch_idx))
        with torch.no_grad():
            real_c = self.real_samples(batch)
            fake_c = self.to_model(self.pool(fake["observed"], self.resolution(phase)))
            gap = (self.critic_score(real_c, labels) - self.critic_score(fake_c, labels)).mean()
        self.log(f"{stage}/critic_gap", gap, batch_size=n, sync_dist=True)
        if self.evaluator is not None:
            images = {
                "output": fake["observed"],
                "output_psf_free": fake["psf_free"],
                "output_convolved": fake["convolved"],
                "target": self.to_physical(batch["image"]),
            }
            if "image_psf_free" in batch:
                images["target_psf_free"] = self.to_physical(batch["image_psf_free"])
            extended = dict(batch)
            if labels is not None:
                extended["label_generated"] = labels
            self.evaluator.update(extended, images)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        log_evaluation(self, self.evaluator, "val")
        if not self.trainer.sanity_checking:
            phase, alpha = self.phase_state
            self._log_grid("val/samples", phase, alpha)

    def on_test_epoch_end(self) -> None:
        log_evaluation(self, self.evaluator, "test")

    # ------------------------------------------------------------------ pictures
    @torch.no_grad()
    def grid_images(self, phase: int, alpha: float) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Fixed-latent samples: ``psf_free`` and ``observed`` [G, C, 1, S, S] in model space, G groups (classes)."""
        groups = self.class_names if self.conditional else ["samples"]
        c = self.grid_columns
        out: dict[str, list[torch.Tensor]] = {"psf_free": [], "observed": []}
        for g in range(len(groups)):
            labels = torch.full((c,), g, dtype=torch.long, device=self.device) if self.conditional else None
            fake = self.sample_eval(labels, c, None, self._seeded(7, 0), phase, alpha)  # same latents per class
            for key in out:
                out[key].append(self.to_model(self.pool(fake[key], self.resolution(phase))))
        return {k: torch.stack(v) for k, v in out.items()}, list(groups)

    def _log_grid(self, name: str, phase: int, alpha: float) -> None:
        if self._trainer is None or not self.trainer.is_global_zero or self.grid_columns < 1:
            return
        import matplotlib.pyplot as plt

        from lit_sr.utils.figures import log_figures

        images, groups = self.grid_images(phase, alpha)
        res = self.resolution(phase)
        rows = [(g, kind) for g in range(len(groups)) for kind in ("psf_free", "observed")]
        c = self.grid_columns
        values = torch.cat([v.flatten() for v in images.values()]).float().cpu()
        vmin, vmax = (float(v) for v in torch.quantile(values[:1_000_000], torch.tensor([0.01, 0.995])))
        fig, axes = plt.subplots(len(rows), c, figsize=(1.3 * c, 1.3 * len(rows)), squeeze=False)
        for r, (g, kind) in enumerate(rows):
            for j in range(c):
                ax = axes[r, j]
                ax.imshow(
                    images[kind][g, j, 0].float().cpu().numpy(),
                    cmap="magma",
                    vmin=vmin,
                    vmax=max(vmax, vmin + 1e-6),
                    interpolation="nearest",
                    origin="lower",
                )
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(f"{groups[g]}\n{kind.replace('_', '-')}", fontsize=7)
        fig.suptitle(f"{res}x{res}, alpha={alpha:.2f}, {int(self.images_seen)} images", fontsize=8)
        fig.tight_layout()
        log_figures(self.trainer, {f"{name}_{res}x{res}": fig})
        plt.close(fig)

    @torch.no_grad()
    def panel_images(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Real stamps beside fakes of the same labels (model space, full stamp size) for the panel callback."""
        n = batch["image"].shape[0]
        fake = self.sample_eval(self._labels(batch), n, self._batch_psf(batch), self._seeded(9, 0))
        return {
            "target": batch["image"],
            "psf_free": self.to_model(fake["psf_free"]),
            "convolved": self.to_model(fake["convolved"]),
            "observed": self.to_model(fake["observed"]),
        }

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def predict_samples(self, batch: dict[str, Any]) -> dict[str, Any]:
        """PSF-free, convolved (and observed, with noise) samples in physical units, with label, index and seed."""
        index = batch["index"].long()
        seed = batch["seed"].long()
        labels = batch.get("label")
        if labels is not None and not self.conditional:
            raise ValueError(
                "predict.label: this model is unconditional (model.conditional=false) and cannot sample "
                "a given class; remove predict.label"
            )
        if self.conditional:
            if labels is None:
                raise ValueError("a conditional model needs a 'label' per sample (the sampling data module sets it)")
            k = len(self.class_names)
            if int(labels.min()) < 0 or int(labels.max()) >= k:
                raise ValueError(
                    f"predict.label must be one of 0..{k - 1} ({', '.join(self.class_names)}), got "
                    f"{sorted(set(labels.tolist()))}"
                )
        n, s = index.shape[0], self.image_size
        z = np.empty((n, self.latent_dim), np.float32)
        eps = np.empty((n, 1, s, s), np.float32)
        for j, (sd, i) in enumerate(zip(seed.tolist(), index.tolist())):
            rng = np.random.default_rng([int(sd), int(i)])  # sample i: the same whatever the batch size
            z[j] = rng.standard_normal(self.latent_dim, dtype=np.float32)
            eps[j, 0] = rng.standard_normal((s, s), dtype=np.float32)
        phase, alpha = self.phase_state
        y = self.eval_net(
            torch.from_numpy(z).to(self.device), labels.long() if self.conditional else None, depth=phase, alpha=alpha
        )
        psf = batch.get("psf")  # predict.psf: replaces the model's PSF for every sample
        images = self.observe(
            y, psf.to(self.device) if psf is not None else None, torch.from_numpy(eps).to(self.device)
        )
        out = {"psf_free": images["psf_free"], "convolved": images["convolved"]}
        if self.noisy:
            out["observed"] = images["observed"]
        out["label"] = labels.long() if labels is not None else torch.full((n,), -1, dtype=torch.long)
        out["index"], out["seed"] = index, seed
        return out

    def prediction_units(self) -> dict[str, str]:
        return {k: self.units for k in ("psf_free", "convolved", "observed")} if self.units else {}

    def prediction_attrs(self) -> dict[str, Any]:
        """File attributes of sample files: what was sampled, and with which PSF."""
        phase, alpha = self.phase_state
        attrs: dict[str, Any] = {
            "conditional": self.conditional,
            "class_names": list(self.class_names or []),
            "images_seen": int(self.images_seen),
            "phase": phase,
            "alpha": alpha,
            "generated_resolution": self.resolution(phase),
            "label_meaning": "class index into class_names; -1 = unconditional model",
        }
        if hasattr(self.observation, "attrs"):
            attrs.update(self.observation.attrs())
        return attrs
