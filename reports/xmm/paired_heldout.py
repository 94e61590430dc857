"""Paired held-out comparison of leave-one-out denoisers with the sim-tuned smoothing on real ObsIDs.

    python -m reports.xmm.paired_heldout --data ../shared/data/xmm_real --obsid 0724270101 --sigma 2.5 \
        --out paired.json <run>/checkpoints/last.ckpt ...
    python -m reports.xmm.paired_heldout --data ../shared/data/xmm_real --obsid all --sigma 2.5 \
        --out paired.json "<runs>/loo_{obsid}/checkpoints/last.ckpt"

For each ObsID (``--obsid`` repeatable, ``all``: every ObsID of the folder) and each checkpoint (a run whose
``data.leave_out`` is the ObsID, ``{obsid}`` in a path is replaced by it; several joined by ``|``: the mean of
their predictions, an ensemble of fine-tunes such as seeds, each member predicted once per call) and each of plain / 8-fold self-ensemble x
raw / flux-conserving output: the mean held-out Poisson deviance per exposed pixel, its difference to the
Gaussian smoothing of width ``--sigma`` px, and the standard error of that mean difference with the pixels
treated as independent (an underestimate where the errors are spatially correlated), and that difference split
by the count level (the smoothing's expected held-out counts per pixel, bins ``COUNT_BINS``): each bin's share
of the mean, so the shares add up to it. Where the model wins and where it loses.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lit_sr.domains.xmm import real
from lit_sr.domains.xmm.photometry import poisson_deviance

COUNT_BINS = (0.0, 1.0, 3.0, 10.0, np.inf)  # expected held-out counts per pixel under the smoothing


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--obsid", action="append", required=True, help="repeatable; 'all': every ObsID")
    ap.add_argument("--sigma", type=float, default=2.5, help="smoothing width (input pixels) to compare with")
    ap.add_argument("--out", required=True, help="JSON file")
    ap.add_argument("--ensemble-only", action="store_true", help="score only the 8-fold self-ensemble rows")
    ap.add_argument("checkpoints", nargs="+", help="checkpoint paths; 'a|b|c' averages the members' predictions")
    args = ap.parse_args(argv)
    only = None if "all" in args.obsid else args.obsid
    results = {}
    for pair in real.load_pairs(args.data, only=only):
        results[pair.obsid] = paired_scores(pair, args.checkpoints, args.sigma, args.ensemble_only)
    result = results[args.obsid[0]] if len(results) == 1 and only else {"obsids": results}
    Path(args.out).write_text(json.dumps(result, indent=1))
    return result


def paired_scores(pair: real.RealPair, checkpoints: list[str], sigma: float, ensemble_only: bool) -> dict:
    """The scores of the module doc for one pair."""
    m = pair.mask
    k = pair.heldout_counts[m]

    def pixel_deviance(rate: np.ndarray) -> np.ndarray:
        mu = np.maximum(np.clip(rate[m], 0, None) * pair.heldout_exposure_s, real.MU_FLOOR)
        return poisson_deviance(k, mu)

    smooth_rate = real.smoothed(pair, sigma)
    smooth = pixel_deviance(smooth_rate)
    level = smooth_rate[m] * pair.heldout_exposure_s
    bins = [(lo, hi, (level >= lo) & (level < hi)) for lo, hi in zip(COUNT_BINS[:-1], COUNT_BINS[1:])]
    result: dict = {
        "obsid": pair.obsid,
        f"smoothing_{sigma:g}px": float(smooth.mean()),
        "pixels_per_count_bin": {f"[{lo:g}, {hi:g})": int(b.sum()) for lo, hi, b in bins},
        "runs": {},
    }
    rates: dict[tuple[str, bool], np.ndarray] = {}  # one prediction per member, shared by the rows it is in

    def member_rate(member: str, ensemble: bool) -> np.ndarray:
        if (member, ensemble) not in rates:
            model = real.load_model(member)
            if model.leave_out != pair.obsid:
                raise SystemExit(f"{member}: data.leave_out is {model.leave_out!r}, not {pair.obsid!r}")
            rates[member, ensemble] = real.model_rate(model, pair, ensemble)[1]
        return rates[member, ensemble]

    for ckpt in checkpoints:
        members = [member.strip().format(obsid=pair.obsid) for member in ckpt.split("|")]
        for ensemble in (True,) if ensemble_only else (False, True):
            rate = np.mean([member_rate(member, ensemble) for member in members], axis=0)
            for flux in (False, True):
                diff = pixel_deviance(real.flux_conserving(rate, pair) if flux else rate) - smooth
                key = f"{ckpt}|ensemble={ensemble}|flux_conserving={flux}"
                result["runs"][key] = {
                    "deviance": float(diff.mean() + smooth.mean()),
                    "minus_smoothing": float(diff.mean()),
                    "paired_se_iid": float(diff.std() / np.sqrt(diff.size)),
                    "minus_smoothing_by_count_bin": {
                        f"[{lo:g}, {hi:g})": float(diff[b].sum() / diff.size) for lo, hi, b in bins
                    },
                }
                print(pair.obsid, key, result["runs"][key], flush=True)
    return result


if __name__ == "__main__":
    main()
