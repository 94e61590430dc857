"""Physics metrics of calorimeter super-resolution (Erdmann et al. 2022), as torchmetrics objects.

Conventions: images are energies in GeV, shape [B, 1, H, W], covering the 13.2 cm x 13.2 cm window
whatever the resolution (pixel size = window / H). Pixel (row i, col j) has its centre at
x = (j + 0.5) * c - window / 2, y = (i + 0.5) * c - window / 2 (x along columns, y along rows,
relative to the window centre, cm). ``impact_cm`` [B, 2] holds the true (x, y).

Per-event values are kept as states with ``dist_reduce_fx="cat"`` so quantiles, Wasserstein distances
and ROC curves are exact across devices; means use summed states.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lit_sr.models.classifier import frozen
from lit_sr.metrics.evaluator import Evaluator

WINDOW_CM = 13.2
SOURCES = ("lr_up", "sr", "hr")


# ----------------------------------------------------------------------------- pure functions
def pixel_centres(n: int, window_cm: float = WINDOW_CM, device=None, dtype=torch.float32) -> torch.Tensor:
    """Centres (cm) of ``n`` pixels along one axis of the window, relative to its centre."""
    c = window_cm / n
    return (torch.arange(n, device=device, dtype=dtype) + 0.5) * c - window_cm / 2


def _check_images(images: torch.Tensor) -> torch.Tensor:
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"calorimeter images must be [B, 1, H, W], got shape {tuple(images.shape)}")
    return images[:, 0].float()


def _weights(e: torch.Tensor, weighting: str, w0: float) -> torch.Tensor:
    """Per-pixel weights [B, H, W]; events with no positive log-weight fall back to energy weights."""
    e = e.clamp_min(0.0)
    if weighting == "energy":
        return e
    if weighting != "log":
        raise ValueError(f"weighting must be 'energy' or 'log', got {weighting!r}")
    tot = e.sum((1, 2), keepdim=True)
    frac = torch.where(e > 0, e / tot.clamp_min(torch.finfo(e.dtype).tiny), torch.zeros_like(e))
    w = torch.where(frac > 0, (w0 + torch.log(frac.clamp_min(1e-30))).clamp_min(0.0), torch.zeros_like(e))
    empty = w.sum((1, 2), keepdim=True) <= 0
    return torch.where(empty, e, w)


def barycentre(images: torch.Tensor, weighting: str = "log", w0: float = 4.7,
               window_cm: float = WINDOW_CM) -> torch.Tensor:
    """Shower centre (x, y) in cm, shape [B, 2].

    weighting: 'energy' (w_i = E_i) or 'log' (w_i = max(0, w0 + ln(E_i / E_tot)), Awes et al.).
    Negative energies are clipped at 0. An empty image gives the window centre (0, 0).
    """
    e = _check_images(images)
    _, h, w_ = e.shape
    w = _weights(e, weighting, w0)
    ys = pixel_centres(h, window_cm, e.device, e.dtype)
    xs = pixel_centres(w_, window_cm, e.device, e.dtype)
    tot = w.sum((1, 2))
    safe = tot.clamp_min(torch.finfo(e.dtype).tiny)
    x = (w.sum(1) * xs).sum(1) / safe
    y = (w.sum(2) * ys).sum(1) / safe
    out = torch.stack([x, y], 1)
    return torch.where((tot > 0).unsqueeze(1), out, torch.zeros_like(out))


def shower_width(images: torch.Tensor, window_cm: float = WINDOW_CM) -> torch.Tensor:
    """Energy-weighted radial RMS about the energy barycentre, sqrt(sum E r^2 / sum E), in cm, shape [B].

    A deposit in a single crystal has width 0; an empty image width 0.
    """
    e = _check_images(images).clamp_min(0.0)
    _, h, w_ = e.shape
    ys = pixel_centres(h, window_cm, e.device, e.dtype)
    xs = pixel_centres(w_, window_cm, e.device, e.dtype)
    c = barycentre(images, "energy", window_cm=window_cm)
    dx2 = (xs.view(1, 1, -1) - c[:, 0].view(-1, 1, 1)).pow(2)
    dy2 = (ys.view(1, -1, 1) - c[:, 1].view(-1, 1, 1)).pow(2)
    tot = e.sum((1, 2)).clamp_min(torch.finfo(e.dtype).tiny)
    var = (e * (dx2 + dy2)).sum((1, 2)) / tot
    return var.clamp_min(0.0).sqrt()


def sum_pool(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Sum over non-overlapping factor x factor blocks (HR energies -> LR crystal energies)."""
    return F.avg_pool2d(images, factor) * factor**2


