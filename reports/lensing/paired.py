"""Paired comparison of two lensing SR runs on the same test lenses: is a GAN's judge AUC / feature distance to HR
really different from its PSNR model's, or is the difference the noise of a few hundred lenses?

Both runs' generators are loaded from their checkpoints and run on the same split; the independent HR judge (the
one in the runs' config, cached under data_dir/judges, never trained against) scores every lens. The difference
B - A of the macro AUC and of the judge-feature Fréchet distance to HR is bootstrapped over lenses (the same
resampled lenses for A, B and HR), so the interval holds the lens-sampling noise only: the run's seed is fixed.
Given several seeds of a pair, the mean difference over seeds is bootstrapped too (one lens resample applied to
every seed).

    python -m reports.lensing.paired --pair "SRResNet -> SRGAN=/runs/srresnet_s0:/runs/srgan_s0" \\
        --pair "SRResNet -> SRGAN=/runs/srresnet_s1:/runs/srgan_s1" --boot 1000 --out docs/figures/lensing_paired

Writes ``<out>.md`` (a table) and ``<out>.json`` (every number).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lit_sr.domains.lensing.metrics import class_aucs
from lit_sr.metrics.stats import frechet_distance


def macro_auc(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean one-vs-rest AUC over the classes (NaN classes skipped)."""
    aucs = class_aucs(probs, labels, probs.shape[1])
    return float(np.nanmean(aucs))


