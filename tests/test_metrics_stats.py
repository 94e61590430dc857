"""Shared statistics and the evaluator base: known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lit_sr.metrics.evaluator import Evaluator
from lit_sr.metrics.stats import (
    background_rejection,
    bootstrap_interval,
    roc_auc,
    roc_curve,
    tune_on_grid,
    wasserstein_1d,
)


def test_auc_is_the_pair_count_and_the_roc_area():
    rng = np.random.default_rng(0)
    s = np.round(rng.normal(size=300), 1)  # ties on purpose
    pos = rng.random(300) < 0.4
    pairs = (s[pos][:, None] > s[~pos][None]).mean() + 0.5 * (s[pos][:, None] == s[~pos][None]).mean()
    assert roc_auc(s, pos) == pytest.approx(pairs, abs=1e-12)
    fpr, tpr = roc_curve(s, pos)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.trapezoid(tpr, fpr) == pytest.approx(pairs, abs=1e-12)


def test_rejection_value_and_lower_limit_when_no_background_passes():
    signal = np.arange(100.0)  # select score >= t, t = 10th percentile of the signal (9.9) at 90 %
    background = np.r_[np.full(45, -1.0), np.full(5, 50.0)]
    r = background_rejection(signal, background, 0.9)
    assert (r.value, r.lower_limit, r.n_background) == (10.0, False, 50)
    none_pass = background_rejection(signal, np.full(2090, -1.0), 0.9)
    assert none_pass.lower_limit and none_pass.value == 2090 and str(none_pass) == "> 2090"


def test_w1_of_shifted_samples_is_the_shift():
    a = np.random.default_rng(1).normal(size=1000)
    assert wasserstein_1d(a, a + 0.3) == pytest.approx(0.3, abs=1e-9)
    assert math.isnan(wasserstein_1d([], a))


def test_bootstrap_interval_of_a_mean_matches_its_standard_error():
    x = np.random.default_rng(2).normal(size=2000)
    lo, hi = bootstrap_interval(np.mean, x, n_resamples=400)
    assert (hi - lo) / 2 == pytest.approx(1 / math.sqrt(2000), rel=0.2)


def test_tune_on_grid_finds_the_minimum_and_skips_nan():
    best, tried = tune_on_grid(lambda g: float("nan") if g < 0 else (g - 2.5) ** 2, np.arange(-1, 5, 0.5))
    assert best == 2.5 and math.isnan(tried[-1.0])


class _MeanEvaluator(Evaluator):
    def __init__(self, net):
        super().__init__()
        self.add_judge("judge", net)
        self.total = 0.0

    def tune(self, pairs):
        return {"offset": float(np.mean([b["x"] for b, _ in pairs]))}

    def update(self, batch, images):
        self.total += float(self.judge("judge", images["output"]).sum())

    def compute(self):
        return {"total": self.total, "undefined": float("nan")}


def test_evaluator_keeps_judges_frozen_tunes_once_and_drops_non_finite():
    ev = _MeanEvaluator(nn.Sequential(nn.Linear(2, 1), nn.Dropout(0.5)))
    ev.train()
    assert not ev.judges["judge"].training
    assert not any(p.requires_grad for p in ev.judges["judge"].parameters())
    ev.prepare([({"x": 1.0}, {}), ({"x": 3.0}, {})])
    ev.prepare([({"x": 100.0}, {})])  # a second call does not re-tune
    ev.update({}, {"output": torch.ones(4, 2)})
    values, skipped = ev.results()
    assert values["tuned/offset"] == 2.0 and "total" in values and skipped == ["undefined"]


def test_evaluator_is_not_part_of_the_model_state():
    """Judges come from their own checkpoints: a model's state_dict leaves the evaluator out, and a
    checkpoint written with an evaluator's tensors (or without them) loads strictly either way."""

    class Model(nn.Module):
        def __init__(self, judge_width: int):
            super().__init__()
            self.net = nn.Linear(2, 2)
            self.evaluator = _MeanEvaluator(nn.Linear(2, judge_width))

    a, b = Model(1), Model(3)
    assert sorted(a.state_dict()) == ["net.bias", "net.weight"]
    with_evaluator = {**a.state_dict(), "evaluator.judges.judge.weight": torch.zeros(7, 7)}
    b.load_state_dict(with_evaluator, strict=True)
    assert torch.equal(b.net.weight, a.net.weight)
    assert b.evaluator.judges["judge"].weight.shape == (3, 2)  # the judge keeps its own weights
