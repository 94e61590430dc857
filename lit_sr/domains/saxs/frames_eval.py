"""Whole-frame evaluation of SAXS background removal: the numbers a SAXS analysis uses, in keV.

    python -m lit_sr.domains.saxs.frames_eval --run UNet=outputs/saxs_unet/<run> \\
        --run "C4 UNet=outputs/saxs_equnet/<run>" [--run "C4 UNet=<another seed's run>"] [--out table.md]

``--run LABEL=PATH``: PATH is a run folder (its tested checkpoint) or a checkpoint inside a run's
``checkpoints/``; runs with the same label are seeds (mean ± std). The frames are the simulated test
frames of the first run's data config (``--frames`` / ``--val-frames`` for others, datasets ``full``
and ``signal`` and the attributes ``beam_center``, ``beamstop_radius_px``).

For every estimator (the raw input, the 3x3 median filter with hit clipping whose free parameters are
tuned on the **validation** frames, and each model at its **training** patch size with the inference
it is configured with) on the test frames:

* usable radius at ±10 % and ±5 %: the outer edge of the last of the leading radial bins (log-spaced
  from the beam stop + 2 px) where the frames' mean I(r) stays within the tolerance of the true I(r);
* signal kept = Σ min(ŝ, s) / Σ s and background left = Σ max(ŝ − s, 0) / Σ (full − s);
* spot in signal: a 2×2 spot at 100× the frame's 99.9th percentile in the dim far field, the fraction of
  its energy that comes back in the signal (and in signal + background).

A second table states the peak result: each model at the training patch size and at 128 px, with and
without the cap on the noise head (``max_noise``; see :mod:`lit_sr.domains.saxs.nets`). Below, the
patch metrics of the runs' own test (``test/*`` of ``metrics.csv``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from lit_sr.data.normalise import PercentileNormaliser
from lit_sr.domains.saxs.frames import (
    SPOT_FACTOR,
    SPOT_SIZE,
    clean_frame,
    equivariance_error,
    load_decomposition,
    read_test_frames,
    run_normaliser,
    spot_position,
    variant_model,
)
from lit_sr.domains.saxs.radial_profile import radial_profile, usable_radius
from lit_sr.domains.saxs.writers import profile_edges
from lit_sr.inference.run_folder import read_test_metrics
from lit_sr.metrics.background import median_hit_filter

log = logging.getLogger(__name__)

#: the SAXS experiments (conf/experiment/) by the names the tables give them
LABELS = {
    "saxs_unet": "UNet",
    "saxs_equnet": "C4-equivariant UNet",
    "saxs_unet_abs": "UNet + absolute energy",
    "saxs_equnet_abs": "C4-equivariant UNet + absolute energy",
}

#: A frame estimator: full frame [H, W] in keV -> (signal estimate, background estimate) in keV.
Estimator = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
TOLERANCES = (0.10, 0.05)
#: Grid of the median filter's free parameters, tuned on the validation frames: k (hit threshold in
#: units of the local 1.4826 MAD) and floor (keV added to the threshold; in the dim far field the MAD
#: is 0 and a floor below one photon, 8 keV, removes single photons of the signal).
MEDIAN_K = (3.0, 5.0, 8.0)
MEDIAN_FLOOR_KEV = (0.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)
MEDIAN_SIZE = 3


# ----------------------------------------------------------------------------- estimators
def input_estimator(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The raw input as the signal (no background removed)."""
    return np.asarray(frame, np.float32), np.zeros_like(frame, dtype=np.float32)


