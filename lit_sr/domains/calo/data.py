"""Calorimeter LR/HR pairs: file schema, simulated default file, D4 augmentation and the DataModule.

File layout (written by the simulator or by a user): ``hr`` (N,24,24) and ``lr`` (N,6,6) in GeV,
``label`` (N,) 0 photon / 1 pion, ``impact_cm`` (N,2) true (x, y) in cm from the window centre (x along
columns), ``energy_gev`` (N,). ``impact_cm``, ``label`` and ``energy_gev`` are optional for user files;
metrics that need them are then skipped.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import fields
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from lit_sr.data.base import SimulatedH5DataModule
from lit_sr.data.h5store import Field, FileInfo, H5Schema
from lit_sr.data.transforms import IntensityTransform
from lit_sr.data.validate import DataFileError
from lit_sr.domains.calo.sim import LABEL_NAMES, SIMULATOR_VERSION, CaloSimConfig, event_block, n_event_blocks

OPTIONAL_FIELDS = ("label", "impact_cm", "energy_gev")


def calo_schema(hr_pixels: int = 24, lr_pixels: int = 6) -> H5Schema:
    """Datasets of a calorimeter file (HR and LR images in GeV, per-event truth)."""
    return H5Schema(
        [
            Field(
                "hr",
                (hr_pixels, hr_pixels),
                "float32",
                units="GeV",
                per_sample_key=False,
                description="HR crystal energies",
            ),
            Field(
                "lr",
                (lr_pixels, lr_pixels),
                "float32",
                units="GeV",
                per_sample_key=False,
                description="LR crystal energies",
            ),
            Field("label", (), "int8", required=False, finite=False, allowed=(0, 1), allowed_names=LABEL_NAMES),
            Field(
                "impact_cm",
                (2,),
                "float32",
                required=False,
                units="cm",
                description="true impact (x, y) from the window centre",
            ),
            Field("energy_gev", (), "float32", required=False, units="GeV", description="true particle energy"),
        ],
        what="calorimeter data file",
    )


class CaloBatchBuilder:
    """Raw rows -> batch: GeV images to model space, optional D4 symmetry moving ``impact_cm`` along.

    A random element of the square's symmetry group D4 (transposition, column flip, row flip, applied
    in that order; drawn per event as flip_x, flip_y, transpose) is valid because the detector is a square grid hit at normal incidence
    and the impact square is centred in the window. Picklable (runs in DataLoader workers).
    """

    def __init__(self, transform: torch.nn.Module, augment: bool) -> None:
        self.transform = transform
        self.augment = augment

    def __call__(
        self, raw: Mapping[str, np.ndarray], rows: np.ndarray, rng: np.random.Generator | None
    ) -> dict[str, torch.Tensor]:
        hr = np.asarray(raw["hr"], dtype=np.float32)[:, None]
        lr = np.asarray(raw["lr"], dtype=np.float32)[:, None]
        impact = np.array(raw["impact_cm"], dtype=np.float32) if "impact_cm" in raw else None
        if self.augment and rng is not None:
            flips = rng.integers(0, 2, size=(len(rows), 3)).astype(bool)
            hr, lr, impact = d4_augment(hr, lr, impact, flips)
        # numpy above, one torch op per image below: small batches stay cheap even where torch's
        # thread pool competes with other processes
        batch = {
            "input": self.transform(torch.from_numpy(np.ascontiguousarray(lr))),
            "target": self.transform(torch.from_numpy(np.ascontiguousarray(hr))),
            "index": torch.from_numpy(rows.astype(np.int64)),
        }
        if "label" in raw:
            batch["label"] = torch.from_numpy(np.asarray(raw["label"]).astype(np.int64))
        if impact is not None:
            batch["impact_cm"] = torch.from_numpy(impact)
        if "energy_gev" in raw:
            batch["energy_gev"] = torch.from_numpy(np.asarray(raw["energy_gev"], dtype=np.float32))
        return batch


def d4_augment(
    hr: np.ndarray, lr: np.ndarray, impact: np.ndarray | None, flips: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per-event transposition (x <-> y), then column flip (x -> -x), then row flip (y -> -y).

    Images [B, 1, H, W]; ``impact`` [B, 2] (x, y) cm; ``flips`` [B, 3] bool holds (flip_x, flip_y,
    transpose) per event: the order the draws are made in.
    """
    flip_x, flip_y, transpose = flips[:, 0], flips[:, 1], flips[:, 2]

    def where(mask: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(mask.reshape(-1, *([1] * (a.ndim - 1))), a, b)

    hr, lr = where(transpose, hr.swapaxes(-1, -2), hr), where(transpose, lr.swapaxes(-1, -2), lr)
    hr, lr = where(flip_x, hr[..., ::-1], hr), where(flip_x, lr[..., ::-1], lr)
    hr, lr = where(flip_y, hr[..., ::-1, :], hr), where(flip_y, lr[..., ::-1, :], lr)
    if impact is not None:
        impact = where(transpose, impact[:, ::-1], impact)
        sign = np.stack([1.0 - 2.0 * flip_x, 1.0 - 2.0 * flip_y], axis=1).astype(np.float32)
        impact = np.ascontiguousarray(impact * sign)
    return hr, lr, impact


class CaloDataModule(SimulatedH5DataModule):
    """Calorimeter SR data: simulates the default file once under ``data_dir`` if absent.

    Args (beyond :class:`~lit_sr.data.base.SimulatedH5DataModule`'s and the loader settings):
        n_per_class: events per class (photons, pions) of the default file.
        sim_seed: simulator seed of the default file (part of its name).
        energy_gev: beam energy of the simulated particles (GeV).
        hr_pixels / lr_pixels: image sizes (crystals per window side) the file must have; the
            simulator's geometry must agree for the default file. ``scale`` = their ratio.
        sim: keyword overrides of ``CaloSimConfig`` (noise in MeV, ...).
        transform: intensity transform GeV -> model space (default divide by 20 GeV).
        max_events: use only the first N events of the file (quick runs).
    """

    what = "calorimeter data file"

    def __init__(
        self,
        data_dir: str = "data",
        file: str | None = None,
        n_per_class: int = 20000,
        sim_seed: int = 0,
        energy_gev: float = 20.0,
        hr_pixels: int = 24,
        lr_pixels: int = 6,
        sim: dict | None = None,
        split: Sequence[float] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        transform: torch.nn.Module | None = None,
        augment: bool = True,
        augment_seed: int = 0,
        max_events: int | None = None,
        max_memory_mb: float = 1024.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("scale", hr_pixels // lr_pixels)
        kwargs.setdefault("units", "GeV")
        kwargs.setdefault("physical_range", (0.0, float(energy_gev)))
        super().__init__(
            data_dir=data_dir,
            file=file,
            split=split,
            split_seed=split_seed,
            max_samples=max_events,
            max_memory_mb=max_memory_mb,
            augment=augment,
            augment_seed=augment_seed,
            transform=transform if transform is not None else IntensityTransform(20.0),
            **kwargs,
        )
        self.n_per_class = int(n_per_class)
        self.sim_seed = int(sim_seed)
        self.energy_gev = float(energy_gev)
        self.sim_overrides = dict(sim or {})
        self.hr_pixels, self.lr_pixels = int(hr_pixels), int(lr_pixels)
        if self.hr_pixels != self.scale * self.lr_pixels:
            raise ValueError(f"data.hr_pixels={hr_pixels} is not data.scale={self.scale} x data.lr_pixels={lr_pixels}")

    def sim_config(self) -> CaloSimConfig:
        known = {f.name for f in fields(CaloSimConfig)}
        unknown = sorted(set(self.sim_overrides) - known)
        if unknown:
            raise ValueError(f"data.sim: unknown simulator option(s) {unknown}; known: {sorted(known)}")
        return CaloSimConfig(**{"energy_gev": self.energy_gev, **self.sim_overrides})

    def _tag(self) -> str:
        changes = dict(self.sim_overrides)
        if self.energy_gev != CaloSimConfig.energy_gev:
            changes.setdefault("energy_gev", self.energy_gev)
        return "_".join(f"{k}{v}" for k, v in sorted(changes.items()))

    # ------------------------------------------------------------------ SimulatedH5DataModule API
    def schema(self) -> H5Schema:
        return calo_schema(self.hr_pixels, self.lr_pixels)

    def prepare_data(self) -> None:
        geo = self.sim_config().geometry
        if self.user_file is None and (geo.hr_pixels, geo.lr_pixels) != (self.hr_pixels, self.lr_pixels):
            raise ValueError(
                f"data.hr_pixels/lr_pixels = {self.hr_pixels}/{self.lr_pixels} differ from the simulator "
                f"geometry {geo.hr_pixels}/{geo.lr_pixels}"
            )
        super().prepare_data()

    def default_file_names(self) -> dict[str, str]:
        tag = self._tag()
        return {
            "all": f"calo_{self.n_per_class}x2_seed{self.sim_seed}_v{SIMULATOR_VERSION}{'_' + tag if tag else ''}.h5"
        }

    def n_default(self, key: str = "all") -> int:
        return 2 * self.n_per_class

    def simulate_blocks(self, key: str = "all"):
        fn = functools.partial(event_block, self.n_per_class, self.n_per_class, self.sim_seed, self.sim_config(), True)
        return fn, n_event_blocks(self.n_per_class, self.n_per_class)

    def check_file(self, key: str, info: FileInfo) -> None:
        for name, size in (("hr", self.hr_pixels), ("lr", self.lr_pixels)):
            if info.shapes[name] != (size, size):
                raise DataFileError(
                    info.path,
                    name,
                    f"expected images of {size}x{size} crystals (data.{name}_pixels), found {info.shapes[name]}",
                )

    def simulation_attrs(self, key: str = "all") -> dict[str, Any]:
        config = self.sim_config()
        attrs: dict[str, Any] = dict(dataclasses.asdict(config.geometry))
        attrs.update(
            simulator="lit_sr.domains.calo.sim (GFLASH-style PbWO4 showers)",
            simulator_version=SIMULATOR_VERSION,
            seed=self.sim_seed,
            n_per_class=self.n_per_class,
            config=config.to_json(),
            label_names=json.dumps(LABEL_NAMES),
            units="GeV (hr, lr, energy_gev); cm (impact_cm, relative to the window centre)",
        )
        return attrs

    def batch_builder(self, augment: bool) -> CaloBatchBuilder:
        return CaloBatchBuilder(self.transform, augment)
