"""Downstream metrics of lens super-resolution: substructure classification and Einstein-radius recovery.

For every image source -- ``lr_up`` (LR, nearest-neighbour upsampled), ``bilinear``, ``bicubic``, ``sr`` (the
model) and ``hr`` (the truth) -- the evaluator records per lens:

* the logits of a frozen 3-class substructure classifier trained on HR images (no_sub / cdm / vortex): accuracy and
  one-vs-rest ROC AUC per class (score = softmax probability of the class), and their mean (macro AUC);
* the Einstein radius from the ring fit (:func:`lit_sr.domains.lensing.ring_fit.einstein_radius_from_image`) and
  its error against the simulated ``theta_e_arcsec``: median |error|, median error (bias), failure fraction;
* PSNR with each lens's own HR min-max range (``psnr_minmax``), the normalisation DeepLense's SR results use,
  beside the fixed-range PSNR the SR module logs.

Per-lens values are torchmetrics states with ``dist_reduce_fx="cat"``, so AUCs and medians are exact across
devices. Images are physical units (counts/s per HR pixel) on the HR grid, [B, 1, H, W].
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lit_sr.domains.lensing.ring_fit import einstein_radius_from_image
from lit_sr.domains.lensing.sim import LABEL_NAMES
from lit_sr.models.classifier import frozen
from lit_sr.metrics.evaluator import Evaluator

#: evaluator-contract image keys -> source names, in table order
IMAGE_SOURCES = {"input_up": "lr_up", "bilinear": "bilinear", "bicubic": "bicubic", "output": "sr", "target": "hr"}


# ----------------------------------------------------------------------------- pure functions
def one_vs_rest_auc(scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                    n_classes: int | None = None) -> np.ndarray:
    """ROC AUC of class k against the rest for every k, from scores [N, K] (higher = more class-k-like).

    Mann-Whitney form with ties counted half: AUC_k = P(score_k of a class-k lens > score_k of another lens).
    A class absent from ``labels`` (or the only class present) gives NaN.
    """
    from scipy.stats import rankdata

    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64).ravel()
    if s.ndim != 2 or s.shape[0] != y.shape[0]:
        raise ValueError(f"one_vs_rest_auc: scores must be [N, K] with N = len(labels), got {s.shape} and {y.shape}")
    k_total = n_classes or s.shape[1]
    out = np.full(k_total, np.nan)
    for k in range(k_total):
        pos = y == k
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = rankdata(s[:, k])
        out[k] = (ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return out


def psnr_minmax(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) with the image's own range: 10 log10((max - min)^2 / MSE) of ``target``, shape [B]."""
    t = target.flatten(1).double()
    mse = (pred.flatten(1).double() - t).pow(2).mean(1)
    rng = t.amax(1) - t.amin(1)
    return (10 * torch.log10(rng.pow(2) / mse.clamp_min(1e-30))).float()


def ring_fit_radii(images: torch.Tensor, pixel_scale_arcsec: float, centers_arcsec: np.ndarray | None = None,
                   **ring_fit: Any) -> np.ndarray:
    """Einstein radius (arcsec) of every image [B, 1, H, W] (NaN where the fit finds no ring pixels)."""
    imgs = images.detach().float().cpu().numpy()[:, 0]
    out = np.empty(len(imgs))
    for i, img in enumerate(imgs):
        center = None if centers_arcsec is None else tuple(centers_arcsec[i])
        out[i] = einstein_radius_from_image(img, pixel_scale_arcsec, center_arcsec=center, **ring_fit)
    return out


