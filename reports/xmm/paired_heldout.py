"""Paired held-out comparison of leave-one-out denoisers with the sim-tuned smoothing on one real ObsID.

    python -m reports.xmm.paired_heldout --data ../shared/data/xmm_real --obsid 0724270101 --sigma 2.5 \
        --out paired.json <run>/checkpoints/last.ckpt ...

For each checkpoint (a run whose ``data.leave_out`` is the ObsID; several joined by ``|``: the mean of their
predictions, an ensemble of fine-tunes such as seeds) and each of plain / 8-fold self-ensemble x
raw / flux-conserving output: the mean held-out Poisson deviance per exposed pixel, its difference to the
Gaussian smoothing of width ``--sigma`` px, and the standard error of that mean difference with the pixels
treated as independent (an underestimate where the errors are spatially correlated).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lit_sr.domains.xmm import real
from lit_sr.domains.xmm.photometry import poisson_deviance


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--obsid", required=True)
    ap.add_argument("--sigma", type=float, default=2.5, help="smoothing width (input pixels) to compare with")
    ap.add_argument("--out", required=True, help="JSON file")
    ap.add_argument("--ensemble-only", action="store_true", help="score only the 8-fold self-ensemble rows")
    ap.add_argument("checkpoints", nargs="+", help="checkpoint paths; 'a|b|c' averages the members' predictions")
    args = ap.parse_args(argv)
    (pair,) = real.load_pairs(args.data, only=[args.obsid])
    m = pair.mask
    k = pair.heldout_counts[m]

    def pixel_deviance(rate: np.ndarray) -> np.ndarray:
        mu = np.maximum(np.clip(rate[m], 0, None) * pair.heldout_exposure_s, real.MU_FLOOR)
        return poisson_deviance(k, mu)

    smooth = pixel_deviance(real.smoothed(pair, args.sigma))
    result: dict = {"obsid": args.obsid, f"smoothing_{args.sigma:g}px": float(smooth.mean()), "runs": {}}
    for ckpt in args.checkpoints:
        models = [real.load_model(member.strip()) for member in ckpt.split("|")]
        for member, model in zip(ckpt.split("|"), models):
            if model.leave_out != args.obsid:
                raise SystemExit(f"{member}: data.leave_out is {model.leave_out!r}, not {args.obsid!r}")
        for ensemble in (True,) if args.ensemble_only else (False, True):
            rate = np.mean([real.model_rate(model, pair, ensemble)[1] for model in models], axis=0)
            for flux in (False, True):
                diff = pixel_deviance(real.flux_conserving(rate, pair) if flux else rate) - smooth
                key = f"{ckpt}|ensemble={ensemble}|flux_conserving={flux}"
                result["runs"][key] = {
                    "deviance": float(diff.mean() + smooth.mean()),
                    "minus_smoothing": float(diff.mean()),
                    "paired_se_iid": float(diff.std() / np.sqrt(diff.size)),
                }
                print(key, result["runs"][key], flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
