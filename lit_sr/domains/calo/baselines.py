"""Classical analyses of the LR (6x6, 2.2 cm crystals) calorimeter image: the baselines SR must beat.

Each works on the native LR grid in GeV, with its free parameters fitted on the validation split only:

* :func:`tune_w0`: the log-weighted barycentre (Awes et al.) on the LR crystals, its cut-off ``w0``
  chosen on a grid to minimise the resolution (the standard analysis of a crystal calorimeter);
* :class:`PositionFit`: a least-squares fit of the impact point on the 36 LR energy fractions plus
  polynomial terms of the log-weighted barycentre (what the LR image knows about the position, an
  information reference rather than a standard analysis);
* :class:`ShapeLogistic`: photon / pi0 separation by an L2 logistic regression on named LR shower-shape
  variables (sorted energy fractions, second moments, their quadratic terms).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from lit_sr.domains.calo.metrics import WINDOW_CM, barycentre, pixel_centres, resolution_summary
from lit_sr.metrics.stats import tune_on_grid

#: grid of the LR barycentre's w0 tuned on the validation split
W0_GRID: tuple[float, ...] = tuple(round(2.0 + 0.1 * i, 1) for i in range(51))  # 2.0 ... 7.0


def _gev(images: torch.Tensor) -> torch.Tensor:
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"calorimeter images must be [B, 1, H, W], got shape {tuple(images.shape)}")
    return images.double().clamp_min(0.0)


def resolution_cm(positions: torch.Tensor, impact_cm: torch.Tensor) -> float:
    """Mean over x and y of the standard deviation of position - impact (cm): the reported resolution."""
    return float(resolution_summary((positions - impact_cm.to(positions)).double())["std"])


def tune_w0(
    lr_gev: torch.Tensor, impact_cm: torch.Tensor, grid: Iterable[float] = W0_GRID, window_cm: float = WINDOW_CM
) -> tuple[float, dict[float, float]]:
    """The w0 of the log-weighted LR barycentre with the best resolution on these events (validation
    split), and the resolution (cm) at every grid value."""
    e = _gev(lr_gev)
    return tune_on_grid(lambda w0: resolution_cm(barycentre(e, "log", w0, window_cm), impact_cm), grid)


# ----------------------------------------------------------------------------- position fit
class PositionFit:
    """Least-squares impact point from the LR image: (x, y) = A @ features, fitted on the validation split.

    Features (per event, GeV images of any size): the energy fractions of every crystal, the
    log-weighted barycentre (x, y) with ``w0`` and its monomials up to ``degree`` (S-curve correction),
    and a constant. Solved with numpy's least squares (minimum norm: the fractions sum to 1, so they
    and the constant are collinear).
    """

    def __init__(self, w0: float = 4.7, degree: int = 3, window_cm: float = WINDOW_CM) -> None:
        self.w0, self.degree, self.window_cm = float(w0), int(degree), float(window_cm)
        self.coef: np.ndarray | None = None

    def features(self, lr_gev: torch.Tensor) -> np.ndarray:
        e = _gev(lr_gev)
        frac = (e / e.sum((1, 2, 3), keepdim=True).clamp_min(1e-12)).flatten(1).cpu().numpy()
        b = barycentre(e, "log", self.w0, self.window_cm).cpu().numpy() / (self.window_cm / 2)
        poly = [b[:, 0] ** i * b[:, 1] ** (d - i) for d in range(1, self.degree + 1) for i in range(d + 1)]
        return np.column_stack([frac, *poly, np.ones(len(e))])

    def fit(self, lr_gev: torch.Tensor, impact_cm: torch.Tensor) -> "PositionFit":
        x = self.features(lr_gev)
        if len(x) < x.shape[1]:
            raise ValueError(f"PositionFit: {len(x)} events for {x.shape[1]} parameters; need more events")
        self.coef, *_ = np.linalg.lstsq(x, impact_cm.double().cpu().numpy(), rcond=None)
        return self

    def predict(self, lr_gev: torch.Tensor) -> torch.Tensor:
        if self.coef is None:
            raise RuntimeError("PositionFit.predict before fit")
        return torch.from_numpy(self.features(lr_gev) @ self.coef).to(lr_gev.device, torch.float32)


# ----------------------------------------------------------------------------- shape variables
#: names of the base shape variables (:func:`shape_variables`); quadratic terms are named "a*b"
def shape_variable_names(n_sorted: int = 8) -> list[str]:
    return [f"frac_sorted_{i + 1}" for i in range(n_sorted)] + ["r2_cm2", "lambda_major_cm2", "lambda_minor_cm2"]


def shape_variables(lr_gev: torch.Tensor, n_sorted: int = 8, window_cm: float = WINDOW_CM) -> np.ndarray:
    """Per event: the ``n_sorted`` largest crystal energy fractions (descending), the energy-weighted
    second moment r^2 = <dx^2 + dy^2> about the energy barycentre (cm^2), and the two eigenvalues of the
    second-moment matrix (major, minor; cm^2). Rotation- and reflection-invariant, so the D4
    symmetry of the grid leaves them unchanged. Shape [B, n_sorted + 3]."""
    e = _gev(lr_gev)[:, 0]
    n, h, w = e.shape
    tot = e.sum((1, 2)).clamp_min(1e-12)
    frac = (e / tot.view(-1, 1, 1)).flatten(1)
    top = torch.sort(frac, dim=1, descending=True).values[:, :n_sorted]
    if top.shape[1] < n_sorted:
        top = torch.cat([top, top.new_zeros(n, n_sorted - top.shape[1])], 1)
    ys = pixel_centres(h, window_cm, e.device, e.dtype).view(1, -1, 1)
    xs = pixel_centres(w, window_cm, e.device, e.dtype).view(1, 1, -1)
    p = e / tot.view(-1, 1, 1)
    mx, my = (p * xs).sum((1, 2)), (p * ys).sum((1, 2))
    dx, dy = xs - mx.view(-1, 1, 1), ys - my.view(-1, 1, 1)
    sxx, syy, sxy = (p * dx * dx).sum((1, 2)), (p * dy * dy).sum((1, 2)), (p * dx * dy).sum((1, 2))
    half_trace = (sxx + syy) / 2
    root = torch.sqrt(((sxx - syy) / 2) ** 2 + sxy**2)
    out = torch.cat([top, torch.stack([sxx + syy, half_trace + root, (half_trace - root).clamp_min(0.0)], 1)], 1)
    return out.cpu().numpy()


def quadratic_expansion(x: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """``x`` plus every product x_i * x_j (i <= j), with names ``a*b``."""
    pairs = [(i, j) for i in range(x.shape[1]) for j in range(i, x.shape[1])]
    quad = np.column_stack([x[:, i] * x[:, j] for i, j in pairs]) if pairs else np.zeros((len(x), 0))
    return np.hstack([x, quad]), list(names) + [f"{names[i]}*{names[j]}" for i, j in pairs]


class ShapeLogistic:
    """Pion score from LR shape variables: L2-regularised logistic regression on the standardised base
    variables of :func:`shape_variables` and their quadratic terms (``feature_names``).

    ``l2``: the penalty l2 / 2 * |w|^2 added to the mean log-loss (standardised features).
    """

    def __init__(self, n_sorted: int = 8, l2: float = 1e-3, window_cm: float = WINDOW_CM) -> None:
        self.n_sorted, self.l2, self.window_cm = int(n_sorted), float(l2), float(window_cm)
        self.feature_names = quadratic_expansion(np.zeros((1, n_sorted + 3)), shape_variable_names(n_sorted))[1]
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.weights: np.ndarray | None = None
        self.bias = 0.0

    def features(self, lr_gev: torch.Tensor) -> np.ndarray:
        return quadratic_expansion(
            shape_variables(lr_gev, self.n_sorted, self.window_cm), shape_variable_names(self.n_sorted)
        )[0]

    def fit(self, lr_gev: torch.Tensor, labels: torch.Tensor) -> "ShapeLogistic":
        return self.fit_features(self.features(lr_gev), labels)

    def fit_features(self, x: np.ndarray, labels: torch.Tensor | np.ndarray) -> "ShapeLogistic":
        from scipy.optimize import minimize

        y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.float64).ravel()
        if len(np.unique(y)) < 2:
            raise ValueError("ShapeLogistic.fit needs photons and pions")
        self.mean, self.scale = x.mean(0), x.std(0)
        self.scale[self.scale < 1e-12] = 1.0
        z = (x - self.mean) / self.scale
        n, d = z.shape

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:d], theta[d]
            t = z @ w + b
            # mean of log(1 + exp(t)) - y t, stable
            value = np.mean(np.logaddexp(0.0, t) - y * t) + 0.5 * self.l2 * (w @ w)
            g = 1.0 / (1.0 + np.exp(-t)) - y
            return value, np.concatenate([z.T @ g / n + self.l2 * w, [g.mean()]])

        res = minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B", options={"maxiter": 2000})
        self.weights, self.bias = res.x[:d], float(res.x[d])
        return self

    def score_features(self, x: np.ndarray) -> np.ndarray:
        if self.weights is None:
            raise RuntimeError("ShapeLogistic.score before fit")
        return ((x - self.mean) / self.scale) @ self.weights + self.bias

    def score(self, lr_gev: torch.Tensor) -> torch.Tensor:
        """Pion logit per event, shape [B]."""
        return torch.from_numpy(self.score_features(self.features(lr_gev))).float()
