"""Galaxy generation ratios: their denominators are means over random real/real splits (known answers
from the hypergeometric law), with the spread over the splits; the classifier is a frozen judge."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from lit_sr.domains.galaxy.metrics import GalaxyGenerationEvaluator
from lit_sr.domains.galaxy.morphology import draw_splits, ratio_over_splits
from lit_sr.metrics.stats import frechet_distance, wasserstein_1d

M = 10  # images per compared set
N_SPLITS = 4000  # splits: the mean over them converges to the expectation over random splits
STAMP = 16


def _binary_law(m: int) -> tuple[np.ndarray, np.ndarray]:
    """Real set of m zeros and m ones split into halves a, b of m: a holds k ones, k hypergeometric;
    returns the possible k and their probabilities."""
    k = np.arange(m + 1)
    return k, stats.hypergeom(2 * m, m, m).pmf(k)


def test_w1_denominator_is_the_mean_over_splits_of_a_known_law() -> None:
    # W1(real_b, real_a) of 0/1 values = |k/m - (m-k)/m| = |2k - m| / m per split
    k, p = _binary_law(M)
    per_split = np.abs(2 * k - M) / M
    expected, sigma = (
        float((p * per_split).sum()),
        float(np.sqrt((p * per_split**2).sum() - (p * per_split).sum() ** 2)),
    )
    real = np.r_[np.zeros(M), np.ones(M)]
    fake = np.full(3 * M, 0.25)
    splits = draw_splits(np.arange(fake.size), np.arange(real.size), N_SPLITS, np.random.default_rng(1))
    assert splits.m == M and splits.n == N_SPLITS
    r = ratio_over_splits(wasserstein_1d, fake, real, splits)
    assert r["real"] == pytest.approx(expected, abs=4 * sigma / np.sqrt(N_SPLITS))
    assert r["real_std"] == pytest.approx(sigma, rel=0.05)
    # the numerator: W1 of a point mass at 0.25 to k/m ones = 0.25 (1 - k/m) + 0.75 k/m, averaged too
    num = float((p * (0.25 * (1 - k / M) + 0.75 * k / M)).sum())
    assert r["model"] == pytest.approx(num, abs=4 * 0.5 * sigma / np.sqrt(N_SPLITS))
    assert r["ratio"] == pytest.approx(r["model"] / r["real"], rel=1e-12)
    # and it is the plain mean of the per-split distances (halves disjoint, fresh fakes per split)
    den = [wasserstein_1d(real[b], real[a]) for a, b in zip(splits.a[:50], splits.b[:50])]
    few = ratio_over_splits(wasserstein_1d, fake, real, type(splits)(M, splits.fake[:50], splits.a[:50], splits.b[:50]))
    assert few["real"] == pytest.approx(np.mean(den), rel=1e-12)
    assert few["real_std"] == pytest.approx(np.std(den, ddof=1), rel=1e-12)
    assert all(np.intersect1d(a, b).size == 0 for a, b in zip(splits.a, splits.b))


class MeanPixel(nn.Module):
    """A 'classifier' whose one feature is the mean pixel value (a weight so freezing can be seen)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x.mean(dim=(1, 2, 3))[:, None]


def test_evaluator_denominators_over_splits_and_frozen_judge() -> None:
    # 2M real stamps, M empty and M of constant c ADU; the judge's feature is the mean pixel, so per
    # split FD(real_b, real_a) = c^2 (2k - M)^2 / M^2 with E = c^2 / (2M - 1) exactly, and the flux
    # W1 (flux = c * STAMP^2 per bright stamp) = c STAMP^2 |2k - M| / M.
    c = 3.0
    real = torch.cat([torch.zeros(M, 1, STAMP, STAMP), torch.full((M, 1, STAMP, STAMP), c)])
    fake = torch.full((2 * M, 1, STAMP, STAMP), c)
    judge = MeanPixel()
    ev = GalaxyGenerationEvaluator(classifier=judge, class_names=["all"], n_splits=N_SPLITS, seed=3)
    ev.train()
    assert not judge.training and not judge.scale.requires_grad
    ev.update({}, {"target": real, "output": fake})
    out = ev.compute()
    k, p = _binary_law(M)
    fd = c**2 * (2 * k - M) ** 2 / M**2
    fd_sigma = float(np.sqrt((p * fd**2).sum() - (p * fd).sum() ** 2))
    assert (p * fd).sum() == pytest.approx(c**2 / (2 * M - 1), rel=1e-12)
    assert out["fd_real"] == pytest.approx(c**2 / (2 * M - 1), abs=4 * fd_sigma / np.sqrt(N_SPLITS))
    assert out["fd_real_std"] == pytest.approx(fd_sigma, rel=0.05)
    assert out["fd_ratio"] == pytest.approx(out["fd"] / out["fd_real"], rel=1e-12)
    w1 = c * STAMP**2 * np.abs(2 * k - M) / M
    w1_sigma = float(np.sqrt((p * w1**2).sum() - (p * w1).sum() ** 2))
    assert out["w1_real/flux"] == pytest.approx((p * w1).sum(), abs=4 * w1_sigma / np.sqrt(N_SPLITS))
    assert out["w1_ratio/flux"] == pytest.approx(out["w1/flux"] / out["w1_real/flux"], rel=1e-12)
    assert out["n_splits"] == N_SPLITS and out["n_pairs"] == M
    # a single split's frechet_distance agrees with the formula above
    a, b = np.zeros((M, 1)), np.r_[np.full((3, 1), c), np.zeros((M - 3, 1))]
    assert frechet_distance(b, a) == pytest.approx((3 * c / M) ** 2 + (c * np.sqrt(3 * 7 / (M * (M - 1)))) ** 2)


def test_too_few_splits_refused() -> None:
    with pytest.raises(ValueError, match="n_splits"):
        GalaxyGenerationEvaluator(classifier=None, n_splits=1)
