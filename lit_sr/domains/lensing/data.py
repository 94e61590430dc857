"""Strong-lens LR/HR pairs: HDF5 schema, the simulated default file, D4 augmentation, and the npy-folder mode.

Two inputs, chosen by ``data.file``:

* an HDF5 file (default: simulated once under ``data_dir`` by :mod:`lit_sr.domains.lensing.sim`) with the datasets
  ``hr`` [N, H, W] and ``lr`` [N, H/2, W/2] (counts/s per HR-pixel area, i.e. the LR value is the mean of its 2x2 HR
  pixels), ``label`` [N] (0 no_sub, 1 cdm, 2 vortex) and the lens parameters of :data:`PARAM_UNITS` as per-sample
  keys. Only ``hr`` and ``lr`` are required in a user's file; metrics needing the others are skipped without them.
* a folder ``<folder>/LR/*.npy`` + ``<folder>/HR/*.npy`` with matching names and an optional ``labels.csv``
  (the layout of :mod:`lit_sr.domains.lensing.npy_folder`), validated before anything is read or written.

Batches: ``input`` [B, 1, h, w], ``target`` [B, 1, 2h, 2w] in model space (after ``transform``), ``index`` (row of
the file / position in the sorted file list), ``label`` and the lens parameters when present.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from lit_sr.data.base import SimulatedH5DataModule
from lit_sr.data.h5store import Field, FileInfo, H5Schema
from lit_sr.data.rng import stream_rng
from lit_sr.data.transforms import IntensityTransform
from lit_sr.data.validate import DataFileError
from lit_sr.domains.lensing.npy_folder import NpyPairIndex, load_npy_pair, scan_npy_pairs
from lit_sr.domains.lensing.sim import (
    BLOCK_LENSES,
    LABEL_NAMES,
    LR_FACTOR,
    PARAM_FIELDS,
    SIMULATOR_VERSION,
    LensSimConfig,
    LensSimulator,
)

#: per-sample lens parameters of the simulated file and their units ("" = dimensionless)
PARAM_UNITS: dict[str, str] = {
    "theta_e_arcsec": "arcsec",
    "lens_e1": "",
    "lens_e2": "",
    "shear_gamma1": "",
    "shear_gamma2": "",
    "source_x_arcsec": "arcsec",
    "source_y_arcsec": "arcsec",
    "source_r_eff_arcsec": "arcsec",
    "source_n_sersic": "",
    "source_amp": "counts/s/arcsec^2 at R_eff",
    "n_subhalos": "",
    "exposure_s": "s",
    "halo_mass_msun": "Msun",
    "velocity_dispersion_kms": "km/s",
    "substructure_mass_msun": "Msun",
    "lens_x_arcsec": "arcsec",
    "lens_y_arcsec": "arcsec",
}
assert set(PARAM_UNITS) == set(PARAM_FIELDS), "PARAM_UNITS must list the simulator's PARAM_FIELDS"
IMAGE_UNITS = "counts/s per HR pixel"
# Parameters that change under the image symmetries (everything else, e.g. theta_E, is invariant):
VECTOR_PAIRS = (("source_x_arcsec", "source_y_arcsec"), ("lens_x_arcsec", "lens_y_arcsec"))  # (x, y) positions
SPIN2_PAIRS = (("lens_e1", "lens_e2"), ("shear_gamma1", "shear_gamma2"))  # e (cos 2phi, sin 2phi)


def lensing_schema() -> H5Schema:
    """Datasets of a lens file; image sizes are free (checked against ``scale`` by the data module)."""
    fields = [
        Field(
            "hr",
            (None, None),
            "float32",
            units=IMAGE_UNITS,
            per_sample_key=False,
            description="HR image (0.05 arcsec pixels in the simulated file)",
        ),
        Field(
            "lr",
            (None, None),
            "float32",
            units=IMAGE_UNITS + " area (mean of 2x2 HR pixels)",
            per_sample_key=False,
            description="LR image",
        ),
        Field("label", (), "int64", required=False, finite=False, allowed=(0, 1, 2), allowed_names=LABEL_NAMES),
    ]
    fields += [
        Field(
            name,
            (),
            "int64" if name == "n_subhalos" else "float32",
            required=False,
            finite=name != "n_subhalos",
            units=unit,
        )
        for name, unit in PARAM_UNITS.items()
    ]
    return H5Schema(fields, what="lens data file")


# ----------------------------------------------------------------------------- simulation blocks
@functools.lru_cache(maxsize=2)
def _simulator(config_json: str) -> LensSimulator:
    """One simulator per process and config: lenstronomy's models are built once and reused for every block."""
    return LensSimulator(LensSimConfig.from_json(config_json))


