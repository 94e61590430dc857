"""lit_sr.inference.consistency: SR made consistent with an input-grid estimate (block sums, blurred sums)."""

from __future__ import annotations

import math

import pytest
import torch

from lit_sr.inference.consistency import (
    block_spread,
    block_sum,
    blur_sum_operator,
    consistency_residual,
    project_block_sums,
    richardson_lucy_consistent,
)


def _gaussian_kernel(sigma: float, half: int) -> torch.Tensor:
    o = torch.arange(-half, half + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (o[:, None] ** 2 + o[None, :] ** 2) / sigma**2)
    return g / g.sum()


def _poisson_divergence(d: torch.Tensor, mu: torch.Tensor) -> float:
    """sum d ln(d / mu) - d + mu (>= 0, 0 iff mu = d where d > 0)."""
    mu = mu.clamp_min(1e-300)
    t = torch.where(d > 0, d * torch.log(d / mu), torch.zeros_like(d))
    return float((t - d + mu).sum())


def test_block_sums_equal_d_exactly_and_split_kept():
    g = torch.Generator().manual_seed(0)
    y0 = torch.rand(2, 16, 20, generator=g, dtype=torch.float64)
    y0[0, 4:6, 6:8] = 0.0  # one block with no flux in y0
    d = torch.rand(2, 8, 10, generator=g, dtype=torch.float64) * 5
    y = project_block_sums(y0, d, scale=2)
    assert torch.allclose(block_sum(y, 2), d, rtol=0, atol=1e-12)
    assert (y >= 0).all()
    # inside a block the split is y0's (ratios kept): y / y0 constant over each positive block
    ratio = torch.where(y0 > 0, y / y0, torch.zeros_like(y))
    r = ratio[1].reshape(8, 2, 10, 2)
    assert torch.allclose(r.amax(dim=(1, 3)), r.amin(dim=(1, 3)), rtol=1e-12)
    # the empty block gets d spread uniformly
    assert torch.allclose(y[0, 4:6, 6:8], torch.full((2, 2), float(d[0, 2, 3]) / 4, dtype=torch.float64))


def test_projection_leaves_consistent_image_unchanged_and_respects_weight():
    g = torch.Generator().manual_seed(1)
    y0 = torch.rand(12, 12, generator=g, dtype=torch.float64)
    assert torch.allclose(project_block_sums(y0, block_sum(y0, 3), scale=3), y0, rtol=1e-12, atol=0)
    d = block_sum(y0, 3) * 2.0
    w = torch.ones(4, 4)
    w[0, 0] = 0.0
    y = project_block_sums(y0, d, scale=3, weight=w)
    assert torch.equal(y[:3, :3], y0[:3, :3])  # masked block untouched
    assert torch.allclose(y[3:, 3:], 2.0 * y0[3:, 3:], rtol=1e-12)


@pytest.mark.parametrize("padding", ["zeros", "symmetric"])
def test_blur_sum_operator_adjoint_is_exact(padding):
    g = torch.Generator().manual_seed(2)
    k = _gaussian_kernel(1.5, 4) * torch.linspace(0.5, 1.5, 9, dtype=torch.float64)[None, :]  # not symmetric
    A, At = blur_sum_operator(k / k.sum(), scale=2, padding=padding)
    y = torch.rand(3, 20, 24, generator=g, dtype=torch.float64)
    r = torch.rand(3, 10, 12, generator=g, dtype=torch.float64)
    lhs, rhs = float((A(y) * r).sum()), float((y * At(r)).sum())
    assert math.isclose(lhs, rhs, rel_tol=1e-10)
    if padding == "symmetric":  # mirror padding keeps the flux; same as numpy's pad(symmetric) + convolution
        from scipy.signal import fftconvolve

        assert math.isclose(float(A(y).sum()), float(y.sum()), rel_tol=1e-3)
        yn = y[0].numpy()
        ref = fftconvolve(__import__("numpy").pad(yn, 4, mode="symmetric"), (k / k.sum()).numpy(), mode="valid")
        assert torch.allclose(A(y)[0], block_sum(torch.from_numpy(ref), 2), atol=1e-10)
    # a delta kernel reduces A to block sums
    delta = torch.zeros(3, 3, dtype=torch.float64)
    delta[1, 1] = 1.0
    A1, _ = blur_sum_operator(delta, scale=2)
    assert torch.allclose(A1(y), block_sum(y, 2), atol=1e-12)
    assert torch.equal(block_spread(r, 2)[..., ::2, ::2], r)


def test_richardson_lucy_reduces_residual_keeps_positivity_and_fixed_point():
    g = torch.Generator().manual_seed(3)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    truth = (
        0.2
        + 5 * torch.exp(-((yy - 12) ** 2 + (xx - 17) ** 2) / 6.0)
        + 2 * torch.exp(-((yy - 24) ** 2 + (xx - 8) ** 2) / 20.0)
    )
    truth = truth.double()
    A, At = blur_sum_operator(_gaussian_kernel(2.0, 6), scale=2)
    d = A(truth)
    # a start with the wrong level and a wrong distribution (a sharper, shifted bump, 30 % excess)
    y0 = (1.3 * torch.roll(truth, shifts=(2, -1), dims=(0, 1)) * (1 + 0.3 * torch.rand(32, 32, generator=g))).double()
    res = [consistency_residual(richardson_lucy_consistent(y0, d, A, At, n), d, A) for n in (0, 2, 10, 50)]
    assert res[0] > 0.2
    assert res[0] > res[1] > res[2] > res[3] and res[3] < 0.02
    divs = []
    y = y0
    for _ in range(20):
        divs.append(_poisson_divergence(d, A(y)))
        y = richardson_lucy_consistent(y, d, A, At, 1)
        assert (y >= 0).all()
    assert all(b <= a * (1 + 1e-12) for a, b in zip(divs, divs[1:]))  # the EM property: monotone
    # already consistent: unchanged
    assert torch.allclose(richardson_lucy_consistent(truth, d, A, At, 20), truth, rtol=1e-9)
    # flux: interior blocks sum to d (the blur keeps flux away from the edges)
    y50 = richardson_lucy_consistent(y0, d, A, At, 200)
    assert math.isclose(float(A(y50)[3:-3, 3:-3].sum()), float(d[3:-3, 3:-3].sum()), rel_tol=5e-3)


def test_richardson_lucy_with_weight_ignores_masked_pixels():
    g = torch.Generator().manual_seed(4)
    A, At = blur_sum_operator(_gaussian_kernel(1.0, 3), scale=2)
    truth = torch.rand(24, 24, generator=g, dtype=torch.float64) + 0.5
    d = A(truth)
    w = torch.ones_like(d)
    w[:, :4] = 0.0
    d_bad = d.clone()
    d_bad[:, :4] = 1e3  # garbage where the weight is 0
    y0 = torch.full_like(truth, float(truth.mean()))
    y_w = richardson_lucy_consistent(y0, d_bad, A, At, 30, weight=w)
    y_c = richardson_lucy_consistent(y0, d, A, At, 30, weight=w)
    assert torch.allclose(y_w, y_c, rtol=1e-10)  # the masked values never enter
    assert float(y_w.max()) < 10


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="scale=2"):
        project_block_sums(torch.ones(5, 6), torch.ones(2, 3))
    with pytest.raises(ValueError, match=">= 0"):
        project_block_sums(torch.ones(4, 4), -torch.ones(2, 2))
    with pytest.raises(ValueError, match="odd"):
        blur_sum_operator(torch.ones(4, 4))
