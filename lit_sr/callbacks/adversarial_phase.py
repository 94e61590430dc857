"""Learning rates of a GAN's adversarial phase (any :class:`~lit_sr.models.adversarial.AdversarialModule`).

:class:`AdversarialPhaseLR` sets the learning rates of a GAN's optimisers once its pixel-loss pre-training
ends. Why it exists: the CPU recipe of ``xmm_srgan`` pre-trains the generator with a large step (1e-3, few batches) and
must then continue with a small one: with 1e-3 in the adversarial phase the generator's output fell below
zero everywhere within 50 batches (the [0, 1] output clamp then passes no gradient; measured: PSNR 24.9 dB,
no source detected, LR consistency 1e5).
"""

from __future__ import annotations

import lightning as L


class AdversarialPhaseLR(L.Callback):
    """From the first adversarial batch on (``pl_module.pretraining`` false), use ``generator_lr`` (and
    ``critic_lr`` if given) in the module's optimisers ``[generator, critic]``. Idempotent, so a resumed run
    gets the same rates."""

    def __init__(self, generator_lr: float, critic_lr: float | None = None) -> None:
        self.generator_lr = float(generator_lr)
        self.critic_lr = None if critic_lr is None else float(critic_lr)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if getattr(pl_module, "pretraining", False):
            return
        optimizers = trainer.optimizers
        for opt, lr in zip(optimizers, (self.generator_lr, self.critic_lr)):
            if lr is None:
                continue
            for group in opt.param_groups:
                group["lr"] = lr
