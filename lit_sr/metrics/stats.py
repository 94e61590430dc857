"""Statistics every evaluator shares, one copy each: ROC, AUC, background rejection with its lower limit,
the 1-D Wasserstein distance, bootstrap intervals, a grid search for a baseline's free parameter, and the
mean ± sample std of a metric over seeds, and the Fréchet distance of two feature sets.

Conventions: ``scores`` are "higher = more positive"; ``positive`` is a boolean mask (or 0/1 labels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from scipy import linalg

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]


def as_numpy(x: ArrayLike, dtype=np.float64) -> np.ndarray:
    """A float64 (or ``dtype``) flat numpy copy of a tensor, array or sequence."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=dtype).ravel()


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value) of values over runs or seeds."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def roc_curve(scores: ArrayLike, positive: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold (score >= t selected),
    from (0, 0) to (1, 1); tied scores move both rates in one step."""
    s = as_numpy(scores)
    pos = as_numpy(positive, bool)
    order = np.argsort(-s, kind="stable")
    s, pos = s[order], pos[order]
    last_of_tie = np.r_[np.diff(s) != 0, True]
    tp = np.r_[0, np.cumsum(pos)[last_of_tie]]
    fp = np.r_[0, np.cumsum(~pos)[last_of_tie]]
    return fp / max(1, int((~pos).sum())), tp / max(1, int(pos.sum()))


def roc_auc(scores: ArrayLike, positive: ArrayLike) -> float:
    """Area under the ROC curve, ties counted half (Mann-Whitney U); NaN without both classes."""
    from scipy.stats import rankdata

    s = as_numpy(scores)
    pos = as_numpy(positive, bool)
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    u = rankdata(s)[pos].sum() - n1 * (n1 + 1) / 2
    return float(u / (n0 * n1))


@dataclass(frozen=True)
class Rejection:
    """Background rejection 1 / (background efficiency) at a fixed signal efficiency.

    When no background event passes the selection the rejection is not measured: ``value`` is then the
    number of background events (the rejection is larger than that) and ``lower_limit`` is True.
    """

    value: float
    lower_limit: bool
    n_background: int

    def __str__(self) -> str:
        if math.isnan(self.value):
            return "n/a"
        return f"> {self.value:.0f}" if self.lower_limit else f"{self.value:.3g}"


def background_rejection(
    signal_scores: ArrayLike, background_scores: ArrayLike, signal_efficiency: float = 0.9
) -> Rejection:
    """Rejection of background at ``signal_efficiency``, selecting score >= t (higher = more signal-like).

    t is the (1 - efficiency) quantile of the signal scores, so a fraction ``signal_efficiency`` of the
    signal passes; background events with score >= t pass too.
    """
    sig, bkg = as_numpy(signal_scores), as_numpy(background_scores)
    if sig.size == 0 or bkg.size == 0:
        return Rejection(float("nan"), False, int(bkg.size))
    t = np.quantile(sig, 1.0 - signal_efficiency)
    passing = int((bkg >= t).sum())
    if passing == 0:
        return Rejection(float(bkg.size), True, int(bkg.size))
    return Rejection(bkg.size / passing, False, int(bkg.size))


def wasserstein_1d(a: ArrayLike, b: ArrayLike) -> float:
    """1-D Wasserstein-1 distance of two samples (scipy.stats.wasserstein_distance); NaN if one is empty."""
    from scipy.stats import wasserstein_distance

    a, b = as_numpy(a), as_numpy(b)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return float("nan")
    return float(wasserstein_distance(a, b))


def bootstrap_interval(
    statistic: Callable[..., float], *samples: ArrayLike, n_resamples: int = 200, level: float = 0.68, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*samples)``: every sample (same length, paired) is
    resampled with one set of indices; returns (low, high) at ``level`` (0.68 = +-1 sigma)."""
    arrays = [as_numpy(s) if not isinstance(s, np.ndarray) or s.ndim == 1 else s for s in samples]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"bootstrap_interval: paired samples need one length, got {[len(a) for a in arrays]}")
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        values.append(statistic(*(a[idx] for a in arrays)))
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def tune_on_grid(loss: Callable[[float], float], grid: Iterable[float]) -> tuple[float, dict[float, float]]:
    """The grid value with the smallest finite ``loss`` (a baseline's free parameter tuned on the
    validation split) and every (value, loss) tried. Raises if no value gives a finite loss."""
    tried = {float(g): float(loss(float(g))) for g in grid}
    finite = {g: v for g, v in tried.items() if math.isfinite(v)}
    if not finite:
        raise ValueError(f"tune_on_grid: no finite loss on the grid {sorted(tried)}")
    return min(finite, key=finite.get), tried


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2) of two feature sets [N, D].

    The matrix square root is taken of the symmetric PSD product S_a^1/2 S_b S_a^1/2 (eigen-
    decomposition, negative round-off eigenvalues clipped), so the result is real and >= 0.
    """
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"frechet_distance needs [N, D] arrays of one D, got {a.shape} and {b.shape}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        return float("nan")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    middle = root_a @ cov_b @ root_a
    eig = np.clip(linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.sqrt(eig).sum())
    return max(value, 0.0)
