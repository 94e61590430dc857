"""The calorimeter physics evaluator: SR and HR against the classical analyses of the LR image.

Every row is computed in the same test pass on the same events:

================  ==============================================================  =======================
source            what                                                            free parameters
================  ==============================================================  =======================
``sr``            the model's SR image; log-weighted barycentre with the fixed    none (w0 = 4.7 fixed
                  metric w0; separation judged by the HR judge                    by the evaluation)
``hr``            the HR image, same analysis                                     none
``lr_native``     log-weighted barycentre on the native 6x6 LR crystals           w0, tuned on val
``lr_fit``        least-squares impact fit on the LR pixel fractions + polynomial  coefficients, fit on
                  barycentre terms (information reference)                        val
``lr_shape``      logistic regression on named LR shape variables                 weights, fit on val
``lr_cnn``        a CNN of the judge's architecture trained on LR images           trained on the train
                                                                                  split (setup hook)
``lr_regressor``  a CNN of the judge's size trained to regress ``impact_cm``     trained on the train
                  directly from the native LR image (the ML baseline of the       split (setup hook)
                  impact point)
================  ==============================================================  =======================

The HR judge (``judge``) scores SR and HR: a classifier the generator never trained against (another
seed and architecture than the GAN's perceptual net; see :mod:`lit_sr.domains.calo.setup`).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from lit_sr.domains.calo.baselines import W0_GRID, PositionFit, ShapeLogistic, resolution_cm, tune_w0
from lit_sr.domains.calo.metrics import (
    WINDOW_CM,
    BarycentreResolution,
    EnergyConservation,
    PhotonPionSeparation,
    PositionResolution,
    ShowerWidth,
    barycentre,
    pion_rejection,
    resolution_summary,
)
from lit_sr.metrics.evaluator import Batch, Evaluator, Images
from lit_sr.metrics.stats import roc_auc, wasserstein_1d

log = logging.getLogger(__name__)

#: LR baselines the evaluator knows (config ``baselines``)
BASELINES = ("lr_native", "lr_fit", "lr_shape", "lr_cnn", "lr_regressor")
POSITION_SOURCES = ("sr", "hr", "lr_native", "lr_fit", "lr_regressor")
SEPARATION_SOURCES = ("sr", "hr", "lr_cnn", "lr_shape")
#: display names of the sources (tables, plots)
SOURCE_LABELS = {
    "sr": "SR (GAN)",
    "hr": "HR (truth)",
    "lr_native": "LR barycentre (native 6×6, w0 tuned)",
    "lr_fit": "LR pixel fit (reference)",
    "lr_shape": "LR shape variables (logistic)",
    "lr_cnn": "LR-trained CNN",
    "lr_regressor": "LR CNN regressor of the impact point",
}


class CaloPhysicsEvaluator(Evaluator):
    """Physics metrics of SR and HR beside the LR baselines named in ``baselines``.

    Args:
        judge: frozen HR-trained photon/pion net (pion logit) scoring SR and HR; None skips those rows.
        judge_transform: GeV images -> the judge's input space; None -> its ``input_transform``.
        lr_classifier: frozen LR-trained net of the judge's architecture (row ``lr_cnn``); None skips it.
        lr_classifier_transform: GeV LR images -> its input space; None -> its ``input_transform``.
        lr_regressor: frozen net of the judge's size trained on LR images to regress the impact point
            (cm, [B, 2]; row ``lr_regressor``); None skips it.
        lr_regressor_transform: GeV LR images -> its input space; None -> its ``input_transform``.
        w0: log-weighting parameter of the SR and HR barycentres (fixed by the evaluation).
        factor: LR -> HR scale (energy-conservation pooling).
        photon_efficiency: working point of the pion rejection.
        baselines: which of :data:`BASELINES` to compute (``lr_cnn`` needs ``lr_classifier``,
            ``lr_regressor`` needs ``lr_regressor``).
        w0_grid: values tried for the LR barycentre's w0 on the validation split.
        position_fit_degree: highest degree of the barycentre monomials of the LR position fit.
        shape_l2: L2 penalty of the shape-variable logistic regression (standardised features).

    ``compute()`` keys (floats), ``<src>`` as in the module docstring:
        ``barycentre_res_cm/<src>`` (std of position - impact, mean of x and y) and ``_x|_y``,
        ``barycentre_q68_cm/<src>``, ``barycentre_bias_cm/<src>_x|_y`` for sr, hr, lr_native, lr_fit and
        lr_regressor (its position is the regressed impact point: the same resolution definition);
        ``barycentre_energy_res_cm/<sr|hr>``; ``width_mean_cm/<sr|hr>``, ``width_w1/sr_vs_hr``;
        ``energy_violation/sr``; ``auc/<src>``, ``pion_rejection/<src>`` and
        ``pion_rejection_lower_limit/<src>`` (1: no pion passed, the value is the number of pions and
        the rejection is larger) for sr, hr, lr_cnn, lr_shape. ``tuned/lr_native_w0`` (and the
        validation-split values of the fitted baselines) come from :meth:`tune`.
    """

    IMAGE_SOURCES = {"output": "sr", "target": "hr"}

    def __init__(
        self,
        judge: nn.Module | None = None,
        judge_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        lr_classifier: nn.Module | None = None,
        lr_classifier_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        lr_regressor: nn.Module | None = None,
        lr_regressor_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        w0: float = 4.7,
        factor: int = 4,
        photon_efficiency: float = 0.9,
        baselines: Sequence[str] = BASELINES,
        w0_grid: Sequence[float] = W0_GRID,
        position_fit_degree: int = 3,
        shape_l2: float = 1e-3,
        window_cm: float = WINDOW_CM,
    ) -> None:
        super().__init__()
        unknown = sorted(set(baselines) - set(BASELINES))
        if unknown:
            raise ValueError(f"CaloPhysicsEvaluator baselines: unknown {unknown}; known: {list(BASELINES)}")
        self.baselines = tuple(baselines)
        self.w0, self.factor, self.window_cm = float(w0), int(factor), float(window_cm)
        self.photon_efficiency = float(photon_efficiency)
        self.w0_grid = tuple(float(g) for g in w0_grid)
        self.add_judge("hr", judge, judge_transform)
        if "lr_cnn" in self.baselines:
            self.add_judge("lr_cnn", lr_classifier, lr_classifier_transform)
        if "lr_regressor" in self.baselines:
            self.add_judge("lr_regressor", lr_regressor, lr_regressor_transform)
        self.position_fit = PositionFit(degree=position_fit_degree, window_cm=window_cm)
        self.shape_logistic = ShapeLogistic(l2=shape_l2, window_cm=window_cm)
        self.lr_w0: float | None = None  # the LR barycentre's tuned w0 (None until tuned)
        self._fitted: set[str] = set()
        self.position = nn.ModuleDict(
            {
                s: BarycentreResolution("log", w0, window_cm) if s in ("sr", "hr") else PositionResolution()
                for s in POSITION_SOURCES
            }
        )
        self.position_energy = nn.ModuleDict({s: BarycentreResolution("energy", w0, window_cm) for s in ("sr", "hr")})
        self.width = nn.ModuleDict({s: ShowerWidth(window_cm) for s in ("sr", "hr")})
        self.separation = nn.ModuleDict({s: PhotonPionSeparation(photon_efficiency) for s in SEPARATION_SOURCES})
        self.energy = EnergyConservation(factor)

    # ------------------------------------------------------------------ baselines
    def tune(self, pairs: Iterable[tuple[Batch, Images]]) -> dict[str, float]:
        """Fit the LR baselines on the validation split: the LR barycentre's w0 (grid), the position fit
        and the shape-variable logistic regression. Returns the tuned w0 and their validation values."""
        lrs, impacts, labels = [], [], []
        for batch, images in pairs:
            if "input" not in images:
                continue
            lrs.append(images["input"].detach().double().cpu())
            if batch.get("impact_cm") is not None:
                impacts.append(batch["impact_cm"].detach().double().cpu())
            if batch.get("label") is not None:
                labels.append(batch["label"].detach().long().cpu())
        if not lrs:
            return {}
        lr = torch.cat(lrs)
        out: dict[str, float] = {}
        if len(impacts) == len(lrs) and lr.shape[0] >= 2:
            impact = torch.cat(impacts)
            if "lr_native" in self.baselines or "lr_fit" in self.baselines:
                self.lr_w0, tried = tune_w0(lr, impact, self.w0_grid, self.window_cm)
                out["lr_native_w0"] = self.lr_w0
                out["lr_native_val_res_cm"] = tried[self.lr_w0]
                self._fitted.add("lr_native")
            if "lr_fit" in self.baselines:
                self.position_fit.w0 = self.lr_w0
                n_par = self.position_fit.features(lr[:1]).shape[1]
                if lr.shape[0] >= 2 * n_par:
                    self.position_fit.fit(lr, impact)
                    out["lr_fit_val_res_cm"] = resolution_cm(self.position_fit.predict(lr).double(), impact)
                    self._fitted.add("lr_fit")
                else:
                    log.info("lr_fit baseline skipped: %d validation events for %d parameters", lr.shape[0], n_par)
        if "lr_shape" in self.baselines and len(labels) == len(lrs):
            y = torch.cat(labels)
            if int((y == 0).sum()) >= 2 and int((y == 1).sum()) >= 2:
                self.shape_logistic.fit(lr, y)
                out["lr_shape_val_auc"] = roc_auc(self.shape_logistic.score(lr), y == 1)
                self._fitted.add("lr_shape")
        return out

    # ------------------------------------------------------------------ contract
    @torch.no_grad()
    def update(self, batch: Batch, images: Images) -> None:
        """``images``: GeV tensors ``input`` (LR, native grid), ``output`` (SR) and ``target`` (HR) (each
        optional); ``batch`` gives ``impact_cm`` and ``label`` when the file has them."""
        impact, labels = batch.get("impact_cm"), batch.get("label")
        lr = images.get("input")
        for key, src in self.IMAGE_SOURCES.items():
            if key not in images:
                continue
            img = images[key].float()
            self.width[src].update(img)
            if impact is not None:
                self.position[src].update(img, impact)
                self.position_energy[src].update(img, impact)
            if labels is not None and self.has_judge("hr"):
                self.separation[src].update(self.judge("hr", img), labels)
            if src == "sr" and lr is not None:
                self.energy.update(img, lr.float())
        if lr is None:
            return
        lr = lr.float()
        if impact is not None:
            if "lr_native" in self._fitted:
                self.position["lr_native"].update(barycentre(lr, "log", self.lr_w0, self.window_cm), impact)
            if "lr_fit" in self._fitted:
                self.position["lr_fit"].update(self.position_fit.predict(lr), impact)
            if self.has_judge("lr_regressor"):
                self.position["lr_regressor"].update(self.judge("lr_regressor", lr).reshape(-1, 2), impact)
        if labels is not None:
            if "lr_shape" in self._fitted:
                self.separation["lr_shape"].update(self.shape_logistic.score(lr).to(lr.device), labels)
            if self.has_judge("lr_cnn"):
                self.separation["lr_cnn"].update(self.judge("lr_cnn", lr), labels)

    def compute(self) -> dict[str, float]:
        """Flat dict of floats; gathers per-event values from all processes (collective call in DDP)."""
        out: dict[str, float] = {}
        cache: dict[str, dict[str, Any]] = {"residuals": {}, "widths": {}, "scores": {}}
        for s, metric in self.position.items():
            if metric._update_count == 0:  # same on every rank: every rank sees the same kinds of batches
                continue
            res = self.synced(metric, lambda: metric.values().cpu())
            cache["residuals"][s] = res
            r = resolution_summary(res)
            out[f"barycentre_res_cm/{s}"] = float(r["std"])
            out[f"barycentre_res_cm/{s}_x"] = float(r["std_x"])
            out[f"barycentre_res_cm/{s}_y"] = float(r["std_y"])
            out[f"barycentre_q68_cm/{s}"] = float(r["q68"])
            out[f"barycentre_bias_cm/{s}_x"] = float(r["mean_x"])
            out[f"barycentre_bias_cm/{s}_y"] = float(r["mean_y"])
        for s, metric in self.position_energy.items():
            if metric._update_count:
                out[f"barycentre_energy_res_cm/{s}"] = float(metric.compute()["std"])
        for s, metric in self.width.items():
            if metric._update_count:
                cache["widths"][s] = self.synced(metric, lambda: metric.values().cpu())
                out[f"width_mean_cm/{s}"] = float(cache["widths"][s].float().mean())
        if "sr" in cache["widths"] and "hr" in cache["widths"]:
            out["width_w1/sr_vs_hr"] = wasserstein_1d(cache["widths"]["sr"], cache["widths"]["hr"])
        for s, metric in self.separation.items():
            if metric._update_count == 0:
                continue
            sc, y = self.synced(metric, lambda: tuple(t.cpu() for t in metric.values()))
            cache["scores"][s] = (sc, y)
            rej = pion_rejection(sc, y, self.photon_efficiency)
            out[f"auc/{s}"] = roc_auc(sc, y == 1)
            out[f"pion_rejection/{s}"] = rej.value
            out[f"pion_rejection_lower_limit/{s}"] = float(rej.lower_limit)
        if self.energy._update_count:
            out["energy_violation/sr"] = float(self.energy.compute())
        self._cache = cache
        return out

    def figures(self) -> dict[str, Any]:
        """Matplotlib figures (Agg): barycentre residuals, width distributions, ROC curves (when available).

        Uses the values gathered by the last ``compute()`` (call that first; in DDP it is collective).
        """
        from lit_sr.domains.calo import plots

        cache = self._cache
        if cache is None:
            self.compute()
            cache = self._cache
        figs: dict[str, Any] = {}
        if cache["residuals"]:
            figs["barycentre_residuals"] = plots.barycentre_residuals(cache["residuals"])
        if cache["widths"]:
            figs["shower_width"] = plots.width_distributions(cache["widths"])
        if cache["scores"]:
            figs["roc"] = plots.roc_curves(cache["scores"], self.photon_efficiency)
        return figs