# ----------------------------------------------------------------------------- per-source state
class LensSourceValues(Metric):
    """Per-lens values of one image source: classifier logits, labels, ring-fit and true theta_E, PSNR."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("logits", "labels", "theta_fit", "theta_true", "psnr"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, logits: torch.Tensor | None = None, labels: torch.Tensor | None = None,
               theta_fit: torch.Tensor | None = None, theta_true: torch.Tensor | None = None,
               psnr: torch.Tensor | None = None) -> None:
        for name, value in (("logits", logits), ("labels", labels), ("theta_fit", theta_fit),
                            ("theta_true", theta_true), ("psnr", psnr)):
            if value is not None:
                getattr(self, name).append(value.detach().to(self.device))

    def values(self) -> dict[str, torch.Tensor]:
        return {name: dim_zero_cat(getattr(self, name)).cpu() for name in ("logits", "labels", "theta_fit",
                                                                            "theta_true", "psnr")
                if len(getattr(self, name))}

    def compute(self) -> dict[str, torch.Tensor]:
        return self.values()


class LensingEvaluator(Evaluator):
    """Substructure classification, Einstein-radius recovery and min-max PSNR for LR-up / baselines / SR / HR.

    Args:
        classifier: frozen HR-trained 3-class net (logits [B, 3]); None skips the classification metrics.
        classifier_transform: physical images -> the classifier's input space; None -> the classifier's
            ``input_transform`` (set by ``load_frozen_classifier``) if any, else identity.
        class_names: names of labels 0..K-1 (metric keys ``auc_<name>/<source>``).
        pixel_scale_arcsec: HR pixel size (all sources are on the HR grid).
        sources: source names evaluated (subset of ``lr_up, bilinear, bicubic, sr, hr``).
        ring_fit: keyword arguments of ``einstein_radius_from_image`` (e.g. ``threshold_fraction``).

    ``compute()`` keys: ``acc/<src>``, ``auc/<src>`` (macro: mean over classes), ``auc_<class>/<src>``,
    ``theta_e_abs_err_arcsec/<src>`` (median |fit - true|), ``theta_e_bias_arcsec/<src>`` (median fit - true),
    ``theta_e_fail_frac/<src>``, ``psnr_minmax/<src>`` (sources other than hr).
    """

    def __init__(self, classifier: nn.Module | None = None,
                 classifier_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 class_names: Sequence[str] = LABEL_NAMES, pixel_scale_arcsec: float = 0.05,
                 sources: Sequence[str] = tuple(IMAGE_SOURCES.values()), ring_fit: dict | None = None) -> None:
        super().__init__()
        unknown = sorted(set(sources) - set(IMAGE_SOURCES.values()))
        if unknown:
            raise ValueError(f"LensingEvaluator sources {unknown} unknown; expected some of {list(IMAGE_SOURCES.values())}")
        self.sources = tuple(sources)
        self.class_names = tuple(str(c) for c in class_names)
        self.pixel_scale_arcsec = float(pixel_scale_arcsec)
        self.ring_fit = dict(ring_fit or {})
        self.classifier, self.classifier_transform = frozen(classifier, classifier_transform)
        self.values = nn.ModuleDict({s: LensSourceValues() for s in self.sources})
        self._cache: dict[str, dict[str, torch.Tensor]] | None = None

    def train(self, mode: bool = True) -> "LensingEvaluator":
        super().train(mode)
        if self.classifier is not None:
            self.classifier.eval()
        return self

    @torch.no_grad()
    def update(self, batch: dict[str, torch.Tensor], images: dict[str, torch.Tensor]) -> None:
        """The evaluator contract: physical-unit ``images`` (input_up, output, target, baselines) and the batch's
        ``label``, ``theta_e_arcsec`` and lens centre (``lens_x_arcsec``, ``lens_y_arcsec``) when present."""
        sources = {IMAGE_SOURCES[k]: v for k, v in images.items() if k in IMAGE_SOURCES}
        self.update_sources(sources, batch.get("label"), batch.get("theta_e_arcsec"),
                            self._centers(batch))

    @staticmethod
    def _centers(batch: dict[str, torch.Tensor]) -> np.ndarray | None:
        if "lens_x_arcsec" in batch and "lens_y_arcsec" in batch:
            return torch.stack([batch["lens_x_arcsec"], batch["lens_y_arcsec"]], 1).double().cpu().numpy()
        return None

    @torch.no_grad()
    def update_sources(self, images: dict[str, torch.Tensor], labels: torch.Tensor | None = None,
                       theta_true: torch.Tensor | None = None, centers_arcsec: np.ndarray | None = None) -> None:
        """``images``: source name -> physical images [B, 1, H, W] (sources not given are skipped)."""
        target = images.get("hr")
        for s in self.sources:
            if s not in images:
                continue
            img = images[s].float()
            logits = None
            if self.classifier is not None and labels is not None:
                x = self.classifier_transform(img) if self.classifier_transform is not None else img
                logits = self.classifier(x).float()
                if logits.dim() == 1:  # a binary classifier's single logit -> two columns
                    logits = torch.stack([-logits, logits], 1) / 2
            fit = true = None
            if theta_true is not None:
                fit = torch.from_numpy(ring_fit_radii(img, self.pixel_scale_arcsec, centers_arcsec, **self.ring_fit))
                true = theta_true.detach().double().cpu()
            psnr = psnr_minmax(img, target.float()) if target is not None and s != "hr" else None
            self.values[s].update(logits, labels.long() if logits is not None else None, fit, true, psnr)

    @staticmethod
    def _synced(metric: Metric) -> dict[str, torch.Tensor]:
        """The per-lens values gathered from all processes (plain local values otherwise)."""
        if metric._update_count == 0:
            return {}
        with metric.sync_context(should_sync=True, should_unsync=True):
            return metric.values()

    def compute(self) -> dict[str, float]:
        """Flat dict of floats (collective call in DDP)."""
        out: dict[str, float] = {}
        cache: dict[str, dict[str, torch.Tensor]] = {}
        for s in self.sources:
            v = self._synced(self.values[s])
            cache[s] = v
            if "logits" in v and "labels" in v and len(v["labels"]):
                probs = torch.softmax(v["logits"].double(), 1)
                y = v["labels"]
                out[f"acc/{s}"] = float((probs.argmax(1) == y).double().mean())
                aucs = one_vs_rest_auc(probs, y, len(self.class_names))
                out[f"auc/{s}"] = float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")
                for name, a in zip(self.class_names, aucs):
                    out[f"auc_{name}/{s}"] = float(a)
            if "theta_fit" in v and "theta_true" in v and len(v["theta_true"]):
                err = (v["theta_fit"] - v["theta_true"]).double().numpy()
                ok = np.isfinite(err)
                out[f"theta_e_fail_frac/{s}"] = float(1.0 - ok.mean())
                out[f"theta_e_abs_err_arcsec/{s}"] = float(np.median(np.abs(err[ok]))) if ok.any() else float("nan")
                out[f"theta_e_bias_arcsec/{s}"] = float(np.median(err[ok])) if ok.any() else float("nan")
            if "psnr" in v and len(v["psnr"]):
                out[f"psnr_minmax/{s}"] = float(v["psnr"].double().mean())
        self._cache = cache
        return out

    def reset(self) -> None:
        for m in self.values.values():
            m.reset()
        self._cache = None

    def figures(self) -> dict[str, Any]:
        """ROC curves per class and Einstein-radius error histograms, from the last ``compute()``."""
        import matplotlib.pyplot as plt

        if self._cache is None:
            self.compute()
        cache = {s: v for s, v in (self._cache or {}).items() if v}
        figs: dict[str, Any] = {}
        with_scores = {s: v for s, v in cache.items() if "logits" in v and "labels" in v}
        if with_scores:
            fig, axes = plt.subplots(1, len(self.class_names), figsize=(3.2 * len(self.class_names), 3.2),
                                     squeeze=False)
            for k, (ax, name) in enumerate(zip(axes[0], self.class_names)):
                for s, v in with_scores.items():
                    fpr, tpr = roc_points(torch.softmax(v["logits"].double(), 1)[:, k].numpy(), v["labels"].numpy() == k)
                    ax.plot(fpr, tpr, label=s)
                ax.plot([0, 1], [0, 1], color="grey", lw=0.5, ls=":")
                ax.set_title(f"{name} vs rest", fontsize=9)
                ax.set_xlabel("false positive rate")
            axes[0, 0].set_ylabel("true positive rate")
            axes[0, -1].legend(fontsize=7)
            fig.tight_layout()
            figs["roc"] = fig
        with_theta = {s: v for s, v in cache.items() if "theta_fit" in v}
        if with_theta:
            fig, ax = plt.subplots(figsize=(4.5, 3.2))
            for s, v in with_theta.items():
                err = (v["theta_fit"] - v["theta_true"]).numpy()
                ax.hist(err[np.isfinite(err)], bins=np.linspace(-0.3, 0.3, 41), histtype="step", label=s)
            ax.set_xlabel("ring fit - true Einstein radius (arcsec)")
            ax.legend(fontsize=7)
            fig.tight_layout()
            figs["theta_e_error"] = fig
        return figs


def roc_points(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every threshold (scores >= t selected), from (0, 0) to (1, 1)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    pos = np.asarray(positive, dtype=bool)[order]
    tp = np.concatenate([[0], np.cumsum(pos)])
    fp = np.concatenate([[0], np.cumsum(~pos)])
    return fp / max(1, (~pos).sum()), tp / max(1, pos.sum())
