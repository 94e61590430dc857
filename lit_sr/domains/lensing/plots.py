"""Figures of a finished lensing run: test lenses LR | bicubic | models | HR with residuals
(:func:`test_examples`, :func:`panel_figure`) and the evaluator's plots on the test split
(:func:`evaluator_figures`: ROC per class, Einstein-radius errors).

What ``notebooks/lensing.ipynb`` shows and the report drivers (``reports/lensing/``) write for the docs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch

from lit_sr.domains.lensing.sim import LABEL_NAMES
from lit_sr.inference.run_folder import load_run
from lit_sr.utils.figures import headless_backend, save_figures

headless_backend()


@torch.no_grad()
def test_examples(run_dirs: Mapping[str, Path], n_lenses: int = 3) -> dict[str, torch.Tensor]:
    """Physical images of the first ``n_lenses`` test lenses of each class (no_sub, cdm, vortex): ``input`` (LR),
    ``bicubic``, ``target`` (HR), ``label`` and one SR entry per run (key: the run's label)."""
    out: dict[str, torch.Tensor] = {}
    for name, run_dir in run_dirs.items():
        module, dm = load_run(run_dir)
        dm.prepare_data()
        dm.setup("test")
        batch = next(iter(dm.dataloader("test", shuffle=False, batch_size=len(dm.splits["test"]))))
        pick = torch.cat([torch.nonzero(batch["label"] == c).flatten()[:n_lenses] for c in range(3)])
        batch = {k: v[pick] for k, v in batch.items()}
        sr = module.eval_net(batch["input"])
        images = module.physical_images(batch, sr, {"bicubic": module.baseline(batch["input"], "bicubic")})
        if not out:
            out = {
                "input": images["input"],
                "bicubic": images["bicubic"],
                "target": images["target"],
                "label": batch["label"],
                "index": batch["index"],
            }
        elif not torch.equal(out["index"], batch["index"]):
            raise ValueError(f"{run_dir}: its test split differs from the first run's (other data or split seed)")
        out[name] = images["output"]
    return out


def panel_figure(examples: Mapping[str, torch.Tensor], models: Sequence[str], class_names: Sequence[str] = LABEL_NAMES):
    """Rows of lenses; columns LR | bicubic | each model | HR | each model's residual SR - HR (counts/s per HR
    pixel). Images share the HR's colour range per row; residuals a symmetric range per row."""
    import matplotlib.pyplot as plt

    columns = [("input", "LR"), ("bicubic", "bicubic")] + [(m, m) for m in models] + [("target", "HR")]
    n_rows, n_cols = len(examples["label"]), len(columns) + len(models)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(1.55 * n_cols + 0.6, 1.55 * n_rows), squeeze=False, constrained_layout=True
    )
    for r in range(n_rows):
        hr = examples["target"][r, 0].numpy()
        vmax = float(hr.max())
        res_max = max(float((examples[m][r, 0] - examples["target"][r, 0]).abs().max()) for m in models) or 1.0
        for c, (key, title) in enumerate(columns):
            im = axes[r, c].imshow(
                examples[key][r, 0].numpy(), vmin=0.0, vmax=vmax, cmap="magma", interpolation="nearest", origin="lower"
            )
            if r == 0:
                axes[r, c].set_title(title, fontsize=9)
        for j, m in enumerate(models):
            res = (examples[m][r, 0] - examples["target"][r, 0]).numpy()
            rim = axes[r, len(columns) + j].imshow(
                res, vmin=-res_max, vmax=res_max, cmap="RdBu_r", interpolation="nearest", origin="lower"
            )
            if r == 0:
                axes[r, len(columns) + j].set_title(f"{m} − HR", fontsize=9)
        axes[r, 0].set_ylabel(class_names[int(examples["label"][r])], fontsize=9)
        fig.colorbar(im, ax=axes[r, len(columns) - 1], fraction=0.046)
        fig.colorbar(rim, ax=axes[r, -1], fraction=0.046)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def evaluator_figures(run_dir: Path, out: Path, prefix: str = "lensing_") -> list[Path]:
    """The evaluator's plots (ROC per class, Einstein-radius errors) of one run on its test split."""
    module, dm = load_run(run_dir)
    dm.prepare_data()
    dm.setup("test")
    ev = module.evaluator
    ev.reset()
    with torch.no_grad():
        for batch in dm.dataloader("test", shuffle=False):
            sr = module.eval_net(batch["input"])
            ev.update(
                batch,
                module.physical_images(batch, sr, {b: module.baseline(batch["input"], b) for b in module.baselines}),
            )
    ev.compute()
    return save_figures(ev.figures(), out, prefix)
