"""README figures and tables of SAXS background removal, regenerated from runs on the reader's machine.

    python -m lit_sr.domains.saxs.figures --out docs/figures

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

The helpers (:func:`load_decomposition`, :func:`clean_frame`, :func:`frame_metrics`, the plots) are
what ``notebooks/saxs.ipynb`` uses.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import h5py
import numpy as np
import torch

from lit_sr.data.normalise import PercentileNormaliser
from lit_sr.domains.saxs.radial_profile import (
    log_radial_edges,
    radial_profile,
    usable_radius,
)
from lit_sr.inference.frames import FramePredictor
from lit_sr.inference.runs import REPO, read_test_metrics, run_py
from lit_sr.metrics.background import median_hit_filter
from lit_sr.nets.decomposition import DecompositionNet
from lit_sr.utils.figures import headless_backend

EXPERIMENTS = ("saxs_unet", "saxs_equnet")
LABELS = {"saxs_unet": "UNet", "saxs_equnet": "C4-equivariant UNet"}

#: How a frame is cleaned: (label, normaliser clip, net rule, max_noise). 'study' = DecompositionNet's
#: own forward on whatever it is given; 'signal' / 'ratio' = SAXSDecompositionNet's excess rules.
INFERENCE_VARIANTS: dict[str, tuple[str, bool, str, float | None]] = {
    "clipped": ("clipped patches (before)", True, "study", None),
    "unclipped_net": ("unclipped patches into the net", False, "study", None),
    "signal": ("backbone clipped, excess to the signal", False, "signal", None),
    "ratio": ("backbone clipped, excess split by the noise fraction", False, "ratio", None),
    "ratio_cap": ("… and background ≤ 10× the patch range (default)", False, "ratio", 10.0),
}
DEFAULT_VARIANT = "ratio_cap"
SPOT_FACTOR = 100.0  # spot value = factor x the frame's 99.9th percentile
SPOT_SIZE = 2


# ----------------------------------------------------------------------------- training runs
def run_experiment(
    experiment: str, run_dir: Path, seed: int = 0, overrides: Sequence[str] = (), threads: int | None = None
) -> float:
    """``python run.py experiment=<experiment> seed=<seed> <overrides>`` into ``run_dir``; returns wall seconds."""
    return run_py([f"experiment={experiment}", f"seed={seed}", *overrides], run_dir, threads=threads)


def patch_table(metrics: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown table of the test-patch metrics: raw input, median filter, then each model."""
    first = next(iter(metrics.values()))
    rows = [
        (
            "raw input",
            first["input_psnr"],
            first["input_ssim"],
            first["input_hit_precision"],
            first["input_hit_recall"],
        ),
        (
            "3×3 median filter with 5·MAD hit clipping",
            first["median_psnr"],
            first["median_ssim"],
            first["median_hit_precision"],
            first["median_hit_recall"],
        ),
    ]
    for exp, m in metrics.items():
        rows.append((LABELS.get(exp, exp), m["signal_psnr"], m["signal_ssim"], m["hit_precision"], m["hit_recall"]))
    lines = [
        "| estimator | signal PSNR (dB) | gain over the input (dB) | SSIM | hit precision | hit recall |",
        "|---|---|---|---|---|---|",
    ]
    for name, psnr, ssim, prec, rec in rows:
        lines.append(
            f"| {name} | {psnr:.2f} | {psnr - first['input_psnr']:+.2f} | {ssim:.3f} | {prec:.3f} | {rec:.3f} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- models and frames
def load_decomposition(run_dir: Path, ckpt: Path | None = None):
    """The run's DecompositionModule (eval mode) with its best checkpoint, rebuilt from config_resolved.yaml."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from lit_sr.inference.frames import load_module_weights

    cfg = OmegaConf.load(Path(run_dir) / "config_resolved.yaml")
    if cfg.model.net.get("_target_") == "lit_sr.nets.decomposition.DecompositionNet":
        # a run from before SAXSDecompositionNet: same parameters, so its checkpoint loads into it
        cfg.model.net._target_ = "lit_sr.domains.saxs.nets.SAXSDecompositionNet"
    module = instantiate(cfg.model, _convert_="all")
    if ckpt is None:
        found = sorted((Path(run_dir) / "checkpoints").glob("epoch*.ckpt"))
        ckpt = found[-1] if found else Path(run_dir) / "checkpoints" / "last.ckpt"
    load_module_weights(module, ckpt)
    return module.eval(), cfg


def variant_model(
    net: torch.nn.Module, rule: str, max_noise: float | None = None
) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """The patch model of an inference variant: the study's forward, or an excess rule of the net."""
    if rule == "study":
        return lambda x: DecompositionNet.forward(net, x)
    if not hasattr(net, "excess"):
        raise TypeError(f"rule {rule!r} needs a SAXSDecompositionNet, got {type(net).__name__}")

    def model(x: torch.Tensor) -> dict[str, torch.Tensor]:
        previous = net.excess, net.max_noise
        net.excess, net.max_noise = rule, max_noise
        try:
            return net(x)
        finally:
            net.excess, net.max_noise = previous

    return model


@torch.no_grad()
def clean_frame(
    model: Callable, frame: np.ndarray, patch_size: int, clip: bool, lower: float = 1.0, upper: float = 99.95
) -> dict[str, np.ndarray]:
    """Blended signal/background of one frame (keV) with percentile-normalised patches."""
    predictor = FramePredictor(patch_size, normaliser=PercentileNormaliser(lower, upper, clip=clip))
    out = predictor(model, torch.from_numpy(np.asarray(frame, np.float32))[None])
    return {k: v[0].numpy() for k, v in out.items()}


def read_test_frames(path: Path) -> dict[str, Any]:
    """Full shots, their true signal, the beam centre and beam-stop radius of a simulated SAXS file."""
    with h5py.File(path, "r") as h5:
        return {
            "full": h5["full"][()],
            "signal": h5["signal"][()],
            "centre": tuple(float(c) for c in h5.attrs["beam_center"]),
            "r_stop": float(h5.attrs.get("beamstop_radius_px", 0.0)) + 2.0,
        }


def profile_edges(shape: Sequence[int], centre: Sequence[float], r_stop: float, n_bins: int = 24) -> np.ndarray:
    h, w = shape[-2:]
    r_max = float(np.hypot(max(centre[0], h - centre[0]), max(centre[1], w - centre[1])))
    return log_radial_edges(max(r_stop, 1.0), r_max, n_bins)


def frame_metrics(estimate: np.ndarray, signal: np.ndarray, full: np.ndarray) -> dict[str, float]:
    """Whole-frame figures in keV: fraction of the true signal kept, Σ min(ŝ, s) / Σ s, and fraction of
    the background energy left in the signal estimate, Σ max(ŝ − s, 0) / Σ (full − s)."""
    s, e = np.asarray(signal, np.float64), np.asarray(estimate, np.float64)
    background = np.clip(np.asarray(full, np.float64) - s, 0.0, None)
    return {
        "signal_kept": float(np.minimum(e, s).sum() / s.sum()),
        "background_left": float(np.clip(e - s, 0.0, None).sum() / max(background.sum(), 1e-12)),
    }


def spot_position(frame_shape: Sequence[int], centre: Sequence[float]) -> tuple[int, int]:
    """A spot position on the far side of the beam (dim Porod tail), 3/4 across the frame."""
    h, w = frame_shape[-2:]
    col = int(0.75 * w) if centre[1] < w / 2 else int(0.25 * w)
    return int(h // 4), col


def spot_kept(
    model: Callable, frame: np.ndarray, centre: Sequence[float], patch_size: int, clip: bool
) -> tuple[float, float]:
    """A 2 x 2 spot at 100 x the frame's 99.9th percentile: the fractions of its energy that come back
    in the signal and in signal + background."""
    value = SPOT_FACTOR * float(np.percentile(frame, 99.9))
    r, c = spot_position(frame.shape, centre)
    sl = (slice(r, r + SPOT_SIZE), slice(c, c + SPOT_SIZE))
    with_spot = np.array(frame, np.float32)
    with_spot[sl] = value
    out = clean_frame(model, with_spot, patch_size, clip)
    total = float(with_spot[sl].sum())
    return float(out["signal"][sl].sum()) / total, float((out["signal"][sl] + out["noise"][sl]).sum()) / total


def equivariance_error(net: torch.nn.Module, patches: torch.Tensor) -> float:
    """max |f(rot90 x) - rot90 f(x)| over the signal and noise outputs (normalised units)."""
    with torch.no_grad():
        out, rot = net(patches), net(torch.rot90(patches, 1, (-2, -1)))
    return max(float((rot[k] - torch.rot90(out[k], 1, (-2, -1))).abs().max()) for k in ("signal", "noise"))


# ----------------------------------------------------------------------------- plots
def _log_img(a: np.ndarray, floor: float = 1.0) -> np.ndarray:
    return np.log10(np.clip(a, floor, None))


def frame_figure(
    full: np.ndarray, signal_est: np.ndarray, background_est: np.ndarray, truth: np.ndarray, title: str = ""
):
    """One frame: input | cleaned signal | true signal | removed background (log10 keV)."""

    headless_backend()
    import matplotlib.pyplot as plt

    panels = (
        ("input (full shot)", full),
        ("cleaned signal", signal_est),
        ("true signal", truth),
        ("removed background", background_est),
    )
    vmax = float(np.log10(max(full.max(), 10.0)))
    fig, axes = plt.subplots(2, 2, figsize=(10, 5.6), constrained_layout=True)
    for ax, (name, img) in zip(axes.flat, panels):
        im = ax.imshow(_log_img(img), vmin=0.0, vmax=vmax, cmap="magma", interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes, shrink=0.8, label="log10 keV per pixel")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def profile_figure(edges: np.ndarray, profiles: Mapping[str, np.ndarray], truth: np.ndarray):
    """I(r) of every estimator (top) and its relative error to the true profile (bottom)."""

    headless_backend()
    import matplotlib.pyplot as plt

    r = np.sqrt(edges[:-1] * edges[1:])
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(6, 5.5), sharex=True, constrained_layout=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    top.loglog(r, truth, "k-", lw=2, label="true signal")
    for name, prof in profiles.items():
        top.loglog(r, prof, marker=".", lw=1, label=name)
        bottom.semilogx(r, prof / truth - 1.0, marker=".", lw=1, label=name)
    bottom.axhspan(-0.1, 0.1, color="grey", alpha=0.15, lw=0)
    bottom.axhline(0.0, color="k", lw=0.8)
    bottom.set_ylim(-0.6, 1.5)
    top.set_ylabel("I(r) [keV / px]")
    bottom.set_ylabel("relative error")
    bottom.set_xlabel("r from the beam [px]")
    top.legend(fontsize=7)
    return fig


def residual_figure(residuals: Mapping[str, np.ndarray], scale_kev: float = 50.0):
    """Maps of (estimate - true signal) in keV for several estimators, symmetric log colour scale."""

    headless_backend()
    import matplotlib.pyplot as plt
    from matplotlib.colors import SymLogNorm

    n = len(residuals)
    fig, axes = plt.subplots(n, 1, figsize=(7, 2.1 * n + 0.4), squeeze=False, constrained_layout=True)
    norm = SymLogNorm(linthresh=1.0, vmin=-scale_kev, vmax=scale_kev)
    for ax, (name, res) in zip(axes[:, 0], residuals.items()):
        im = ax.imshow(res, norm=norm, cmap="RdBu_r", interpolation="nearest")
        ax.set_title(f"{name}: estimate − true signal (Σ|res| = {np.abs(res).sum() / 1e3:.0f} MeV)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[:, 0], shrink=0.8, label="keV per pixel")
    return fig


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


def _write(path: Path, text: str) -> None:
    from lit_sr.utils.atomic import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(text + "\n")


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
    _write(a.out / "saxs_results.md", table)
    print(table)

    frames = read_test_frames(Path(dm.paths["test"]))
    text, cleaned = frames_study(modules, frames, a.patch_sizes)
    text += (
        f"\n\n{len(frames['full'])} simulated test frames of {frames['full'].shape[1]}×{frames['full'].shape[2]} px "
        f"(`{Path(dm.paths['test']).name}`, dataset `full`); spot: {SPOT_SIZE}×{SPOT_SIZE} px at "
        f"{SPOT_FACTOR:.0f}× the frame's 99.9th percentile, placed in the dim far side of each frame."
    )
    _write(a.out / "saxs_frames.md", text)

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
