"""Which compact bright signal a trained SAXS run keeps, by shape and energy, at its training patch size.

    python -m reports.saxs.spot_shape --frames data/saxs/saxs_test.h5 <run dir> [<run dir> ...]

One patch of the training size is cut from the first test frame's dim far field, at the position of
``frames_eval``'s spot test (:func:`lit_sr.domains.saxs.frames.spot_position`). Into it go either a 2x2
flat-topped spot of E keV per pixel (the spot test's shape) or a pixel-integrated Gaussian peak (sigma
0.7 px) of the same total energy, centred on the same pixel corner. The patch is normalised with the run's
own (unclipped) normaliser and passed once through the net. Printed: the fraction of the probe's energy
in the signal output (keV, the probe's pixels: the 2x2 block, or the 6x6 pixels about the Gaussian).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lit_sr.domains.saxs.frames import load_decomposition, read_test_frames, run_normaliser, spot_position
from lit_sr.domains.saxs.sim import gaussian_pixel_fractions

ENERGIES_KEV = (3.0e3, 3.0e4, 3.0e5, 3.0e6)
GAUSS_SIGMA_PX = 0.7


@torch.no_grad()
def kept_fraction(net: torch.nn.Module, normaliser, patch: np.ndarray, region: tuple[slice, slice]) -> float:
    """Fraction of ``patch``'s energy (keV) in ``region`` that the net's signal output keeps."""
    xn, state = normaliser(torch.from_numpy(patch)[None, None])
    signal = normaliser.denormalise(net(xn)["signal"], state)[0, 0].numpy()
    return float(signal[region].sum() / patch[region].sum())


def probes(base: np.ndarray, energy_kev: float) -> dict[str, tuple[np.ndarray, tuple[slice, slice]]]:
    """The 2x2 spot and the Gaussian peak of the same energy, both about the patch's central pixel corner."""
    h = base.shape[0] // 2
    square = base.copy()
    square[h - 1 : h + 1, h - 1 : h + 1] = energy_kev
    gauss = base.copy()
    first, f = gaussian_pixel_fractions(float(h), GAUSS_SIGMA_PX, base.shape[0])
    gauss[first : first + len(f), first : first + len(f)] += 4 * energy_kev * np.outer(f, f)
    return {
        "2x2 spot": (square, (slice(h - 1, h + 1), slice(h - 1, h + 1))),
        f"Gaussian sigma {GAUSS_SIGMA_PX} px": (gauss, (slice(h - 3, h + 3), slice(h - 3, h + 3))),
    }


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--frames", type=Path, required=True, help="SAXS test file (datasets full, signal; beam attrs)")
    a = p.parse_args(argv)
    frames = read_test_frames(a.frames)
    frame = frames["full"][0]
    r, c = spot_position(frame.shape, frames["centre"])
    for run in a.runs:
        module, cfg = load_decomposition(run)
        size = int(cfg.data.patch_size)
        h = size // 2
        base = np.array(frame[r + 1 - h : r + 1 + h, c + 1 - h : c + 1 + h], np.float32)  # spot pixels r, r + 1
        norm = run_normaliser(cfg, clip=False)
        for e in ENERGIES_KEV:
            kept = {name: kept_fraction(module.net, norm, *probe) for name, probe in probes(base, e).items()}
            print(f"{run}  {e:.0e} keV/px  " + "  ".join(f"{k}: {v:.4f}" for k, v in kept.items()))


if __name__ == "__main__":
    main()