def lens_block(config_json: str, seed: int, n_lenses: int, block_index: int) -> dict[str, np.ndarray]:
    """Block ``block_index`` of the first ``n_lenses`` lenses of the sequence (``simulate_lenses``'s blocks);
    picklable through ``functools.partial``, so blocks can be simulated in parallel processes."""
    n = min(BLOCK_LENSES, n_lenses - block_index * BLOCK_LENSES)
    return _simulator(config_json).block(seed, block_index, n)


# ----------------------------------------------------------------------------- D4 symmetry
def d4_images(img: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """Per-sample transposition (x <-> y), then column flip (x -> -x), then row flip (y -> -y) of [B, H, W] images.

    ``flips`` [B, 3] bool holds (flip_x, flip_y, transpose). Pixel (i, j) is at x ~ j, y ~ i about the image
    centre (between pixels for even sizes), so each operation maps the pixel grid onto itself.
    """
    flip_x, flip_y, transpose = flips[:, 0, None, None], flips[:, 1, None, None], flips[:, 2, None, None]
    if transpose.any():
        img = np.where(transpose, np.swapaxes(img, -1, -2), img)
    img = np.where(flip_x, img[..., :, ::-1], img)
    return np.where(flip_y, img[..., ::-1, :], img)


def d4_vector(x: np.ndarray, y: np.ndarray, flips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (x, y) [B, ...] under the per-sample operations of :func:`d4_images` (same ``flips``)."""
    shape = (-1,) + (1,) * (np.ndim(x) - 1)
    flip_x, flip_y, transpose = (flips[:, i].reshape(shape) for i in range(3))
    x, y = np.where(transpose, y, x), np.where(transpose, x, y)
    return np.where(flip_x, -x, x), np.where(flip_y, -y, y)


def d4_spin2(c1: np.ndarray, c2: np.ndarray, flips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spin-2 quantities (c cos 2phi, c sin 2phi) -- ellipticity, shear -- under :func:`d4_images`.

    A transposition maps phi -> pi/2 - phi (first component negated); a flip of x or of y maps phi -> pi - phi or
    -phi (second component negated; both flips together are a rotation by pi, which leaves spin-2 unchanged).
    """
    flip_x, flip_y, transpose = flips[:, 0], flips[:, 1], flips[:, 2]
    return np.where(transpose, -c1, c1), np.where(flip_x ^ flip_y, -c2, c2)


def d4_params(params: Mapping[str, np.ndarray], flips: np.ndarray) -> dict[str, np.ndarray]:
    """The lens parameters of images transformed by :func:`d4_images` with the same ``flips``: positions are
    vectors, ellipticity and shear spin-2, everything else (theta_E, masses, ...) is invariant."""
    out = {k: np.array(v, copy=True) for k, v in params.items()}
    for kx, ky in VECTOR_PAIRS:
        if kx in out and ky in out:
            out[kx], out[ky] = d4_vector(out[kx], out[ky], flips)
    for k1, k2 in SPIN2_PAIRS:
        if k1 in out and k2 in out:
            out[k1], out[k2] = d4_spin2(out[k1], out[k2], flips)
    return out


class LensBatchBuilder:
    """Raw rows -> batch in model space; with ``augment`` a random D4 element per lens (images and parameters).

    The 8 symmetries of the square are valid for these lenses: the simulator draws every orientation (lens,
    shear, source, substructure) uniformly and the pixel grid is symmetric about the image centre. Picklable.
    """

    def __init__(self, transform: torch.nn.Module, augment: bool) -> None:
        self.transform = transform
        self.augment = augment

    def __call__(
        self, raw: Mapping[str, np.ndarray], rows: np.ndarray, rng: np.random.Generator | None
    ) -> dict[str, torch.Tensor]:
        hr, lr = np.asarray(raw["hr"], np.float32), np.asarray(raw["lr"], np.float32)
        params = {k: np.asarray(raw[k]) for k in PARAM_UNITS if k in raw}
        if self.augment and rng is not None:
            flips = rng.integers(0, 2, size=(len(rows), 3)).astype(bool)
            if hr.shape[-1] != hr.shape[-2]:
                flips[:, 2] = False  # a transposition needs square images
            hr, lr = d4_images(hr, flips), d4_images(lr, flips)
            params = d4_params(params, flips)
        batch = {
            "input": self.transform(torch.from_numpy(np.ascontiguousarray(lr))[:, None]),
            "target": self.transform(torch.from_numpy(np.ascontiguousarray(hr))[:, None]),
            "index": torch.from_numpy(np.asarray(rows, dtype=np.int64)),
        }
        if "label" in raw:
            batch["label"] = torch.from_numpy(np.asarray(raw["label"]).astype(np.int64))
        for k, v in params.items():
            batch[k] = torch.from_numpy(v.astype(np.int64 if k == "n_subhalos" else np.float32))
        return batch


# ----------------------------------------------------------------------------- npy folder
class NpyPairsDataset(Dataset):
    """Pairs ``positions`` of a validated npy folder, served as whole batches like ``H5RowsDataset``.

    Files are read on demand and kept in memory up to ``max_memory_mb`` (per reading process).
    """

    def __init__(
        self,
        index: NpyPairIndex,
        rows: Sequence[int],
        builder: LensBatchBuilder,
        augment: bool = False,
        seed: int = 0,
        max_memory_mb: float = 1024.0,
    ) -> None:
        self.index = index
        self.indices = np.asarray(rows, dtype=np.int64)
        self.builder = builder
        self.augment = augment
        self.seed = int(seed)
        pair_bytes = 4 * (int(np.prod(index.lr_shape)) + int(np.prod(index.hr_shape)))
        self.cache_pairs = int(max_memory_mb * 1024**2 // pair_bytes)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._rng: np.random.Generator | None = None
        self._rng_key: int | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": {}, "_rng": None, "_rng_key": None}

    def _pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i in self._cache:
            return self._cache[i]
        pair = load_npy_pair(self.index, i)
        if len(self._cache) < self.cache_pairs:
            self._cache[i] = pair
        return pair

    def _generator(self) -> np.random.Generator | None:
        if not self.augment:
            return None
        info = torch.utils.data.get_worker_info()
        key = torch.initial_seed() & 0xFFFFFFFF if info is not None else -1  # fresh draws every epoch in workers
        if self._rng is None or key != self._rng_key:
            self._rng = stream_rng(self.seed, *((key,) if key >= 0 else ()))
            self._rng_key = key
        return self._rng

    def __getitems__(self, positions: Sequence[int]) -> dict[str, torch.Tensor]:
        rows = self.indices[np.asarray(positions, dtype=np.int64)]
        pairs = [self._pair(int(r)) for r in rows]
        raw: dict[str, np.ndarray] = {"lr": np.stack([p[0] for p in pairs]), "hr": np.stack([p[1] for p in pairs])}
        if self.index.labels is not None:
            raw["label"] = self.index.labels[rows]
        return self.builder(raw, rows, self._generator())

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([position]).items()}


# ----------------------------------------------------------------------------- data module
def _plain(value: Any) -> Any:
    """Sequences (lists, tuples, OmegaConf ListConfig) -> tuples, recursively; other values unchanged."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") or isinstance(value, Mapping):
        return value
    return tuple(_plain(v) for v in value)


class LensingDataModule(SimulatedH5DataModule):
    """Strong-lens SR data (x2): the simulated default HDF5 file, a user's HDF5 file, or an LR/HR npy folder.

    Args (beyond :class:`~lit_sr.data.base.SimulatedH5DataModule`'s and the loader settings):
        file: a user's HDF5 file in the layout of :func:`lensing_schema`, or a folder holding LR/ and HR/
            (+ labels.csv); None = the simulated default file.
        n_lenses: lenses of the default file (classes balanced in every consecutive triple).
        sim_seed: simulator seed of the default file.
        image_size: HR pixels per side of the default file (LR: image_size / 2).
        pixel_scale_arcsec: HR pixel size (the simulator's, and the ring fit's for any file).
        sim: keyword overrides of :class:`~lit_sr.domains.lensing.sim.LensSimConfig` (e.g. the LR PSF).
        class_names: names of the labels 0..2 (labels.csv may use them).
        max_lenses: use only the first N samples (quick runs).
    """

    what = "lens data file"

    def __init__(
        self,
        data_dir: str = "data",
        file: str | None = None,
        n_lenses: int = 2400,
        sim_seed: int = 0,
        image_size: int = 96,
        pixel_scale_arcsec: float = 0.05,
        sim: Mapping[str, Any] | None = None,
        class_names: Sequence[str] = LABEL_NAMES,
        split: Sequence[float] = (0.75, 0.1, 0.15),
        split_seed: int = 0,
        transform: torch.nn.Module | None = None,
        augment: bool = True,
        augment_seed: int = 0,
        max_lenses: int | None = None,
        max_memory_mb: float = 1024.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("scale", LR_FACTOR)
        kwargs.setdefault("units", IMAGE_UNITS)
        kwargs.setdefault("physical_range", (0.0, 10.0))
        super().__init__(
            data_dir=data_dir,
            file=file,
            split=split,
            split_seed=split_seed,
            max_samples=max_lenses,
            max_memory_mb=max_memory_mb,
            augment=augment,
            augment_seed=augment_seed,
            transform=transform if transform is not None else IntensityTransform(1.0),
            **kwargs,
        )
        if self.scale != LR_FACTOR:
            raise ValueError(
                f"data.scale={self.scale}: the lensing data are x{LR_FACTOR} pairs (LR pixel = 2x2 HR "
                "pixels); set data.scale=2"
            )
        if len(class_names) != len(LABEL_NAMES):
            raise ValueError(
                f"data.class_names needs {len(LABEL_NAMES)} names (labels 0, 1, 2), got {list(class_names)}"
            )
        self.n_lenses = int(n_lenses)
        self.sim_seed = int(sim_seed)
        self.image_size = int(image_size)
        self.pixel_scale_arcsec = float(pixel_scale_arcsec)
        # plain values (Hydra passes ListConfig for ranges): the config's JSON names the default file
        self.sim_overrides = {str(k): _plain(v) for k, v in dict(sim or {}).items()}
        self.class_names = tuple(str(c) for c in class_names)
        self.npy_index: NpyPairIndex | None = None

    # ------------------------------------------------------------------ simulator
    def sim_config(self) -> LensSimConfig:
        known = {f.name for f in dataclasses.fields(LensSimConfig)}
        unknown = sorted(set(self.sim_overrides) - known)
        if unknown:
            raise ValueError(f"data.sim: unknown simulator option(s) {unknown}; known: {sorted(known)}")
        for key, value in (("image_size", self.image_size), ("pixel_scale_arcsec", self.pixel_scale_arcsec)):
            if key in self.sim_overrides and self.sim_overrides[key] != value:
                raise ValueError(
                    f"data.sim.{key}={self.sim_overrides[key]} contradicts data.{key}={value}; set data.{key} only"
                )
        return LensSimConfig(
            **{**self.sim_overrides, "image_size": self.image_size, "pixel_scale_arcsec": self.pixel_scale_arcsec}
        )

    # ------------------------------------------------------------------ SimulatedH5DataModule API
    def schema(self) -> H5Schema:
        return lensing_schema()

    def default_file_names(self) -> dict[str, str]:
        config = self.sim_config()
        digest = hashlib.sha1(config.to_json().encode()).hexdigest()[:8]  # any simulator option -> another file
        return {
            "all": f"lensing_{self.n_lenses}x{self.image_size}px_seed{self.sim_seed}_v{SIMULATOR_VERSION}_{digest}.h5"
        }

    def n_default(self, key: str = "all") -> int:
        return self.n_lenses

    def simulate_blocks(self, key: str = "all") -> tuple[Callable[[int], dict[str, np.ndarray]], int]:
        fn = functools.partial(lens_block, self.sim_config().to_json(), self.sim_seed, self.n_lenses)
        return fn, -(-self.n_lenses // BLOCK_LENSES)

    def write_options(self) -> dict[str, Any]:
        lr = self.image_size // LR_FACTOR
        return {"shapes": {"hr": (self.image_size, self.image_size), "lr": (lr, lr)}, "chunk_rows": 256}

    def simulation_attrs(self, key: str = "all") -> dict[str, Any]:
        return {
            "simulator": "lit_sr.domains.lensing.sim (lenstronomy SIE + shear + point-mass substructure)",
            "simulator_version": SIMULATOR_VERSION,
            "seed": self.sim_seed,
            "n_lenses": self.n_lenses,
            "config": self.sim_config().to_json(),
            "label_names": json.dumps(LABEL_NAMES),
            "units": json.dumps({"hr": IMAGE_UNITS, "lr": IMAGE_UNITS + " area", **PARAM_UNITS}),
        }

    def check_file(self, key: str, info: FileInfo) -> None:
        hr, lr = info.shapes["hr"], info.shapes["lr"]
        if hr != (lr[0] * self.scale, lr[1] * self.scale):
            raise DataFileError(info.path, "hr", f"HR images {hr} are not data.scale={self.scale} x the LR images {lr}")

    def batch_builder(self, augment: bool) -> LensBatchBuilder:
        return LensBatchBuilder(self.transform, augment)

    def labelled_stand_in(self) -> dict[str, Any] | None:
        """Overrides of this data config giving labelled lenses like the user's: the built-in simulation at the
        user's HR image size (same pixel scale, simulator options and split). Used by the setup stage to train
        a classifier (the GANs' perceptual net) when the user's data carry no labels. None for non-square
        images (the simulator draws square fields)."""
        self.prepare_data()
        self.setup("fit")
        hr_shape = tuple(self.splits["train"][0]["target"].shape[-2:])
        if hr_shape[0] != hr_shape[1]:
            return None
        return {"file": None, "image_size": int(hr_shape[0]), "max_lenses": None}

    # ------------------------------------------------------------------ npy folder mode
    @property
    def folder(self) -> Path | None:
        """The user's npy folder (``data.file`` naming a directory), else None."""
        if isinstance(self.user_file, (str, Path)) and Path(self.user_file).is_dir():
            return Path(self.user_file)
        return None

    def _scan_folder(self) -> NpyPairIndex:
        if self.npy_index is None:
            index = scan_npy_pairs(self.folder, self.class_names)
            if index.hr_shape != (index.lr_shape[0] * self.scale, index.lr_shape[1] * self.scale):
                raise DataFileError(
                    self.folder, "shape", f"HR {index.hr_shape} is not data.scale={self.scale} x LR {index.lr_shape}"
                )
            self.npy_index = index
        return self.npy_index

    def prepare_data(self) -> None:
        if self.folder is not None:
            self._scan_folder()  # validates every file; nothing is written
            return
        super().prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self.folder is None:
            super().setup(stage)
            return
        if self.splits:
            return
        index = self._scan_folder()
        n = len(index) if self.max_samples is None else min(len(index), int(self.max_samples))
        perm = np.random.default_rng(self.split_seed).permutation(n)
        n_train, n_val = int(round(self.split[0] * n)), int(round(self.split[1] * n))
        parts = {"train": perm[:n_train], "val": perm[n_train : n_train + n_val], "test": perm[n_train + n_val :]}
        for name, rows in parts.items():
            augment = self.augment and name == "train"
            self.splits[name] = NpyPairsDataset(
                index,
                np.sort(rows),
                self.batch_builder(augment),
                augment=augment,
                seed=self.augment_seed,
                max_memory_mb=self.max_memory_mb,
            )