def median_estimator(k: float, floor_kev: float, size: int = MEDIAN_SIZE) -> Estimator:
    """3x3 (``size``) median filter: pixels above the local median by more than k·1.4826·MAD + floor
    are replaced by the median (:func:`lit_sr.metrics.background.median_hit_filter`), in keV."""

    def estimate(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s, n = median_hit_filter(
            torch.as_tensor(np.asarray(frame, np.float32))[None, None], k=k, size=size, floor=floor_kev
        )
        return s[0, 0].numpy(), n[0, 0].numpy()

    return estimate


def model_estimator(
    net: torch.nn.Module,
    patch_size: int,
    max_noise: float | None | str = "configured",
    excess: str | None = None,
    normaliser: PercentileNormaliser | None = None,
) -> Estimator:
    """A decomposition net on blended, percentile-normalised (unclipped) patches of ``patch_size``;
    ``max_noise`` the cap of the noise head above a patch's range ("configured": the net's own); ``excess``
    the rule for the part of a pixel above the range (None: the net's own); ``normaliser`` the run's
    unclipped patch normaliser (:func:`~lit_sr.domains.saxs.frames.run_normaliser`; None: the study's)."""
    rule = excess or getattr(net, "excess", "study")
    cap = getattr(net, "max_noise", None) if max_noise == "configured" else max_noise
    model = variant_model(net, rule, cap)

    def estimate(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = clean_frame(model, frame, patch_size, clip=False, normaliser=normaliser)
        return out["signal"], out["noise"]

    return estimate


def less_flat_level(estimator: Estimator, level: Callable[[np.ndarray], float]) -> Estimator:
    """``estimator`` less a flat level (keV/px) computed from its signal estimate by ``level``; what leaves the
    signal moves to the background estimate (the sum is kept)."""

    def estimate(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s, n = estimator(frame)
        b = np.float32(level(s))
        return s - b, n + b

    return estimate


def with_pedestal(estimator: Estimator, centre: Sequence[float], r_min_px: float) -> Estimator:
    """``estimator`` less a flat pedestal: the mean of its signal estimate over the pixels farther than
    ``r_min_px`` from the beam (where the scattering has fallen below the diffuse background), the
    classical flat-background subtraction."""

    def far_mean(s: np.ndarray) -> float:
        h, w = s.shape
        r = np.hypot(np.arange(h)[:, None] + 0.5 - centre[0], np.arange(w)[None, :] + 0.5 - centre[1])
        far = r > r_min_px
        return float(s[far].mean(dtype=np.float64)) if far.any() else 0.0

    return less_flat_level(estimator, far_mean)


def normalised_patches(
    frames: np.ndarray, size: int, n: int = 16, seed: int = 0, normaliser: PercentileNormaliser | None = None
) -> torch.Tensor:
    """``n`` random ``size`` px patches of ``frames`` [N, H, W] (keV), each normalised to its 1st/99.95th
    percentiles and clipped as in training (``normaliser``: the run's clipped one, e.g. with the absolute-energy
    channel): [n, C, size, size]."""
    rng = np.random.default_rng(seed)
    norm = normaliser or PercentileNormaliser(1.0, 99.95, clip=True)
    out = []
    for _ in range(n):
        i = int(rng.integers(len(frames)))
        r, c = (int(rng.integers(0, d - size + 1)) for d in frames.shape[1:])
        patch = torch.as_tensor(np.asarray(frames[i, r : r + size, c : c + size], np.float32))[None, None]
        out.append(norm(patch)[0][0])
    return torch.stack(out)


def porod_background(
    signal: np.ndarray, centre: Sequence[float], edges: np.ndarray, r_fit_px: float
) -> tuple[float, float, float]:
    """Porod's law with a constant background, the SAXS analyst's flat-background estimate: least squares fit
    of I(r) = A r^-p + B to the azimuthal profile of ``signal`` (keV/px) over the radial bins beyond
    ``r_fit_px``, with relative weights (the profile spans decades). Returns (A, p, B); p is bounded to [2, 6]
    (p = 4: sharp interfaces), B is the flat background in keV/px."""
    from scipy.optimize import curve_fit

    prof, counts = radial_profile(signal, centre, edges)
    r = np.sqrt(edges[:-1] * edges[1:])
    ok = (edges[:-1] >= r_fit_px) & (counts > 0) & np.isfinite(prof)
    if ok.sum() < 4:
        raise ValueError(f"Porod fit beyond {r_fit_px} px: {int(ok.sum())} radial bins, need at least 4")
    r, y = r[ok], prof[ok]
    far = float(np.median(y[-3:]))
    scale = np.maximum(np.abs(y), 1e-6 * np.abs(y).max())

    def model(rr: np.ndarray, log_a: float, p: float, b: float) -> np.ndarray:
        return np.exp(log_a - p * np.log(rr)) + b

    p0 = (float(np.log(max(y[0] - far, 1e-12)) + 4.0 * np.log(r[0])), 4.0, far)
    bounds = ([-np.inf, 2.0, -np.inf], [np.inf, 6.0, np.inf])
    (log_a, p, b), _ = curve_fit(model, r, y, p0=p0, sigma=scale, bounds=bounds, maxfev=20000)
    return float(np.exp(log_a)), float(p), float(b)


def with_porod_background(
    estimator: Estimator, centre: Sequence[float], edges: np.ndarray, r_fit_px: float
) -> Estimator:
    """``estimator`` less the constant background B of a Porod-law fit (:func:`porod_background`) to its own
    signal estimate, per frame."""
    return less_flat_level(estimator, lambda s: porod_background(s, centre, edges, r_fit_px)[2])


def full_row_names(names: Sequence[str]) -> list[str]:
    """Table row names with each "… step" row prefixed by the row it continues, so that the JSON keeps
    every row (several models share the same "… less the same flat pedestal" text)."""
    out: list[str] = []
    parent = ""
    for name in names:
        if name.startswith("…"):
            out.append(f"{parent} {name}")
        else:
            parent = name
            out.append(name)
    return out


# ----------------------------------------------------------------------------- scores
@dataclass
class Frames:
    """Full shots, their true signal (keV, [N, H, W]), the beam centre and the first profile edge."""

    full: np.ndarray
    signal: np.ndarray
    centre: tuple[float, float]
    r_stop: float
    edges: np.ndarray = field(init=False)
    true_profile: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.edges = profile_edges(self.full.shape, self.centre, self.r_stop)
        self.true_profile = radial_profile(self.signal, self.centre, self.edges)[0].mean(0)

    @classmethod
    def read(cls, path: str | Path) -> "Frames":
        f = read_test_frames(Path(path))
        return cls(f["full"], f["signal"], f["centre"], f["r_stop"])


def profile_error(estimates: np.ndarray, frames: Frames) -> np.ndarray:
    """Relative error of the frames' mean I(r) to the true one, per radial bin."""
    return radial_profile(estimates, frames.centre, frames.edges)[0].mean(0) / frames.true_profile - 1.0


def spot_fractions(estimator: Estimator, frame: np.ndarray, centre: Sequence[float]) -> tuple[float, float]:
    """A 2×2 spot at 100× the frame's 99.9th percentile in the far field: fractions of its energy in the
    signal estimate and in signal + background."""
    value = SPOT_FACTOR * float(np.percentile(frame, 99.9))
    r, c = spot_position(frame.shape, centre)
    sl = (slice(r, r + SPOT_SIZE), slice(c, c + SPOT_SIZE))
    with_spot = np.array(frame, np.float32)
    with_spot[sl] = value
    s, n = estimator(with_spot)
    total = float(with_spot[sl].sum())
    return float(s[sl].sum()) / total, float((s[sl] + n[sl]).sum()) / total


def score(estimator: Estimator, frames: Frames, spot: bool = True) -> dict[str, Any]:
    """Usable radii, signal kept, background left (means over frames), the spot fractions, and the
    relative error of the frames' mean I(r) per radial bin (``profile_error``, a list)."""
    est = np.stack([estimator(f)[0] for f in frames.full]).astype(np.float64)
    s = frames.signal.astype(np.float64)
    background = np.clip(frames.full.astype(np.float64) - s, 0.0, None)
    prof = radial_profile(est, frames.centre, frames.edges)[0].mean(0)
    out = {
        f"radius_{round(t * 100):02d}": usable_radius(prof, frames.true_profile, frames.edges, t) for t in TOLERANCES
    }
    out["signal_kept"] = float(np.mean([np.minimum(e, t).sum() / t.sum() for e, t in zip(est, s)]))
    out["background_left"] = float(
        np.mean([np.clip(e - t, 0, None).sum() / max(b.sum(), 1e-12) for e, t, b in zip(est, s, background)])
    )
    out["profile_error"] = (prof / frames.true_profile - 1.0).tolist()
    if spot:
        fr = np.array([spot_fractions(estimator, f, frames.centre) for f in frames.full])
        out["spot_in_signal"], out["spot_in_total"] = (float(v) for v in fr.mean(0))
    return out


def simulated_fog(path: str | Path, full: np.ndarray, signal: np.ndarray) -> np.ndarray | None:
    """The diffuse fog [N, H, W] (keV) of a simulated file's full shots, replayed from its attributes
    (:func:`lit_sr.domains.saxs.sim.fog_of_frames`); None if the file is not this simulator's (the
    replayed fog must lie under full - signal everywhere, up to float32 round-off)."""
    import dataclasses

    import h5py

    from lit_sr.domains.saxs.sim import BRAGG_FIELDS, SAXSSimConfig, fog_of_frames

    with h5py.File(path, "r") as h5:
        attrs = dict(h5.attrs)
        n_xray = h5["xray"].shape[0] if "xray" in h5 else 0
    names = {f.name for f in dataclasses.fields(SAXSSimConfig)}
    if "seed" not in attrs or not names - BRAGG_FIELDS <= set(attrs):  # files from before the peaks lack theirs
        return None
    values = {
        k: (tuple(np.asarray(attrs[k]).tolist()) if np.ndim(attrs[k]) else np.asarray(attrs[k]).item())
        for k in names & set(attrs)
    }
    fog = fog_of_frames(n_xray, len(full), int(attrs["seed"]), SAXSSimConfig(**values))
    rest = full.astype(np.float64) - signal - fog
    if fog.shape != full.shape or (rest < -(1e-6 * np.abs(full) + 1e-3)).any():
        return None
    return fog


def fog_oracles(frames: Frames, fog: np.ndarray) -> list[tuple[str, list[dict[str, float]]]]:
    """Oracle rows: every compact deposit removed and the fog left, and the same less the fog's exact
    frame mean (a flat pedestal): the usable radius a hit remover cannot exceed, and what a smooth
    background estimate would add."""
    lookup: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
    rows = []
    for name, offset in (
        ("oracle: every hit, cluster and track removed, the fog left", lambda f: 0.0),
        ("oracle: the same less the fog's frame mean (a flat pedestal known exactly)", lambda f: f.mean()),
    ):
        lookup = {
            x.tobytes(): (s + f - offset(f), x - (s + f - offset(f)))
            for x, s, f in zip(frames.full, frames.signal.astype(np.float64), fog)
        }
        rows.append(
            (name, [score(lambda x, table=lookup: table[np.asarray(x, np.float32).tobytes()], frames, spot=False)])
        )
    return rows


def tune_median(
    frames: Frames, k_grid: Sequence[float] = MEDIAN_K, floor_grid: Sequence[float] = MEDIAN_FLOOR_KEV
) -> tuple[dict[str, float], dict[tuple, float]]:
    """(k, floor) of the median filter that maximise the usable radius at ±10 % on ``frames`` (the
    validation frames), ties broken by the mean relative I(r) error (clipped at 1) over all bins."""
    tried: dict[tuple, float] = {}
    for k, floor in itertools.product(k_grid, floor_grid):
        est = np.stack([median_estimator(k, floor)(f)[0] for f in frames.full])
        err = profile_error(est, frames)
        radius = usable_radius(err + 1.0, np.ones_like(err), frames.edges, 0.10)
        tried[(k, floor)] = -radius + float(np.mean(np.minimum(np.abs(np.nan_to_num(err, nan=1.0)), 1.0)))
    best = min(tried, key=tried.get)
    return {"median_k": best[0], "median_floor_keV": best[1]}, tried


PEDESTAL_R_MIN = (150.0, 200.0, 250.0, 300.0)


def tune_background_step(
    estimator: Estimator, frames: Frames, grid: Sequence[float], step: Callable[[Estimator, float], Estimator]
) -> tuple[float, dict]:
    """The grid value of a background step (``step(estimator, value)``) that maximises the usable radius at ±10 %
    on ``frames`` (the validation frames; ties: the mean clipped relative error), for ``estimator`` (the tuned
    median filter), which runs once per frame."""
    base = {f.tobytes(): estimator(f) for f in frames.full}
    cached = lambda x: base[x.tobytes()]  # noqa: E731
    tried = {}
    for value in grid:
        est = np.stack([step(cached, value)(f)[0] for f in frames.full])
        err = profile_error(est, frames)
        radius = usable_radius(err + 1.0, np.ones_like(err), frames.edges, 0.10)
        tried[float(value)] = -radius + float(np.mean(np.minimum(np.abs(np.nan_to_num(err, nan=1.0)), 1.0)))
    return min(tried, key=tried.get), tried


def tune_pedestal(estimator: Estimator, frames: Frames, grid: Sequence[float] = PEDESTAL_R_MIN) -> tuple[float, dict]:
    """The inner radius of the pedestal region, tuned by :func:`tune_background_step`."""
    return tune_background_step(estimator, frames, grid, lambda e, r: with_pedestal(e, frames.centre, r))


POROD_R_FIT = (20.0, 40.0, 60.0, 100.0, 150.0, 200.0)


def tune_porod(estimator: Estimator, frames: Frames, grid: Sequence[float] = POROD_R_FIT) -> tuple[float, dict]:
    """The inner radius of the Porod fit, tuned by :func:`tune_background_step`; grid values with fewer than 4
    radial bins beyond them are skipped."""
    feasible = [r for r in grid if int((frames.edges[:-1] >= r).sum()) >= 4]
    return tune_background_step(
        estimator, frames, feasible, lambda e, r: with_porod_background(e, frames.centre, frames.edges, r)
    )


# ----------------------------------------------------------------------------- runs
def parse_run(spec: str) -> tuple[str, Path, Path | None]:
    """``LABEL=PATH`` -> (label, run folder, checkpoint or None for the run's tested one)."""
    if "=" not in spec:
        raise ValueError(f"--run {spec!r}: expected LABEL=PATH (a run folder or a checkpoint in its checkpoints/)")
    label, path = spec.split("=", 1)
    p = Path(path)
    if p.suffix == ".ckpt":
        run_dir, ckpt = p.parent.parent, p
    else:
        run_dir, ckpt = p, None
    if not (run_dir / "config_resolved.yaml").is_file():
        raise FileNotFoundError(
            f"--run {spec!r}: {run_dir}/config_resolved.yaml missing (expected a run folder of "
            "python run.py experiment=saxs_*)"
        )
    if ckpt is not None and not ckpt.is_file():
        raise FileNotFoundError(f"--run {spec!r}: checkpoint {ckpt} not found")
    return label.strip(), run_dir, ckpt


def _fmt(values: Sequence[float], digits: int) -> str:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return "n/a"
    mean = v.mean() if abs(v.mean()) >= 0.5 * 10.0**-digits else 0.0  # no "-0.000"
    if v.size == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {v.std(ddof=1):.{digits}f}"


COLUMNS = (
    ("radius_10", "usable radius ±10 % (px)", 0),
    ("radius_05", "usable radius ±5 % (px)", 0),
    ("background_left", "background left", 3),
    ("signal_kept", "signal kept", 4),
    ("spot_in_signal", "spot in signal", 3),
    ("spot_in_total", "spot in signal + background", 3),
)


def table(rows: Sequence[tuple[str, Sequence[Mapping[str, float]]]], first: str = "estimator") -> str:
    lines = [f"| {first} | " + " | ".join(c[1] for c in COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for name, scores in rows:
        lines.append(
            f"| {name} | " + " | ".join(_fmt([s.get(k, np.nan) for s in scores], d) for k, _, d in COLUMNS) + " |"
        )
    return "\n".join(lines)


def profile_rows(rows: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], frames: Frames) -> str:
    """Relative error of the mean I(r) per radial bin (first run of each row), and the true I(r)."""
    lines = [
        "| r (px) | true I(r) (keV/px) | " + " | ".join(f"({i + 1})" for i in range(len(rows))) + " |",
        "|---|---:|" + "---:|" * len(rows),
    ]
    for b, (lo, hi) in enumerate(zip(frames.edges[:-1], frames.edges[1:])):
        cells = [f"{r[1][0]['profile_error'][b]:+.3f}" for r in rows]
        lines.append(f"| {lo:.0f}–{hi:.0f} | {frames.true_profile[b]:.3g} | " + " | ".join(cells) + " |")
    lines += ["", "; ".join(f"({i + 1}) {name}" for i, (name, _) in enumerate(rows))]
    return "\n".join(lines)


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


def patch_rows(runs: Mapping[str, Sequence[Path]]) -> str:
    """The runs' own patch test: signal PSNR / SSIM (normalised units, data_range 1) beside the input's
    and the untuned patch median filter's (k = 5, normalised units) on the same patches."""
    lines = ["| estimator | signal PSNR (dB) | SSIM | hit precision | hit recall |", "|---|---:|---:|---:|---:|"]

    def read(d: Path) -> dict[str, float]:
        try:
            return read_test_metrics(d)
        except (OSError, ValueError):  # a run still training: no test yet
            return {}

    metrics = {label: [read(d) for d in dirs] for label, dirs in runs.items()}
    metrics = {label: [m for m in ms if m] for label, ms in metrics.items()}
    metrics = {label: ms for label, ms in metrics.items() if ms}
    if not metrics:
        return "(no run has finished its test yet)"
    first = next(iter(metrics.values()))
    lines.append(
        f"| raw input | {_fmt([m['input_psnr'] for m in first], 2)} | {_fmt([m['input_ssim'] for m in first], 3)}"
        " | n/a | n/a |"
    )
    lines.append(
        f"| 3×3 median filter, k = 5 (patch units, untuned) | {_fmt([m['median_psnr'] for m in first], 2)} | "
        f"{_fmt([m['median_ssim'] for m in first], 3)} | {_fmt([m['median_hit_precision'] for m in first], 3)} | "
        f"{_fmt([m['median_hit_recall'] for m in first], 3)} |"
    )
    for label, ms in metrics.items():
        lines.append(
            f"| {label} | {_fmt([m['signal_psnr'] for m in ms], 2)} | {_fmt([m['signal_ssim'] for m in ms], 3)} | "
            f"{_fmt([m['hit_precision'] for m in ms], 3)} | {_fmt([m['hit_recall'] for m in ms], 3)} |"
        )
    return "\n".join(lines)


def evaluate(
    specs: Sequence[str],
    frames_path: Path | None = None,
    val_path: Path | None = None,
    peak_patch_sizes: Sequence[int] = (128,),
    spot: bool = True,
) -> tuple[str, dict[str, Any]]:
    """The markdown report and the raw numbers (see the module docstring)."""
    from hydra.utils import instantiate

    parsed = [parse_run(s) for s in specs]
    if frames_path is None or val_path is None:
        from omegaconf import OmegaConf

        dm = instantiate(OmegaConf.load(parsed[0][1] / "config_resolved.yaml").data)
        dm.prepare_data()
        frames_path = frames_path or Path(dm.paths["test"])
        val_path = val_path or Path(dm.paths["val"])
    test, val = Frames.read(frames_path), Frames.read(val_path)
    tuned, tried = tune_median(val)
    log.info("median filter tuned on %s: %s", val_path, tuned)
    results: dict[str, Any] = {
        "tuned": tuned,
        "median_grid": {f"k={k},floor={f}": v for (k, f), v in tried.items()},
        "frames": str(frames_path),
        "val_frames": str(val_path),
        "rows": {},
        "peak": {},
    }
    median = median_estimator(tuned["median_k"], tuned["median_floor_keV"])
    r_ped, tried_ped = tune_pedestal(median, val)
    tuned["pedestal_r_min_px"] = r_ped
    results["pedestal_grid"] = tried_ped
    r_porod, tried_porod = tune_porod(median, val)
    tuned["porod_r_fit_px"] = r_porod
    results["porod_grid"] = tried_porod
    porod_label = f"… less a Porod-law constant background (I = A r^-p + B fitted beyond {r_porod:.0f} px)"
    main = [
        ("raw input", [score(input_estimator, test, spot)]),
        (
            f"… less a flat pedestal from r > {r_ped:.0f} px (the median filter's, tuned on the validation frames)",
            [score(with_pedestal(input_estimator, test.centre, r_ped), test, spot=False)],
        ),
        (
            f"3×3 median filter, k = {tuned['median_k']:g}, floor = {tuned['median_floor_keV']:g} keV "
            "(tuned on the validation frames)",
            [score(median, test, spot)],
        ),
        (
            f"… less a flat pedestal from r > {r_ped:.0f} px (tuned on the validation frames)",
            [score(with_pedestal(median, test.centre, r_ped), test, spot)],
        ),
        (
            porod_label + " (tuned on the validation frames)",
            [score(with_porod_background(median, test.centre, test.edges, r_porod), test, spot=False)],
        ),
    ]
    labels: dict[str, list] = {}
    training_normaliser = {}  # the clipped normaliser of training, for the equivariance patches
    for label, run_dir, ckpt in parsed:
        module, cfg = load_decomposition(run_dir, ckpt)
        labels.setdefault(label, []).append(
            (run_dir, ckpt, module.net, int(cfg.data.patch_size), run_normaliser(cfg, clip=False))
        )
        training_normaliser[run_dir] = run_normaliser(cfg, clip=True)
    peak: list[tuple[str, list]] = []
    for label, models in labels.items():
        P = {m[3] for m in models}
        if len(P) != 1:
            raise ValueError(f"{label}: runs trained on different patch sizes {sorted(P)}; give them distinct labels")
        P = P.pop()
        cap = models[0][2].max_noise if hasattr(models[0][2], "max_noise") else None
        main.append(
            (
                f"{label}, {P} px patches (training size), noise cap {cap if cap is not None else 'none'}",
                [score(model_estimator(net, P, normaliser=norm), test, spot) for _, _, net, _, norm in models],
            )
        )
        main.append(
            (
                f"… less the same flat pedestal (r > {r_ped:.0f} px)",
                [
                    score(with_pedestal(model_estimator(net, P, normaliser=norm), test.centre, r_ped), test, spot=False)
                    for _, _, net, _, norm in models
                ],
            )
        )
        main.append(
            (
                porod_label,
                [
                    score(
                        with_porod_background(
                            model_estimator(net, P, normaliser=norm), test.centre, test.edges, r_porod
                        ),
                        test,
                        spot=False,
                    )
                    for _, _, net, _, norm in models
                ],
            )
        )
        for size in (P, *[s for s in peak_patch_sizes if s != P]):
            for c in (cap, None) if cap is not None else (None,):
                name = f"{label}, {size} px, noise cap {'none' if c is None else f'{c:g}× range'}"
                peak.append(
                    (
                        name,
                        [
                            score(model_estimator(net, size, c, normaliser=norm), test, spot)
                            for _, _, net, _, norm in models
                        ],
                    )
                )
            if getattr(models[0][2], "excess", None) == "ratio":  # no cap at all: the excess stays in the signal
                name = f"{label}, {size} px, excess above the range kept in the signal (no cap)"
                peak.append(
                    (
                        name,
                        [
                            score(model_estimator(net, size, None, "signal", norm), test, spot)
                            for _, _, net, _, norm in models
                        ],
                    )
                )
    equivariance = {
        label: [
            equivariance_error(net, normalised_patches(test.full, P, normaliser=training_normaliser[run_dir]))
            for run_dir, _, net, P, _ in models
        ]
        for label, models in labels.items()
    }
    results["equivariance_error"] = equivariance
    fog = simulated_fog(frames_path, test.full, test.signal)
    oracles = fog_oracles(test, fog) if fog is not None else []
    if fog is not None:
        prof = radial_profile(fog, test.centre, test.edges)[0].mean(0) / test.true_profile
        results["fog_over_signal"] = {
            f"{lo:.0f}-{hi:.0f}": float(v) for lo, hi, v in zip(test.edges[:-1], test.edges[1:], prof)
        }
    results["oracles"] = {n: s for n, s in oracles}
    results["rows"] = dict(zip(full_row_names([n for n, _ in main]), [s for _, s in main]))
    results["peak"] = {n: s for n, s in peak}
    n_seeds = {label: len(m) for label, m in labels.items()}
    seeds = ", ".join(f"{label}: {n} run{'s' if n > 1 else ''}" for label, n in n_seeds.items())
    ckpts = "; ".join(
        f"{label}: " + ", ".join(str(ck or run_dir) for run_dir, ck, *_ in m) for label, m in labels.items()
    )
    text = [
        f"Whole frames in keV: {len(test.full)} test frames of {test.full.shape[1]}×{test.full.shape[2]} px "
        f"(`{Path(frames_path).name}`), beam centre ({test.centre[0]:.1f}, {test.centre[1]:.1f}) px, radial bins "
        f"from {test.edges[0]:.0f} to {test.edges[-1]:.0f} px. Median filter tuned on {len(val.full)} validation "
        f"frames (`{Path(val_path).name}`). Models ({seeds}; mean ± std over runs where more than one): {ckpts}.",
        "",
        table(main),
        "",
        f"The peak result: a {SPOT_SIZE}×{SPOT_SIZE} spot at {SPOT_FACTOR:.0f}× the frame's 99.9th percentile, at the "
        "training patch size and at larger inference patches, with and without the cap on the noise head "
        "(the most background a pixel above its patch's percentile range can get, in units of that range):",
        "",
        table(peak, "model, inference"),
        "",
        "rot90 equivariance error, max |f(rot90 x) − rot90 f(x)| over signal and noise (normalised units) on 16 "
        "percentile-normalised patches of the training size cut from the test frames, per run: "
        + "; ".join(f"{label}: " + ", ".join(f"{e:.1e}" for e in errs) for label, errs in equivariance.items())
        + ".",
        "",
        "Relative error of the test frames' mean I(r) to the true I(r), per radial bin:",
        "",
        profile_rows([*main, *oracles], test),
        "",
        *(
            [
                "What limits the usable radius: the simulator's fog replayed from the file's attributes, and "
                "estimators that know it (not attainable; they bound what a hit remover can reach):",
                "",
                table(oracles, "oracle"),
                "",
            ]
            if oracles
            else []
        ),
        "Patch metrics of the runs' own test (held-out patches of each run's training size, normalised units):",
        "",
        patch_rows({label: [m[0] for m in ms] for label, ms in labels.items()}),
    ]
    return "\n".join(text) + "\n", results


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", required=True, help="LABEL=PATH (run folder or checkpoint); repeat")
    p.add_argument("--frames", type=Path, default=None, help="test frames (default: the first run's test file)")
    p.add_argument("--val-frames", type=Path, default=None, help="validation frames for tuning the median filter")
    p.add_argument("--peak-patch-sizes", type=int, nargs="*", default=[128])
    p.add_argument("--no-spot", action="store_true", help="skip the spot test (halves the time)")
    p.add_argument("--out", type=Path, default=None, help="write the markdown here (and the numbers to .json)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    text, results = evaluate(a.run, a.frames, a.val_frames, a.peak_patch_sizes, not a.no_spot)
    print(text)
    if a.out is not None:
        from lit_sr.utils.atomic import atomic_path

        a.out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(a.out) as tmp:
            Path(tmp).write_text(text)
        with atomic_path(a.out.with_suffix(".json")) as tmp:
            Path(tmp).write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
