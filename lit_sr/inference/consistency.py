"""Make a super-resolved image consistent with an estimate on the input grid (back-projection).

A x``s`` super-resolution y0 of counting data (counts/s per output pixel) carries sub-pixel detail that an
input-grid reference cannot judge; what such a reference sees is its forward model A(y0) on the input grid.
Given an input-grid estimate d of that forward model (e.g. a denoiser's output, a better estimate of the
input-grid intensity than the super-resolver's own), these functions return an image y close to y0 whose
forward model equals d: the classical consistency step of astronomical image reconstruction.

* A = sum of ``s`` x ``s`` blocks (flux per input pixel): :func:`project_block_sums`, an exact projection
  that multiplies each block of y0 by d / (its sum), so the split of the flux inside an input pixel is
  y0's and the block sums are d. A block where y0 sums to 0 gets d spread uniformly.
* A = sum of blocks after a blur on the fine grid (e.g. the HR -> LR PSF-matching kernel, the physical
  forward model when y0 has a sharper PSF than the input): :func:`richardson_lucy_consistent`, the
  Richardson-Lucy / EM multiplicative iteration y <- y * A^T(w d / A y) / A^T(w) started from y0. It keeps
  y >= 0, leaves y0 unchanged when A y0 = d, and each step does not increase the Poisson divergence of d
  from A y (the EM property); the iteration count is a regularisation (few steps stay close to y0).
  :func:`blur_sum_operator` builds A and its exact adjoint for a kernel (zero-padded convolution, where flux
  blurred across the image edge is lost in A and accounted for by A^T(w), or mirror-padded, where none is).

Units: y0 and y per output pixel, d and w per input pixel, both of the same quantity (e.g. counts/s); the
block sums compare like with like. Generic: no domain import.
"""

from __future__ import annotations

from typing import Callable

import torch

from lit_sr.utils.blocks import block_spread, block_sum

Operator = Callable[[torch.Tensor], torch.Tensor]


def _check(y0: torch.Tensor, d: torch.Tensor, scale: int) -> None:
    s = int(scale)
    if tuple(y0.shape[-2:]) != (s * d.shape[-2], s * d.shape[-1]):
        raise ValueError(
            f"consistency: SR image {tuple(y0.shape[-2:])} is not scale={s} x the input-grid estimate "
            f"{tuple(d.shape[-2:])}"
        )
    if bool((d < 0).any()) or bool((y0 < 0).any()):
        raise ValueError("consistency: intensities must be >= 0 (counts or rates per pixel)")


