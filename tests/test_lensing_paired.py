"""reports.lensing.paired: the paired bootstrap of a GAN's judge AUC / feature distance against its PSNR model."""

from __future__ import annotations

import numpy as np
import pytest

from reports.lensing.paired import paired_bootstrap, seeds_bootstrap


def _source(rng: np.random.Generator, labels: np.ndarray, signal: float, shift: float, hr: np.ndarray):
    """Posteriors that favour the true class by ``signal``; features = HR's + ``shift`` + noise."""
    logits = rng.normal(size=(len(labels), 3)) + signal * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return {"probs": probs, "features": hr + shift + 0.1 * rng.normal(size=hr.shape)}


def test_identical_sources_differ_by_exactly_zero_and_a_clear_gain_is_found():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    hr = rng.normal(size=(300, 4))
    a = _source(rng, labels, 1.0, 1.0, hr)
    same = paired_bootstrap(a, a, hr, labels, n_boot=50)
    assert same["d_auc"] == 0.0 and same["d_fd"] == 0.0
    assert same["d_auc_ci"] == [0.0, 0.0] and same["d_fd_ci"] == [0.0, 0.0]
    # B: a stronger class signal and features nearer HR (mean shift 0.2 instead of 1: FD ~ 4 x 1 -> 4 x 0.04)
    b = _source(rng, labels, 3.0, 0.2, hr)
    r = paired_bootstrap(a, b, hr, labels, n_boot=200)
    assert r["d_auc"] > 0.1 and r["d_auc_ci"][0] > 0 and r["p_b_better_auc"] == 1.0
    assert r["fd_a"] == pytest.approx(4.0, rel=0.15) and r["fd_b"] == pytest.approx(0.16, abs=0.1)
    assert r["d_fd_ci"][1] < 0 and r["p_b_better_fd"] == 1.0
    m = seeds_bootstrap([(a, b), (a, a)], hr, labels, n_boot=100)
    assert m["d_fd"] == pytest.approx(r["d_fd"] / 2) and m["d_auc"] == pytest.approx(r["d_auc"] / 2)


def test_different_lenses_are_refused():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 50)
    hr = rng.normal(size=(50, 4))
    a = _source(rng, labels, 1.0, 0.0, hr)
    b = {k: v[:40] for k, v in a.items()}
    with pytest.raises(ValueError, match="same lenses"):
        paired_bootstrap(a, b, hr, labels, n_boot=10)