def paired_bootstrap(
    a: dict[str, np.ndarray],
    b: dict[str, np.ndarray],
    hr_features: np.ndarray,
    labels: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Macro AUC and judge-feature FD to HR of sources ``a`` and ``b`` (dicts of per-lens ``probs`` [N, K] and
    ``features`` [N, D], the same lenses in the same order as ``hr_features`` and ``labels``), their difference
    b - a, and the bootstrap over lenses of that difference: 2.5 / 97.5 % quantiles and the fraction of
    resamples where b is better (higher AUC, lower FD)."""
    n = len(labels)
    if not (len(a["probs"]) == len(b["probs"]) == len(hr_features) == n):
        raise ValueError(
            f"paired_bootstrap needs the same lenses for a, b, HR and labels; got lengths "
            f"{len(a['probs'])}, {len(b['probs'])}, {len(hr_features)}, {n}"
        )
    out: dict[str, Any] = {
        "n_lenses": n,
        "auc_a": macro_auc(a["probs"], labels),
        "auc_b": macro_auc(b["probs"], labels),
        "fd_a": frechet_distance(a["features"], hr_features),
        "fd_b": frechet_distance(b["features"], hr_features),
    }
    boot = seeds_bootstrap([(a, b)], hr_features, labels, n_boot, seed)
    out.update({k: v for k, v in boot.items() if k != "seeds"})
    return out


def seeds_bootstrap(
    pairs: Sequence[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]],
    hr_features: np.ndarray,
    labels: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The mean over seeds of the b - a differences, bootstrapped over lenses (one resample for every seed)."""
    n = len(labels)
    rng = np.random.default_rng(seed)

    def diffs(i: np.ndarray) -> tuple[float, float]:
        h = hr_features[i]
        da = [macro_auc(b["probs"][i], labels[i]) - macro_auc(a["probs"][i], labels[i]) for a, b in pairs]
        df = [frechet_distance(b["features"][i], h) - frechet_distance(a["features"][i], h) for a, b in pairs]
        return float(np.mean(da)), float(np.mean(df))

    d_auc, d_fd = diffs(np.arange(n))
    boot = np.array([diffs(rng.integers(0, n, n)) for _ in range(n_boot)])
    return {
        "seeds": len(pairs),
        "d_auc": d_auc,
        "d_auc_ci": [float(np.quantile(boot[:, 0], 0.025)), float(np.quantile(boot[:, 0], 0.975))],
        "p_b_better_auc": float(np.mean(boot[:, 0] > 0)),
        "d_fd": d_fd,
        "d_fd_ci": [float(np.quantile(boot[:, 1], 0.025)), float(np.quantile(boot[:, 1], 0.975))],
        "p_b_better_fd": float(np.mean(boot[:, 1] < 0)),
    }


#: data keys that do not change which lenses are in a split or their pixels (training order and loading only)
_LOADING_KEYS = ("augment_seed", "batch_size", "num_workers", "pin_memory", "persistent_workers")


def _lens_identity(data_cfg: dict[str, Any]) -> dict[str, Any]:
    """The data config without the keys that only affect training order or loading."""
    return {k: v for k, v in data_cfg.items() if k not in _LOADING_KEYS}


class RunScorer:
    """Loads the data split and the HR judge of a first run's config; scores any run's generator on it."""

    def __init__(self, run_dir: Path, split: str = "test") -> None:
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(Path(run_dir) / "config_resolved.yaml")
        self.judge_ckpt = str(cfg.model.evaluator.judge.ckpt_path)
        self.data_cfg = _lens_identity(OmegaConf.to_container(cfg.data, resolve=True))
        self.evaluator = instantiate(cfg.model.evaluator)
        dm = instantiate(cfg.data)
        dm.setup("test" if split == "test" else "validate")
        loader = dm.test_dataloader() if split == "test" else dm.val_dataloader()
        self.batches = [{k: v for k, v in b.items() if k in ("input", "target", "label")} for b in loader]
        self.transform = instantiate(cfg.data.transform)
        self.labels = torch.cat([b["label"] for b in self.batches]).numpy()
        self.hr = self._score(lambda b: self.transform.inverse(b["target"]))

    @torch.no_grad()
    def _score(self, images_of) -> dict[str, np.ndarray]:
        probs, feats = [], []
        for b in self.batches:
            img = images_of(b).float()
            probs.append(torch.softmax(self.evaluator.judge("hr", img).double(), 1))
            feats.append(self.evaluator.judge_features("hr", img).double())
        return {"probs": torch.cat(probs).numpy(), "features": torch.cat(feats).numpy()}

    def generator(self, run_dir: Path) -> torch.nn.Module:
        """The run's generator (``net.*`` of its last checkpoint), in eval mode; refuses a run on other lenses or
        judged by another judge."""
        from omegaconf import OmegaConf

        from lit_sr.inference.run_folder import load_run

        cfg = OmegaConf.load(Path(run_dir) / "config_resolved.yaml")
        if str(cfg.model.evaluator.judge.ckpt_path) != self.judge_ckpt:
            raise ValueError(f"{run_dir}: judged by {cfg.model.evaluator.judge.ckpt_path}, not {self.judge_ckpt}")
        if _lens_identity(OmegaConf.to_container(cfg.data, resolve=True)) != self.data_cfg:
            raise ValueError(f"{run_dir}: its data config differs from the first run's (not the same lenses)")
        module, _ = load_run(run_dir, Path(run_dir) / "checkpoints" / "last.ckpt")
        return module.net.eval()

    def score_run(self, run_dir: Path) -> dict[str, np.ndarray]:
        net = self.generator(run_dir)
        return self._score(lambda b: self.transform.inverse(net(b["input"])))


def _fmt_ci(d: float, ci: Sequence[float], digits: int) -> str:
    return f"{d:+.{digits}f} [{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", action="append", required=True, help="LABEL=RUN_A:RUN_B (B - A is reported)")
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--boot", type=int, default=1000)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    groups: dict[str, list[tuple[Path, Path]]] = defaultdict(list)
    for spec in args.pair:
        label, _, runs = spec.rpartition("=")
        a, _, b = runs.partition(":")
        if not label or not a or not b:
            raise SystemExit(f"--pair {spec!r}: expected LABEL=RUN_A:RUN_B")
        groups[label].append((Path(a), Path(b)))
    scorer = RunScorer(next(iter(groups.values()))[0][0], args.split)
    cache: dict[Path, dict[str, np.ndarray]] = {}

    def scored(run: Path) -> dict[str, np.ndarray]:
        if run not in cache:
            cache[run] = scorer.score_run(run)
        return cache[run]

    results: dict[str, Any] = {"split": args.split, "n_boot": args.boot, "judge": scorer.judge_ckpt, "groups": {}}
    lines = [
        f"| {args.split} split, {len(scorer.labels)} lenses; B − A [95 % bootstrap interval over lenses] | "
        "macro AUC A → B | Δ AUC | P(B higher) | FD A → B | Δ FD | P(B lower) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, runs in groups.items():
        per_seed = []
        for a, b in runs:
            r = paired_bootstrap(scored(a), scored(b), scorer.hr["features"], scorer.labels, args.boot)
            r.update(run_a=str(a), run_b=str(b))
            per_seed.append(r)
            lines.append(
                f"| {label}, {b.name} | {r['auc_a']:.3f} → {r['auc_b']:.3f} | {_fmt_ci(r['d_auc'], r['d_auc_ci'], 3)} "
                f"| {r['p_b_better_auc']:.2f} | {r['fd_a']:.1f} → {r['fd_b']:.1f} | "
                f"{_fmt_ci(r['d_fd'], r['d_fd_ci'], 1)} | {r['p_b_better_fd']:.2f} |"
            )
        entry: dict[str, Any] = {"per_seed": per_seed}
        if len(runs) > 1:
            m = seeds_bootstrap(
                [(scored(a), scored(b)) for a, b in runs], scorer.hr["features"], scorer.labels, args.boot
            )
            entry["mean_over_seeds"] = m
            lines.append(
                f"| **{label}, mean of {len(runs)} seeds** | {np.mean([r['auc_a'] for r in per_seed]):.3f} → "
                f"{np.mean([r['auc_b'] for r in per_seed]):.3f} | {_fmt_ci(m['d_auc'], m['d_auc_ci'], 3)} | "
                f"{m['p_b_better_auc']:.2f} | {np.mean([r['fd_a'] for r in per_seed]):.1f} → "
                f"{np.mean([r['fd_b'] for r in per_seed]):.1f} | {_fmt_ci(m['d_fd'], m['d_fd_ci'], 1)} | "
                f"{m['p_b_better_fd']:.2f} |"
            )
        results["groups"][label] = entry
    from reports.runs import write_text

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    write_text(args.out.with_suffix(".json"), json.dumps(results, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
