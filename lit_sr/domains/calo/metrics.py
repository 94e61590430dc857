"""Physics metrics of calorimeter super-resolution (Erdmann et al. 2022), as torchmetrics objects.

Conventions: images are energies in GeV, shape [B, 1, H, W], covering the 13.2 cm x 13.2 cm window
whatever the resolution (pixel size = window / H). Pixel (row i, col j) has its centre at
x = (j + 0.5) * c - window / 2, y = (i + 0.5) * c - window / 2 (x along columns, y along rows,
relative to the window centre, cm). ``impact_cm`` [B, 2] holds the true (x, y).

Per-event values are kept as states with ``dist_reduce_fx="cat"`` so quantiles, Wasserstein distances
and ROC curves are exact across devices; means use summed states.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lit_sr.metrics.stats import background_rejection, roc_auc, wasserstein_1d

WINDOW_CM = 13.2


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


def barycentre(
    images: torch.Tensor, weighting: str = "log", w0: float = 4.7, window_cm: float = WINDOW_CM
) -> torch.Tensor:
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


def half_width_68(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Half-width of the central 68.27 % interval, (q84.135 - q15.865) / 2 (= sigma for a Gaussian)."""
    q = torch.quantile(x.double(), torch.tensor([0.158655, 0.841345], dtype=torch.float64, device=x.device), dim=dim)
    return ((q[1] - q[0]) / 2).to(x.dtype)


# ----------------------------------------------------------------------------- metrics
class PositionResolution(Metric):
    """Residual position estimate - true impact (cm) of any estimator; compute() -> dict of resolutions.

    Keys: ``std_x``, ``std_y``, ``std`` (mean of x and y), ``q68_x``, ``q68_y``, ``q68`` (half-width of
    the central 68 % interval), ``mean_x``, ``mean_y`` (bias), ``n``.
    """

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("residuals", default=[], dist_reduce_fx="cat")

    def update(self, positions_cm: torch.Tensor, impact_cm: torch.Tensor) -> None:
        self.residuals.append((positions_cm.float() - impact_cm.to(positions_cm.device).float()).detach())

    def values(self) -> torch.Tensor:
        return dim_zero_cat(self.residuals) if len(self.residuals) else torch.zeros(0, 2, device=self.device)

    def compute(self) -> dict[str, torch.Tensor]:
        return resolution_summary(self.values())


class BarycentreResolution(PositionResolution):
    """:class:`PositionResolution` of the barycentre of images (``weighting``, ``w0`` as :func:`barycentre`)."""

    def __init__(self, weighting: str = "log", w0: float = 4.7, window_cm: float = WINDOW_CM, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weighting, self.w0, self.window_cm = weighting, w0, window_cm

    def update(self, images: torch.Tensor, impact_cm: torch.Tensor) -> None:
        super().update(barycentre(images, self.weighting, self.w0, self.window_cm), impact_cm)


def resolution_summary(residuals: torch.Tensor) -> dict[str, torch.Tensor]:
    """Std, 68 % half-width and mean of [N, 2] residuals per axis, plus their x/y mean (see above)."""
    r = residuals.double()
    if r.shape[0] < 2:
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        return {k: nan for k in ("std_x", "std_y", "std", "q68_x", "q68_y", "q68", "mean_x", "mean_y")} | {
            "n": torch.tensor(float(r.shape[0]))
        }
    std = r.std(0)
    q68 = half_width_68(r, 0)
    m = r.mean(0)
    return {
        "std_x": std[0],
        "std_y": std[1],
        "std": std.mean(),
        "q68_x": q68[0],
        "q68_y": q68[1],
        "q68": q68.mean(),
        "mean_x": m[0],
        "mean_y": m[1],
        "n": torch.tensor(float(r.shape[0])),
    }


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
    """Classifier scores (pion logit or probability, higher = more pion-like) + labels (0 photon, 1 pion).

    compute() -> {'auc', 'rejection', 'rejection_lower_limit'}: ROC AUC and the pion rejection at
    ``photon_efficiency`` (:func:`pion_rejection`); when no pion passes the photon selection the
    rejection is not measured: it is then the number of pions and ``rejection_lower_limit`` is 1.
    """

    full_state_update = False

    def __init__(self, photon_efficiency: float = 0.9, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.photon_efficiency = photon_efficiency
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        self.scores.append(scores.detach().float().flatten())
        self.labels.append(labels.detach().long().flatten().to(self.scores[-1].device))

    def values(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not len(self.scores):
            return torch.zeros(0), torch.zeros(0, dtype=torch.long)
        return dim_zero_cat(self.scores), dim_zero_cat(self.labels)

    def compute(self) -> dict[str, torch.Tensor]:
        s, y = self.values()
        r = pion_rejection(s, y, self.photon_efficiency)
        return {
            "auc": torch.tensor(roc_auc(s, y == 1)),
            "rejection": torch.tensor(r.value),
            "rejection_lower_limit": torch.tensor(float(r.lower_limit)),
        }


def pion_rejection(scores: torch.Tensor, labels: torch.Tensor, photon_efficiency: float = 0.9):
    """Pion rejection at a fixed photon efficiency, a :class:`~lit_sr.metrics.stats.Rejection`.

    ``scores``: pion scores (higher = more pion-like; label 1 pion, 0 photon). The photon selection keeps
    score <= t with t the ``photon_efficiency`` quantile of the photon scores; rejection = 1 / (fraction
    of pions passing). No pion passing: ``value`` = number of pions, ``lower_limit`` True ("> N").
    """
    s = scores.detach().double().cpu().flatten()
    y = labels.detach().long().cpu().flatten()
    return background_rejection(-s[y == 0], -s[y == 1], photon_efficiency)


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
