"""README figures and tables of the strong-lensing SR slice, regenerated from runs on the reader's machine.

    python -m reports.lensing.figures --out docs/figures                 # 3 seeds x 4 experiments
    python -m reports.lensing.figures --out docs/figures --seeds 0       # one seed
    python -m reports.lensing.figures --out docs/figures --reuse         # reuse finished runs in --work

What it does:
  1. ``lensing_ceiling.md``: how much any SR can gain over bicubic/bilinear on the default data and two variants
     (LR with the HR PSF; the 150 px field). A perfect SR returns the noiseless HR image, whose error is the HR
     noise, so PSNR(clean HR vs HR) is the ceiling. Simulated here (240 lenses each, seed 99, not the run data).
  2. for each seed: ``python run.py experiment=E seed=S`` for lensing_rdn, lensing_srresnet, lensing_srgan,
     lensing_rrdb and lensing_esrgan, each in a subprocess. The first run trains the two judges (HR- and LR-trained
     substructure classifiers) into the cache under data_dir, the others load them; lensing_srgan starts from the
     final state (last.ckpt) of the lensing_srresnet run of the same seed and trains the GANs' perceptual
     classifier into the cache; lensing_esrgan loads it and starts from the lensing_rrdb run of the same seed;
  3. ``lensing_results.md``: the comparison table of :mod:`reports.lensing.compare` (mean ± std over the
     seeds) and the wall time of every run; ``lensing_panels.png``: LR | bicubic | models | HR | residuals of the
     seed-0 runs; ``lensing_roc.png`` and ``lensing_theta_e_error.png``: the evaluator's plots for the seed-0 RDN.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from lit_sr.domains.lensing.plots import evaluator_figures
from reports.lensing.compare import MODELS, find_runs, write_outputs
from reports.runs import REPO, run_py, write_text

EXPERIMENTS = tuple(MODELS)
#: GAN experiment -> the supervised experiment whose run (same seed) it starts from
GAN_STARTS = {"lensing_srgan": "lensing_srresnet", "lensing_esrgan": "lensing_rrdb"}


# ----------------------------------------------------------------------------- ceiling
def psnr_ceiling(
    n: int = 240, seed: int = 99, image_size: int = 96, physical_max: float = 10.0, **sim: object
) -> dict[str, float]:
    """PSNR (dB, range ``physical_max``) against the noisy HR of bicubic, bilinear and the noiseless HR image
    (the best any SR can do), for ``n`` lenses simulated with ``LensSimConfig(**sim)``."""
    import torch

    from lit_sr.domains.lensing.sim import (
        LensSimConfig,
        concatenate_blocks,
        simulate_lenses,
    )
    from lit_sr.metrics.image import upsample_baseline

    config = LensSimConfig(image_size=image_size, **sim)
    d = concatenate_blocks(simulate_lenses(n, seed, config, return_clean=True))
    hr = torch.from_numpy(d["hr"])[:, None].double()
    lr = torch.from_numpy(d["lr"])[:, None].double()

    def psnr(x: torch.Tensor) -> float:
        return float(10 * torch.log10(physical_max**2 / (x - hr).pow(2).mean()))

    return {
        "bilinear": psnr(upsample_baseline(lr, 2, "bilinear")),
        "bicubic": psnr(upsample_baseline(lr, 2, "bicubic")),
        "clean HR": psnr(torch.from_numpy(d["hr_clean"])[:, None].double()),
    }


CEILING_CASES = (
    ('default: 96 px, LR PSF 0.18"', {}),
    ('LR PSF = HR PSF 0.09" (2x2 binning only)', {"lr_psf_fwhm_arcsec": None}),
    ('150 px field, LR PSF 0.18"', {"image_size": 150}),
)


def default_sim_options() -> dict[str, object]:
    """The simulator options of ``conf/data/lensing.yaml`` (image size and ``sim`` overrides)."""
    from omegaconf import OmegaConf

    data = OmegaConf.load(REPO / "conf" / "data" / "lensing.yaml")
    sim = {k: tuple(v) if isinstance(v, list) else v for k, v in OmegaConf.to_container(data.sim).items()}
    return {"image_size": int(data.image_size), **sim}


def ceiling_table() -> str:
    lines = [
        "| data | bilinear PSNR | bicubic PSNR | noiseless HR PSNR (ceiling) | max gain over bicubic |",
        "|---|---|---|---|---|",
    ]
    for name, change in CEILING_CASES:
        c = psnr_ceiling(**{**default_sim_options(), **change})
        lines.append(
            f"| {name} | {c['bilinear']:.2f} | {c['bicubic']:.2f} | {c['clean HR']:.2f} | "
            f"{c['clean HR'] - c['bicubic']:.2f} dB |"
        )
    lines += [
        "",
        "PSNR in dB against the noisy HR images, range 10 counts/s per HR pixel; 240 lenses (seed 99) per row, "
        "simulator options of conf/data/lensing.yaml except the change named.",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- runs
def run_experiment(
    run_dir: Path, experiment: str, seed: int, overrides: Sequence[str] = (), threads: int | None = None
) -> float:
    """``python run.py experiment=<experiment> seed=<seed> <overrides>`` into ``run_dir``; returns wall seconds
    (also written to ``seconds.txt``, which marks the run finished for ``--reuse``)."""
    seconds = run_py([f"experiment={experiment}", f"seed={seed}", *overrides], run_dir, threads=threads)
    (run_dir / "seconds.txt").write_text(f"{seconds:.1f}\n")
    return seconds


def _finished(run_dir: Path) -> bool:
    return (run_dir / "seconds.txt").is_file() and (run_dir / "metrics.csv").is_file()


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "figures")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--work",
        type=Path,
        default=None,
        help="folder of the runs (default $LIT_SR_ROOT/outputs/figures_lensing or ./outputs/figures_lensing)",
    )
    p.add_argument("--reuse", action="store_true", help="reuse finished runs in --work instead of training again")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the runs (default: torch's)")
    p.add_argument("--no-ceiling", dest="ceiling", action="store_false", help="skip the PSNR-ceiling table")
    a = p.parse_args(argv)
    root = Path(os.environ.get("LIT_SR_ROOT", REPO))
    work = a.work or root / "outputs" / "figures_lensing"
    a.out.mkdir(parents=True, exist_ok=True)

    if a.ceiling:
        table = ceiling_table()
        write_text(a.out / "lensing_ceiling.md", table)
        print(table, flush=True)

    times: dict[str, list[float]] = {e: [] for e in EXPERIMENTS}
    for seed in a.seeds:
        for experiment in EXPERIMENTS:
            run_dir = work / f"seed{seed}" / experiment
            overrides: list[str] = []
            if experiment in GAN_STARTS:  # a GAN starts from the final state of its PSNR model's run of this seed
                start = work / f"seed{seed}" / GAN_STARTS[experiment] / "checkpoints" / "last.ckpt"
                if start.is_file():
                    overrides.append(f"generator_init.ckpt={start}")
            if a.reuse and _finished(run_dir):
                seconds = float((run_dir / "seconds.txt").read_text())
            else:
                print(
                    f"python run.py experiment={experiment} seed={seed} {' '.join(overrides)} -> {run_dir}", flush=True
                )
                seconds = run_experiment(run_dir, experiment, seed, overrides, a.threads)
            times[experiment].append(seconds)
            print(f"  {experiment} seed {seed}: {seconds:.0f} s", flush=True)

    runs = [r for r in find_runs(*(work / f"seed{s}" for s in a.seeds)) if r["experiment"] in EXPERIMENTS]
    written = write_outputs(runs, a.out, n_lenses=2)
    table = (a.out / "lensing_comparison.md").read_text()
    timing = (
        "Wall time of `python run.py` per experiment (seeds "
        + ", ".join(map(str, a.seeds))
        + "; "
        + "the first run trains the judges, lensing_srgan the perceptual classifier; later runs load "
        + "them from the cache): "
        + "; ".join(f"{MODELS[e]} {np.mean(t):.0f} s" for e, t in times.items() if t)
        + "."
    )
    write_text(a.out / "lensing_results.md", table.rstrip() + "\n\n" + timing)
    written.append(a.out / "lensing_results.md")
    written += evaluator_figures(work / f"seed{a.seeds[0]}" / EXPERIMENTS[0], a.out)
    for path in written:
        print("wrote", path)
    print((a.out / "lensing_results.md").read_text())


if __name__ == "__main__":
    main()
