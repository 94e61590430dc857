"""Seconds per batch of the GAN-SR training step under 2-process CPU DDP: ddp_step="touch" vs "toggle".

    PYTHONPATH=. python benchmarks/bench_gan_ddp.py [--steps 25] [--batch 32] [--repeat 1]

Each configuration runs in its own ``python`` process tree (Lightning's DDP launcher re-runs this
script for rank 1): GANSRModule with the study's generator (32 features x 5 RRDBs), the default
critic, a perceptual net, WGAN-GP (gradient penalty = double backward), n_critic=1, gloo backend,
one thread per process. Timing starts at batch 5 (after warm-up) and ends with training; rank 0
prints ``RESULT ...`` lines and every rank a parameter checksum (equal across ranks and, for the same
seed, between the two modes).

    touch  + strategy=ddp                              (works with any DDP strategy)
    toggle + strategy=ddp_find_unused_parameters_true  (the default; HydraDDPStrategy enables the search)

The README quotes this measurement (AdversarialModule, lit_sr/models/adversarial.py).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

CONFIGS = [("touch", "ddp"), ("toggle", "ddp_find_unused_parameters_true")]
WARMUP = 5


def worker(mode: str, strategy: str, steps: int, batch: int) -> None:
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, Dataset

    from lit_sr.data.transforms import IntensityTransform
    from lit_sr.domains.calo.metrics import sum_pool
    from lit_sr.domains.calo.nets import calo_generator
    from lit_sr.models.gan_sr import GANSRModule
    from lit_sr.nets.classifier import CNNClassifier
    from lit_sr.nets.critic import Critic

    torch.set_num_threads(1)

    class Showers(Dataset):
        """Gaussian blobs of 20 GeV on 24x24, LR = 4x4 sums; model space = GeV / 20."""

        def __init__(self, n: int) -> None:
            g = torch.Generator().manual_seed(0)
            yy, xx = torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="ij")
            c = 8 + 8 * torch.rand(n, 2, generator=g)
            hr = torch.exp(-((xx - c[:, 0, None, None]) ** 2 + (yy - c[:, 1, None, None]) ** 2) / 3.0)
            self.hr = (20 * hr / hr.sum((1, 2), keepdim=True)).unsqueeze(1)
            self.lr = sum_pool(self.hr, 4)

        def __len__(self) -> int:
            return len(self.hr)

        def __getitem__(self, i: int) -> dict:
            return {"input": self.lr[i] / 20, "target": self.hr[i] / 20}

    class Timer(L.Callback):
        t0 = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == WARMUP:
                self.t0 = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            checksum = sum(p.double().sum().item() for p in pl_module.parameters())
            if trainer.is_global_zero:
                dt = (time.perf_counter() - self.t0) / (trainer.global_step - WARMUP)
                print(
                    f"RESULT mode={mode} strategy={strategy} s/batch={dt:.4f} global_step={trainer.global_step}",
                    flush=True,
                )
            print(f"rank{trainer.global_rank} mode={mode} checksum {checksum:.10f}", flush=True)

    torch.manual_seed(0)
    module = GANSRModule(
        calo_generator(),
        Critic(input_size=24),
        "wgan-gp",
        scale=4,
        perceptual_net=CNNClassifier(),
        generator_adversarial_weight=1e-4,  # the calorimeter study's weights
        perceptual_weight=1e-9,
        critic_adversarial_weight=10.0,
        transform=IntensityTransform(20.0),
        physical_range=(0.0, 20.0),
        ddp_step=mode,
        n_critic=1,
    )
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=2,
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Timer()],
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, DataLoader(Showers(batch * 2 * (steps + 2)), batch_size=batch))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--batch", type=int, default=32, help="per process")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--worker", nargs=2, metavar=("MODE", "STRATEGY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker, args.steps, args.batch)
        return
    results: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        for mode, strategy in CONFIGS:
            cmd = [
                sys.executable,
                os.path.abspath(__file__),
                "--steps",
                str(args.steps),
                "--batch",
                str(args.batch),
                "--worker",
                mode,
                strategy,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            found = re.search(r"s/batch=([0-9.]+)", proc.stdout)
            if proc.returncode != 0 or not found:
                print(f"{mode}/{strategy} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
                continue
            results.setdefault(f"{mode} + {strategy}", []).append(float(found.group(1)))
            sums = sorted(set(re.findall(r"checksum (\S+)", proc.stdout)))
            print(
                f"{mode:6s} + {strategy:34s} {float(found.group(1)):.3f} s/batch  (ranks agree: {len(sums) == 1})",
                flush=True,
            )
    print(f"\n2 CPU processes (gloo), batch {args.batch}/process, {args.steps} steps, timed from batch {WARMUP}:")
    for name, vals in results.items():
        print(f"  {name:42s} " + " / ".join(f"{v:.3f}" for v in vals) + " s per batch")


if __name__ == "__main__":
    main()
