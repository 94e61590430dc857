"""Collect lensing runs (a sweep) into one comparison table and a panel figure.

    python run.py -m experiment=lensing_rdn,lensing_srresnet,lensing_srgan,lensing_esrgan
    python -m reports.lensing.compare outputs/multirun/<date_time>            # -> table + panels in that folder
    python -m reports.lensing.compare <folder> --out docs/figures --lenses 4

Every run folder below the given folder(s) that holds ``config_resolved.yaml`` and a ``metrics.csv`` with ``test/``
metrics is one run; runs of one experiment (several seeds) are averaged (mean ± standard deviation). The table has
two parts: image quality of every model beside bilinear and bicubic (fixed-range PSNR/SSIM, PSNR gain over
bicubic, DeepLense-style min-max PSNR, flux ratio) and the downstream tests -- substructure accuracy / AUC of
independent judges and the ring-fit Einstein-radius error -- for LR on its native grid (judged by a classifier
trained on LR), bicubic, each model's SR and HR (judged by a classifier trained on HR). The panel
figure shows test lenses: LR | bicubic | each model | HR, then each model's residual SR - HR.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lit_sr.domains.lensing.plots import panel_figure, test_examples
from lit_sr.domains.lensing.sim import LABEL_NAMES
from lit_sr.inference.run_folder import read_test_metrics

#: experiment name -> label, in table order
MODELS: dict[str, str] = {
    "lensing_rdn": "RDN",
    "lensing_srresnet": "SRResNet",
    "lensing_srgan": "SRGAN",
    "lensing_rrdb": "RRDB-PSNR",
    "lensing_esrgan": "ESRGAN",
}
BASELINES = (("bilinear", "bilinear"), ("bicubic", "bicubic"))
CLASS_NAMES = LABEL_NAMES


# ----------------------------------------------------------------------------- runs


def find_runs(*folders: Path) -> list[dict[str, Any]]:
    """Finished runs below ``folders``: dicts with ``dir``, ``experiment``, ``seed`` and ``metrics``."""
    from omegaconf import OmegaConf

    runs = []
    for folder in folders:
        for cfg_path in sorted(Path(folder).rglob("config_resolved.yaml")):
            run_dir = cfg_path.parent
            if not (run_dir / "metrics.csv").is_file():
                continue
            try:
                metrics = read_test_metrics(run_dir)
            except ValueError:
                continue
            cfg = OmegaConf.load(cfg_path)
            runs.append(
                {"dir": run_dir, "experiment": str(cfg.experiment_name), "seed": cfg.get("seed"), "metrics": metrics}
            )
    if not runs:
        raise FileNotFoundError(
            f"no finished run (config_resolved.yaml + metrics.csv with test/ metrics) below "
            f"{', '.join(str(f) for f in folders)}"
        )
    return runs


def by_experiment(runs: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, float]]]:
    """Test metrics grouped by experiment, in :data:`MODELS` order (other experiments after)."""
    groups: dict[str, list[dict[str, float]]] = {}
    for r in runs:
        groups.setdefault(r["experiment"], []).append(r["metrics"])
    order = [e for e in MODELS if e in groups] + sorted(e for e in groups if e not in MODELS)
    return {e: groups[e] for e in order}


# ----------------------------------------------------------------------------- table
def _stats(values: Sequence[float | None]) -> tuple[float, float, int] | None:
    """(mean, std, n) of the values, None when any is missing or not finite."""
    vals = [v for v in values if v is not None]
    if not vals or len(vals) != len(values) or not all(math.isfinite(v) for v in vals):
        return None
    a = np.asarray(vals, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0, len(a)


def _cell(values: Sequence[float | None], digits: int, bold: bool = False) -> str:
    st = _stats(values)
    if st is None:
        return "–"
    text = f"{st[0]:.{digits}f}" if st[2] == 1 else f"{st[0]:.{digits}f} ± {st[1]:.{digits}f}"
    return f"**{text}**" if bold else text


def _best(rows: Sequence[Sequence[float | None]], higher: bool) -> int | None:
    """Index of the row whose mean is best (None when no row has a value)."""
    means = [(st[0], i) for i, vals in enumerate(rows) if (st := _stats(vals)) is not None]
    if not means:
        return None
    return (max(means) if higher else min(means, key=lambda m: (m[0], m[1])))[1]


def _table(
    header: str,
    names: Sequence[str],
    columns: Sequence[tuple[list[list[float | None]], int, bool | None]],
    candidates: Sequence[bool],
) -> list[str]:
    """Markdown rows; in every column with a direction (higher True / lower False) the best mean among the
    ``candidates`` rows is bold, whether a model or a baseline."""
    best = []
    for values, _, higher in columns:
        if higher is None:
            best.append(None)
            continue
        idx = [i for i, c in enumerate(candidates) if c]
        b = _best([values[i] for i in idx], higher)
        best.append(None if b is None else idx[b])
    lines = [header, "|---" * (len(columns) + 1) + "|"]
    for r, name in enumerate(names):
        cells = [_cell(values[r], digits, bold=best[c] == r) for c, (values, digits, _) in enumerate(columns)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def comparison_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: image quality per model and baseline, then downstream metrics per image source.

    Baseline rows use all runs (every run evaluates the same test lenses, so their spread is 0 unless the data
    differ); model rows the runs of that experiment. Cells are mean ± std over runs (seeds); the best entry of
    each column is bold, model or baseline (downstream: HR, the truth, is not a candidate).
    """
    groups = by_experiment(runs)
    everything = [m for ms in groups.values() for m in ms]
    label = {e: MODELS.get(e, e) for e in groups}

    rows = [(name, everything, key) for key, name in BASELINES] + [
        (f"{label[e]}", ms, "sr") for e, ms in groups.items()
    ]

    def col(metric, rows_, digits, higher):
        return ([[metric(m, src) for m in ms] for _, ms, src in rows_], digits, higher)

    def psnr_key(src: str) -> str:
        return "psnr" if src == "sr" else f"{src}_psnr"

    quality = [
        col(lambda m, src: m.get(psnr_key(src)), rows, 2, True),
        col(lambda m, src: m.get(psnr_key(src), math.nan) - m.get("bicubic_psnr", math.nan), rows, 2, None),
        col(lambda m, src: m.get("ssim" if src == "sr" else f"{src}_ssim"), rows, 4, True),
        col(lambda m, src: m.get(f"psnr_minmax/{src}"), rows, 2, True),
        col(lambda m, src: m.get(f"flux_ratio/{src}"), rows, 3, None),
        ([[len(ms)] for _, ms, _ in rows], 0, None),
    ]
    lines = _table(
        "| image quality (test) | PSNR (dB) | Δ PSNR vs bicubic (dB) | SSIM | min-max PSNR (dB) | "
        "median flux ratio SR/HR | runs |",
        [r[0] for r in rows],
        quality,
        [True] * len(rows),
    )

    down = [
        ("LR, native grid (LR-trained judge)", everything, "lr"),
        ("bicubic (HR-trained judge)", everything, "bicubic"),
    ]
    down += [(f"SR {label[e]} (HR-trained judge)", ms, "sr") for e, ms in groups.items()]
    down += [("HR, truth (HR-trained judge)", everything, "hr")]
    downstream = [
        col(lambda m, src: m.get(f"acc/{src}"), down, 3, True),
        col(lambda m, src: m.get(f"auc/{src}"), down, 3, True),
    ]
    downstream += [col(lambda m, src, c=c: m.get(f"auc_{c}/{src}"), down, 3, True) for c in CLASS_NAMES]
    downstream += [
        col(lambda m, src: m.get(f"theta_e_abs_err_arcsec/{src}"), down, 4, False),
        col(lambda m, src: m.get(f"theta_e_bias_arcsec/{src}"), down, 4, None),
        col(lambda m, src: m.get(f"theta_e_fail_frac/{src}"), down, 3, None),
        col(lambda m, src: m.get(f"fd_judge/{src}"), down, 3, False),
    ]
    lines += [""] + _table(
        "| downstream (test) | accuracy | AUC macro | "
        + " | ".join(f"AUC {c}" for c in CLASS_NAMES)
        + " | θ_E median abs. error (arcsec) | θ_E median bias (arcsec) | ring fit failures "
        + "| judge-feature Fréchet distance to HR |",
        [r[0] for r in down],
        downstream,
        [r[2] != "hr" for r in down],
    )
    seeds = sorted({len(ms) for ms in groups.values()})
    lines += [
        "",
        f"Mean ± standard deviation over {'/'.join(map(str, seeds))} run(s) per experiment (seeds); "
        "baselines, LR and HR over all runs. Bold: the best entry of the column (downstream: HR excluded). "
        "Judges: substructure classifiers no model trained against (not the GANs' perceptual net); "
        "the LR row's judge has the HR judge's architecture and was trained on the LR images on their "
        "native grid; the ring fit runs on each image on its own grid. The Fréchet distance compares the HR "
        "judge's feature vectors of each source with those of HR over the test lenses (lower: closer to HR).",
    ]
    return "\n".join(lines)


