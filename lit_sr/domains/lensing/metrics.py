"""Downstream metrics of lens super-resolution: substructure classification, Einstein radius, flux.

Image sources (evaluator-contract key -> source name): ``input`` -> ``lr`` (the LR image on its native grid),
``input_up`` -> ``lr_up`` (nearest-upsampled), ``bilinear``, ``bicubic``, ``output`` -> ``sr`` (the model),
``target`` -> ``hr`` (the truth). Per lens and source the evaluator records:

* the logits of a frozen 3-class substructure **judge** (no_sub / cdm / vortex): accuracy and one-vs-rest ROC
  AUC per class (score = softmax probability of the class) and their mean (macro AUC). Sources on the HR grid
  are judged by the HR-trained judge (``judge``); ``lr`` by a judge of the same architecture trained on the
  native LR grid (``lr_judge``): the baseline an expert would use, not the HR judge on upsampled LR. Neither is
  the GANs' perceptual net (the setup stage trains them with their own seeds; ``lit_sr.setup_hooks``);
* the Einstein radius from the ring fit (:func:`lit_sr.domains.lensing.ring_fit.einstein_radius_from_image`; on
  the LR grid with the LR pixel size): its error against the simulated ``theta_e_arcsec`` (median |error|,
  median error, failure fraction) when the batch has it, and, label-free, its median |difference| from the
  ring fit of the HR image of the same lens;
* the Fréchet distance between the HR judge's feature vectors of a source and of HR over the test lenses
  (``fd_judge``; needs the judge, not the labels): the perceptual distance of a GAN's images to HR, scored by
  a network no generator trained against;
* label-free image metrics against HR: PSNR with each lens's own HR min-max range (``psnr_minmax``, the
  normalisation of DeepLense's SR results) and the median flux ratio sum(source) / sum(HR) (HR-grid sources).

Without labels (a user's folder) the judges are absent or have nothing to score against: the classification
keys are left out and everything else is computed. Per-lens values are torchmetrics ``cat`` states, gathered
across devices by :meth:`Evaluator.synced`, so AUCs and medians are exact under DDP. Images are physical units
(counts/s per HR pixel), [B, 1, H, W] (``lr``: [B, 1, H/scale, W/scale]).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lit_sr.domains.lensing.ring_fit import einstein_radius_from_image
from lit_sr.domains.lensing.sim import LABEL_NAMES
from lit_sr.metrics.evaluator import Evaluator
from lit_sr.metrics.stats import frechet_distance, roc_auc, roc_curve

#: evaluator-contract image keys -> source names, in table order
IMAGE_SOURCES = {
    "input": "lr",
    "input_up": "lr_up",
    "bilinear": "bilinear",
    "bicubic": "bicubic",
    "output": "sr",
    "target": "hr",
}
DEFAULT_SOURCES = ("lr", "bicubic", "sr", "hr")
#: the judge of each source: the LR-trained judge for the native LR grid, the HR-trained judge otherwise
LR_SOURCES = ("lr",)


def load_judge(ckpt_path: str | None, net: nn.Module, class_names: Sequence[str] | None = None) -> nn.Module | None:
    """A frozen judge from a ClassifierModule checkpoint (see ``load_frozen_classifier``), or None when the setup
    stage trained none (``ckpt_path`` null: data without labels, or mode=predict)."""
    if not ckpt_path:
        return None
    from lit_sr.models.classifier import load_frozen_classifier

    return load_frozen_classifier(ckpt_path, net, class_names=class_names)


# ----------------------------------------------------------------------------- pure functions
def class_aucs(probs: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, n_classes: int) -> np.ndarray:
    """One-vs-rest ROC AUC of every class k (score: column k), NaN for a class absent or alone in ``labels``."""
    p = np.asarray(probs.detach().cpu().double() if isinstance(probs, torch.Tensor) else probs, dtype=np.float64)
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64).ravel()
    return np.array([roc_auc(p[:, k], y == k) for k in range(n_classes)])


def psnr_minmax(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) with the image's own range: 10 log10((max - min)^2 / MSE) of ``target``, shape [B]."""
    t = target.flatten(1).double()
    mse = (pred.flatten(1).double() - t).pow(2).mean(1)
    rng = t.amax(1) - t.amin(1)
    return (10 * torch.log10(rng.pow(2) / mse.clamp_min(1e-30))).float()


