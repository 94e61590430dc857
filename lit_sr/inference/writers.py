"""Prediction writers (Lightning ``BasePredictionWriter`` callbacks) selected by the ``predict`` config group.

* :class:`H5PredictionWriter` (``predict=h5``): every key of every predicted batch (outputs in physical
  units, inputs, targets, labels, positions, physical parameters, row indices) appended to one HDF5
  file, with the units of each image dataset; under DDP one file per rank.
* :class:`FramesH5Writer` (``predict=frames``): outputs of whole frames, mirroring the input dataset.

Both write into a temporary file and rename it when prediction ends (an interrupted run leaves no
half-written output), and refuse before any work to replace an existing file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from lit_sr.inference.frames import FramesH5Output
from lit_sr.utils.atomic import AtomicFile

log = logging.getLogger("lit_sr")


def _output_path(output: str | None, default: str, output_dir: str | Path, rank: int, world_size: int) -> Path:
    name = output or default
    path = Path(name) if Path(name).is_absolute() else Path(output_dir) / name
    if world_size > 1:
        path = path.with_name(f"{path.stem}_rank{rank}{path.suffix}")
    return path


def _refuse_existing(path: Path) -> None:
    if path.exists():
        raise FileExistsError(
            f"{path}: output file exists; refusing to overwrite it "
            "(remove it or choose another output with predict.output=...)"
        )


class H5PredictionWriter(BasePredictionWriter):
    """Append predicted batches to ``<output_dir>/<output>`` (HDF5), written atomically at the end.

    Args:
        output: file name (relative to ``output_dir``) or absolute path; default ``predictions.h5``.
        output_dir: the run's folder.
        attrs: extra file attributes (e.g. checkpoint, experiment).
    """

    def __init__(
        self, output: str | None = None, output_dir: str = ".", attrs: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(write_interval="batch")
        self.output, self.output_dir = output, output_dir
        self.attrs = dict(attrs or {})
        self.path: Path | None = None
        self._file: AtomicFile | None = None
        self._h5: h5py.File | None = None
        self._rows = 0

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "predict":
            return
        self.path = _output_path(
            self.output, "predictions.h5", self.output_dir, trainer.global_rank, trainer.world_size
        )
        _refuse_existing(self.path)

    def write_on_batch_end(
        self,
        trainer,
        pl_module,
        prediction: Mapping[str, Any],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        arrays = {k: v.detach().cpu().numpy() for k, v in prediction.items() if torch.is_tensor(v)}
        if self._h5 is None:
            self._file = AtomicFile(self.path, overwrite=False)
            self._h5 = h5py.File(self._file.tmp, "w")
            units = pl_module.prediction_units() if hasattr(pl_module, "prediction_units") else {}
            for key, arr in arrays.items():
                ds = self._h5.create_dataset(
                    key,
                    shape=(0, *arr.shape[1:]),
                    maxshape=(None, *arr.shape[1:]),
                    dtype=arr.dtype,
                    chunks=(max(1, min(256, len(arr))), *arr.shape[1:]),
                    compression="gzip" if arr.ndim > 1 else None,
                )
                if key in units:
                    ds.attrs["units"] = units[key]
        n = len(next(iter(arrays.values())))
        for key, arr in arrays.items():
            ds = self._h5[key]
            ds.resize(self._rows + n, axis=0)
            ds[self._rows : self._rows + n] = arr
        self._rows += n

    def on_predict_end(self, trainer, pl_module) -> None:
        if self._h5 is None:
            log.warning("no predictions were made; nothing written")
            return
        for k, v in self.attrs.items():
            self._h5.attrs[k] = str(v) if v is not None else ""
        self._h5.close()
        self._h5 = None
        path = self._file.commit()
        log.info("Wrote %d predictions to %s", self._rows, path)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None
        if self._file is not None:
            self._file.abort()


class FramesH5Writer(BasePredictionWriter):
    """Write the outputs of ``predict=frames`` into datasets mirroring ``input[dataset]``.

    Args:
        input: the frames file (never opened for writing).
        dataset: the frames dataset.
        output: output file (relative to ``output_dir``) or absolute path; default ``<input stem>_predicted.h5``.
        output_dir: the run's folder.
        names: output key -> dataset suffix (e.g. ``{noise: background}``); others keep their key.
        attrs: extra file attributes.
        frame_predictor: the predictor the model blends the frames with (the runner passes the same object
            it gives the model); its ``attrs()`` (patch size, offsets, ...) are recorded in the file.
    """

    def __init__(
        self,
        input: str,
        dataset: str = "data",
        output: str | None = None,
        output_dir: str = ".",
        names: Mapping[str, str] | None = None,
        attrs: Mapping[str, Any] | None = None,
        default_suffix: str = "predicted",
        frame_predictor: Any | None = None,
    ) -> None:
        super().__init__(write_interval="batch")
        self.input, self.dataset, self.output, self.output_dir = Path(input), str(dataset), output, output_dir
        self.names = dict(names or {})
        self.attrs = dict(attrs or {})
        self.default_suffix = default_suffix
        self.frame_predictor = frame_predictor
        self.path: Path | None = None
        self._out: FramesH5Output | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "predict":
            return
        self.path = _output_path(
            self.output,
            f"{self.input.stem}_{self.default_suffix}.h5",
            self.output_dir,
            trainer.global_rank,
            trainer.world_size,
        )
        _refuse_existing(self.path)

    def write_on_batch_end(
        self,
        trainer,
        pl_module,
        prediction: Mapping[str, Any],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._out is None:
            with h5py.File(self.input, "r") as h5:
                shape = h5[self.dataset].shape
            attrs = {k: (str(v) if v is not None else "") for k, v in self.attrs.items()}
            if self.frame_predictor is not None and hasattr(self.frame_predictor, "attrs"):
                attrs.update(self.frame_predictor.attrs())
            units = pl_module.prediction_units() if hasattr(pl_module, "prediction_units") else {}
            if units:
                attrs["units"] = ", ".join(sorted(set(units.values())))
            self._out = FramesH5Output(self.path, self.input, self.dataset, shape, self.names, attrs, units)
        images = {k: v for k, v in prediction.items() if torch.is_tensor(v) and v.dim() == 4}
        for j, index in enumerate(prediction["index"].tolist()):
            self._out.write(int(index), {k: v[j] for k, v in images.items()})

    def on_predict_end(self, trainer, pl_module) -> None:
        if self._out is None:
            log.warning("no frames were predicted; nothing written")
            return
        path = self._out.commit()
        self._out = None
        log.info("Wrote predicted frames to %s", path)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self._out is not None:
            self._out.abort()
            self._out = None


def stack_predictions(path: str | Path) -> dict[str, np.ndarray]:
    """Read a prediction file written by :class:`H5PredictionWriter` into arrays (tests, notebooks)."""
    with h5py.File(path, "r") as h5:
        return {k: h5[k][()] for k in h5}