def first_run_per_experiment(runs: Sequence[Mapping[str, Any]]) -> dict[str, Path]:
    """Label -> folder of the lowest-seed run of each experiment (table order)."""
    chosen: dict[str, Mapping[str, Any]] = {}
    for r in runs:
        e = r["experiment"]
        if e not in chosen or (r["seed"] or 0) < (chosen[e]["seed"] or 0):
            chosen[e] = r
    order = [e for e in MODELS if e in chosen] + sorted(e for e in chosen if e not in MODELS)
    return {MODELS.get(e, e): Path(chosen[e]["dir"]) for e in order}


def write_outputs(
    runs: Sequence[Mapping[str, Any]], out: Path, n_lenses: int = 2, prefix: str = "lensing_"
) -> list[Path]:
    """``<prefix>comparison.md`` (the table) and ``<prefix>panels.png`` in ``out``."""
    import matplotlib.pyplot as plt

    from lit_sr.utils.atomic import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    table_path = out / f"{prefix}comparison.md"
    with atomic_path(table_path) as tmp:
        Path(tmp).write_text(comparison_table(runs) + "\n")
    chosen = first_run_per_experiment(runs)
    fig = panel_figure(test_examples(chosen, n_lenses), list(chosen))
    fig_path = out / f"{prefix}panels.png"
    with atomic_path(fig_path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return [table_path, fig_path]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", type=Path, nargs="+", help="multirun folder(s) (or run folders) to collect")
    p.add_argument(
        "--out", type=Path, default=None, help="where to write the table and figure (default: the first folder)"
    )
    p.add_argument("--lenses", type=int, default=2, help="test lenses per class in the panel figure")
    a = p.parse_args(argv)
    runs = find_runs(*a.folders)
    print(comparison_table(runs))
    for path in write_outputs(runs, a.out or a.folders[0], a.lenses):
        print("wrote", path)


if __name__ == "__main__":
    main()
