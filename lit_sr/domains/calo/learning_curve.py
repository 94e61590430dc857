"""Learning curves of photon/π⁰ classifiers trained on LR, SR and HR images (the study's second claim).

    python -m lit_sr.domains.calo.learning_curve --run outputs/calo_srgan/<run> --out docs/figures
    python -m lit_sr.domains.calo.learning_curve --run <run> --full        # N = 250 ... 16k per class

"Classifiers learn faster from SR images than from LR images (simple CNNs with the same depth and
width), given limited training statistics." For each N (events per class) and seed, the same CNN (the
calorimeter judge's architecture, :data:`NET`, fixed depth and width) is trained from scratch for the same
number of steps on N photons + N pions of the **train split** as native 6×6 LR images, as SR images
from the frozen generator of a finished ``calo_srgan`` run, and as HR images; beside it an L2 logistic
regression on the LR shape variables (:class:`~lit_sr.domains.calo.baselines.ShapeLogistic`) is fitted
on the same events. All are scored on the whole **test split**: ROC AUC and the pion rejection at 90 %
photon efficiency (a lower limit when no test pion passes). The seed picks the events, the
initialisation and the batch order. Writes ``calo_learning_curve.md`` (mean ± std over seeds) and
``calo_learning_curve.png``.

Default N list: 250, 500, 1000, 2000 per class (the range of the claim, CPU minutes); ``--full`` runs
the issue's 250 ... 16k (N above the train split's smaller class becomes that class's count).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lit_sr.domains.calo.baselines import ShapeLogistic
from lit_sr.domains.calo.metrics import pion_rejection
from lit_sr.metrics.stats import roc_auc
from lit_sr.nets.classifier import CNNClassifier

DEFAULT_N = (250, 500, 1000, 2000)
FULL_N = (250, 500, 1000, 2000, 4000, 8000, 16000)
#: the classifier of every curve (the calo_judge net config): depth and width fixed
NET = dict(channels=(24, 48), feature_dim=64, activation="relu", pooled_size=2)
KINDS = ("lr", "sr", "hr")
LABELS = {
    "lr": "CNN on LR (6×6)",
    "sr": "CNN on SR (24×24)",
    "hr": "CNN on HR (24×24)",
    "lr_shape": "LR shape variables (logistic)",
}


# ----------------------------------------------------------------------------- data
@torch.no_grad()
def split_events(
    datamodule, split: str, generator: torch.nn.Module | None = None, batch_size: int = 512
) -> dict[str, torch.Tensor]:
    """All events of ``split`` (no augmentation): ``lr``, ``hr`` and (with ``generator``, which maps model-space
    LR to model-space SR) ``sr`` in GeV, ``label`` and ``index`` (file rows)."""
    out: dict[str, list[torch.Tensor]] = {}
    tr = datamodule.transform
    for batch in datamodule.dataloader(split, shuffle=False, batch_size=batch_size):
        out.setdefault("lr", []).append(tr.inverse(batch["input"]).float())
        out.setdefault("hr", []).append(tr.inverse(batch["target"]).float())
        if generator is not None:
            out.setdefault("sr", []).append(tr.inverse(generator(batch["input"])).float())
        out.setdefault("label", []).append(batch["label"].long())
        out.setdefault("index", []).append(batch["index"].long())
    return {k: torch.cat(v) for k, v in out.items()}


def cap_to_split(n_list: Sequence[int], labels: torch.Tensor) -> list[int]:
    """N values above the smaller class's count in the train split become that count (every event of it:
    the 80 % train split of the default 20k + 20k file holds 15,830 pions and 15,914 photons), printed."""
    n_max = int(min((labels == c).sum() for c in (0, 1)))
    capped = sorted({min(int(n), n_max) for n in n_list})
    if max(n_list) > n_max:
        print(f"learning curve: the train split has {n_max} events of its smaller class; N = {max(n_list)} -> {n_max}")
    return capped


def pick(labels: torch.Tensor, n_per_class: int, seed: int) -> torch.Tensor:
    """Positions of ``n_per_class`` photons and ``n_per_class`` pions drawn with ``seed`` (no repeats)."""
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in (0, 1):
        pos = torch.nonzero(labels == c).flatten()
        if len(pos) < n_per_class:
            raise ValueError(
                f"learning curve: N = {n_per_class} per class but the train split has {len(pos)} events of class {c}"
            )
        chosen.append(pos[torch.randperm(len(pos), generator=g)[:n_per_class]])
    return torch.cat(chosen)


# ----------------------------------------------------------------------------- training
def train_cnn(
    images: torch.Tensor,
    labels: torch.Tensor,
    transform,
    seed: int,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
) -> CNNClassifier:
    """The :data:`NET` classifier trained from scratch (Adam, BCE) on model-space ``transform(images)``."""
    torch.manual_seed(seed)
    net = CNNClassifier(**NET)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    x, y = transform(images), labels.float()
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=g)
        loss = F.binary_cross_entropy_with_logits(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return net


@torch.no_grad()
def scores_of(net: torch.nn.Module, images: torch.Tensor, transform, batch_size: int = 1024) -> torch.Tensor:
    return torch.cat([net(transform(images[i : i + batch_size])) for i in range(0, len(images), batch_size)])


def separation(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    r = pion_rejection(scores, labels)
    return {"auc": roc_auc(scores, labels == 1), "rejection": r.value, "lower_limit": float(r.lower_limit)}


def learning_curves(
    train: Mapping[str, torch.Tensor],
    test: Mapping[str, torch.Tensor],
    transform,
    n_list: Sequence[int] = DEFAULT_N,
    seeds: Sequence[int] = (0, 1, 2),
    steps: int = 300,
    kinds: Sequence[str] = KINDS,
    log=print,
) -> list[dict[str, Any]]:
    """One row per (N, seed, method): ``n``, ``seed``, ``method`` (lr, sr, hr, lr_shape), ``auc``,
    ``rejection``, ``lower_limit`` and ``train_index`` (file rows the method was trained on)."""
    rows = []
    for n in n_list:
        for seed in seeds:
            sel = pick(train["label"], n, seed)
            y = train["label"][sel]
            for kind in kinds:
                if kind not in train:
                    continue
                net = train_cnn(train[kind][sel], y, transform, seed, steps)
                m = separation(scores_of(net, test[kind], transform), test["label"])
                rows.append({"n": n, "seed": seed, "method": kind, **m, "train_index": train["index"][sel]})
                log(
                    f"N = {n} per class, seed {seed}, {kind}: AUC {m['auc']:.4f}, rejection {m['rejection']:.1f}"
                    f"{' (lower limit)' if m['lower_limit'] else ''}"
                )
            shape = ShapeLogistic().fit(train["lr"][sel], y)
            m = separation(shape.score(test["lr"]), test["label"])
            rows.append({"n": n, "seed": seed, "method": "lr_shape", **m, "train_index": train["index"][sel]})
            log(f"N = {n} per class, seed {seed}, lr_shape: AUC {m['auc']:.4f}, rejection {m['rejection']:.1f}")
    return rows


# ----------------------------------------------------------------------------- outputs
def _summary(rows: Sequence[Mapping[str, Any]], n: int, method: str, key: str) -> tuple[float, float, bool]:
    vals = [r[key] for r in rows if r["n"] == n and r["method"] == method]
    if not vals:
        return float("nan"), float("nan"), False
    limits = (
        any(r["lower_limit"] for r in rows if r["n"] == n and r["method"] == method) if key == "rejection" else False
    )
    a = np.asarray(vals, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0, limits


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: one row per N, AUC and rejection (mean ± std over seeds; ≥ marks a mean that includes
    lower limits) per method."""
    methods = [m for m in ("lr", "sr", "hr", "lr_shape") if any(r["method"] == m for r in rows)]
    ns = sorted({r["n"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    head = (
        "| N per class | "
        + " | ".join(f"AUC {LABELS[m]}" for m in methods)
        + " | "
        + " | ".join(f"π⁰ rejection {LABELS[m]}" for m in methods)
        + " |"
    )
    lines = [head, "|---|" + "---|" * (2 * len(methods))]
    for n in ns:
        cells = []
        for m in methods:
            mu, sd, _ = _summary(rows, n, m, "auc")
            cells.append(f"{mu:.4f} ± {sd:.4f}")
        for m in methods:
            mu, sd, lim = _summary(rows, n, m, "rejection")
            cells.append(f"{'≥ ' if lim else ''}{mu:.1f} ± {sd:.1f}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"mean ± std over seeds {seeds}; test split scored whole; ≥: at least one seed let no test pion "
        "pass (its value is a lower limit)"
    )
    return "\n".join(lines)


def figure(rows: Sequence[Mapping[str, Any]]):
    from lit_sr.utils.figures import headless_backend

    headless_backend()
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    colors = {"lr": "tab:blue", "sr": "tab:red", "hr": "black", "lr_shape": "tab:green"}
    ns = sorted({r["n"] for r in rows})
    for m in ("lr", "sr", "hr", "lr_shape"):
        if not any(r["method"] == m for r in rows):
            continue
        for ax, key in zip(axes, ("auc", "rejection")):
            stats = [_summary(rows, n, m, key) for n in ns]
            ax.errorbar(
                ns,
                [s[0] for s in stats],
                yerr=[s[1] for s in stats],
                color=colors[m],
                marker="o",
                ls="--" if m == "lr_shape" else "-",
                capsize=3,
                label=LABELS[m],
            )
    axes[0].set_ylabel("ROC AUC (test split)")
    axes[1].set_ylabel("π⁰ rejection at 90 % photon efficiency")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.set_xlabel("training events per class")
    axes[0].legend(fontsize=7)
    return fig


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a finished calo_srgan run folder (its generator)")
    p.add_argument("--out", type=Path, default=Path("docs") / "figures")
    p.add_argument("--n", type=int, nargs="+", default=None, help=f"events per class (default {list(DEFAULT_N)})")
    p.add_argument("--full", action="store_true", help=f"N = {list(FULL_N)}")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=300, help="training steps of every CNN (batch 64)")
    p.add_argument("--prefix", default="calo_")
    a = p.parse_args(argv)
    from lit_sr.inference.run_folder import load_run
    from lit_sr.utils.atomic import atomic_path

    module, datamodule = load_run(a.run)
    datamodule.augment = False
    datamodule.prepare_data()
    datamodule.setup("fit")
    n_list = a.n or (FULL_N if a.full else DEFAULT_N)
    train = split_events(datamodule, "train", module.eval_net)
    test = split_events(datamodule, "test", module.eval_net)
    n_list = cap_to_split(n_list, train["label"])
    rows = learning_curves(train, test, datamodule.transform, n_list, a.seeds, a.steps)
    a.out.mkdir(parents=True, exist_ok=True)
    text = (
        table(rows)
        + f"\n\ngenerator: {a.run}; {a.steps} steps of batch 64 per CNN; `python -m lit_sr.domains.calo.learning_curve --run {a.run}"
        + (f" --n {' '.join(map(str, n_list))}" if a.n else (" --full" if a.full else ""))
        + "`"
    )
    with atomic_path(a.out / f"{a.prefix}learning_curve.md") as tmp:
        Path(tmp).write_text(text + "\n")
    fig = figure(rows)
    with atomic_path(a.out / f"{a.prefix}learning_curve.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    print(text)


if __name__ == "__main__":
    main()
