"""Flux-conserving rescaling (lit_sr.inference.flux.match_total) against known answers and Poisson statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_sr.inference.flux import match_total


def test_match_total_known_answer_on_a_masked_x2_grid():
    ref = torch.arange(1.0, 17.0).reshape(1, 1, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1.0  # columns 0-1: 1+2+5+6+9+10+13+14 = 60
    out = torch.full((1, 1, 8, 8), 0.5)  # each input pixel's 2 x 2 block sums to 2: 16 over the mask
    scaled, f = match_total(out, ref, mask, scale=2)
    assert float(f) == pytest.approx(60 / 16)
    pooled = scaled.reshape(1, 1, 4, 2, 4, 2).sum(dim=(3, 5))
    assert float((pooled * mask).sum()) == pytest.approx(60.0)
    # one factor per image: the second image of a batch keeps its own total, an all-zero output stays zero
    out2 = torch.stack([out[0], torch.zeros(1, 8, 8)])
    scaled2, f2 = match_total(out2, ref.expand(2, 1, 4, 4), mask.expand(2, 1, 4, 4), scale=2)
    assert f2.squeeze().tolist() == pytest.approx([60 / 16, 1.0]) and float(scaled2[1].abs().sum()) == 0.0
    with pytest.raises(ValueError, match=r"output \(8, 8\) is not scale=1"):
        match_total(out, ref)


def test_match_total_removes_a_background_excess_to_the_poisson_precision_of_the_input():
    """A faint field (0.6 counts per pixel, as ObsID 0724270101 in 20 ks): a prediction with the right shape
    but 21 % too much flux is brought back to the true total within the input's Poisson error 1/sqrt(N)."""
    rng = np.random.default_rng(5)
    h = w = 200
    yy, xx = np.mgrid[:h, :w]
    sky = 0.45 + 30.0 * np.exp(-((xx - 80) ** 2 + (yy - 120) ** 2) / (2 * 3.0**2))  # counts per pixel in 20 ks
    counts = rng.poisson(sky).astype(np.float64)
    n = counts.sum()
    biased = torch.from_numpy(sky * 1.21)
    scaled, f = match_total(biased, torch.from_numpy(counts))
    rel = abs(float(scaled.sum()) / sky.sum() - 1.0)
    assert rel < 3.0 / np.sqrt(n)  # the input's total is an unbiased estimate of the sky's (n ~ 4e4: < 1.5 %)
    assert float(f) == pytest.approx(n / (1.21 * sky.sum()))
    np.testing.assert_allclose((scaled / biased).numpy(), float(f))  # one factor: relative structure kept
