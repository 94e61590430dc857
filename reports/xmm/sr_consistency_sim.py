"""Does making xmm_sr consistent with the denoiser cost or help sub-pixel fidelity? Simulated fields, truth known.

    python -m reports.xmm.sr_consistency_sim --sim /work/main/data/xmm \\
        --pair /work/runs/c18/xmm_sr_s0/checkpoints/last.ckpt,/work/runs/c18/xmm_dn_s0/checkpoints/last.ckpt \\
        --out docs/xmm_sr_consistency_sim.json

For each simulated field (input 20 ks on the 4.1" grid; x2 truth = the simulator's noiseless 'EXPECTED' rate
of the 100 ks x2 target, PSF narrowed twice) and each (xmm_sr, xmm_dn) checkpoint pair:

* ``bicubic of the smoothed input``: exposure-corrected Gaussian smoothing, flux-conserving bicubic x2, the
  width tuned on the validation split as ``XMMEvaluator`` does (squared error to the truth in model space);
* ``xmm_sr``: the simulated SR net's x2 output (plain prediction, no self-ensemble);
* ``xmm_sr, block sums = xmm_dn``: each 2 x 2 block of it rescaled so the block sums equal the denoiser's
  output (:func:`lit_sr.inference.consistency.project_block_sums`);
* ``xmm_sr, RL onto xmm_dn (PSF forward model, n)``: Richardson-Lucy iterations toward
  block_sum(PSF-matching blur(y)) = the denoiser's output, from xmm_sr (mirror-padded blur, the scoring's
  forward model); n chosen on the validation split by the same criterion (PSNR to the truth);
* ``bicubic of xmm_dn``: the denoiser alone, flux-conserving bicubic x2 (what the SR adds beyond it);
* the two projections again onto the smoothed input instead of xmm_dn (the simulated xmm_dn loses to the
  smoothing on its own test split), the smoothing width tuned on the validation split against the input-grid
  truth in model space (the ``XMMEvaluator`` rule for ``smooth``).

Scores on the x2 grid over the pixels the target exposes: PSNR against the truth in model space (the data
transform: clip at max_rate, sqrt, range 1; accumulated over the split as ``XMMEvaluator`` does), Poisson
deviance of the truth's expected counts (``deviance_truth``: 0 for the truth) and of the noisy 100 ks x2
target counts (``deviance_target``); on the input grid the deviance of the 50 ks target counts against the
2 x 2 sums (``deviance_lr``, what the real-data scoring sees).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from lit_sr.domains.xmm import real
from lit_sr.domains.xmm.baselines import DEFAULT_SIGMA_GRID_PX, gaussian_smooth_rate
from lit_sr.domains.xmm.data import read_image_file
from lit_sr.domains.xmm.photometry import poisson_deviance
from lit_sr.domains.xmm.psf import sr_matching_kernel
from lit_sr.inference.consistency import blur_sum_operator, project_block_sums, richardson_lucy_consistent
from lit_sr.metrics.image import upsample_baseline

RL_GRID = (1, 2, 3, 5, 10, 20, 50)


def load_fields(root: Path, split: str, limit: int | None) -> list[dict[str, np.ndarray]]:
    files = sorted((root / split / "input_20ks").glob("field_*.fits"))[:limit]
    if not files:
        raise SystemExit(f"{root / split / 'input_20ks'}: no field_*.fits")
    out = []
    for f in files:
        a = read_image_file(f, optional=())
        hr = read_image_file(root / split / "target_100ks_x2" / f.name)
        lr = read_image_file(root / split / "target_50ks" / f.name)
        e_in = a["EXPOSURE"].astype(np.float64)
        e_hr = hr["EXPOSURE"].astype(np.float64)
        out.append(
            {
                "rate": np.where(e_in > 0, a["counts"] / np.maximum(e_in, 1e-30), 0.0),
                "exp_in": e_in,
                "counts_hr": hr["counts"].astype(np.float64),
                "exp_hr": e_hr,
                "truth_counts_hr": hr["EXPECTED"].astype(np.float64),
                "truth_hr": np.where(e_hr > 0, hr["EXPECTED"] / np.maximum(e_hr, 1e-30), 0.0),
                "counts_lr": lr["counts"].astype(np.float64),
                "exp_lr": lr["EXPOSURE"].astype(np.float64),
                "truth_lr": np.where(lr["EXPOSURE"] > 0, lr["EXPECTED"] / np.maximum(lr["EXPOSURE"], 1e-30), 0.0),
            }
        )
    return out


class Scores:
    """Sums over a split for one method."""

    def __init__(self, transform) -> None:
        self.transform = transform
        self.sse = self.n = self.dev_truth = self.dev_target = self.n_lr = self.dev_lr = 0.0

    def add(self, y: np.ndarray, f: dict[str, np.ndarray]) -> None:
        m = f["exp_hr"] > 0
        a = self.transform(torch.from_numpy(np.clip(y[m], 0, None))).numpy()
        b = self.transform(torch.from_numpy(f["truth_hr"][m])).numpy()
        self.sse += float(((a - b) ** 2).sum())
        self.n += int(m.sum())
        mu = np.maximum(np.clip(y[m], 0, None) * f["exp_hr"][m], 1e-6)
        self.dev_truth += float(poisson_deviance(f["truth_counts_hr"][m], mu).sum())
        self.dev_target += float(poisson_deviance(f["counts_hr"][m], mu).sum())
        ml = f["exp_lr"] > 0
        h, w = f["rate"].shape
        s = y.shape[0] // h
        lr = np.clip(y, 0, None).reshape(h, s, w, s).sum(axis=(1, 3))
        self.dev_lr += float(poisson_deviance(f["counts_lr"][ml], np.maximum(lr[ml] * f["exp_lr"][ml], 1e-6)).sum())
        self.n_lr += int(ml.sum())

    def result(self) -> dict[str, float]:
        return {
            "psnr_truth": 10 * math.log10(self.n / self.sse) if self.sse > 0 else float("inf"),
            "deviance_truth": self.dev_truth / self.n,
            "deviance_target": self.dev_target / self.n,
            "deviance_lr": self.dev_lr / self.n_lr,
        }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sim", required=True, help="simulated dataset folder (or its parent)")
    ap.add_argument("--pair", action="append", required=True, help="<xmm_sr ckpt>,<xmm_dn ckpt> (repeatable: seeds)")
    ap.add_argument("--limit", type=int, default=None, help="fields per split (default all)")
    ap.add_argument("--out", required=True, help="JSON file")
    args = ap.parse_args(argv)
    root = Path(args.sim)
    if not (root / "test").is_dir():
        found = sorted(root.glob("*/test"))
        if not found:
            raise SystemExit(f"{root}: no simulated dataset (<folder>/test/input_20ks)")
        root = found[0].parent
    cfg = json.loads((root / "xmm_dataset.json").read_text()) if (root / "xmm_dataset.json").is_file() else {}
    pixel = float(cfg.get("pixel_arcsec", cfg.get("config", {}).get("pixel_arcsec", 4.1)))
    fwhm = float(cfg.get("psf_fwhm_arcsec", cfg.get("config", {}).get("psf_fwhm_arcsec", 6.0)))
    beta = float(cfg.get("psf_beta", cfg.get("config", {}).get("psf_beta", 1.5)))
    kernel = torch.from_numpy(sr_matching_kernel(pixel, 2, fwhm, beta))
    A, At = blur_sum_operator(kernel, 2, padding="symmetric")
    splits = {s: load_fields(root, s, args.limit) for s in ("val", "test")}
    result: dict = {
        "sim": str(root),
        "pixel_arcsec": pixel,
        "psf": [fwhm, beta],
        "fields": {s: len(v) for s, v in splits.items()},
        "runs": {},
    }
    t0 = time.perf_counter()
    for spec in args.pair:
        sr_path, dn_path = spec.split(",")
        sr, dn = real.load_model(sr_path), real.load_model(dn_path)
        transform = sr.transform
        per_split: dict[str, dict] = {}
        sigma = sigma_lr = None
        for split, fields in splits.items():
            preds = []
            for i, f in enumerate(fields):
                y0 = real.model_rate_array(sr, f["rate"], f["exp_in"], where=f"{split} {i}")[0]
                d = real.model_rate_array(dn, f["rate"], f["exp_in"], where=f"{split} {i}")[0]
                preds.append((np.clip(y0, 0, None), np.clip(d, 0, None)))
            if sigma is None:  # tune the smoothing of the bicubic baseline on val (first split)
                curve = {}
                for sg in DEFAULT_SIGMA_GRID_PX:
                    sc = Scores(transform)
                    for f in fields:
                        sm = gaussian_smooth_rate(f["rate"], float(sg), f["exp_in"])
                        up = upsample_baseline(torch.from_numpy(np.asarray(sm))[None, None], 2, "bicubic", True)
                        sc.add(up[0, 0].numpy(), f)
                    curve[float(sg)] = sc.result()["psnr_truth"]
                sigma = max(curve, key=curve.get)
                per_split["bicubic_sigma_curve_val"] = curve
                lr_curve = {}
                for sg in DEFAULT_SIGMA_GRID_PX:
                    sse = n_px = 0.0
                    for f in fields:
                        m = f["exp_lr"] > 0
                        sm = np.asarray(gaussian_smooth_rate(f["rate"], float(sg), f["exp_in"]))
                        a = transform(torch.from_numpy(np.clip(sm[m], 0, None))).numpy()
                        b = transform(torch.from_numpy(f["truth_lr"][m])).numpy()
                        sse += float(((a - b) ** 2).sum())
                        n_px += int(m.sum())
                    lr_curve[float(sg)] = sse / n_px
                sigma_lr = min(lr_curve, key=lr_curve.get)
                per_split["smooth_lr_mse_curve_val"] = lr_curve
            methods: dict[str, Scores] = {}

            def add(name: str, y: np.ndarray, f: dict) -> None:
                methods.setdefault(name, Scores(transform)).add(y, f)

            for f, (y0, d) in zip(fields, preds):
                sm = gaussian_smooth_rate(f["rate"], sigma, f["exp_in"])
                add(
                    f"bicubic of the smoothed input ({sigma:g} px)",
                    upsample_baseline(torch.from_numpy(np.asarray(sm))[None, None], 2, "bicubic", True)[0, 0].numpy(),
                    f,
                )
                add(
                    "bicubic of xmm_dn",
                    upsample_baseline(torch.from_numpy(d)[None, None], 2, "bicubic", True)[0, 0].numpy(),
                    f,
                )
                add("xmm_sr", y0, f)
                y0t, dt = torch.from_numpy(y0), torch.from_numpy(d)
                add("xmm_sr, block sums = xmm_dn", project_block_sums(y0t, dt, 2).numpy(), f)
                w = torch.from_numpy((f["exp_in"] > 0).astype(np.float64))
                sm_lr = torch.from_numpy(
                    np.clip(np.asarray(gaussian_smooth_rate(f["rate"], sigma_lr, f["exp_in"]), np.float64), 0, None)
                )
                add(
                    f"xmm_sr, block sums = smoothed input ({sigma_lr:g} px)",
                    project_block_sums(y0t, sm_lr, 2).numpy(),
                    f,
                )
                for target, name in ((dt, "xmm_dn"), (sm_lr, f"smoothed input ({sigma_lr:g} px)")):
                    y = y0t
                    done = 0
                    for n in RL_GRID:
                        y = richardson_lucy_consistent(y, target, A, At, n - done, weight=w)
                        done = n
                        add(f"xmm_sr, RL onto {name} (PSF forward model, {n} it.)", y.numpy(), f)
            per_split[split] = {k: v.result() for k, v in methods.items()}
            print(split, spec, flush=True)
            for k, v in per_split[split].items():
                print(f"  {k}: " + ", ".join(f"{a} {b:.4f}" for a, b in v.items()), flush=True)
        rl = {
            n: per_split["val"][f"xmm_sr, RL onto xmm_dn (PSF forward model, {n} it.)"]["psnr_truth"] for n in RL_GRID
        }
        per_split["rl_iterations_val"] = max(rl, key=rl.get)
        per_split["bicubic_sigma_px"] = sigma
        per_split["smooth_lr_sigma_px"] = sigma_lr
        result["runs"][spec] = per_split
    result["seconds"] = time.perf_counter() - t0
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result["command"] = "python -m reports.xmm.sr_consistency_sim " + " ".join(
        argv if argv is not None else __import__("sys").argv[1:]
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