def conserve_energy(sr: torch.Tensor, lr: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """Rescale each factor x factor block of ``sr`` so it sums exactly to its LR crystal (physical units).

    LR = 0 (or negative) crystals give zero blocks; a block of SR zeros under a positive LR crystal is
    filled uniformly with LR / factor^2. Differentiable (usable inside the generator path).
    """
    if sr.shape[-2] != lr.shape[-2] * factor or sr.shape[-1] != lr.shape[-1] * factor:
        raise ValueError(f"conserve_energy: SR {tuple(sr.shape)} is not {factor} x LR {tuple(lr.shape)}")
    sr = sr.clamp_min(0.0)
    lr = lr.clamp_min(0.0)
    blocks = sum_pool(sr, factor)
    ratio = torch.where(blocks > 0, lr / blocks.clamp_min(torch.finfo(sr.dtype).tiny), torch.zeros_like(lr))
    up = lambda t: F.interpolate(t, scale_factor=factor, mode="nearest")  # noqa: E731
    uniform = torch.where(blocks > 0, torch.zeros_like(lr), lr / factor**2)
    return sr * up(ratio) + up(uniform)


def energy_violation(sr: torch.Tensor, lr: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """Per event sum|pool(SR) - LR| / sum LR, shape [B] (0 for an exactly conserving SR)."""
    d = (sum_pool(sr, factor) - lr).abs().flatten(1).sum(1)
    return d / lr.flatten(1).sum(1).clamp_min(torch.finfo(lr.dtype).tiny)


def wasserstein_1d(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """1-D Wasserstein-1 distance between two samples (scipy.stats.wasserstein_distance); NaN if one is empty."""
    from scipy.stats import wasserstein_distance

    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64).ravel()
    b = np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        return float("nan")
    return float(wasserstein_distance(a, b))


def half_width_68(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Half-width of the central 68.27 % interval, (q84.135 - q15.865) / 2 (= sigma for a Gaussian)."""
    q = torch.quantile(x.double(), torch.tensor([0.158655, 0.841345], dtype=torch.float64, device=x.device), dim=dim)
    return ((q[1] - q[0]) / 2).to(x.dtype)


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve (label 1 positive), ties counted half (Mann-Whitney U)."""
    scores = scores.double().cpu()
    labels = labels.long().cpu()
    n1 = int((labels == 1).sum())
    n0 = int((labels == 0).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = torch.from_numpy(rankdata(scores.numpy()))
    u = ranks[labels == 1].sum().item() - n1 * (n1 + 1) / 2
    return u / (n0 * n1)


def pion_rejection(scores: torch.Tensor, labels: torch.Tensor, photon_efficiency: float = 0.9) -> float:
    """Pion rejection at a fixed photon efficiency.

    ``scores``: classifier pion scores (higher = more pion-like, label 1 = pion, 0 = photon). The
    photon selection keeps events with score <= t, t chosen so that a fraction ``photon_efficiency``
    of the photons pass. Rejection = 1 / (fraction of pions passing the photon selection). If no pion
    passes, the rejection is reported as the number of pions (a lower limit; keeps loggers finite).
    """
    scores = scores.double().cpu()
    labels = labels.long().cpu()
    photons, pions = scores[labels == 0], scores[labels == 1]
    if photons.numel() == 0 or pions.numel() == 0:
        return float("nan")
    t = torch.quantile(photons, photon_efficiency)
    passing = (pions <= t).double().mean().item()
    return float(pions.numel()) if passing == 0 else 1.0 / passing


def roc_curve(scores: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Photon efficiency and pion rejection along the threshold (for plots): (eff_photon, 1/eff_pion)."""
    s = scores.double().cpu().numpy()
    y = labels.long().cpu().numpy()
    thr = np.unique(s)
    eff_g = np.array([(s[y == 0] <= t).mean() for t in thr]) if (y == 0).any() else np.zeros(len(thr))
    eff_pi = np.array([(s[y == 1] <= t).mean() for t in thr]) if (y == 1).any() else np.zeros(len(thr))
    with np.errstate(divide="ignore"):
        rej = np.where(eff_pi > 0, 1.0 / np.maximum(eff_pi, 1e-300), np.nan)
    return eff_g, rej


# ----------------------------------------------------------------------------- metrics
class BarycentreResolution(Metric):
    """Residual barycentre - true impact (cm); compute() -> dict of resolutions.

    Keys: ``std_x``, ``std_y``, ``std`` (mean of x and y), ``q68_x``, ``q68_y``, ``q68`` (half-width of
    the central 68 % interval), ``mean_x``, ``mean_y`` (bias), ``n``.
    """

    full_state_update = False

    def __init__(self, weighting: str = "log", w0: float = 4.7, window_cm: float = WINDOW_CM, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weighting, self.w0, self.window_cm = weighting, w0, window_cm
        self.add_state("residuals", default=[], dist_reduce_fx="cat")

    def update(self, images: torch.Tensor, impact_cm: torch.Tensor) -> None:
        b = barycentre(images, self.weighting, self.w0, self.window_cm)
        self.residuals.append((b - impact_cm.to(b)).detach())

    def values(self) -> torch.Tensor:
        return dim_zero_cat(self.residuals) if len(self.residuals) else torch.zeros(0, 2, device=self.device)

    def compute(self) -> dict[str, torch.Tensor]:
        return resolution_summary(self.values())


def resolution_summary(residuals: torch.Tensor) -> dict[str, torch.Tensor]:
    """Std, 68 % half-width and mean of [N, 2] residuals per axis, plus their x/y mean (see above)."""
    r = residuals.double()
    if r.shape[0] < 2:
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        return {k: nan for k in ("std_x", "std_y", "std", "q68_x", "q68_y", "q68", "mean_x", "mean_y")} | {
            "n": torch.tensor(float(r.shape[0]))}
    std = r.std(0)
    q68 = half_width_68(r, 0)
    m = r.mean(0)
    return {"std_x": std[0], "std_y": std[1], "std": std.mean(), "q68_x": q68[0], "q68_y": q68[1],
            "q68": q68.mean(), "mean_x": m[0], "mean_y": m[1], "n": torch.tensor(float(r.shape[0]))}


class ShowerWidth(Metric):
    """Per-event shower widths (cm); compute() -> mean width. ``values()`` gives the distribution."""

    full_state_update = False

    def __init__(self, window_cm: float = WINDOW_CM, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.window_cm = window_cm
        self.add_state("widths", default=[], dist_reduce_fx="cat")

    def update(self, images: torch.Tensor) -> None:
        self.widths.append(shower_width(images, self.window_cm).detach())

    def values(self) -> torch.Tensor:
        return dim_zero_cat(self.widths) if len(self.widths) else torch.zeros(0, device=self.device)

    def compute(self) -> torch.Tensor:
        v = self.values()
        return v.mean() if v.numel() else torch.tensor(float("nan"))


class ShowerWidthDistance(Metric):
    """1-D Wasserstein distance (cm) between the width distributions of ``pred`` and ``target`` images."""

    full_state_update = False

    def __init__(self, window_cm: float = WINDOW_CM, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.window_cm = window_cm
        self.add_state("pred_w", default=[], dist_reduce_fx="cat")
        self.add_state("target_w", default=[], dist_reduce_fx="cat")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.pred_w.append(shower_width(pred, self.window_cm).detach())
        self.target_w.append(shower_width(target, self.window_cm).detach())

    def compute(self) -> torch.Tensor:
        if not len(self.pred_w):
            return torch.tensor(float("nan"))
        return torch.tensor(wasserstein_1d(dim_zero_cat(self.pred_w), dim_zero_cat(self.target_w)))


class PhotonPionSeparation(Metric):
    """Classifier scores (pion logit or probability) + labels (0 photon, 1 pion).

    compute() -> {'auc', 'rejection'}: ROC AUC and the pion rejection at ``photon_efficiency`` (see
    :func:`pion_rejection`; capped at the number of pions when no pion passes).
    """

    full_state_update = False

    def __init__(self, photon_efficiency: float = 0.9, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.photon_efficiency = photon_efficiency
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        self.scores.append(scores.detach().float().flatten())
        self.labels.append(labels.detach().long().flatten())

    def values(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not len(self.scores):
            return torch.zeros(0), torch.zeros(0, dtype=torch.long)
        return dim_zero_cat(self.scores), dim_zero_cat(self.labels)

    def compute(self) -> dict[str, torch.Tensor]:
        s, y = self.values()
        return {"auc": torch.tensor(roc_auc(s, y)),
                "rejection": torch.tensor(pion_rejection(s, y, self.photon_efficiency))}


class EnergyConservation(Metric):
    """Mean over events of sum|pool_factor(SR) - LR| / sum LR (0 = exact conservation)."""

    full_state_update = False

    def __init__(self, factor: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.factor = factor
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, sr: torch.Tensor, lr: torch.Tensor) -> None:
        v = energy_violation(sr.float(), lr.float(), self.factor)
        self.total += v.double().sum()
        self.count += v.numel()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count).float() if self.count > 0 else torch.tensor(float("nan"))


# ----------------------------------------------------------------------------- container
class CaloPhysicsEvaluator(Evaluator):
    """All calorimeter physics metrics for the image sources ``lr_up``, ``sr`` and ``hr``.

    Args:
        classifier: frozen HR-trained photon/pion net (logit of pion); None skips the separation metrics.
        classifier_transform: maps GeV images to the classifier's input space (e.g. the data
            module's ``IntensityTransform``); None -> the classifier's own ``input_transform``
            attribute (set by ``load_frozen_classifier``) if any, else identity.
        w0: log-weighting parameter of the barycentre.
        factor: LR -> HR scale (energy-conservation pooling).
        sources: image sources evaluated.
        photon_efficiency: working point of the pion rejection.

    ``compute()`` keys (floats):
        ``barycentre_res_cm/<src>`` (log weighting, std, mean of x and y), ``barycentre_res_cm/<src>_x|_y``,
        ``barycentre_q68_cm/<src>``, ``barycentre_energy_res_cm/<src>`` (energy weighting, std),
        ``barycentre_bias_cm/<src>_x|_y``, ``width_mean_cm/<src>``, ``width_w1/<src>_vs_hr``,
        ``auc/<src>``, ``pion_rejection/<src>``, ``energy_violation/<src>`` (sources other than hr).
    """

    def __init__(self, classifier: nn.Module | None = None,
                 classifier_transform: Callable[[torch.Tensor], torch.Tensor] | None = None, w0: float = 4.7,
                 factor: int = 4, sources: Sequence[str] = SOURCES, photon_efficiency: float = 0.9,
                 window_cm: float = WINDOW_CM) -> None:
        super().__init__()
        self.sources = tuple(sources)
        self.factor = factor
        self.classifier, self.classifier_transform = frozen(classifier, classifier_transform)
        self.bary_log = nn.ModuleDict({s: BarycentreResolution("log", w0, window_cm) for s in self.sources})
        self.bary_energy = nn.ModuleDict({s: BarycentreResolution("energy", w0, window_cm) for s in self.sources})
        self.width = nn.ModuleDict({s: ShowerWidth(window_cm) for s in self.sources})
        self.separation = nn.ModuleDict({s: PhotonPionSeparation(photon_efficiency) for s in self.sources})
        self.energy = nn.ModuleDict({s: EnergyConservation(factor) for s in self.sources if s != "hr"})
        self._seen_impact = False
        self._seen_labels = False
        self._cache: dict[str, Any] | None = None

    def train(self, mode: bool = True) -> "CaloPhysicsEvaluator":
        super().train(mode)
        if self.classifier is not None:
            self.classifier.eval()
        return self

    #: ``images`` keys of the image-to-image contract -> this evaluator's source names
    IMAGE_SOURCES = {"input_up": "lr_up", "output": "sr", "target": "hr"}

    @torch.no_grad()
    def update(self, batch: dict[str, torch.Tensor], images: dict[str, torch.Tensor]) -> None:
        """The evaluator contract: ``images`` holds GeV tensors ``input`` (LR), ``input_up`` (LR upsampled
        to the HR grid), ``output`` (SR) and ``target`` (HR); ``batch`` gives ``impact_cm`` and ``label``."""
        sources = {self.IMAGE_SOURCES[k]: v for k, v in images.items() if k in self.IMAGE_SOURCES}
        self.update_sources(sources, batch.get("impact_cm"), batch.get("label"), images.get("input"))

    @torch.no_grad()
    def update_sources(self, images: dict[str, torch.Tensor], impact_cm: torch.Tensor | None = None,
                       labels: torch.Tensor | None = None, lr_gev: torch.Tensor | None = None) -> None:
        """``images``: source (lr_up, sr, hr) -> GeV images [B, 1, H, W] (missing sources are skipped)."""
        for s in self.sources:
            if s not in images:
                continue
            img = images[s].float()
            self.width[s].update(img)
            if impact_cm is not None:
                self._seen_impact = True
                self.bary_log[s].update(img, impact_cm)
                self.bary_energy[s].update(img, impact_cm)
            if self.classifier is not None and labels is not None:
                self._seen_labels = True
                x = self.classifier_transform(img) if self.classifier_transform is not None else img
                self.separation[s].update(self.classifier(x), labels)
            if lr_gev is not None and s in self.energy:
                self.energy[s].update(img, lr_gev)

    @staticmethod
    def _synced(metric: Metric, fn: Callable[[], Any]) -> Any:
        """Evaluate ``fn`` on the states gathered from all processes (plain local states otherwise)."""
        if metric._update_count == 0:
            return fn()
        with metric.sync_context(should_sync=True, should_unsync=True):
            return fn()

    def compute(self) -> dict[str, float]:
        """Flat dict of floats; gathers per-event values from all processes (collective call in DDP)."""
        out: dict[str, float] = {}
        cache: dict[str, dict[str, Any]] = {"residuals": {}, "widths": {}, "scores": {}}
        for s in self.sources:
            if self.width[s]._update_count == 0:  # source never given (same on every rank)
                cache["widths"][s] = torch.zeros(0)
                continue
            cache["widths"][s] = self._synced(self.width[s], lambda: self.width[s].values().cpu())
            if self._seen_impact:
                res = self._synced(self.bary_log[s], lambda: self.bary_log[s].values().cpu())
                cache["residuals"][s] = res
                r = resolution_summary(res)
                out[f"barycentre_res_cm/{s}"] = float(r["std"])
                out[f"barycentre_res_cm/{s}_x"] = float(r["std_x"])
                out[f"barycentre_res_cm/{s}_y"] = float(r["std_y"])
                out[f"barycentre_q68_cm/{s}"] = float(r["q68"])
                out[f"barycentre_bias_cm/{s}_x"] = float(r["mean_x"])
                out[f"barycentre_bias_cm/{s}_y"] = float(r["mean_y"])
                out[f"barycentre_energy_res_cm/{s}"] = float(self.bary_energy[s].compute()["std"])
            if self.classifier is not None and self._seen_labels:
                sc, y = self._synced(self.separation[s], lambda: tuple(t.cpu() for t in self.separation[s].values()))
                cache["scores"][s] = (sc, y)
                out[f"auc/{s}"] = roc_auc(sc, y)
                out[f"pion_rejection/{s}"] = pion_rejection(sc, y, self.separation[s].photon_efficiency)
            if s in self.energy and self.energy[s]._update_count > 0:
                out[f"energy_violation/{s}"] = float(self.energy[s].compute())
        widths = cache["widths"]
        for s in self.sources:
            if widths[s].numel():
                out[f"width_mean_cm/{s}"] = float(widths[s].float().mean())
                if s != "hr" and "hr" in widths and widths["hr"].numel():
                    out[f"width_w1/{s}_vs_hr"] = wasserstein_1d(widths[s], widths["hr"])
        self._cache = cache
        return out

    def reset(self) -> None:
        for group in (self.bary_log, self.bary_energy, self.width, self.separation, self.energy):
            for m in group.values():
                m.reset()
        self._seen_impact = False
        self._seen_labels = False
        self._cache = None

    def figures(self) -> dict[str, Any]:
        """Matplotlib figures (Agg): barycentre residuals, width distributions, ROC curves (when available).

        Uses the values gathered by the last ``compute()`` (call that first; in DDP it is collective).
        """
        from lit_sr.domains.calo import plots

        cache = getattr(self, "_cache", None)
        if cache is None:
            self.compute()
            cache = self._cache
        figs: dict[str, Any] = {}
        if cache["residuals"]:
            figs["barycentre_residuals"] = plots.barycentre_residuals(cache["residuals"])
        widths = {s: w for s, w in cache["widths"].items() if w.numel()}
        if widths:
            figs["shower_width"] = plots.width_distributions(widths)
        if cache["scores"]:
            figs["roc"] = plots.roc_curves(cache["scores"])
        return figs
