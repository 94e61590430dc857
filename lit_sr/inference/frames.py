"""Whole frames of any size through a trained image-to-image model: validation, blending, HDF5 output.

Two ways in, one machinery:

* ``python run.py mode=predict predict=frames predict.input=frames.h5 predict.dataset=data ckpt_path=...``:
  :class:`FramesDataModule` yields one frame per batch (``{"frame": [1, 1, H, W], "index"}``, in model
  space through the data transform), the LightningModule blends patches with the configured
  :class:`FramePredictor`, and :class:`lit_sr.inference.writers.FramesH5Writer` writes the outputs.
* :func:`clean_frames` does the same from Python with any callable model (no Lightning, no Hydra).

Input datasets are ``[H, W]`` or ``[N, H, W]`` in physical units; outputs mirror them
(``<dataset>_<output>``, last two dims times the model's scale). The input file is never opened for
writing, an existing output is never replaced, and the output appears only when complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import h5py
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lit_sr.data.validate import DataFileError, require_dataset, require_file
from lit_sr.inference.blend import Normaliser, blend_predict, scaled_offsets
from lit_sr.utils.atomic import AtomicFile
from lit_sr.utils.errors import ConfigError
from lit_sr.utils.progress import track


def check_frames(
    ds: h5py.Dataset,
    path: str | Path,
    name: str,
    patch_size: int,
    negative_tolerance: float | None,
    block: int = 16,
    units: str = "",
) -> None:
    """Validate a frame dataset: rank, patch fit, finite values, negatives within tolerance (block-wise)."""
    if ds.ndim not in (2, 3):
        raise DataFileError(path, name, f"expected frames of rank 2 [H, W] or 3 [N, H, W], found shape {ds.shape}")
    h, w = ds.shape[-2:]
    if patch_size > h or patch_size > w:
        raise DataFileError(
            path,
            name,
            f"patch size {patch_size} is larger than the frames ({h}x{w}); expected a patch size <= {min(h, w)}",
        )
    n = ds.shape[0] if ds.ndim == 3 else 1
    unit = f" {units}" if units else ""
    for start in range(0, n, block):
        arr = np.asarray(ds[start : start + block] if ds.ndim == 3 else ds[()], dtype=np.float64)
        bad = ~np.isfinite(arr)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            idx = (idx[0] + start, *idx[1:]) if ds.ndim == 3 else idx
            raise DataFileError(
                path,
                name,
                f"non-finite value {arr[tuple(np.argwhere(bad)[0])]} at index {idx} (expected finite{unit} values)",
            )
        lo = arr.min()
        if negative_tolerance is not None and lo < -negative_tolerance:
            idx = tuple(int(i) for i in np.unravel_index(arr.argmin(), arr.shape))
            idx = (idx[0] + start, *idx[1:]) if ds.ndim == 3 else idx
            raise DataFileError(
                path,
                name,
                f"value {lo:.4g} at index {idx} is below -{negative_tolerance}{unit} "
                "(expected non-negative values within the noise tolerance)",
            )


class FramePredictor:
    """Blended prediction of one frame [C, H, W] (model space) with a patch model (see :mod:`lit_sr.inference.blend`).

    Args:
        patch_size: side of the patches the model sees (as in training).
        offsets: offset grids; None = the study's four, scaled to ``patch_size``.
        batch_size: patches per forward pass.
        normaliser: per-patch normalisation (e.g. the training's percentile normaliser) or None.
    """

    def __init__(
        self,
        patch_size: int = 128,
        offsets: Sequence[Sequence[int]] | None = None,
        batch_size: int = 16,
        normaliser: Normaliser | None = None,
    ) -> None:
        self.patch_size = int(patch_size)
        self.offsets = [[int(v) for v in off] for off in offsets] if offsets else scaled_offsets(self.patch_size)
        self.batch_size = int(batch_size)
        self.normaliser = normaliser

    def __call__(self, model: Callable, frame: torch.Tensor, where: str = "frame") -> Any:
        return blend_predict(
            model, frame, self.patch_size, self.offsets, self.batch_size, normaliser=self.normaliser, where=where
        )

    def attrs(self) -> dict[str, Any]:
        return {
            "patch_size": self.patch_size,
            "offsets": np.asarray(self.offsets, dtype=np.int64),
            "normaliser": repr(self.normaliser),
        }


class FramesDataset(Dataset):
    """Frames of one dataset of an HDF5 file: item = ``{"frame": [1, H, W] model space, "index": i}``."""

    def __init__(self, path: str | Path, dataset: str, transform: torch.nn.Module | None = None) -> None:
        self.path, self.dataset, self.transform = str(path), dataset, transform
        with h5py.File(self.path, "r") as h5:
            self.shape = tuple(h5[dataset].shape)
        self._h5: h5py.File | None = None

    def __len__(self) -> int:
        return self.shape[0] if len(self.shape) == 3 else 1

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_h5": None}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self._h5 is None:
            self._h5 = h5py.File(self.path, "r")
        ds = self._h5[self.dataset]
        frame = torch.from_numpy(np.asarray(ds[i] if ds.ndim == 3 else ds[()], dtype=np.float32))[None]
        if self.transform is not None:
            frame = self.transform(frame)
        return {"frame": frame, "index": torch.tensor(i, dtype=torch.long)}


class FramesDataModule(L.LightningDataModule):
    """``mode=predict predict=frames``: the frames of ``input[dataset]``, validated, one per batch.

    Args:
        input: HDF5 file of frames in physical units (``[H, W]`` or ``[N, H, W]``); opened read-only.
        dataset: the dataset of frames in that file.
        transform: the data's intensity transform (physical units -> model space) or None.
        patch_size: the patch size of the frame predictor (frames must be at least that large).
        negative_tolerance: values below ``-negative_tolerance`` are refused (physical units; None: any).
        units: name of the physical units (messages and output files).
    """

    def __init__(
        self,
        input: str,
        dataset: str = "data",
        transform: torch.nn.Module | None = None,
        patch_size: int = 128,
        negative_tolerance: float | None = None,
        units: str = "",
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if not input:
            raise ValueError("predict=frames needs predict.input=<HDF5 file of frames> (and predict.dataset=<name>)")
        # str(): a command-line value such as predict.dataset=nan arrives as a number
        self.input, self.dataset, self.transform = Path(input), str(dataset), transform
        self.patch_size, self.negative_tolerance, self.units = int(patch_size), negative_tolerance, units
        self.num_workers = int(num_workers)
        self.frames: FramesDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        require_file(self.input, "predict.input frames file")
        with h5py.File(self.input, "r") as h5:
            ds = require_dataset(h5, self.input, self.dataset)
            check_frames(ds, self.input, self.dataset, self.patch_size, self.negative_tolerance, units=self.units)
        self.frames = FramesDataset(self.input, self.dataset, self.transform)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.frames, batch_size=1, shuffle=False, num_workers=self.num_workers)


class FramesH5Output:
    """An output file mirroring an input frames dataset, written frame by frame, complete or absent.

    Datasets ``<dataset>_<name>`` (``names`` maps model output keys to suffixes) of the input's shape
    with the last two dims times ``scale`` (and a channel axis if an output has several channels) are
    created at the first frame; :meth:`commit` renames the temporary file onto ``path``. ``units``: the
    physical units of every output (a string) or by output key, written as each dataset's ``units``.
    """

    def __init__(
        self,
        path: str | Path,
        input_path: str | Path,
        dataset: str,
        input_shape: Sequence[int],
        names: Mapping[str, str] | None = None,
        attrs: Mapping[str, Any] | None = None,
        units: Mapping[str, str] | str | None = None,
        overwrite: bool = False,
    ) -> None:
        path, input_path = Path(path), Path(input_path)
        if input_path.exists() and path.resolve() == input_path.resolve():
            raise ConfigError(f"{path}: output must differ from the input file (the input is never modified)")
        if path.exists() and not overwrite:
            raise FileExistsError(
                f"{path}: output file exists; refusing to overwrite it "
                "(remove it or choose another output path, predict.output=...)"
            )
        self.file = AtomicFile(path, overwrite=overwrite)
        self.h5 = h5py.File(self.file.tmp, "w")
        self.dataset, self.input_shape = dataset, tuple(input_shape)
        self.names = dict(names or {})
        self.units = units if isinstance(units, str) else dict(units or {})
        self.h5.attrs["source_file"] = str(input_path)
        self.h5.attrs["source_dataset"] = dataset
        for k, v in (attrs or {}).items():
            self.h5.attrs[k] = v
        self._datasets: dict[str, h5py.Dataset] = {}

    @property
    def n_frames(self) -> int:
        return self.input_shape[0] if len(self.input_shape) == 3 else 1

    def write(self, index: int, outputs: Mapping[str, torch.Tensor]) -> None:
        """Outputs of frame ``index``: ``{key: [C, sH, sW]}`` in physical units."""
        for key, value in outputs.items():
            arr = np.asarray(value.detach().float().cpu().numpy(), dtype=np.float32)
            if arr.ndim == 3 and arr.shape[0] == 1:
                arr = arr[0]
            if key not in self._datasets:
                shape = (self.n_frames, *arr.shape) if len(self.input_shape) == 3 else arr.shape
                name = f"{self.dataset}_{self.names.get(key, key)}"
                chunks = (1, *arr.shape) if len(self.input_shape) == 3 else None
                self._datasets[key] = self.h5.create_dataset(name, shape, np.float32, chunks=chunks)
                unit = self.units if isinstance(self.units, str) else self.units.get(key, "")
                if unit:
                    self._datasets[key].attrs["units"] = unit
            if len(self.input_shape) == 3:
                self._datasets[key][index] = arr
            else:
                self._datasets[key][...] = arr

    def commit(self, attrs: Mapping[str, Any] | None = None) -> Path:
        for k, v in (attrs or {}).items():
            self.h5.attrs[k] = v
        self.h5.close()
        return self.file.commit()

    def abort(self) -> None:
        try:
            self.h5.close()
        finally:
            self.file.abort()


def clean_frames(
    model: Callable,
    input_path: str | Path,
    output_path: str | Path,
    dataset: str = "data",
    patch_size: int = 128,
    offsets: Sequence[Sequence[int]] | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    negative_tolerance: float | None = None,
    outputs: Mapping[str, str] | None = None,
    progress: bool = True,
    overwrite: bool = False,
    normaliser: Normaliser | None = None,
    units: str = "",
) -> Path:
    """Blended prediction of every frame of ``input_path[dataset]`` (physical units) into ``output_path``.

    ``model`` maps patch batches to a tensor (written as ``output``) or a dict of tensors (e.g. a SAXS
    decomposition's ``{"signal", "noise"}``); ``outputs`` maps the keys to write to their dataset suffixes
    (e.g. ``{"signal": "signal", "noise": "background"}``; None: every key under its own name).
    ``negative_tolerance``: values below ``-negative_tolerance`` (physical units) are refused (None: any
    value). ``units``: the physical units' name, written to the file (e.g. ``"keV"``). ``normaliser`` is the
    training's per-patch normalisation (None: patches as they are). An existing ``output_path`` raises
    FileExistsError before any work unless ``overwrite``. Returns the output path.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    require_file(input_path, "input frames file")
    predictor = FramePredictor(patch_size, offsets, batch_size, normaliser)
    if isinstance(model, torch.nn.Module):
        model = model.to(device).eval()
    with h5py.File(input_path, "r") as src:
        ds = require_dataset(src, input_path, dataset)
        check_frames(ds, input_path, dataset, patch_size, negative_tolerance, units=units)
        out = FramesH5Output(
            output_path,
            input_path,
            dataset,
            ds.shape,
            names=outputs,
            attrs=predictor.attrs(),
            units=units,
            overwrite=overwrite,
        )
        try:
            n = ds.shape[0] if ds.ndim == 3 else 1
            for i in track(
                range(n), n, f"predicting {input_path.name}[{dataset}]", unit="frames", enabled=progress and n > 1
            ):
                frame = torch.from_numpy(np.asarray(ds[i] if ds.ndim == 3 else ds[()], np.float32))[None].to(device)
                pred = predictor(model, frame, where=f"{input_path} [{dataset}] frame {i}")
                pred = pred if isinstance(pred, dict) else {"output": pred}
                missing = sorted(set(outputs or ()) - set(pred))
                if missing:
                    raise ConfigError(f"outputs {missing} are not among the model's outputs {sorted(pred)}")
                out.write(i, {k: pred[k] for k in (outputs or pred)})
        except BaseException:
            out.abort()
            raise
        return out.commit({"units": units} if units else None)


def load_module_weights(model: torch.nn.Module, ckpt_path: str | Path) -> None:
    """Load the ``state_dict`` of a Lightning checkpoint into ``model`` (``weights_only=True``).

    A checkpoint of another architecture raises a DataFileError (a ValueError) naming the checkpoint and
    the differing tensors (before any prediction starts). A LightningModule's ``on_load_checkpoint`` sees the
    checkpoint first, as when Lightning restores it (e.g. to rename the tensors of an older layout).
    """
    ckpt_path = Path(ckpt_path)
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, or pickled objects that weights_only refuses
        raise DataFileError(ckpt_path, None, f"cannot load the checkpoint with weights_only=True ({err})") from err
    if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict) and isinstance(model, L.LightningModule):
        model.on_load_checkpoint(ckpt)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise DataFileError(ckpt_path, None, "no state_dict in the checkpoint (expected a Lightning checkpoint)")
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
            parts.append(
                f"{len(shapes)} tensors of another shape (e.g. {k}: checkpoint {tuple(state[k].shape)}, "
                f"model {tuple(own[k].shape)})"
            )
        raise DataFileError(
            ckpt_path,
            None,
            f"checkpoint does not match the configured model ({'; '.join(parts)}); "
            "use the experiment and model overrides (e.g. model.net.backend, model.net.features) "
            "the checkpoint was trained with",
        )
    model.load_state_dict(state, strict=True)
