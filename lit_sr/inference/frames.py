"""Clean full frames stored in HDF5: validate, run blended inference frame by frame, write the result.

:func:`clean_frames` reads dataset ``dataset`` ([H, W] or [N, H, W], keV) of ``input_path``, checks it
(dataset present, rank 2 or 3, finite, no value below ``-negative_tolerance``, patch fits), runs
:func:`lit_sr.inference.blend.blend_predict` on every frame and writes ``output_path`` atomically (the
input file is never opened for writing) with datasets ``<dataset>_signal`` and ``<dataset>_background``
(keV, same shape as the input) and attributes recording the source and the blending parameters.
An existing output file is never replaced.

:func:`predict_frames` is ``python run.py mode=predict ckpt_path=... predict.input=...``: it loads the
checkpoint into the configured model (``weights_only=True``; a checkpoint of another architecture is
refused with the differing tensors named) and calls :func:`clean_frames` with the ``predict:`` keys.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import h5py
import numpy as np
import torch

from lit_sr.data.validate import DataFileError, require_dataset, require_file
from lit_sr.inference.blend import DEFAULT_OFFSETS, blend_predict
from lit_sr.utils.atomic import atomic_path


def check_frames(ds, path: str | Path, name: str, patch_size: int, negative_tolerance: float,
                 block: int = 16) -> None:
    """Validate a frame dataset: rank, patch fit, finite values, negatives within tolerance (block-wise)."""
    if ds.ndim not in (2, 3):
        raise DataFileError(path, name, f"expected frames of rank 2 [H, W] or 3 [N, H, W], found shape {ds.shape}")
    h, w = ds.shape[-2:]
    if patch_size > h or patch_size > w:
        raise DataFileError(path, name, f"patch size {patch_size} is larger than the frames ({h}x{w}); "
                                        f"expected a patch size <= {min(h, w)}")
    n = ds.shape[0] if ds.ndim == 3 else 1
    for start in range(0, n, block):
        arr = np.asarray(ds[start:start + block] if ds.ndim == 3 else ds[()], dtype=np.float64)
        bad = ~np.isfinite(arr)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            idx = (idx[0] + start, *idx[1:]) if ds.ndim == 3 else idx
            raise DataFileError(path, name, f"non-finite value {arr[tuple(np.argwhere(bad)[0])]} at index {idx} "
                                            "(expected finite keV values)")
        lo = arr.min()
        if lo < -negative_tolerance:
            idx = tuple(int(i) for i in np.unravel_index(arr.argmin(), arr.shape))
            idx = (idx[0] + start, *idx[1:]) if ds.ndim == 3 else idx
            raise DataFileError(path, name, f"value {lo:.4g} at index {idx} is below -{negative_tolerance} keV "
                                            "(expected non-negative deposited energies within the noise tolerance)")


def clean_frames(model: Callable, input_path: str | Path, output_path: str | Path, dataset: str = "data",
                 patch_size: int = 128, offsets: Sequence[Sequence[int]] = DEFAULT_OFFSETS, batch_size: int = 16,
                 device: str | torch.device = "cpu", negative_tolerance: float = 10.0,
                 outputs: dict[str, str] | None = None, progress: bool = True, overwrite: bool = False,
                 **blend_kwargs) -> Path:
    """Remove the background of every frame of ``input_path[dataset]`` and write ``output_path``.

    ``outputs`` maps model output keys to dataset suffixes (default {"signal": "signal",
    "noise": "background"}). An existing ``output_path`` raises FileExistsError (before any work)
    unless ``overwrite``. Returns the output path.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    require_file(input_path, "input frames file")
    if output_path.resolve() == input_path.resolve():
        raise ValueError(f"{output_path}: output must differ from the input file (the input is never modified)")
    if output_path.exists() and not overwrite:
        raise FileExistsError(f"{output_path}: output file exists; refusing to overwrite it "
                              "(remove it or choose another output path)")
    outputs = outputs or {"signal": "signal", "noise": "background"}
    if isinstance(model, torch.nn.Module):
        model = model.to(device).eval()
    with h5py.File(input_path, "r") as src:
        ds = require_dataset(src, input_path, dataset)
        check_frames(ds, input_path, dataset, patch_size, negative_tolerance)
        n = ds.shape[0] if ds.ndim == 3 else 1
        with atomic_path(output_path, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as dst:
            out_ds = {key: dst.create_dataset(f"{dataset}_{suffix}", ds.shape, np.float32,
                                              chunks=(1, *ds.shape[-2:]) if ds.ndim == 3 else None)
                      for key, suffix in outputs.items()}
            bar = None
            if progress and n > 1:
                from rich.progress import Progress
                bar = Progress(transient=True)
                bar.start()
                task = bar.add_task(f"cleaning {input_path.name}[{dataset}]", total=n)
            try:
                for i in range(n):
                    frame = np.asarray(ds[i] if ds.ndim == 3 else ds[()], np.float32)
                    pred = blend_predict(model, frame, patch_size, offsets, batch_size, device=device,
                                         output_keys=list(outputs), where=f"{input_path} [{dataset}] frame {i}",
                                         **blend_kwargs)
                    for key, d in out_ds.items():
                        arr = pred[key].numpy()
                        if ds.ndim == 3:
                            d[i] = arr
                        else:
                            d[...] = arr
                    if bar is not None:
                        bar.advance(task)
            finally:
                if bar is not None:
                    bar.stop()
            dst.attrs["source_file"] = str(input_path)
            dst.attrs["source_dataset"] = dataset
            dst.attrs["patch_size"] = patch_size
            dst.attrs["offsets"] = np.asarray(offsets, dtype=np.int64)
            dst.attrs["units"] = "keV"
    return output_path


def _scaled_offsets(patch_size: int) -> list[list[int]]:
    """The study's offsets (for 128 x 128 patches) scaled to ``patch_size`` so the grids stay distinct."""
    return [[int(round(v * patch_size / 128)) for v in off] for off in DEFAULT_OFFSETS]


def load_module_weights(model: torch.nn.Module, ckpt_path: str | Path) -> None:
    """Load the ``state_dict`` of a Lightning checkpoint into ``model`` (``weights_only=True``).

    A checkpoint of another architecture (other backend or widths) raises a ValueError naming the
    checkpoint and the differing tensors.
    """
    ckpt_path = Path(ckpt_path)
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, or pickled objects that weights_only refuses
        raise ValueError(f"{ckpt_path}: cannot load the checkpoint with weights_only=True ({err})") from err
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{ckpt_path}: no state_dict in the checkpoint (expected a Lightning checkpoint)")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} tensors of another shape (e.g. {k}: checkpoint {tuple(state[k].shape)}, "
                         f"model {tuple(own[k].shape)})")
        raise ValueError(f"{ckpt_path}: checkpoint does not match the configured model ({'; '.join(parts)}); "
                         "use the experiment and model overrides (e.g. model.net.backend, model.net.features) "
                         "the checkpoint was trained with")
    model.load_state_dict(state, strict=True)


