"""The real/real denominators of the galaxy ratios on a run's held-out test split, split by split.

    python -m lit_sr.domains.galaxy.denominators <run folder of experiment=galaxy_progan> [--n-splits 10]

Every galaxy number is a ratio: distance(generated, real_a) / distance(real_b, real_a). The denominator
needs no generator: this command measures it on the run's test split (its data file and split, its
frozen classifier for the Frechet distance) for ``n_splits`` random real/real splits, and prints the
mean, the standard deviation over the splits and the range, overall and per class: how far a ratio
with a one-split denominator could move by the luck of that split.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import torch

from lit_sr.domains.galaxy.morphology import STATISTICS, draw_splits, morphology_statistics
from lit_sr.domains.galaxy.plots import STAT_LABELS
from lit_sr.metrics.stats import frechet_distance, wasserstein_1d


def test_rows(n: int, split: Sequence[float], split_seed: int) -> np.ndarray:
    """Rows of the test split (the data module's permutation: train, val, test in order)."""
    perm = np.random.default_rng(split_seed).permutation(n)
    return np.sort(perm[int(round(split[0] * n)) + int(round(split[1] * n)) :])


def denominators(run_dir: Path, n_splits: int = 10, seed: int = 0) -> str:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(run_dir) / "config_resolved.yaml")
    data_dir = Path(cfg.data.data_dir)
    files = sorted(data_dir.glob("galaxy_*.h5")) if not cfg.data.get("file") else [Path(cfg.data.file)]
    if not files:
        raise FileNotFoundError(f"{data_dir}: no galaxy_*.h5 data file (run python run.py experiment=galaxy_progan)")
    with h5py.File(files[0], "r") as h5:
        n = h5["label"].shape[0]
        rows = test_rows(n, list(cfg.data.split), int(cfg.data.get("split_seed", 0)))
        images, labels = h5["image"][rows].astype(np.float32), h5["label"][rows].astype(np.int64)
    stats, _ = morphology_statistics(images, float(cfg.data.pixel_scale_arcsec))
    ev = instantiate(cfg.model.evaluator, _convert_="all")
    with torch.no_grad():
        feats = torch.cat(
            [ev._features(torch.from_numpy(images[i : i + 256])[:, None]) for i in range(0, len(images), 256)]
        ).numpy()
    names = list(cfg.data.class_names)
    groups = [("all", np.arange(len(labels)))] + [(c, np.flatnonzero(labels == k)) for k, c in enumerate(names)]
    rng = np.random.default_rng(seed)
    header = ("| real/real denominator | " + " | ".join(g for g, _ in groups) + " |", "|---|" + "---:|" * len(groups))
    values: dict[str, list[str]] = {s: [] for s in (*STATISTICS, "fd")}
    for _, idx in groups:
        sp = draw_splits(idx, idx, n_splits, rng)
        for s in (*STATISTICS, "fd"):
            if s == "fd":
                d = np.array([frechet_distance(feats[b], feats[a]) for a, b in zip(sp.a, sp.b)])
            else:
                d = np.array([wasserstein_1d(stats[s][b], stats[s][a]) for a, b in zip(sp.a, sp.b)])
            digits = 3 if abs(d.mean()) < 10 else 0
            values[s].append(
                f"{d.mean():.{digits}f} ± {d.std(ddof=1):.{digits}f} "
                f"({d.std(ddof=1) / d.mean():.0%}; {d.min():.{digits}f}–{d.max():.{digits}f})"
            )
    lines = [
        f"Real/real denominators on the test split of `{files[0].name}` ({len(labels)} stamps), "
        f"{n_splits} random splits into halves of m stamps: mean ± std over the splits (relative std; "
        "min–max).",
        "",
        *header,
    ]
    for s in STATISTICS:
        label = STAT_LABELS[s].replace("|", "\\|")  # a literal | would end the markdown cell
        lines.append(f"| W1(real_b, real_a), {label} | " + " | ".join(values[s]) + " |")
    lines.append("| FD(real_b, real_a), classifier features | " + " | ".join(values["fd"]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--n-splits", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(denominators(a.run_dir, a.n_splits, a.seed))


if __name__ == "__main__":
    main()
