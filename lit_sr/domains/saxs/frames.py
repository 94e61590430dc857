"""Whole simulated SAXS frames through a trained decomposition run: the run's module rebuilt
(:func:`load_decomposition`), the ways of treating intensities above a patch's percentile range
(:data:`INFERENCE_VARIANTS`, :func:`variant_model`), a frame cleaned with blended percentile-normalised patches
(:func:`clean_frame`, keV), and the whole-frame figures: signal kept / background left (:func:`frame_metrics`),
a bright spot's energy kept (:func:`spot_kept`), the rot90 equivariance error (:func:`equivariance_error`).

Used by :mod:`lit_sr.domains.saxs.frames_eval`, ``notebooks/saxs.ipynb`` and ``reports/saxs/figures.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import h5py
import numpy as np
import torch

from lit_sr.data.normalise import PercentileNormaliser
from lit_sr.inference.frames import FramePredictor
from lit_sr.nets.decomposition import DecompositionNet

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


def run_normaliser(cfg: Any, clip: bool) -> PercentileNormaliser:
    """The patch normaliser a run trained with (``data.normaliser`` of its config, e.g. with the absolute-energy
    channel), with ``clip`` set; the study's 1st/99.95th percentiles if the config has none."""
    from hydra.utils import instantiate

    node = cfg.data.get("normaliser") if cfg is not None else None
    if node is None:
        return PercentileNormaliser(1.0, 99.95, clip=clip)
    return instantiate(node, clip=clip)


@torch.no_grad()
def clean_frame(
    model: Callable,
    frame: np.ndarray,
    patch_size: int,
    clip: bool,
    lower: float = 1.0,
    upper: float = 99.95,
    normaliser: PercentileNormaliser | None = None,
) -> dict[str, np.ndarray]:
    """Blended signal/background of one frame (keV) with percentile-normalised patches (``normaliser``: the
    run's own, :func:`run_normaliser`, whose ``clip`` then applies instead of ``clip``/``lower``/``upper``)."""
    normaliser = normaliser or PercentileNormaliser(lower, upper, clip=clip)
    predictor = FramePredictor(patch_size, normaliser=normaliser)
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
    model: Callable,
    frame: np.ndarray,
    centre: Sequence[float],
    patch_size: int,
    clip: bool,
    normaliser: PercentileNormaliser | None = None,
) -> tuple[float, float]:
    """A 2 x 2 spot at 100 x the frame's 99.9th percentile: the fractions of its energy that come back
    in the signal and in signal + background."""
    value = SPOT_FACTOR * float(np.percentile(frame, 99.9))
    r, c = spot_position(frame.shape, centre)
    sl = (slice(r, r + SPOT_SIZE), slice(c, c + SPOT_SIZE))
    with_spot = np.array(frame, np.float32)
    with_spot[sl] = value
    out = clean_frame(model, with_spot, patch_size, clip, normaliser=normaliser)
    total = float(with_spot[sl].sum())
    return float(out["signal"][sl].sum()) / total, float((out["signal"][sl] + out["noise"][sl]).sum()) / total


def equivariance_error(net: torch.nn.Module, patches: torch.Tensor) -> float:
    """max |f(rot90 x) - rot90 f(x)| over the signal and noise outputs (normalised units)."""
    with torch.no_grad():
        out, rot = net(patches), net(torch.rot90(patches, 1, (-2, -1)))
    return max(float((rot[k] - torch.rot90(out[k], 1, (-2, -1))).abs().max()) for k in ("signal", "noise"))
