"""bf16 autocast and channels_last against fp32, per training step on the CPU.

    PYTHONPATH=. python benchmarks/bench_precision.py [--recipes calo_rrdb,lensing_srresnet] [--batches 12]

Rows (no goal: they say where ``trainer.precision=bf16-mixed`` (+ ``model.channels_last=true``) pays):
* ``precision/srresnet_<features>x<blocks>/<bf16|bf16_channels_last>``: fp32 seconds per training step
  over the variant's, bare PyTorch step (Adam, L1, batch 16, 48 -> 96 px, one channel), the net's
  forward and loss under ``torch.autocast("cpu", torch.bfloat16)``; channels_last = NHWC weights and
  batches.
* ``precision/<recipe>/<bf16|bf16_channels_last>``: the same ratio for the experiment's own model through
  Lightning (``precision="bf16-mixed"`` and ``channels_last=True`` as the configs set them), on batches
  of its own data module pre-loaded (perceptual nets and evaluators off, as in bench_pipeline; a GAN's
  pre-training off, so the timed batches are its adversarial step: critic + gradient penalty + generator).
``--clock cpu`` with ``--threads 1`` times CPU seconds of the process (the work done, which another
process's load changes far less than wall time). The variants alternate ``--repeat`` times; each ratio is
the median over the interleaved repetitions (a change of the machine's load hits all variants alike).
Timed windows as in bench_training (optimiser steps counted by torch; the variants must count the same number).
A speed-up does not by itself make bf16 a default: its results must stay within the fp32 seed spread.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Sequence

import common
import torch  # noqa: E402
from common import (
    ROOT,
    WARMUP,
    Window,
    add_timing_arguments,
    apply_timing_arguments,
    classifier_free_overrides,
    compose,
    emit,
    lightning_run,
    quick,
)
from hydra.utils import instantiate  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

VARIANTS = ("fp32", "bf16", "bf16_channels_last")


def bare_step_run(net, batches, n_batches: int, variant: str) -> Window:
    cl = variant.endswith("channels_last")
    fmt = torch.channels_last if cl else torch.contiguous_format
    net = net.to(memory_format=fmt)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    window = Window(n_batches)
    for i in range(n_batches):
        window.batch_start(i)
        x, y = batches[i % len(batches)]
        x, y = x.contiguous(memory_format=fmt), y.contiguous(memory_format=fmt)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant != "fp32"):
            loss = torch.nn.functional.l1_loss(net(x).float(), y)
        loss.backward()
        opt.step()
        window.batch_end(i)
    return window


def rows(name: str, runs: dict[str, list[Window]], detail: str) -> None:
    steps = {v: {w.steps for w in ws} for v, ws in runs.items()}
    if len(set().union(*steps.values())) != 1:
        raise SystemExit(f"{name}: the variants counted different optimiser steps {steps}; comparison void")
    fp32 = runs["fp32"]
    for v in VARIANTS[1:]:
        ratio = statistics.median(a.per_step / b.per_step for a, b in zip(fp32, runs[v]))
        best = {k: min(w.per_step for w in runs[k]) * 1e3 for k in ("fp32", v)}
        emit(
            f"precision/{name}/{v}",
            ratio,
            "x",
            "",
            None,
            f"fp32 {best['fp32']:.0f} ms -> {best[v]:.0f} ms per step ({common.CLOCK} clock, best of {len(fp32)}; "
            "ratio: median of "
            f"interleaved repetitions), {'faster' if ratio > 1.05 else 'not faster' if ratio > 0.95 else 'SLOWER'}"
            f" in {v}; {detail}",
        )


def bench_srresnet(features: int, blocks: int, n_batches: int, repeat: int) -> None:
    from lit_sr.nets.srresnet import SRResNet

    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(16, 1, 48, 48, generator=g), torch.rand(16, 1, 96, 96, generator=g)) for _ in range(4)]
    runs: dict[str, list[Window]] = {v: [] for v in VARIANTS}
    for _ in range(repeat):
        for v in VARIANTS:
            torch.manual_seed(0)
            net = SRResNet(1, 1, num_features=features, num_blocks=blocks, scale=2)
            runs[v].append(bare_step_run(net, batches, n_batches, v))
    rows(
        f"srresnet_{features}x{blocks}",
        runs,
        f"bare step, Adam, L1, batch 16, 48 -> 96 px, {torch.get_num_threads()} threads",
    )


def bench_recipe(name: str, n_batches: int, repeat: int, overrides: Sequence[str] = ()) -> None:
    base = [f"experiment={name}", "trainer.accelerator=cpu", f"paths.data_dir={ROOT / 'data'}"]
    cfg = compose(base)
    # the --override options whose key this recipe has (a data size for one domain is no key of another)
    base += [o for o in overrides if OmegaConf.select(cfg, o.split("=", 1)[0].lstrip("+~")) is not None]
    cfg = compose(base)
    extra = classifier_free_overrides(cfg)
    if cfg.model.get("pretrain_steps"):  # a GAN's timed batches are its adversarial step, not pre-training
        extra += ["model.pretrain_steps=0"]
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    batches = [b for b, _ in zip(dm.train_dataloader(), range(8))]
    loader = torch.utils.data.DataLoader([batches[i % len(batches)] for i in range(n_batches)], batch_size=None)
    runs: dict[str, list[Window]] = {v: [] for v in VARIANTS}
    try:
        for _ in range(repeat):
            for v in VARIANTS:
                cfg_v = compose(
                    base
                    + extra
                    + ([f"model.channels_last={v.endswith('channels_last')}"] if "channels_last" in cfg.model else [])
                )
                torch.manual_seed(0)
                model = instantiate(cfg_v.model, _convert_="all")
                runs[v].append(
                    lightning_run(model, loader, n_batches, precision="32-true" if v == "fp32" else "bf16-mixed")
                )
    except Exception as err:  # noqa: BLE001  (a model that does not train on a bare loader: say why)
        for v in VARIANTS[1:]:
            emit(f"precision/{name}/{v}", None, "x", "", None, f"skipped: {type(err).__name__}: {str(err)[:120]}")
        return
    rows(
        name,
        runs,
        f"Lightning step of the recipe's model, batch {dm.batch_size}, {torch.get_num_threads()} threads"
        + (f", overrides {' '.join(base[3:] + extra)}" if base[3:] or extra else ""),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--recipes",
        default="calo_rrdb,lensing_srresnet"
        if quick()
        else "calo_rrdb,calo_srgan,lensing_srresnet,lensing_rdn,lensing_esrgan,saxs_equnet,xmm_dn",
        help="comma-separated experiments ('' for none)",
    )
    ap.add_argument("--batches", type=int, default=WARMUP + (5 if quick() else 10), help="batches per run")
    ap.add_argument("--repeat", type=int, default=2 if quick() else 3)
    ap.add_argument(
        "--large", action=argparse.BooleanOptionalAction, default=not quick(), help="also SRResNet 64x16 (slow)"
    )
    ap.add_argument("--srresnet", action=argparse.BooleanOptionalAction, default=True, help="the SRResNet 16x8 rows")
    ap.add_argument(
        "--override",
        action="append",
        default=[],
        help="Hydra override for the recipes that have its key, repeatable (e.g. a small data file: "
        "data.n_per_class=600); the timed step does not depend on the file's size",
    )
    add_timing_arguments(ap)
    args = ap.parse_args()
    apply_timing_arguments(args)
    if args.srresnet:
        bench_srresnet(16, 8, args.batches, args.repeat)
    if args.large:
        bench_srresnet(64, 16, args.batches, args.repeat)
    for name in filter(None, args.recipes.split(",")):
        bench_recipe(name, args.batches, args.repeat, args.override)


if __name__ == "__main__":
    main()
