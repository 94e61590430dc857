"""Lightning against a bare PyTorch loop, and training from a file on disk (lazy HDF5 path).

    PYTHONPATH=. python benchmarks/bench_training.py [--steps 40] [--batch 32] [--events 4000]

Rows (goals from the project's performance issue):
* ``lightning_overhead/<model>``: seconds per training step of the Lightning module over a bare loop
  with the same net, batch, optimiser and loss, both on the same pre-loaded batches (calorimeter study
  generator, supervised L1 and the WGAN-GP step with its critic and gradient penalty). Goal <= 5 %.
* ``lazy_end_to_end``: Lightning training read from the HDF5 file through the lazy path (dataset
  larger than data.max_memory_mb: chunk-wise shuffling, decoded-chunk cache, default loader settings)
  over the bare loop on pre-loaded batches. Goal <= 1.05x.
Timings are the best of ``--repeat`` interleaved runs, from step 5 on (warm-up excluded).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import best_time, emit, quick  # noqa: F401  (sys.path set up by common)

import lightning as L  # noqa: E402
import torch  # noqa: E402

WARMUP = 5


def _generator():
    from lit_sr.domains.calo.nets import calo_generator

    return calo_generator(num_blocks=2, input_skip=True)


def _batches(dm, n: int) -> list[dict]:
    out = []
    for b in dm.train_dataloader():
        out.append(b)
        if len(out) == n:
            break
    return out


class _Timer(L.Callback):
    def __init__(self) -> None:
        self.t0 = None
        self.steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == WARMUP:
            self.t0 = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.elapsed = time.perf_counter() - self.t0
        self.steps = trainer.global_step - WARMUP


def lightning_step(module, loader, steps: int) -> float:
    timer = _Timer()
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(module, loader)
    return timer.elapsed / timer.steps


def bare_supervised_step(net, batches, steps: int, lr: float) -> float:
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.99))
    loss_fn = torch.nn.L1Loss()
    net.train()
    t0 = None
    for i in range(steps):
        if i == WARMUP:
            t0 = time.perf_counter()
        b = batches[i % len(batches)]
        opt.zero_grad(set_to_none=True)
        loss_fn(net(b["input"]), b["target"]).backward()
        opt.step()
    return (time.perf_counter() - t0) / (steps - WARMUP)


def bare_gan_step(net, critic, batches, steps: int, lr: float) -> float:
    """WGAN-GP: one critic update (10 L_WGAN + 10 GP) then one generator update (1e-4 L_WGAN + 1e-3 L1)."""
    from lit_sr.losses.adversarial import gradient_penalty

    opt_g = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.0, 0.9))
    t0 = None
    for i in range(steps):
        if i == WARMUP:
            t0 = time.perf_counter()
        b = batches[i % len(batches)]
        lr_img, hr = b["input"], b["target"]
        with torch.no_grad():
            sr = net(lr_img)
        d = 10 * (critic(sr).mean() - critic(hr).mean()) + 10 * gradient_penalty(critic, hr, sr)
        opt_d.zero_grad(set_to_none=True)
        d.backward()
        opt_d.step()
        sr = net(lr_img)
        g = -1e-4 * critic(sr).mean() + 1e-3 * torch.nn.functional.l1_loss(sr, hr)
        opt_g.zero_grad(set_to_none=True)
        g.backward()
        opt_g.step()
    return (time.perf_counter() - t0) / (steps - WARMUP)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=25 if quick() else 60)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--events", type=int, default=2000 if quick() else 4000, help="events per class of the file")
    ap.add_argument("--repeat", type=int, default=2 if quick() else 3)
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    from lit_sr.data.transforms import IntensityTransform
    from lit_sr.domains.calo.data import CaloDataModule
    from lit_sr.models.gan_sr import GANSRModule
    from lit_sr.models.supervised import SupervisedSRModule
    from lit_sr.nets.critic import Critic

    transform = IntensityTransform(0.1, log=True)
    with tempfile.TemporaryDirectory() as tmp:
        dm = CaloDataModule(data_dir=tmp, n_per_class=args.events, batch_size=args.batch, transform=transform)
        dm.prepare_data()
        dm.setup("fit")
        batches = _batches(dm, 16)
        lr = 5e-4

        def supervised():
            torch.manual_seed(0)
            return SupervisedSRModule(_generator(), scale=4, physical_range=(0, 20), transform=transform,
                                      optimizer=lambda p: torch.optim.Adam(p, lr=lr, betas=(0.9, 0.99)))

        def gan():
            torch.manual_seed(0)
            return GANSRModule(_generator(), Critic(input_size=24), physical_range=(0, 20), transform=transform,
                               pixel_weight=1e-3, generator_optimizer=lambda p: torch.optim.Adam(p, lr, betas=(0.0, 0.9)),
                               critic_optimizer=lambda p: torch.optim.Adam(p, lr, betas=(0.0, 0.9)))

        preloaded = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
        results: dict[str, dict[str, float]] = {"supervised": {}, "gan": {}, "lazy": {}}
        for _ in range(args.repeat):  # interleaved, best of: the machine's load changes over time
            torch.manual_seed(0)
            results["supervised"]["bare"] = min(results["supervised"].get("bare", 1e9),
                                                bare_supervised_step(_generator(), batches, args.steps, lr))
            results["supervised"]["lightning"] = min(results["supervised"].get("lightning", 1e9),
                                                     lightning_step(supervised(), preloaded, args.steps))
            torch.manual_seed(0)
            results["gan"]["bare"] = min(results["gan"].get("bare", 1e9),
                                         bare_gan_step(_generator(), Critic(input_size=24), batches, args.steps, lr))
            results["gan"]["lightning"] = min(results["gan"].get("lightning", 1e9),
                                              lightning_step(gan(), preloaded, args.steps))
            lazy_dm = CaloDataModule(data_dir=tmp, n_per_class=args.events, batch_size=args.batch, transform=transform,
                                     max_memory_mb=0)
            lazy_dm.setup("fit")
            results["lazy"]["lightning"] = min(results["lazy"].get("lightning", 1e9),
                                               lightning_step(supervised(), lazy_dm.train_dataloader(), args.steps))
        for model in ("supervised", "gan"):
            bare, lit = results[model]["bare"], results[model]["lightning"]
            overhead = 100.0 * (lit / bare - 1.0)
            emit(f"lightning_overhead/{model}", overhead, "%", "<= 5 %", overhead <= 5.0,
                 f"bare {bare * 1e3:.1f} ms/step, Lightning {lit * 1e3:.1f} ms/step, batch {args.batch}")
        ratio = results["lazy"]["lightning"] / results["supervised"]["bare"]
        emit("lazy_end_to_end", ratio, "x", "<= 1.05x", ratio <= 1.05,
             f"Lightning on the lazy HDF5 path {results['lazy']['lightning'] * 1e3:.1f} ms/step vs bare loop on "
             f"pre-loaded batches {results['supervised']['bare'] * 1e3:.1f} ms/step ({2 * args.events} events)")


if __name__ == "__main__":
    main()
