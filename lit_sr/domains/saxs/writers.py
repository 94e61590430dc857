"""``predict=frames`` for SAXS: cleaned frames in keV and the azimuthal profile I(r) of each output.

:class:`SAXSFramesWriter` is the generic :class:`lit_sr.inference.writers.FramesH5Writer` (signal and
background frames mirroring the input dataset, written atomically) plus, in the same file, the radial
profile a SAXS analysis fits:

* ``<dataset>_<name>_profile`` [N, K] (or [K] for a single frame): mean keV per pixel in radial bin k of
  every written output (``signal``, ``background``), about the beam centre;
* ``radial_edges_px`` [K + 1], ``radial_centre_px`` [K] (geometric bin centres), ``radial_pixels`` [K]
  (pixels per bin), and the attributes ``beam_center`` (row, col px; pixel (i, j) spans [i, i + 1)),
  ``beamstop_radius_px`` and ``profile_units``.

The beam centre and beam-stop radius come from ``beam_center`` / ``beamstop_radius_px`` if given
(``predict.beam_center=[row,col] predict.beamstop_radius_px=...``), else from the input file's
attributes of the same names (as the simulator writes them); neither gives one clear error naming the
file and the attribute. Bins are logarithmic from the beam-stop radius plus ``beamstop_margin_px`` (the
shot-to-shot jitter of the beam) to the farthest frame corner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np
import torch

from lit_sr.data.validate import DataFileError
from lit_sr.domains.saxs.radial_profile import log_radial_edges, radial_profile
from lit_sr.inference.writers import FramesH5Writer


def beam_geometry(
    path: str | Path, beam_center: Sequence[float] | None = None, beamstop_radius_px: float | None = None
) -> tuple[tuple[float, float], float]:
    """((row, col) of the beam in px, beam-stop radius in px): the given values, else the file's attributes."""
    attrs: dict[str, Any] = {}
    if beam_center is None or beamstop_radius_px is None:
        with h5py.File(path, "r") as h5:
            attrs = dict(h5.attrs)
    if beam_center is None:
        if "beam_center" not in attrs:
            raise DataFileError(
                path,
                None,
                "attribute 'beam_center' missing: expected (row, col) of the beam in px, "
                "or give predict.beam_center=[row,col]",
            )
        beam_center = attrs["beam_center"]
    centre = tuple(float(c) for c in np.asarray(beam_center, dtype=np.float64).ravel())
    if len(centre) != 2 or not all(np.isfinite(centre)):
        raise DataFileError(
            path, None, f"beam_center {tuple(np.ravel(beam_center))}: expected two finite numbers (row, col) in px"
        )
    if beamstop_radius_px is None:
        if "beamstop_radius_px" not in attrs:
            raise DataFileError(
                path,
                None,
                "attribute 'beamstop_radius_px' missing: expected the beam-stop radius "
                "in px, or give predict.beamstop_radius_px=<px>",
            )
        beamstop_radius_px = attrs["beamstop_radius_px"]
    radius = float(np.asarray(beamstop_radius_px))
    if not (np.isfinite(radius) and radius >= 0):
        raise DataFileError(path, None, f"beamstop_radius_px {radius}: expected a finite radius >= 0 px")
    return (centre[0], centre[1]), radius


def profile_edges(shape: Sequence[int], centre: Sequence[float], r_min: float, n_bins: int = 24) -> np.ndarray:
    """Log-spaced radial bin edges (px) from ``r_min`` (at least 1 px) to the farthest corner of an [H, W] frame."""
    h, w = shape[-2:]
    r_max = float(np.hypot(max(centre[0], h - centre[0]), max(centre[1], w - centre[1])))
    return log_radial_edges(max(float(r_min), 1.0), r_max, n_bins)


class SAXSFramesWriter(FramesH5Writer):
    """:class:`FramesH5Writer` that also writes the radial profile I(r) of every output (module docstring).

    Args (beyond :class:`FramesH5Writer`'s):
        beam_center: (row, col) of the beam in px; None: the input file's ``beam_center`` attribute.
        beamstop_radius_px: beam-stop radius in px; None: the input file's ``beamstop_radius_px``.
        beamstop_margin_px: added to the beam-stop radius for the first bin's inner edge (beam jitter).
        n_bins: logarithmic radial bins.
        profile_units: units of the profiles (the outputs' units per pixel).
    """

    def __init__(
        self,
        *args: Any,
        beam_center: Sequence[float] | None = None,
        beamstop_radius_px: float | None = None,
        beamstop_margin_px: float = 2.0,
        n_bins: int = 24,
        profile_units: str = "keV/px",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.beam_center = None if beam_center is None else tuple(float(c) for c in beam_center)
        self.beamstop_radius_px = None if beamstop_radius_px is None else float(beamstop_radius_px)
        self.beamstop_margin_px = float(beamstop_margin_px)
        self.n_bins = int(n_bins)
        self.profile_units = profile_units
        self.centre: tuple[float, float] | None = None
        self.edges: np.ndarray | None = None
        self._profiles: dict[str, dict[int, np.ndarray]] = {}
        self._pixels: np.ndarray | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "predict":
            return
        # before any work: a file without the geometry (and none given) fails here, not after inference
        self.centre, stop = beam_geometry(self.input, self.beam_center, self.beamstop_radius_px)
        self.beamstop = stop
        with h5py.File(self.input, "r") as h5:
            shape = h5[self.dataset].shape if self.dataset in h5 else None
        if shape is not None and len(shape) >= 2:
            self.edges = profile_edges(shape, self.centre, stop + self.beamstop_margin_px, self.n_bins)
        self._profiles = {}

    def write_on_batch_end(
        self,
        trainer,
        pl_module,
        prediction: Mapping[str, Any],
        batch_indices,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        super().write_on_batch_end(trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx)
        images = {k: v for k, v in prediction.items() if torch.is_tensor(v) and v.dim() == 4}
        for key, value in images.items():
            arr = value.detach().float().cpu().numpy()[:, 0]  # [B, H, W] physical units
            if self.edges is None:
                self.edges = profile_edges(arr.shape, self.centre, self.beamstop + self.beamstop_margin_px, self.n_bins)
            prof, self._pixels = radial_profile(arr, self.centre, self.edges)
            store = self._profiles.setdefault(key, {})
            for j, index in enumerate(prediction["index"].tolist()):
                store[int(index)] = prof[j].astype(np.float32)

    def on_predict_end(self, trainer, pl_module) -> None:
        if self._out is not None and self._profiles:
            h5 = self._out.h5
            single = len(self._out.input_shape) == 2
            for key, store in self._profiles.items():
                rows = [store[i] for i in sorted(store)]
                data = rows[0] if single else np.stack(rows)
                ds = h5.create_dataset(f"{self.dataset}_{self.names.get(key, key)}_profile", data=data)
                ds.attrs["units"] = self.profile_units
            h5.create_dataset("radial_edges_px", data=self.edges.astype(np.float64))
            h5.create_dataset("radial_centre_px", data=np.sqrt(self.edges[:-1] * self.edges[1:]))
            h5.create_dataset("radial_pixels", data=self._pixels.astype(np.int64))
            h5.attrs["beam_center"] = np.asarray(self.centre, dtype=np.float64)
            h5.attrs["beamstop_radius_px"] = float(self.beamstop)
            h5.attrs["profile_units"] = self.profile_units
        super().on_predict_end(trainer, pl_module)
