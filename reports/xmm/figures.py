"""Every figure and table of the X-ray README section, regenerated from runs on the reader's machine.

    python -m reports.xmm.figures --out docs/figures               # 3 experiments x seeds 0, 1, 2
    python -m reports.xmm.figures --out docs/figures --seeds 0     # one seed

For each experiment (xmm_dn, xmm_sr, xmm_srgan) and seed it runs ``python run.py experiment=<e> seed=<s>``
(train, then test of the best checkpoint on the held-out simulated test split; a finished run folder is
reused), then ``mode=predict predict=fits`` of the seed-0 checkpoint on every test-split input FITS (the
hallucination-map summaries) and draws the panel input | model | target | LR consistency | ensemble spread
of one test field from the written FITS files. Outputs: ``xmm_results.md`` (mean +- std over seeds, wall
times) and ``xmm_panel_<experiment>.png`` in ``--out``; runs go to ``<root>/outputs/xmm_figures``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from lit_sr.domains.xmm.plots import panel_figure
from lit_sr.inference.run_folder import best_checkpoint, read_test_metrics
from reports.runs import REPO, run_py, write_text

EXPERIMENTS = ("xmm_dn", "xmm_sr", "xmm_srgan")


# ------------------------------------------------------------------------------------------------ runs


def train_and_test(experiment: str, seed: int, work: Path, root: Path, extra: Sequence[str] = ()) -> dict:
    """Train + test one experiment/seed (reused if done); returns {"metrics", "seconds", "run_dir"}."""
    run_dir = work / f"{experiment}_seed{seed}"
    done = run_dir / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    seconds = run_py([f"experiment={experiment}", f"seed={seed}", f"paths.root_dir={root}", *extra], run_dir)
    result = {"metrics": read_test_metrics(run_dir), "seconds": seconds, "run_dir": str(run_dir)}
    done.write_text(json.dumps(result, indent=1))
    return result


def predict_test_split(experiment: str, ckpt: Path, inputs: Path, work: Path, root: Path) -> tuple[Path, float]:
    """``mode=predict predict=fits`` of every test input; returns (output folder, wall time)."""
    out_dir = work / f"{experiment}_predict"
    if (out_dir / "done").is_file():
        return out_dir, float((out_dir / "done").read_text())
    seconds = run_py(
        [
            f"experiment={experiment}",
            "mode=predict",
            f"ckpt_path={ckpt}",
            "predict=fits",
            f"predict.input={inputs}",
            f"paths.root_dir={root}",
        ],
        out_dir,
    )
    (out_dir / "done").write_text(f"{seconds:.1f}")
    return out_dir, seconds


def prediction_summaries(out_dir: Path) -> dict[str, float]:
    """Mean over the written FITS of their LR-consistency and self-ensemble header cards."""
    from astropy.io import fits

    cards = {"LRDEVRAT": [], "LRDEVFRA": [], "LRDEVFEX": [], "ENSRELSD": []}
    for path in sorted(out_dir.glob("*.fits")):
        hdr = fits.getheader(path)
        for k in cards:
            if k in hdr and hdr[k] >= 0:
                cards[k].append(float(hdr[k]))
    return {k: float(np.mean(v)) for k, v in cards.items() if v} | {"n_files": float(len(list(out_dir.glob("*.fits"))))}


# ------------------------------------------------------------------------------------------------ panel


def brightest_field(root: Path, split: str = "test") -> str:
    """Name of the test field with the brightest point source inside the image (a telling panel)."""
    from astropy.io import fits

    best, name = -1.0, ""
    for path in sorted((root / split / "sources").glob("*.fits")):
        t = fits.getdata(path, "SOURCES")
        kind = np.char.strip(np.asarray(t["KIND"]).astype(str))
        inside = (kind == "point") & np.asarray(t["IN_FIELD"], bool)
        if inside.any() and float(t["RATE"][inside].max()) > best:
            best, name = float(t["RATE"][inside].max()), path.name
    return name


# ------------------------------------------------------------------------------------------------ studies

POISSON = [
    "model.loss._target_=lit_sr.losses.combined.PhysicalSpaceLoss",
    "~model.loss.kind",
    "+model.loss.loss._target_=lit_sr.losses.pixel.PixelLoss",
    "+model.loss.loss.kind=poisson",
    "+model.loss.transform=${data.transform}",
]
# Pixel-loss comparison on xmm_dn (uniform crops, seed 0): the paper's L1, the Poisson likelihood of the count
# rate, and the squared error of the scaled images.
LOSS_STUDY = {
    "L1 (paper)": ["model.loss.kind=l1", "data.crop_bias=0"],
    "Poisson NLL (count rate)": [*POISSON, "data.crop_bias=0"],
    "squared error": ["model.loss.kind=mse", "data.crop_bias=0"],
}


def psnr_ceilings(data_root: Path, task: str, max_rate: float = 2e-3, stretch: str = "sqrt") -> dict[str, float]:
    """PSNR (data range 1, model space) on the test split of (a) the noiseless target rate and (b) the best
    possible prediction of the *noisy* target with perfect knowledge of the rates, E[scaled(k / exposure)] for
    k ~ Poisson(expected counts): the ceiling of a squared-error-trained model (it exceeds (a) because the
    square-root stretch of Poisson counts has a mean below the stretch of the mean)."""
    import torch
    from astropy.io import fits
    from scipy import stats

    from lit_sr.data.transforms import StretchTransform

    t = StretchTransform(max_rate, stretch)
    folder = data_root / "test" / ("target_50ks" if task == "dn" else "target_100ks_x2")
    se = {"truth": 0.0, "bayes": 0.0}
    n = 0
    k = np.arange(0, 400, dtype=np.float64)[:, None]
    for path in sorted(folder.glob("*.fits")):
        with fits.open(path) as h:
            counts, expo, mu = (h[x].data.astype(np.float64).ravel() for x in (0, "EXPOSURE", "EXPECTED"))
        live = expo > 0
        rate = np.zeros_like(mu)
        rate[live] = mu[live] / expo[live]
        observed = np.zeros_like(mu)
        observed[live] = counts[live] / expo[live]
        y_obs = t(torch.from_numpy(observed)).numpy()
        bayes = np.zeros_like(mu)
        pmf = stats.poisson.pmf(k, mu[live][None])
        bayes[live] = (pmf * t(torch.from_numpy(k / expo[live][None])).numpy()).sum(axis=0)
        se["truth"] += float(((t(torch.from_numpy(rate)).numpy() - y_obs) ** 2).sum())
        se["bayes"] += float(((bayes - y_obs) ** 2).sum())
        n += mu.size
    return {k_: 10.0 * math.log10(n / v) for k_, v in se.items()}


def losses_markdown(runs: dict[str, dict]) -> str:
    keys = [
        ("PSNR vs truth (dB)", "psnr_truth/model", "{:.2f}"),
        ("input PSNR vs truth", "psnr_truth/input", "{:.2f}"),
        ("flux median", "flux_median/model", "{:.2f}"),
        ("completeness", "completeness/model", "{:.3f}"),
        ("false / field", "false_per_field/model", "{:.2f}"),
        ('FWHM (")', "fwhm_arcsec/model", "{:.1f}"),
        ("LR consistency", "lr_consistency/model", "{:.2f}"),
        ("min", None, "{:.1f}"),
    ]
    lines = [
        "| xmm_dn, seed 0, uniform crops | " + " | ".join(k for k, _, _ in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for name, r in runs.items():
        m = r["metrics"]
        cells = [
            fmt.format(r["seconds"] / 60) if key is None else (fmt.format(m[key]) if key in m else "")
            for _, key, fmt in keys
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ table

#: columns of the tables: the observed input, the classical baselines, the model, then the references
SOURCES = ("input", "smooth", "bicubic", "bicubic_smooth", "model", "target", "truth")
HEADERS = {
    "input": "input",
    "smooth": "smoothed input (σ tuned)",
    "bicubic": "bicubic",
    "bicubic_smooth": "bicubic of smoothed input (σ tuned)",
    "model": "model",
    "target": "target (noisy)",
    "truth": "truth (noiseless)",
}
REFERENCES = ("target", "truth")  # not competitors: never bold
ROWS = [  # (label, metric key template, format, best: "max" | "min" | "one" | None)
    ("**PSNR vs noiseless truth (dB)**", "psnr_truth/{}", "{:.2f}", "max"),
    ("**SSIM vs noiseless truth**", "ssim_truth/{}", "{:.3f}", "max"),
    ("PSNR vs noisy target (dB, secondary)", "psnr_noisy_target/{}", "{:.2f}", "max"),
    ("Poisson deviance vs target counts / px", "deviance/{}", "{:.3f}", "min"),
    ("flux recovered / true (median, own-FWHM aperture)", "flux_median/{}", "{:.3f}", "one"),
    ("flux scatter (16-84 %/2)", "flux_scatter/{}", "{:.3f}", "min"),
    ("aperture radius (arcsec)", "flux_radius_arcsec/{}", "{:.1f}", None),
    ("**completeness at the input's false-detection rate**", "completeness_at_input_fdr/{}", "{:.3f}", "max"),
    ("threshold needed for that rate (sigma)", "threshold_at_input_fdr/{}", "{:.2f}", None),
    ("completeness at 5 sigma (>= 5e-4 ct/s)", "completeness/{}", "{:.3f}", None),
    ("false detections / field at 5 sigma", "false_per_field/{}", "{:.2f}", None),
    ("FWHM of bright point sources (arcsec)", "fwhm_arcsec/{}", "{:.2f}", None),
    ("LR consistency (deviance / expectation)", "lr_consistency/{}", "{:.3f}", "one"),
]


def _value(metrics: dict[str, float], template: str, source: str) -> float | None:
    return metrics.get(template.format(source))


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None


def _cell(values: list[float], fmt: str) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return ""
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(float(np.mean(values)))} ± {fmt.format(float(np.std(values, ddof=1)))}"


def _best(means: dict[str, float | None], rule: str | None) -> str | None:
    """The competitor (model or baseline, not a reference) with the best mean under ``rule``."""
    cand = {s: v for s, v in means.items() if v is not None and s not in REFERENCES}
    if rule is None or len(cand) < 2:
        return None
    key = {"max": lambda s: -cand[s], "min": lambda s: cand[s], "one": lambda s: abs(cand[s] - 1.0)}[rule]
    return min(cand, key=key)


def verdict(metrics: list[dict[str, float]]) -> str:
    """First sentence of a section: how the model compares with the strongest baseline on the primary PSNR,
    the photometry and the matched-rate completeness (means over seeds)."""
    baselines = [s for s in SOURCES if s not in ("model", *REFERENCES) and any(f"psnr_truth/{s}" in m for m in metrics)]
    if not baselines or _mean([m.get("psnr_truth/model") for m in metrics]) is None:
        return ""
    psnr = {s: _mean([m.get(f"psnr_truth/{s}") for m in metrics]) for s in (*baselines, "model")}
    best = max(baselines, key=lambda s: psnr[s] if psnr[s] is not None else -math.inf)
    gap = psnr["model"] - psnr[best]
    head = (
        f"The model **loses** to the {HEADERS[best]} baseline on PSNR against the noiseless truth "
        f"({psnr['model']:.2f} vs {psnr[best]:.2f} dB, {gap:+.2f} dB)"
        if gap < 0
        else f"The model beats the strongest baseline ({HEADERS[best]}) on PSNR against the noiseless truth "
        f"({psnr['model']:.2f} vs {psnr[best]:.2f} dB, {gap:+.2f} dB)"
    )
    comp = {
        s: _mean([m.get(f"completeness_at_input_fdr/{s}") for m in metrics]) for s in ("input", *baselines, "model")
    }
    known = {s: v for s, v in comp.items() if v is not None and s != "model"}
    if comp["model"] is not None and known:
        best_c = max(known, key=known.get)
        word = "below" if comp["model"] < known[best_c] else "above"
        head += (
            f"; at the input's false-detection rate its completeness is {comp['model']:.3f}, {word} the "
            f"best other product's ({HEADERS[best_c]}, {known[best_c]:.3f})"
        )
    return head + "."


def results_markdown(results: dict[str, list[dict]], predictions: dict[str, dict], seeds: Sequence[int]) -> str:
    lines = [f"<!-- generated by python -m reports.xmm.figures (seeds {', '.join(map(str, seeds))}) -->", ""]
    for exp, runs in results.items():
        metrics = [r["metrics"] for r in runs]
        lines += [f"### {exp}", "", verdict(metrics), ""]
        tuned = [
            (k[len("tuned/") :], _cell([m.get(k) for m in metrics], "{:.2f}"))
            for k in sorted({k for m in metrics for k in m if k.startswith("tuned/")})
        ]
        if tuned:
            lines += [
                'Baseline widths tuned on the validation split (input pixels of 4.1"): '
                + ", ".join(f"`{k}` = {v}" for k, v in tuned)
                + ".",
                "",
            ]
        lines += (
            [
                f"Train + test wall time {_cell([r['seconds'] / 60 for r in runs], '{:.1f}')} min per run "
                "(shared machine).",
                "",
            ]
            if all("seconds" in r for r in runs)
            else []
        )
        sources = [s for s in SOURCES if any(_value(m, t, s) is not None for m in metrics for _, t, _, _ in ROWS)]
        lines.append("| metric | " + " | ".join(HEADERS[s] for s in sources) + " |")
        lines.append("|---|" + "---|" * len(sources))
        for label, template, fmt, rule in ROWS:
            means = {s: _mean([_value(m, template, s) for m in metrics]) for s in sources}
            best = _best(means, rule)
            cells = []
            for s in sources:
                c = _cell([_value(m, template, s) for m in metrics], fmt)
                if (
                    c
                    and template == "completeness_at_input_fdr/{}"
                    and any(
                        m.get(f"threshold_at_input_fdr/{s}", math.inf) <= m.get("detection_floor", -math.inf) + 1e-9
                        for m in metrics
                    )
                ):
                    c = "≥ " + c  # the curve reached its floor with fewer false detections: a lower bound
                cells.append(f"**{c}**" if c and s == best else c)
            if any(cells):
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
        m0 = metrics[0]
        if m0.get("flux_n/model") is not None:
            lines += [
                "",
                f"Sources per test split: {m0['flux_n/model']:.0f} point sources for flux (>= 1e-3 ct/s), "
                f"{m0.get('completeness_n/model', float('nan')):.0f} for completeness, "
                f"{m0.get('fwhm_n/model', float('nan')):.0f} for FWHM (isolated, >= 2e-3 ct/s); the "
                f"input's false-detection rate at 5 sigma: "
                f"{_cell([m.get('input_false_per_field') for m in metrics], '{:.2f}')} per field.",
            ]
        if exp in predictions and "ceilings" in predictions[exp]:
            c = predictions[exp]["ceilings"]
            lines += [
                "",
                f"PSNR vs the noisy target of the noiseless target rate: {c['truth']:.2f} dB; ceiling of a "
                f"squared-error model on that secondary metric (perfect knowledge of the rates, "
                f"E[scaled noisy target]): {c['bayes']:.2f} dB.",
            ]
        if exp in predictions and "seconds" in predictions[exp]:
            p = predictions[exp]
            lines += [
                "",
                f"`mode=predict predict=fits` on the {p.get('n_files', 0):.0f} test-split input FITS "
                f"(seed-0 checkpoint, {p['seconds']:.0f} s): mean LR consistency "
                f"{p.get('LRDEVRAT', float('nan')):.3f}, pixels above deviance 9: "
                f"{p.get('LRDEVFRA', float('nan')):.4f} (expected {p.get('LRDEVFEX', float('nan')):.4f}), "
                f"self-ensemble relative std {p.get('ENSRELSD', float('nan')):.3f}.",
            ]
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/figures", help="folder of the figures and xmm_results.md")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS))
    parser.add_argument(
        "--root",
        default=os.environ.get("LIT_SR_ROOT", str(REPO)),
        help="paths.root_dir of the runs (data and outputs); default $LIT_SR_ROOT or the repository",
    )
    parser.add_argument("--extra", nargs="*", default=[], help="extra overrides for every training run")
    parser.add_argument("--no-loss-study", action="store_true", help="skip the xmm_dn pixel-loss comparison")
    args = parser.parse_args(argv)
    out, root = Path(args.out), Path(args.root)
    out.mkdir(parents=True, exist_ok=True)
    work = root / "outputs" / "xmm_figures"
    results: dict[str, list[dict]] = {}
    predictions: dict[str, dict] = {}
    for exp in args.experiments:
        results[exp] = []
        for seed in args.seeds:
            r = train_and_test(exp, seed, work, root, args.extra)
            print(
                f"{exp} seed {seed}: psnr {r['metrics'].get('psnr', float('nan')):.2f} dB in {r['seconds'] / 60:.1f} min",
                flush=True,
            )
            results[exp].append(r)
        # the data folder of the run (simulated default) -> the test inputs and targets
        from lit_sr.domains.xmm.data import XMMDataModule

        task = "dn" if exp == "xmm_dn" else "sr"
        dm = XMMDataModule(data_dir=str(root / "data" / "xmm"), task=task)
        data_root, tags = dm.default_root, dm.folder_tags()
        ckpt = best_checkpoint(Path(results[exp][0]["run_dir"]))
        pred_dir, seconds = predict_test_split(exp, ckpt, data_root / "test" / tags["input"], work, root)
        predictions[exp] = prediction_summaries(pred_dir) | {"seconds": seconds}
        predictions[exp]["ceilings"] = psnr_ceilings(data_root, task, dm.max_rate)
        field = brightest_field(data_root)
        stem = field[: -len(".fits")]
        panel_figure(
            data_root / "test" / tags["input"] / field,
            data_root / "test" / tags[task] / field,
            pred_dir / f"{stem}_{task}.fits",
            f"{exp}: test {stem} (mode=predict on the FITS)",
            out / f"xmm_panel_{exp}.png",
        )
    md = results_markdown(results, predictions, args.seeds)
    if not args.no_loss_study:
        study = {
            name: train_and_test("xmm_dn", 0, work / "loss_study" / name.split()[0].lower(), root, overrides)
            for name, overrides in LOSS_STUDY.items()
        }
        md += "\n### Pixel losses (xmm_dn)\n\n" + losses_markdown(study) + "\n"
    write_text(out / "xmm_results.md", md)
    print(md)


if __name__ == "__main__":
    main()