def ring_fit_radii(
    images: torch.Tensor, pixel_scale_arcsec: float, centers_arcsec: np.ndarray | None = None, **ring_fit: Any
) -> np.ndarray:
    """Einstein radius (arcsec) of every image [B, 1, H, W] (NaN where the fit finds no ring pixels)."""
    imgs = images.detach().float().cpu().numpy()[:, 0]
    out = np.empty(len(imgs))
    for i, img in enumerate(imgs):
        center = None if centers_arcsec is None else tuple(centers_arcsec[i])
        out[i] = einstein_radius_from_image(img, pixel_scale_arcsec, center_arcsec=center, **ring_fit)
    return out


# ----------------------------------------------------------------------------- per-source state
STATE_NAMES = ("logits", "labels", "features", "theta_fit", "theta_true", "psnr", "flux_ratio")


class LensSourceValues(Metric):
    """Per-lens values of one image source: judge logits, labels, ring-fit and true theta_E, PSNR, flux ratio."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in STATE_NAMES:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, **values: torch.Tensor | None) -> None:
        unknown = sorted(set(values) - set(STATE_NAMES))
        if unknown:
            raise ValueError(f"LensSourceValues: unknown values {unknown}; expected some of {list(STATE_NAMES)}")
        for name, value in values.items():
            if value is not None:
                getattr(self, name).append(value.detach().to(self.device))

    def values(self) -> dict[str, torch.Tensor]:
        return {name: dim_zero_cat(getattr(self, name)).cpu() for name in STATE_NAMES if len(getattr(self, name))}

    def compute(self) -> dict[str, torch.Tensor]:
        return self.values()


class LensingEvaluator(Evaluator):
    """Substructure classification, Einstein radius, flux and min-max PSNR for LR / baselines / SR / HR.

    Args:
        judge: frozen 3-class net trained on HR (logits [B, 3]) that judges the HR-grid sources; None skips their
            classification metrics. Never the GANs' perceptual net.
        lr_judge: the same architecture trained on the native LR grid; judges ``lr``. None skips it.
        judge_transform, lr_judge_transform: physical images -> each judge's input space; None -> the net's
            ``input_transform`` (set by ``load_frozen_classifier``) if any, else identity.
        class_names: names of labels 0..K-1 (metric keys ``auc_<name>/<source>``).
        pixel_scale_arcsec: HR pixel size; the LR pixel is ``scale`` times larger.
        scale: the SR factor (LR pixel / HR pixel).
        sources: source names evaluated (subset of ``lr, lr_up, bilinear, bicubic, sr, hr``).
        ring_fit: keyword arguments of ``einstein_radius_from_image`` (e.g. ``threshold_fraction``).
        fit_rings: run the ring fit (the slowest metric: numpy per lens).

    ``compute()`` keys per source: ``acc``, ``auc`` (macro mean over classes), ``auc_<class>`` (with labels and
    the source's judge); ``theta_e_abs_err_arcsec`` (median |fit - true|), ``theta_e_bias_arcsec`` (median fit -
    true), ``theta_e_fail_frac`` (with ``theta_e_arcsec`` in the batch); ``theta_e_vs_hr_abs_err_arcsec`` (median
    |fit - fit of HR|, label-free); ``fd_judge`` (HR-grid sources other than hr, with the HR judge); ``psnr_minmax`` and ``flux_ratio`` (HR-grid sources other than hr), as
    ``<key>/<source>``.
    """

    def __init__(
        self,
        judge: nn.Module | None = None,
        lr_judge: nn.Module | None = None,
        judge_transform: Any = None,
        lr_judge_transform: Any = None,
        class_names: Sequence[str] = LABEL_NAMES,
        pixel_scale_arcsec: float = 0.05,
        scale: int = 2,
        sources: Sequence[str] = DEFAULT_SOURCES,
        ring_fit: dict | None = None,
        fit_rings: bool = True,
    ) -> None:
        super().__init__()
        unknown = sorted(set(sources) - set(IMAGE_SOURCES.values()))
        if unknown:
            raise ValueError(
                f"LensingEvaluator sources {unknown} unknown; expected some of {list(IMAGE_SOURCES.values())}"
            )
        if judge is not None and judge is lr_judge:
            raise ValueError("LensingEvaluator: the HR and LR judges must be two networks (one trained on each grid)")
        self.sources = tuple(sources)
        self.class_names = tuple(str(c) for c in class_names)
        self.pixel_scale_arcsec = float(pixel_scale_arcsec)
        self.scale = int(scale)
        self.ring_fit = dict(ring_fit or {})
        self.fit_rings = bool(fit_rings)
        self.add_judge("hr", judge, judge_transform)
        self.add_judge("lr", lr_judge, lr_judge_transform)
        self.values = nn.ModuleDict({s: LensSourceValues() for s in self.sources})

    def judge_of(self, source: str) -> str:
        return "lr" if source in LR_SOURCES else "hr"

    @torch.no_grad()
    def update(self, batch: dict[str, torch.Tensor], images: dict[str, torch.Tensor]) -> None:
        """The evaluator contract: physical-unit ``images`` (input, input_up, output, target, baselines) and the
        batch's ``label``, ``theta_e_arcsec`` and lens centre (``lens_x_arcsec``, ``lens_y_arcsec``) when present."""
        sources = {IMAGE_SOURCES[k]: v for k, v in images.items() if k in IMAGE_SOURCES}
        self.update_sources(sources, batch.get("label"), batch.get("theta_e_arcsec"), self._centers(batch))

    @staticmethod
    def _centers(batch: dict[str, torch.Tensor]) -> np.ndarray | None:
        if "lens_x_arcsec" in batch and "lens_y_arcsec" in batch:
            return torch.stack([batch["lens_x_arcsec"], batch["lens_y_arcsec"]], 1).double().cpu().numpy()
        return None

    @torch.no_grad()
    def update_sources(
        self,
        images: dict[str, torch.Tensor],
        labels: torch.Tensor | None = None,
        theta_true: torch.Tensor | None = None,
        centers_arcsec: np.ndarray | None = None,
    ) -> None:
        """``images``: source name -> physical images [B, 1, H, W] (sources not given are skipped)."""
        target = images.get("hr")
        for s in self.sources:
            if s not in images:
                continue
            img = images[s].float()
            judge = self.judge_of(s)
            logits = None
            if labels is not None and self.has_judge(judge):
                logits = self.judge(judge, img).float()
                if logits.dim() == 1:  # a binary classifier's single logit -> two columns
                    logits = torch.stack([-logits, logits], 1) / 2
            # the HR judge's feature vector of every HR-grid source: a perceptual distance to HR from a network
            # no generator trained against (the GANs' perceptual net is another network)
            features = None
            if judge == "hr" and self.has_judge(judge) and hasattr(self.judges[judge], "features"):
                features = self.judge_features(judge, img).float()
            fit = true = None
            if self.fit_rings:
                pixel = self.pixel_scale_arcsec * (self.scale if s in LR_SOURCES else 1)
                fit = torch.from_numpy(ring_fit_radii(img, pixel, centers_arcsec, **self.ring_fit))
                if theta_true is not None:
                    true = theta_true.detach().double().cpu()
            psnr = flux = None
            if target is not None and s != "hr" and img.shape[-2:] == target.shape[-2:]:
                psnr = psnr_minmax(img, target.float())
                flux = (img.flatten(1).double().sum(1) / target.flatten(1).double().sum(1)).float()
            self.values[s].update(
                logits=logits,
                labels=labels.long() if logits is not None else None,
                features=features,
                theta_fit=fit,
                theta_true=true,
                psnr=psnr,
                flux_ratio=flux,
            )

    def compute(self) -> dict[str, float]:
        """Flat dict of floats (collective call in DDP)."""
        out: dict[str, float] = {}
        cache = {s: self.synced(self.values[s], self.values[s].values) for s in self.sources}
        hr_fit = cache.get("hr", {}).get("theta_fit")
        hr_features = cache.get("hr", {}).get("features", torch.zeros(0)).double().numpy()
        for s, v in cache.items():
            if "logits" in v and "labels" in v and len(v["labels"]):
                probs = torch.softmax(v["logits"].double(), 1)
                y = v["labels"]
                out[f"acc/{s}"] = float((probs.argmax(1) == y).double().mean())
                aucs = class_aucs(probs, y, len(self.class_names))
                out[f"auc/{s}"] = float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")
                for name, a in zip(self.class_names, aucs):
                    out[f"auc_{name}/{s}"] = float(a)
            if "theta_fit" in v and "theta_true" in v and len(v["theta_true"]):
                err = (v["theta_fit"] - v["theta_true"]).double().numpy()
                ok = np.isfinite(err)
                out[f"theta_e_fail_frac/{s}"] = float(1.0 - ok.mean())
                out[f"theta_e_abs_err_arcsec/{s}"] = float(np.median(np.abs(err[ok]))) if ok.any() else float("nan")
                out[f"theta_e_bias_arcsec/{s}"] = float(np.median(err[ok])) if ok.any() else float("nan")
            if s != "hr" and "theta_fit" in v and hr_fit is not None and len(hr_fit) == len(v["theta_fit"]):
                diff = (v["theta_fit"] - hr_fit).double().numpy()
                ok = np.isfinite(diff)
                out[f"theta_e_vs_hr_abs_err_arcsec/{s}"] = (
                    float(np.median(np.abs(diff[ok]))) if ok.any() else float("nan")
                )
            if s != "hr" and "features" in v and len(hr_features) == len(v["features"]) > 1:
                out[f"fd_judge/{s}"] = frechet_distance(v["features"].double().numpy(), hr_features)
            if "psnr" in v and len(v["psnr"]):
                out[f"psnr_minmax/{s}"] = float(v["psnr"].double().mean())
            if "flux_ratio" in v and len(v["flux_ratio"]):
                out[f"flux_ratio/{s}"] = float(v["flux_ratio"].double().median())
        self._cache = cache
        return out

    def figures(self) -> dict[str, Any]:
        """ROC curves per class and Einstein-radius error histograms, from the last ``compute()``."""
        import matplotlib.pyplot as plt

        if self._cache is None:
            self.compute()
        cache = {s: v for s, v in (self._cache or {}).items() if v}
        figs: dict[str, Any] = {}
        with_scores = {s: v for s, v in cache.items() if "logits" in v and "labels" in v}
        if with_scores:
            fig, axes = plt.subplots(
                1, len(self.class_names), figsize=(3.2 * len(self.class_names), 3.2), squeeze=False
            )
            for k, (ax, name) in enumerate(zip(axes[0], self.class_names)):
                for s, v in with_scores.items():
                    fpr, tpr = roc_curve(torch.softmax(v["logits"].double(), 1)[:, k], v["labels"] == k)
                    ax.plot(fpr, tpr, label=f"{s} ({self.judge_of(s)} judge)")
                ax.plot([0, 1], [0, 1], color="grey", lw=0.5, ls=":")
                ax.set_title(f"{name} vs rest", fontsize=9)
                ax.set_xlabel("false positive rate")
            axes[0, 0].set_ylabel("true positive rate")
            axes[0, -1].legend(fontsize=7)
            fig.tight_layout()
            figs["roc"] = fig
        with_theta = {s: v for s, v in cache.items() if "theta_fit" in v and "theta_true" in v}
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