def project_block_sums(
    y0: torch.Tensor, d: torch.Tensor, scale: int = 2, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """y with ``block_sum(y) == d`` exactly, each block of y0 rescaled by d / block_sum(y0).

    Args:
        y0: [..., s*H, s*W] non-negative SR intensities per output pixel.
        d: [..., H, W] non-negative target block sums (same units per input pixel).
        scale: s.
        weight: optional [..., H, W] region on the input grid; blocks where it is 0 keep y0.

    A block whose y0 sums to 0 gets d / s^2 in each of its pixels (no information on the split).
    """
    _check(y0, d, scale)
    s = int(scale)
    sums = block_sum(y0, s)
    positive = sums > 0
    ratio = torch.where(positive, d / torch.where(positive, sums, torch.ones_like(sums)), torch.zeros_like(sums))
    uniform = torch.where(positive, torch.zeros_like(d), d / s**2)
    y = y0 * block_spread(ratio, s) + block_spread(uniform, s)
    if weight is not None:
        keep = block_spread((weight > 0).to(y.dtype), s) > 0
        y = torch.where(keep, y, y0)
    return y


def _fft_conv_same(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Zero-padded linear convolution of [..., H, W] with an odd square kernel, cropped to [H, W] (centred)."""
    k = kernel.to(x.dtype)
    kh, kw = k.shape
    H, W = x.shape[-2:]
    size = (H + kh - 1, W + kw - 1)
    full = torch.fft.irfft2(torch.fft.rfft2(x, s=size) * torch.fft.rfft2(k, s=size), s=size)
    return full[..., kh // 2 : kh // 2 + H, kw // 2 : kw // 2 + W]


def _symmetric_pad(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """Mirror padding with the edge pixel repeated (numpy ``mode='symmetric'``) over the last two axes."""
    if ph > x.shape[-2] or pw > x.shape[-1]:
        raise ValueError(
            f"symmetric padding by ({ph}, {pw}) needs an image at least that large, got {tuple(x.shape[-2:])}"
        )
    x = torch.cat(
        [torch.flip(x[..., :ph, :], dims=(-2,)), x, torch.flip(x[..., x.shape[-2] - ph :, :], dims=(-2,))], dim=-2
    )
    return torch.cat(
        [torch.flip(x[..., :pw], dims=(-1,)), x, torch.flip(x[..., x.shape[-1] - pw :], dims=(-1,))], dim=-1
    )


def _fft_conv_valid(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Convolution of [..., H + kh - 1, W + kw - 1] with a [kh, kw] kernel where it fully overlaps: [..., H, W]."""
    kh, kw = k.shape
    size = tuple(x.shape[-2:])
    full = torch.fft.irfft2(torch.fft.rfft2(x, s=size) * torch.fft.rfft2(k.to(x.dtype), s=size), s=size)
    return full[..., kh - 1 :, kw - 1 :]


def blur_sum_operator(kernel: torch.Tensor, scale: int = 2, padding: str = "zeros") -> tuple[Operator, Operator]:
    """(A, A^T): A(y) = block_sum(kernel * y), a convolution on the fine grid then ``scale`` x ``scale`` sums,
    and its exact adjoint.

    ``kernel``: [k, k] with k odd, non-negative (a PSF-matching kernel summing to 1). ``padding``:
    ``'zeros'`` (flux blurred across the image edge is lost; adjoint: the flipped-kernel convolution of
    block_spread(r)) or ``'symmetric'`` (mirror padding with the edge pixel repeated, as
    ``np.pad(mode='symmetric')``: no flux lost at the edges; the adjoint, which folds the padding back, is
    the vector-Jacobian product of the linear A, exact by construction)."""
    k = torch.as_tensor(kernel)
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise ValueError(f"blur_sum_operator: kernel shape {tuple(k.shape)}; expected 2-D with odd sides")
    if bool((k < 0).any()):
        raise ValueError("blur_sum_operator: kernel has negative entries; a blur of intensities is >= 0")
    if padding not in ("zeros", "symmetric"):
        raise ValueError(f"blur_sum_operator: padding={padding!r}; expected 'zeros' or 'symmetric'")
    flipped = torch.flip(k, dims=(0, 1))
    s = int(scale)
    ph, pw = k.shape[0] // 2, k.shape[1] // 2

    if padding == "zeros":

        def forward(y: torch.Tensor) -> torch.Tensor:
            return block_sum(_fft_conv_same(y, k), s)

        def adjoint(r: torch.Tensor) -> torch.Tensor:
            return _fft_conv_same(block_spread(r, s), flipped)

        return forward, adjoint

    def forward_sym(y: torch.Tensor) -> torch.Tensor:
        return block_sum(_fft_conv_valid(_symmetric_pad(y, ph, pw), k), s)

    def adjoint_sym(r: torch.Tensor) -> torch.Tensor:
        shape = (*r.shape[:-2], r.shape[-2] * s, r.shape[-1] * s)
        _, vjp = torch.func.vjp(forward_sym, torch.zeros(shape, dtype=r.dtype, device=r.device))
        return vjp(r)[0]

    return forward_sym, adjoint_sym


def richardson_lucy_consistent(
    y0: torch.Tensor,
    d: torch.Tensor,
    forward: Operator,
    adjoint: Operator,
    n_iter: int,
    weight: torch.Tensor | None = None,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Richardson-Lucy iterations toward forward(y) = d, started from y0 (positivity kept).

    y <- y * adjoint(w * d / forward(y)) / adjoint(w), with w the input-grid weight (1 if None; 0 outside a
    detector mask). Fine pixels with adjoint(w) = 0 (they reach no weighted input pixel) keep y0. Pixels
    where y0 = 0 stay 0 (the multiplicative update cannot create flux there: y0's support is kept).

    Args:
        y0: [..., s*H, s*W] non-negative start (the SR prediction).
        d: [..., H, W] non-negative input-grid estimate of forward(y_true).
        forward, adjoint: the forward model and its adjoint (e.g. :func:`blur_sum_operator`).
        n_iter: number of iterations (0 returns y0).
        eps: floor of forward(y) and adjoint(w) in the divisions (in d's units).
    """
    if int(n_iter) < 0:
        raise ValueError(f"richardson_lucy_consistent: n_iter={n_iter}; expected >= 0")
    if bool((d < 0).any()) or bool((y0 < 0).any()):
        raise ValueError("richardson_lucy_consistent: intensities must be >= 0")
    w = torch.ones_like(d) if weight is None else weight.to(d.dtype)
    norm = adjoint(w)
    reached = norm > eps
    norm = torch.where(reached, norm, torch.ones_like(norm))
    y = y0.clone()
    for _ in range(int(n_iter)):
        model = forward(y)
        ratio = torch.where(model > eps, w * d / model.clamp_min(eps), w)
        y = torch.where(reached, (y * adjoint(ratio) / norm).clamp_min(0.0), y0)
    return y


def consistency_residual(
    y: torch.Tensor, d: torch.Tensor, forward: Operator, weight: torch.Tensor | None = None
) -> float:
    """Relative L2 residual ||w (forward(y) - d)|| / ||w d|| (0 = consistent)."""
    w = torch.ones_like(d) if weight is None else weight.to(d.dtype)
    num = torch.linalg.vector_norm(w * (forward(y) - d))
    den = torch.linalg.vector_norm(w * d).clamp_min(1e-30)
    return float(num / den)
