"""Full-frame inference by blending patch predictions from several offset grids (any model, scale >= 1).

For each offset (dy, dx) the frame is cut along the lines y = dy + k*P, x = dx + k*P into cells of at
most P x P pixels. Each cell is predicted from the P x P patch that starts at the cell (shifted inward
at the frame edges so it stays inside), and only the cell's part of the prediction is kept, so every
pixel gets exactly one prediction per offset, and the cut lines of different offsets differ. Patches
are optionally normalised one by one (``normaliser``, e.g. the training's percentile normalisation;
patches shared by several grids are predicted once), predicted in batches of ``batch_size``,
denormalised and written into one full-size buffer per offset and output (K buffers, memory
O(K * frame) plus one batch).
The K predictions p_i of a pixel are combined with weights w_i = 1 / (|p_i - m| / 2 + 2), m = their mean
(the study's rule; |p - m| in the denormalised, physical units), which damps outliers at patch borders.

The model maps [B, C, P, P] -> Tensor[B, C', sP, sP], or a dict / tuple of such tensors (e.g. the
decomposition net's {"signal", "noise"}); the result has the same structure with frame-sized tensors.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np
import torch

DEFAULT_OFFSETS: tuple[tuple[int, int], ...] = ((0, 0), (96, 32), (32, 96), (64, 64))


class Normaliser(Protocol):
    """Per-patch normalisation: ``normaliser(x) -> (xn, state)`` and ``normaliser.denormalise(yn, state)``
    (e.g. :class:`lit_sr.data.normalise.PercentileNormaliser`)."""

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]: ...

    def denormalise(self, yn: torch.Tensor, state: Any) -> torch.Tensor: ...


def _cells(size: int, patch: int, offset: int) -> list[tuple[int, int, int]]:
    """Cells (start, stop, patch_start) along one axis for one offset grid."""
    off = offset % patch
    cuts = sorted({0, size, *range(off, size, patch)})
    return [(a, b, min(a, size - patch)) for a, b in zip(cuts[:-1], cuts[1:])]


def _as_outputs(out: Any) -> tuple[dict[str, torch.Tensor], str]:
    if isinstance(out, torch.Tensor):
        return {"output": out}, "tensor"
    if isinstance(out, dict):
        return dict(out), "dict"
    if isinstance(out, (tuple, list)):
        return {str(i): o for i, o in enumerate(out)}, "tuple"
    raise TypeError(f"model returned {type(out).__name__}; expected a Tensor, a dict or a tuple of Tensors")


def _restore(outs: dict[str, torch.Tensor], kind: str):
    if kind == "tensor":
        return outs["output"]
    if kind == "tuple":
        return tuple(outs[str(i)] for i in range(len(outs)))
    return outs


def check_patch_fits(shape: Sequence[int], patch_size: int, where: str = "frame") -> None:
    h, w = shape[-2:]
    if patch_size > h or patch_size > w:
        raise ValueError(
            f"{where}: patch size {patch_size} is larger than the frame {h}x{w}; "
            f"expected a patch size <= {min(h, w)} (or a larger frame)"
        )


@torch.no_grad()
def blend_predict(
    model: Callable,
    frame: torch.Tensor | np.ndarray,
    patch_size: int = 128,
    offsets: Sequence[Sequence[int]] = DEFAULT_OFFSETS,
    batch_size: int = 16,
    normaliser: Normaliser | None = None,
    device: str | torch.device | None = None,
    scale: int | None = None,
    output_keys: Sequence[str] | None = None,
    where: str = "frame",
    min_edge_cell: int | None = None,
):
    """Blended prediction of one frame [H, W] or [C, H, W] (see module doc).

    Returns a Tensor [C', sH, sW] (CPU, float32; [sH, sW] if the input was 2-D and C' = 1) or a
    dict / tuple of them mirroring the model output. ``scale`` is inferred from the first batch if not
    given. ``output_keys`` restricts a dict output to some keys. ``normaliser=None`` feeds the patches
    as they are (no per-patch normalisation).

    ``min_edge_cell`` (default a quarter patch; 0 keeps every cell): grids after the first do not
    predict the slivers at the frame border no wider than this. Such a sliver costs a whole patch for a
    few rows or columns (for a 512 x 1024 frame and 128 px patches the study's offsets need 4.8 plain
    passes of patches, 4.2 without the 32 px slivers); its pixels blend the grids that do cover them,
    always including the first (complete) grid.
    """
    x = torch.as_tensor(np.asarray(frame) if not isinstance(frame, torch.Tensor) else frame).float()
    squeeze = x.ndim == 2
    if squeeze:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"{where}: expected a frame [H, W] or [C, H, W], got shape {tuple(x.shape)}")
    check_patch_fits(x.shape, patch_size, where)
    if len(offsets) == 0:
        raise ValueError("at least one offset is needed")
    _, H, W = x.shape
    P = patch_size
    if device is None:
        try:
            device = next(model.parameters()).device
        except (AttributeError, StopIteration):
            device = torch.device("cpu")
    # cells of every offset grid, grouped by the patch that predicts them: grids share some patches
    # (the frame corners and edges), which are then predicted once
    min_edge = P // 4 if min_edge_cell is None else int(min_edge_cell)

    def kept(cells: list, size: int, k: int) -> list:
        if k == 0:
            return cells
        return [c for c in cells if not ((c[0] == 0 or c[1] == size) and c[1] - c[0] <= min_edge)]

    by_patch: dict[tuple[int, int], list] = {}
    for k, (oy, ox) in enumerate(offsets):
        for cy in kept(_cells(H, P, int(oy)), H, k):
            for cx in kept(_cells(W, P, int(ox)), W, k):
                by_patch.setdefault((cy[2], cx[2]), []).append((k, cy, cx))
    patches_at = list(by_patch)
    K = len(offsets)
    buffers: dict[str, torch.Tensor] | None = None
    kind = "tensor"
    s = scale
    for start in range(0, len(patches_at), batch_size):
        chunk = patches_at[start : start + batch_size]
        patches = torch.stack([x[:, py : py + P, px : px + P] for py, px in chunk])
        xn, state = normaliser(patches) if normaliser is not None else (patches, None)
        raw, kind = _as_outputs(model(xn.to(device)))
        if output_keys is not None:
            raw = {k: raw[k] for k in output_keys}
        if buffers is None:
            first = next(iter(raw.values()))
            if s is None:
                s = first.shape[-1] // P
            if s < 1 or first.shape[-1] != s * P or first.shape[-2] != s * P:
                raise ValueError(f"model output {tuple(first.shape)} is not {s} x the patch size {P}")
            # NaN marks pixels a grid does not predict (border slivers, see min_edge_cell)
            buffers = {name: torch.full((K, o.shape[1], s * H, s * W), float("nan")) for name, o in raw.items()}
        for name, o in raw.items():
            y = o.detach().float().cpu()
            if normaliser is not None:
                y = normaliser.denormalise(y, state)
            for j, (py, px) in enumerate(chunk):
                for k, (y0, y1, _), (x0, x1, _) in by_patch[(py, px)]:
                    buffers[name][k, :, s * y0 : s * y1, s * x0 : s * x1] = y[
                        j, :, s * (y0 - py) : s * (y1 - py), s * (x0 - px) : s * (x1 - px)
                    ]
    outs = {}
    for name, preds in buffers.items():
        # in place on the K buffers (ours): one temporary of their size instead of five
        valid = ~torch.isnan(preds)
        preds.nan_to_num_(0.0)
        m = preds.sum(0) / valid.sum(0)
        w = (preds - m).abs_().mul_(0.5).add_(2.0).reciprocal_().mul_(valid)  # 1 / (|p - m| / 2 + 2), 0 if absent
        den = w.sum(0)
        out = w.mul_(preds).sum(0).div_(den)
        outs[name] = out[0] if squeeze and out.shape[0] == 1 else out
    return _restore(outs, kind)


def blend_frames(
    model: Callable, frames: Iterable, n_frames: int | None = None, progress: bool = True, **kwargs
) -> Iterator:
    """Yield :func:`blend_predict` for each frame, with progress when there are several."""
    from lit_sr.utils.progress import track

    enabled = progress and not (n_frames is not None and n_frames <= 1)
    for i, f in enumerate(track(frames, n_frames, "blended inference", unit="frames", enabled=enabled)):
        yield blend_predict(model, f, where=f"frame {i}", **kwargs)


def scaled_offsets(patch_size: int) -> list[list[int]]:
    """The study's offsets (for 128 x 128 patches) scaled to ``patch_size`` so the grids stay distinct."""
    return [[int(round(v * patch_size / 128)) for v in off] for off in DEFAULT_OFFSETS]


def plain_predict(model: Callable, frame: torch.Tensor, patch_size: int = 128, batch_size: int = 16, **kwargs):
    """One non-overlapping pass (offset (0, 0) only): the reference cost of blending."""
    return blend_predict(model, frame, patch_size, offsets=((0, 0),), batch_size=batch_size, **kwargs)


def time_call(fn: Callable, repeat: int = 1) -> float:
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best
