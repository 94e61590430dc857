"""GANSRModule on the adversarial engine: each adversarial loss and penalty; step counting; pre-training;
EMA; the energy-conserving generator; a critic conditioned on the LR input."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from lit_sr.data.transforms import IntensityTransform
from lit_sr.domains.calo.evaluator import CaloPhysicsEvaluator
from lit_sr.domains.calo.metrics import sum_pool
from lit_sr.domains.calo.nets import EnergyConservingGenerator, calo_generator
from lit_sr.losses.adversarial import gradient_penalty
from lit_sr.models.gan_sr import GANSRModule
from lit_sr.nets.classifier import CNNClassifier
from lit_sr.nets.critic import Critic


class _Showers(Dataset):
    """Random Gaussian blobs in GeV, paired LR by 4x4 sum pooling, model space = x / 20 GeV."""

    def __init__(self, n: int = 32, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        yy, xx = torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="ij")
        c = 8 + 8 * torch.rand(n, 2, generator=g)
        hr = torch.exp(-((xx - c[:, 0, None, None]) ** 2 + (yy - c[:, 1, None, None]) ** 2) / 3.0)
        self.hr = (20 * hr / hr.sum((1, 2), keepdim=True)).unsqueeze(1)
        self.lr = sum_pool(self.hr, 4)
        self.impact = (c + 0.5) * 0.55 - 6.6
        self.label = torch.randint(0, 2, (n,), generator=g)

    def __len__(self):
        return len(self.hr)

    def __getitem__(self, i):
        return {
            "input": self.lr[i] / 20,
            "target": self.hr[i] / 20,
            "label": self.label[i],
            "impact_cm": self.impact[i],
        }


def _generator():
    net = calo_generator(num_features=8, num_blocks=1, growth_channels=8)
    with torch.no_grad():  # a tiny net can start with a dead ReLU output (all zeros, no gradient)
        net.conv_last.bias.fill_(0.05)
    return net


def _module(loss="wgan-gp", **kw):
    torch.manual_seed(0)
    opts = dict(
        net=_generator(),
        critic=Critic(channels=(8, 8, 8, 8, 8, 8), hidden=16, input_size=24),
        adversarial_loss=loss,
        scale=4,
        transform=IntensityTransform(20.0),
        physical_range=(0.0, 20.0),
        perceptual_net=CNNClassifier(channels=(8,), feature_dim=16),
        perceptual_weight=1.0,
        generator_adversarial_weight=1.0,
        critic_adversarial_weight=1.0,
        generator_optimizer=lambda p: torch.optim.Adam(p, lr=1e-3, betas=(0.0, 0.9)),
        critic_optimizer=lambda p: torch.optim.Adam(p, lr=1e-3, betas=(0.0, 0.9)),
    )
    opts.update(kw)
    return GANSRModule(**opts)


def _trainer(max_steps, **kw):
    options = dict(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=1,  # the tests read each step's logged values
    )
    return L.Trainer(**{**options, **kw})


def _loader(n=32, bs=8):
    return DataLoader(_Showers(n), batch_size=bs)


def _changed(before, after):
    return any(not torch.equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("loss, penalty", [("wgan-gp", "auto"), ("bce", "r1"), ("ragan", "auto"), ("hinge", "none")])
def test_trains_each_loss_and_counts_batches(loss, penalty):
    m = _module(loss, n_critic=2, pixel_weight=0.1, penalty=penalty)
    g0 = [p.detach().clone() for p in m.net.parameters()]
    d0 = [p.detach().clone() for p in m.critic.parameters()]
    f0 = [p.detach().clone() for p in m.perceptual.parameters()]
    t = _trainer(max_steps=3)
    t.fit(m, _loader())
    # 3 batches with n_critic = 2 -> global_step counts batches, not optimiser steps
    assert t.global_step == 3 and m.batches_seen == 3
    assert _changed(g0, list(m.net.parameters()))
    assert _changed(d0, list(m.critic.parameters()))
    assert not _changed(f0, list(m.perceptual.parameters()))  # frozen feature net
    metrics = t.callback_metrics
    assert torch.isfinite(metrics["train/loss_g"]) and torch.isfinite(metrics["train/loss_d"])
    if loss == "wgan-gp":
        assert torch.isfinite(metrics["train/gp"]) and metrics["train/gp"] > 0
    if penalty == "r1":
        assert torch.isfinite(metrics["train/r1"]) and metrics["train/r1"] > 0 and "train/gp" not in metrics


def test_gradient_penalty_finite_positive_and_differentiable():
    critic = Critic(channels=(4,) * 6, hidden=8, input_size=24)
    real, fake = torch.rand(4, 1, 24, 24), torch.rand(4, 1, 24, 24)
    gp = gradient_penalty(critic, real, fake)
    assert torch.isfinite(gp) and gp > 0
    gp.backward()
    assert all(p.grad is not None for p in critic.parameters() if p.dim() > 1)


@pytest.mark.parametrize("ddp_step", ["toggle", "touch"])
def test_pretraining_is_generator_only(ddp_step):
    m = _module(pretrain_steps=2, ddp_step=ddp_step, ema_decay=0.9)
    d0 = [p.detach().clone() for p in m.critic.parameters()]
    g0 = [p.detach().clone() for p in m.net.parameters()]
    t = _trainer(max_steps=2)
    t.fit(m, _loader())
    assert t.global_step == 2
    assert not _changed(d0, list(m.critic.parameters()))  # critic untouched in pre-training
    assert _changed(g0, list(m.net.parameters()))
    assert t.callback_metrics["train/pretraining"] == 1.0
    assert _changed(g0, list(m.ema.shadow.parameters()))  # EMA follows
    assert all(not p.requires_grad for p in m.ema.shadow.parameters())
    t2 = _trainer(max_steps=4)
    t2.fit(m, _loader())  # continues past pre-training into adversarial steps
    assert t2.callback_metrics["train/pretraining"] == 0.0


def test_validation_with_physics_evaluator_and_clipping(tmp_path):
    ev = CaloPhysicsEvaluator(judge=CNNClassifier(channels=(4,), feature_dim=8), baselines=())
    net = EnergyConservingGenerator(_generator(), 4, IntensityTransform(20.0))
    m = _module(net=net, evaluator=ev, gradient_clip_val=0.5)
    t = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=2,
        val_check_interval=2,
        default_root_dir=tmp_path,
    )
    t.fit(m, _loader(), _loader(16))
    keys = t.callback_metrics
    for k in ("val/psnr", "val/nearest_psnr", "val/barycentre_res_cm/sr", "val/auc/sr", "val/energy_violation/sr"):
        assert k in keys, (k, sorted(keys))
    assert keys["val/energy_violation/sr"] < 1e-4  # energy-conserving generator


def test_critic_conditioned_on_the_lr_input():
    critic = Critic(channels=(8, 8, 8, 8, 8, 8), hidden=16, input_size=24, condition_channels=1)
    m = _module(critic=critic, condition_on_input=True)
    seen = []
    forward = critic.forward

    def spy(x, condition=None):
        seen.append(condition)
        return forward(x, condition=condition)

    critic.forward = spy
    t = _trainer(max_steps=2)
    t.fit(m, _loader())
    assert seen and all(c is not None and c.shape[-1] == 6 for c in seen)  # critic, GP and generator calls
    assert torch.isfinite(t.callback_metrics["train/gp"])


def test_resume_keeps_the_batch_count_and_the_pretraining_switch(tmp_path):
    """global_step (batches) is restored from the checkpoint: a run resumed mid-pre-training switches to
    the adversarial phase at the same batch as an uninterrupted run."""
    m = _module(pretrain_steps=3)
    t = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        limit_val_batches=0,
    )
    t.fit(m, _loader())
    ckpt = tmp_path / "mid.ckpt"
    t.save_checkpoint(ckpt)
    m2 = _module(pretrain_steps=3)
    t2 = _trainer(max_steps=5)
    phases = []

    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            phases.append((trainer.global_step, float(trainer.callback_metrics["train/pretraining"])))

    t2.callbacks.append(Watch())
    t2.fit(m2, _loader(), ckpt_path=ckpt)
    assert phases == [(3, 1.0), (4, 0.0), (5, 0.0)]


def test_diagnostics_logged_only_on_written_steps_lose_nothing(monkeypatch):
    """The GAN logs its many per-step diagnostics only on the steps whose values Lightning writes
    (log_every_n_steps): the logger receives the same rows, with the same values, as when every step logs."""
    from lightning.pytorch.loggers.logger import Logger

    class Recorder(Logger):
        name, version = "recorder", 0

        def __init__(self):
            super().__init__()
            self.rows = []

        def log_metrics(self, metrics, step=None):
            self.rows.append((step, {k: float(v) for k, v in metrics.items()}))

        def log_hyperparams(self, params, *args, **kwargs):
            pass

    def run():
        recorder = Recorder()
        calls = []
        m = _module(pretrain_steps=2)
        m.log = lambda name, *a, **k: calls.append(name) or GANSRModule.log(m, name, *a, **k)
        t = _trainer(max_steps=4, log_every_n_steps=2, logger=recorder)
        t.fit(m, _loader())
        return recorder.rows, calls

    rows, calls = run()
    monkeypatch.setattr(GANSRModule, "step_logs_written", property(lambda self: True))
    rows_every_step, calls_every_step = run()
    assert rows == rows_every_step  # same steps, same keys, same values (the same seeded training)
    (pre_step, pre), (gan_step, gan) = rows
    assert (pre_step, gan_step) == (1, 3) and pre["train/pretraining"] == 1.0 and gan["train/pretraining"] == 0.0
    diagnostics = [k for k in gan if k.startswith("train/") and k not in ("train/loss", "train/pretrain_loss")]
    assert {"train/gp", "train/wasserstein", "train/perceptual"} <= set(diagnostics)
    # 2 pre-training batches (2 values when written), 2 GAN batches (the diagnostics when written, train/loss on
    # every batch for the progress bar)
    assert len(calls) == 2 + len(diagnostics) + 2
    assert len(calls_every_step) == 2 * 2 + 2 * (len(diagnostics) + 1)
