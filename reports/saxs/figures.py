"""README figures and tables of SAXS background removal, regenerated from runs on the reader's machine.

    python -m reports.saxs.figures --out docs/figures

1. ``python run.py experiment=saxs_equnet`` and ``experiment=saxs_unet`` (seed 0, subprocesses; about
   8-9 min each on 2 idle cores) unless ``--reuse`` finds finished runs;
2. their test metrics on the held-out patches (``saxs_results.md``: signal PSNR/SSIM and its gain
   over the raw input, hit precision/recall, beside the raw input and the 3x3 median filter);
3. whole-frame inference of the simulated test frames (keV) with each way of treating intensities
   above a patch's percentile range (``INFERENCE_VARIANTS``), at 32 and 128 px patches: radial
   profile I(r) errors, the true signal kept, the background left, and a 2 x 2 spot at 100 x the
   frame's 99.9th percentile (``saxs_frames.md``);
4. the rot90 equivariance error of the C4 net, and the pictures: a frame before/after, radial
   profiles, residual maps (``saxs_*.png``).

The whole-frame inference (:mod:`lit_sr.domains.saxs.frames`) and the plots (:mod:`lit_sr.domains.saxs.plots`)
are library code that ``notebooks/saxs.ipynb`` uses too.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from lit_sr.domains.saxs.frames import (
    DEFAULT_VARIANT,
    INFERENCE_VARIANTS,
    SPOT_FACTOR,
    SPOT_SIZE,
    clean_frame,
    equivariance_error,
    frame_metrics,
    load_decomposition,
    read_test_frames,
    spot_kept,
    variant_model,
)
from lit_sr.domains.saxs.frames_eval import LABELS, patch_table
from lit_sr.domains.saxs.plots import frame_figure, profile_figure, residual_figure
from lit_sr.domains.saxs.radial_profile import radial_profile, usable_radius
from lit_sr.domains.saxs.writers import profile_edges
from lit_sr.inference.run_folder import read_test_metrics
from lit_sr.metrics.background import median_hit_filter
from reports.runs import REPO, run_py, write_text

EXPERIMENTS = ("saxs_unet", "saxs_equnet")


# ----------------------------------------------------------------------------- training runs
def run_experiment(
    experiment: str, run_dir: Path, seed: int = 0, overrides: Sequence[str] = (), threads: int | None = None
) -> float:
    """``python run.py experiment=<experiment> seed=<seed> <overrides>`` into ``run_dir``; returns wall seconds."""
    return run_py([f"experiment={experiment}", f"seed={seed}", *overrides], run_dir, threads=threads)


# ----------------------------------------------------------------------------- the whole study
def frames_study(
    modules: Mapping[str, Any],
    frames: Mapping[str, Any],
    patch_sizes: Sequence[int] = (32, 128),
    variants: Sequence[str] = tuple(INFERENCE_VARIANTS),
) -> tuple[str, dict[str, Any]]:
    """Markdown table of the inference variants on whole frames, and the cleaned frames of the default."""
    full, truth, centre = frames["full"], frames["signal"], frames["centre"]
    edges = profile_edges(full.shape, centre, frames["r_stop"])
    true_prof = radial_profile(truth, centre, edges)[0].mean(0)
    lines = [
        "| model | patch (px) | inference | usable radius ±10 % (px) | I(r) error 64–77 px | signal kept "
        "| background left | spot in signal | spot in signal + background |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    kept_frames: dict[str, Any] = {}
    i64 = int(np.searchsorted(edges, 64.0, side="right") - 1)
    for exp, module in modules.items():
        net = module.net
        for P in patch_sizes:
            for v in variants:
                label, clip, rule, max_noise = INFERENCE_VARIANTS[v]
                model = variant_model(net, rule, max_noise)
                cleaned = [clean_frame(model, f, P, clip) for f in full]
                sig = np.stack([c["signal"] for c in cleaned])
                prof = radial_profile(sig, centre, edges)[0].mean(0)
                m = [frame_metrics(s, t, f) for s, t, f in zip(sig, truth, full)]
                spot = np.mean([spot_kept(model, f, centre, P, clip) for f in full], axis=0)
                radius = usable_radius(prof, true_prof, edges, 0.1)
                err = prof[i64] / true_prof[i64] - 1.0 if 0 <= i64 < len(prof) else float("nan")
                lines.append(
                    f"| {LABELS.get(exp, exp)} | {P} | {label} | {radius:.0f} | {err:+.3f} | "
                    f"{np.mean([x['signal_kept'] for x in m]):.4f} | "
                    f"{np.mean([x['background_left'] for x in m]):.4f} | {spot[0]:.3f} | {spot[1]:.3f} |"
                )
                kept_frames[f"{exp}/{P}/{v}"] = {
                    "signal": sig,
                    "background": np.stack([c["noise"] for c in cleaned]),
                    "profile": prof,
                }
                print(lines[-1], flush=True)
    kept_frames["_edges"], kept_frames["_truth_profile"] = edges, true_prof
    return "\n".join(lines), kept_frames


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    from lit_sr.utils.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    print("wrote", path)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "figures")
    p.add_argument(
        "--work",
        type=Path,
        default=None,
        help="folder of the runs (default $LIT_SR_ROOT/outputs/figures_saxs or ./outputs/figures_saxs)",
    )
    p.add_argument("--reuse", action="store_true", help="reuse finished runs in --work")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the training runs")
    p.add_argument("--patch-sizes", type=int, nargs="+", default=[32, 128])
    a = p.parse_args(argv)
    root = Path(os.environ.get("LIT_SR_ROOT", REPO))
    work = a.work or root / "outputs" / "figures_saxs"
    a.out.mkdir(parents=True, exist_ok=True)

    metrics, modules, times = {}, {}, {}
    for exp in EXPERIMENTS:
        run_dir = work / exp
        if not (a.reuse and (run_dir / "metrics.csv").is_file()):
            print(f"python run.py experiment={exp} -> {run_dir}", flush=True)
            times[exp] = run_experiment(exp, run_dir, threads=a.threads)
            (run_dir / "seconds.txt").write_text(f"{times[exp]:.1f}\n")
        elif (run_dir / "seconds.txt").is_file():
            times[exp] = float((run_dir / "seconds.txt").read_text())
        metrics[exp] = read_test_metrics(run_dir)
        modules[exp], cfg = load_decomposition(run_dir)
    table = patch_table(metrics)
    table += "\n\nWall time of the training runs: " + ", ".join(f"{e}: {t / 60:.1f} min" for e, t in times.items())

    # equivariance of the C4 net on held-out test patches (normalised), clipped and unclipped
    from hydra.utils import instantiate

    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("test")
    patches = torch.stack([dm.splits["test"][i]["input"] for i in range(32)])
    eq = modules["saxs_equnet"].net
    err = equivariance_error(eq, patches)
    err_u = equivariance_error(eq, patches * 3.0)
    table += (
        f"\n\nrot90 equivariance error of the C4 net, max |f(rot90 x) − rot90 f(x)| over signal and noise: "
        f"{err:.1e} on 32 test patches (normalised units), {err_u:.1e} on the same patches × 3 "
        f"(values above the clip range)"
    )
    write_text(a.out / "saxs_results.md", table)
    print(table)

    frames = read_test_frames(Path(dm.paths["test"]))
    text, cleaned = frames_study(modules, frames, a.patch_sizes)
    text += (
        f"\n\n{len(frames['full'])} simulated test frames of {frames['full'].shape[1]}×{frames['full'].shape[2]} px "
        f"(`{Path(dm.paths['test']).name}`, dataset `full`); spot: {SPOT_SIZE}×{SPOT_SIZE} px at "
        f"{SPOT_FACTOR:.0f}× the frame's 99.9th percentile, placed in the dim far side of each frame."
    )
    write_text(a.out / "saxs_frames.md", text)

    # pictures: default inference of the C4 net at the training patch size
    P = a.patch_sizes[0]
    key = f"saxs_equnet/{P}/{DEFAULT_VARIANT}"
    i = 0
    _save(
        frame_figure(
            frames["full"][i],
            cleaned[key]["signal"][i],
            cleaned[key]["background"][i],
            frames["signal"][i],
            title=f"C4 UNet, test frame {i}, {P} px patches",
        ),
        a.out / "saxs_frame.png",
    )
    median = np.stack([median_hit_filter(torch.as_tensor(f)[None, None])[0][0, 0].numpy() for f in frames["full"]])
    edges = cleaned["_edges"]
    profs = {
        "input": radial_profile(frames["full"], frames["centre"], edges)[0].mean(0),
        "3×3 median filter": radial_profile(median, frames["centre"], edges)[0].mean(0),
        **{LABELS[e]: cleaned[f"{e}/{P}/{DEFAULT_VARIANT}"]["profile"] for e in EXPERIMENTS},
    }
    _save(profile_figure(edges, profs, cleaned["_truth_profile"]), a.out / "saxs_profiles.png")
    res = {
        "input": frames["full"][i] - frames["signal"][i],
        "3×3 median filter": median[i] - frames["signal"][i],
        **{LABELS[e]: cleaned[f"{e}/{P}/{DEFAULT_VARIANT}"]["signal"][i] - frames["signal"][i] for e in EXPERIMENTS},
    }
    _save(residual_figure(res), a.out / "saxs_residuals.png")


if __name__ == "__main__":
    main()