def predict_frames(model: torch.nn.Module, cfg, output_dir: str | Path) -> Path:
    """``mode=predict`` with ``predict.input``: load ``cfg.ckpt_path`` and clean the frames of the file.

    Config keys (``predict:``): ``input``, ``dataset``, ``output`` (default
    ``<output_dir>/<input stem>_cleaned.h5``; a relative name is placed in ``output_dir``; an existing
    file is never overwritten), ``batch_size``, ``patch_size`` (default ``data.patch_size`` or 128),
    ``offsets`` (default the study's, scaled to the patch size), ``device`` (default cpu),
    ``negative_tolerance`` (keV, default 10).
    """
    p = cfg.predict
    input_path = Path(p.input)
    require_file(input_path, "predict.input frames file")
    name = p.get("output") or f"{input_path.stem}_cleaned.h5"
    output_path = Path(name) if Path(name).is_absolute() else Path(output_dir) / name
    if output_path.exists():
        raise FileExistsError(f"{output_path}: output file exists; refusing to overwrite it "
                              "(remove it or choose another predict.output)")
    if not (cfg.get("ckpt_path") and Path(cfg.ckpt_path).is_file()):
        raise FileNotFoundError(f"ckpt_path={cfg.get('ckpt_path')}: no such checkpoint file")
    patch_size = p.get("patch_size") or (cfg.get("data") or {}).get("patch_size") or 128
    patch_size = int(patch_size)
    offsets = p.get("offsets")
    offsets = [[int(v) for v in off] for off in offsets] if offsets else _scaled_offsets(patch_size)
    load_module_weights(model, cfg.ckpt_path)
    out = clean_frames(model, input_path, output_path, dataset=str(p.get("dataset") or "data"),
                       patch_size=patch_size, offsets=offsets, batch_size=int(p.get("batch_size") or 16),
                       device=p.get("device") or "cpu",
                       negative_tolerance=float(p.get("negative_tolerance", 10.0)), overwrite=False)
    logging.getLogger("lit_sr").info("Wrote cleaned frames (keV) to %s", out)
    return out
