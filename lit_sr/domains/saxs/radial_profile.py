"""Azimuthally averaged radial profile I(r) of SAXS frames, the quantity a SAXS analysis fits.

Background removal is judged where it matters to the physics: the profile of the cleaned frame
against the profile of the true signal, bin by bin, and the largest radius up to which it stays
within a tolerance (the usable scattering-angle range). Radii are in pixels from the beam centre
(pixel centres at i + 0.5), intensities in the frame's units (keV per pixel).

``python -m lit_sr.domains.saxs.radial_profile truth.h5 cleaned.h5`` prints the table for a simulated
file (datasets ``full`` and ``signal``) and the output of ``mode=predict predict.dataset=full``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np

from lit_sr.data.validate import DataFileError, require_dataset, require_file


def log_radial_edges(r_min: float, r_max: float, n_bins: int = 24) -> np.ndarray:
    """Logarithmically spaced bin edges (px), rounded to whole pixels and de-duplicated."""
    if not 0 < r_min < r_max:
        raise ValueError(f"need 0 < r_min < r_max, got r_min={r_min}, r_max={r_max}")
    return np.unique(np.round(np.geomspace(r_min, r_max, n_bins + 1)))


def radial_profile(
    frames: np.ndarray, centre: Sequence[float], edges: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Mean intensity per radial bin.

    frames [..., H, W]; centre (row, col) in px; edges [K + 1] in px. Returns (profile [..., K],
    pixels per bin [K]); a bin without pixels has profile NaN.
    """
    frames = np.asarray(frames, dtype=np.float64)
    h, w = frames.shape[-2:]
    y, x = np.mgrid[:h, :w] + 0.5
    r = np.hypot(y - centre[0], x - centre[1])
    edges = np.asarray(edges, dtype=np.float64)
    ok = (r >= edges[0]) & (r < edges[-1])
    idx = np.digitize(r[ok], edges) - 1  # bin index 0..K-1
    k = len(edges) - 1
    counts = np.bincount(idx, minlength=k)
    flat = frames.reshape(-1, h * w)[:, ok.ravel()]
    sums = np.stack([np.bincount(idx, weights=f, minlength=k) for f in flat])
    with np.errstate(invalid="ignore", divide="ignore"):
        prof = sums / counts
    return prof.reshape(*frames.shape[:-2], k), counts


def usable_radius(estimate: np.ndarray, truth: np.ndarray, edges: Sequence[float], tolerance: float = 0.1) -> float:
    """Outer edge (px) of the last bin of the leading run of bins whose relative profile error is
    within ``tolerance``, counted from the innermost bin; ``edges[0]`` if the first bin fails."""
    rel = np.abs(np.asarray(estimate) / np.asarray(truth) - 1.0)
    bad = ~(rel <= tolerance)  # NaN counts as bad
    n_ok = int(np.argmax(bad)) if bad.any() else len(rel)
    return float(edges[n_ok])


def _read(path: str | Path, name: str) -> np.ndarray:
    import h5py

    with h5py.File(require_file(path, "SAXS frames"), "r") as h5:
        return require_dataset(h5, path, name, ndim=3)[:]


def profile_table(
    truth_file: str | Path, cleaned_file: str | Path, dataset: str = "full", n_bins: int = 24, tolerance: float = 0.1
) -> str:
    """Markdown table of relative profile errors of the raw input, a median filter and the cleaned
    frames against the true signal (all frames averaged), and each estimator's usable radius."""
    import h5py
    import torch

    from lit_sr.metrics.background import median_hit_filter

    full, truth = _read(truth_file, dataset), _read(truth_file, "signal")
    cleaned = _read(cleaned_file, f"{dataset}_signal")
    if cleaned.shape != truth.shape:
        raise DataFileError(cleaned_file, f"{dataset}_signal", f"expected shape {truth.shape}, found {cleaned.shape}")
    with h5py.File(truth_file, "r") as h5:
        if "beam_center" not in h5.attrs:
            raise DataFileError(truth_file, None, "expected a 'beam_center' attribute (row, col in px)")
        centre = tuple(float(c) for c in h5.attrs["beam_center"])
        # the beam-stop disc (+2 px for the per-shot jitter of the beam) holds no signal
        r_stop = float(h5.attrs.get("beamstop_radius_px", 0.0)) + 2.0
    median = np.stack([median_hit_filter(torch.as_tensor(f)[None, None])[0][0, 0].numpy() for f in full])
    h, w = truth.shape[-2:]
    r_max = float(np.hypot(max(centre[0], h - centre[0]), max(centre[1], w - centre[1])))
    edges = log_radial_edges(max(r_stop, 1.0), r_max, n_bins)
    prof = {
        name: radial_profile(a, centre, edges)[0].mean(axis=0)
        for name, a in (("truth", truth), ("input", full), ("median", median), ("cleaned", cleaned))
    }
    lines = ["| r (px) | true I(r) (keV/px) | input | median filter | cleaned |", "|---|---|---|---|---|"]
    for i in range(len(edges) - 1):
        t = prof["truth"][i]
        cells = [f"{prof[n][i] / t - 1:+.3f}" for n in ("input", "median", "cleaned")]
        lines.append(f"| {edges[i]:.0f}-{edges[i + 1]:.0f} | {t:.3g} | " + " | ".join(cells) + " |")
    radii = [f"{usable_radius(prof[n], prof['truth'], edges, tolerance):.0f}" for n in ("input", "median", "cleaned")]
    lines.append(f"| usable radius, error ≤ {tolerance:.0%} (px) | | " + " | ".join(radii) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("truth_file", help="HDF5 with the noisy frames and their true 'signal'")
    p.add_argument("cleaned_file", help="output of mode=predict on the same frames")
    p.add_argument("--dataset", default="full")
    p.add_argument("--bins", type=int, default=24)
    p.add_argument("--tolerance", type=float, default=0.1)
    a = p.parse_args(argv)
    print(profile_table(a.truth_file, a.cleaned_file, a.dataset, a.bins, a.tolerance))


if __name__ == "__main__":
    main()
