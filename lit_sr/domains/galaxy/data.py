"""Galaxy stamps for the progressive GAN: file schema, flux transform, validation and the DataModule.

File layout (written by :mod:`lit_sr.domains.galaxy.sim` or by a user), one row per galaxy:

* ``image`` [N, S, S] float32, ADU per pixel, sky-subtracted, PSF-convolved and noisy (what the
  critic sees); S a power of two (the generator's output size, ``data.stamp_size``);
* ``psf`` [N, K, K] float32, the PSF of each stamp, odd K <= S, each summing to 1;
* ``label`` [N] int, class index into ``data.class_names`` (0 disk, 1 bulge, 2 irregular);
* optional: ``image_psf_free`` [N, S, S] (ADU, no PSF, no noise; simulated files only), ``size_bin``
  and the simulator's physical parameters (``flux`` ADU, ``hlr_arcsec``, ``q``, ...).

Batches (model space, see :class:`AsinhFluxTransform`): ``{"image": [B, 1, S, S], "label": [B],
"psf": [B, K, K], "index": [B], "size_bin": [B]}`` plus ``image_psf_free`` [B, 1, S, S] when the
file has it and the rotation-invariant parameters ``flux``, ``hlr_arcsec``, ``q``, ``bulge_fraction``.
With ``augment`` the training split gets a random element of the square's symmetry group D4 per
galaxy, applied to the images and the PSF alike (galaxy orientations are isotropic).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any, Iterator, Mapping, Sequence

import h5py
import numpy as np
import torch
from torch import nn

from lit_sr.data.base import SimulatedH5DataModule
from lit_sr.data.h5store import Field, FileInfo, H5Schema
from lit_sr.data.validate import DataFileError
from lit_sr.domains.galaxy.sim import (
    LABEL_NAMES,
    PARAMETER_FIELDS,
    SIMULATOR_VERSION,
    GalaxySimConfig,
    simulate_galaxies,
)

log = logging.getLogger("lit_sr")

PSF_SUM_TOLERANCE = 1e-3  # as lit_sr.nets.psf.validate_psf
# Per-sample parameters carried into batches: unchanged by the D4 augmentation (angles and offsets are not).
BATCH_PARAMETERS = ("flux", "hlr_arcsec", "q", "bulge_fraction")


class AsinhFluxTransform(nn.Module):
    """Signed asinh stretch ADU -> model space: y = asinh(x / softening) / divisor.

    Linear (y ~ x / (softening * divisor)) for |x| << softening, logarithmic above, odd in x: sky
    noise (negative pixels included) keeps its symmetric distribution, and four decades of galaxy
    surface brightness map to values of order one. Exactly invertible on all reals (``inverse`` =
    softening * sinh(divisor * y)), so generated images come back in the training set's ADU.
    Defaults (softening 10 ADU = the default sky noise sigma, divisor 2): sky noise -> +-0.44, galaxy
    peaks (100-1700 ADU observed, up to ~9000 ADU PSF-free) -> 1.5-3.7, i.e. the scale of a freshly
    initialised ProGAN generator's output (unit variance): with equalised learning rates each Adam step
    changes a weight by ~lr relative to its size, so a generator that first had to shrink its output
    tenfold (the data in [0, 1] with sky noise +-0.1) stayed far off in a CPU-length run.
    """

    def __init__(self, softening: float = 10.0, divisor: float = 2.0) -> None:
        super().__init__()
        if not softening > 0 or not divisor > 0:
            raise ValueError(f"AsinhFluxTransform needs softening > 0 and divisor > 0, got {softening}, {divisor}")
        self.softening = float(softening)
        self.divisor = float(divisor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.asinh(x / self.softening) / self.divisor

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self.softening * torch.sinh(y * self.divisor)

    def extra_repr(self) -> str:
        return f"softening={self.softening}, divisor={self.divisor}"


def galaxy_schema(class_names: Sequence[str] = LABEL_NAMES) -> H5Schema:
    """Datasets of a galaxy file; stamp and PSF sizes are open here and checked by ``check_stamp_file``."""
    fields = [
        Field(
            "image",
            (None, None),
            "float32",
            units="ADU",
            per_sample_key=False,
            description="PSF-convolved noisy stamp, sky-subtracted",
        ),
        Field("psf", (None, None), "float32", per_sample_key=False, description="PSF kernel, sums to 1"),
        Field(
            "label", (), "int64", finite=False, allowed=tuple(range(len(class_names))), allowed_names=tuple(class_names)
        ),
        Field(
            "image_psf_free",
            (None, None),
            "float32",
            required=False,
            units="ADU",
            per_sample_key=False,
            description="galaxy without PSF and noise",
        ),
        Field("size_bin", (), "int64", required=False, finite=False),
    ]
    units = {
        "flux": "ADU",
        "hlr_arcsec": "arcsec",
        "beta_deg": "deg",
        "psf_fwhm_arcsec": "arcsec",
        "sky_level": "ADU",
        "offset_x_arcsec": "arcsec",
        "offset_y_arcsec": "arcsec",
    }
    for name in PARAMETER_FIELDS:
        fields.append(
            Field(name, (), "int64" if name == "n_knots" else "float32", required=False, units=units.get(name, ""))
        )
    return H5Schema(fields, what="galaxy data file")


def check_stamp_file(path, info: FileInfo, stamp_size: int, psf_size: int | None = None) -> None:
    """Square power-of-two stamps of ``stamp_size``, odd PSFs that fit the stamp and sum to 1.

    Raises one ``DataFileError`` naming the file, the field and what was expected.
    """
    shape = info.shapes["image"]
    s = shape[0]
    if shape[0] != shape[1] or s < 4 or s & (s - 1):
        raise DataFileError(
            path,
            "image",
            f"expected square stamps whose side is a power of two (4, 8, ..., 64, ...), found {shape[0]}x{shape[1]}",
        )
    if s != stamp_size:
        raise DataFileError(
            path,
            "image",
            f"expected {stamp_size}x{stamp_size} stamps (data.stamp_size, the generator's output size), found {s}x{s}",
        )
    if "image_psf_free" in info.shapes and info.shapes["image_psf_free"] != shape:
        raise DataFileError(
            path, "image_psf_free", f"expected the stamp shape {s}x{s}, found {info.shapes['image_psf_free']}"
        )
    k1, k2 = info.shapes["psf"]
    if k1 != k2 or k1 % 2 == 0:
        raise DataFileError(
            path, "psf", f"expected square kernels of odd side (centred on the middle pixel), found {k1}x{k2}"
        )
    if k1 > s:
        raise DataFileError(path, "psf", f"PSF kernel {k1}x{k1} is larger than the {s}x{s} stamp")
    if psf_size is not None and k1 != psf_size:
        raise DataFileError(
            path,
            "psf",
            f"expected {psf_size}x{psf_size} kernels (data.psf_size, the size of the "
            f"model's PSF layer), found {k1}x{k1}; set data.psf_size={k1}",
        )
    with h5py.File(path, "r") as h5:
        ds = h5["psf"]
        for start in range(0, ds.shape[0], 4096):
            block = np.asarray(ds[start : start + 4096], dtype=np.float64)
            sums = block.sum(axis=(1, 2))
            bad = np.flatnonzero(np.abs(sums - 1.0) > PSF_SUM_TOLERANCE)
            if bad.size:
                raise DataFileError(
                    path,
                    "psf",
                    f"every PSF must sum to 1 within {PSF_SUM_TOLERANCE:g}; row "
                    f"{start + int(bad[0])} sums to {sums[bad[0]]:.6g}",
                )
            peak = np.abs(block).max(axis=(1, 2))
            neg = np.flatnonzero(block.min(axis=(1, 2)) < -1e-6 * peak)
            if neg.size:
                raise DataFileError(
                    path, "psf", f"PSF values must be >= 0; row {start + int(neg[0])} has {block[neg[0]].min():.3g}"
                )


def _d4(arrays: list[np.ndarray], flips: np.ndarray) -> list[np.ndarray]:
    """Per-row transposition, column flip, row flip (``flips`` [B, 3] bool) of [B, H, W] arrays."""
    out = []
    for a in arrays:
        a = np.where(flips[:, 2, None, None], a.transpose(0, 2, 1), a)
        a = np.where(flips[:, 0, None, None], a[:, :, ::-1], a)
        a = np.where(flips[:, 1, None, None], a[:, ::-1, :], a)
        out.append(np.ascontiguousarray(a))
    return out


class GalaxyBatchBuilder:
    """Raw rows -> generation batch in model space (see the module docstring). Picklable."""

    def __init__(self, transform: nn.Module, augment: bool) -> None:
        self.transform = transform
        self.augment = augment

    def __call__(
        self, raw: Mapping[str, np.ndarray], rows: np.ndarray, rng: np.random.Generator | None
    ) -> dict[str, torch.Tensor]:
        image = np.asarray(raw["image"], dtype=np.float32)
        psf = np.asarray(raw["psf"], dtype=np.float32)
        free = np.asarray(raw["image_psf_free"], dtype=np.float32) if "image_psf_free" in raw else None
        if self.augment and rng is not None:
            flips = rng.integers(0, 2, size=(len(rows), 3)).astype(bool)
            parts = _d4([image, psf] + ([free] if free is not None else []), flips)
            image, psf = parts[0], parts[1]
            free = parts[2] if free is not None else None
        batch = {
            "image": self.transform(torch.from_numpy(image)[:, None]),
            "psf": torch.from_numpy(psf),
            "label": torch.from_numpy(np.asarray(raw["label"]).astype(np.int64)),
            "index": torch.from_numpy(rows.astype(np.int64)),
        }
        if free is not None:
            batch["image_psf_free"] = self.transform(torch.from_numpy(free)[:, None])
        if "size_bin" in raw:
            batch["size_bin"] = torch.from_numpy(np.asarray(raw["size_bin"]).astype(np.int64))
        for name in BATCH_PARAMETERS:
            if name in raw:
                batch[name] = torch.from_numpy(np.asarray(raw[name], dtype=np.float32))
        return batch


class GalaxyDataModule(SimulatedH5DataModule):
    """Galaxy stamps for generation; simulates the default file once under ``data_dir`` if absent.

    Args (beyond :class:`~lit_sr.data.base.SimulatedH5DataModule`'s and the loader settings):
        n_galaxies: galaxies in the default file (classes balanced to within one galaxy).
        sim_seed: simulator seed of the default file (part of its name).
        sim: keyword overrides of :class:`~lit_sr.domains.galaxy.sim.GalaxySimConfig` (not the ones below).
        class_names: label names; labels in files must lie in [0, len).
        stamp_size: stamp side in pixels (power of two; the generator's output size).
        psf_size: PSF kernel side (odd, <= stamp_size; the model's PSF layer has this size).
        pixel_scale_arcsec, psf_fwhm_arcsec, psf_beta, sky_level_adu, gain_e_per_adu: the instrument of
            the default file (passed to the simulator; the model's noise layer interpolates the last two).
        transform: ADU -> model space (default :class:`AsinhFluxTransform`).
    """

    what = "galaxy data file"

    def __init__(
        self,
        data_dir: str = "data",
        file: str | None = None,
        n_galaxies: int = 3072,
        sim_seed: int = 0,
        sim: Mapping[str, Any] | None = None,
        class_names: Sequence[str] = LABEL_NAMES,
        stamp_size: int = 64,
        psf_size: int = 25,
        pixel_scale_arcsec: float = 0.2,
        psf_fwhm_arcsec: float = 0.6,
        psf_beta: float = 3.5,
        sky_level_adu: float = 400.0,
        gain_e_per_adu: float = 4.0,
        split: Sequence[float] = (0.5, 0.1, 0.4),
        split_seed: int = 0,
        transform: nn.Module | None = None,
        augment: bool = True,
        augment_seed: int = 0,
        max_samples: int | None = None,
        max_memory_mb: float = 1024.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("units", "ADU")
        super().__init__(
            data_dir=data_dir,
            file=file,
            split=split,
            split_seed=split_seed,
            max_samples=max_samples,
            max_memory_mb=max_memory_mb,
            augment=augment,
            augment_seed=augment_seed,
            transform=transform if transform is not None else AsinhFluxTransform(),
            **kwargs,
        )
        self.class_names = tuple(str(c) for c in class_names)
        s = int(stamp_size)
        if s < 4 or s & (s - 1):
            raise ValueError(f"data.stamp_size must be a power of two >= 4, got {stamp_size}")
        if int(psf_size) % 2 == 0 or not 1 <= int(psf_size) <= s:
            raise ValueError(f"data.psf_size must be odd and <= data.stamp_size={s}, got {psf_size}")
        self.stamp_size, self.psf_size = s, int(psf_size)
        self.n_galaxies = int(n_galaxies)
        self.sim_seed = int(sim_seed)
        self.sim_overrides = dict(sim or {})
        self.instrument = {
            "stamp_size": s,
            "psf_size": self.psf_size,
            "pixel_scale_arcsec": float(pixel_scale_arcsec),
            "psf_fwhm_arcsec": float(psf_fwhm_arcsec),
            "psf_beta": float(psf_beta),
            "sky_level_adu": float(sky_level_adu),
            "gain_e_per_adu": float(gain_e_per_adu),
        }

    def sim_config(self) -> GalaxySimConfig:
        known = {f.name for f in dataclasses.fields(GalaxySimConfig)}
        unknown = sorted(set(self.sim_overrides) - known)
        clash = sorted(set(self.sim_overrides) & set(self.instrument))
        if unknown:
            raise ValueError(f"data.sim: unknown simulator option(s) {unknown}; known: {sorted(known)}")
        if clash:
            raise ValueError(f"data.sim: set {clash} as data.<name> (the model reads them there), not in data.sim")
        config = GalaxySimConfig(**self.instrument, **self.sim_overrides)
        names = tuple(c.name for c in config.classes)
        if names != self.class_names:
            raise ValueError(
                f"data.class_names={list(self.class_names)} differ from the simulator classes {list(names)}"
            )
        return config

    def _tag(self) -> str:
        defaults = GalaxySimConfig()
        changes = {k: v for k, v in self.instrument.items() if getattr(defaults, k) != v}
        changes.update(self.sim_overrides)
        return "_".join(f"{k}{v}" for k, v in sorted(changes.items())).replace(" ", "")

    # ------------------------------------------------------------------ SimulatedH5DataModule API
    def schema(self) -> H5Schema:
        return galaxy_schema(self.class_names)

    def default_file_names(self) -> dict[str, str]:
        tag = self._tag()
        return {
            "all": f"galaxy_{self.n_galaxies}_seed{self.sim_seed}_v{SIMULATOR_VERSION}{'_' + tag if tag else ''}.h5"
        }

    def n_default(self, key: str = "all") -> int:
        return self.n_galaxies

    def simulate(self, key: str = "all") -> Iterator[dict[str, np.ndarray]]:
        return simulate_galaxies(self.n_galaxies, self.sim_seed, self.sim_config())

    def write_options(self) -> dict[str, Any]:
        s, k = self.stamp_size, self.psf_size
        return {"shapes": {"image": (s, s), "image_psf_free": (s, s), "psf": (k, k)}, "chunk_rows": 256}

    def simulation_attrs(self, key: str = "all") -> dict[str, Any]:
        config = self.sim_config()
        return {
            "simulator": "lit_sr.domains.galaxy.sim (galsim bulge + disk + knots, Moffat PSF)",
            "simulator_version": SIMULATOR_VERSION,
            "seed": self.sim_seed,
            "n_galaxies": self.n_galaxies,
            "config": config.to_json(),
            "label_names": json.dumps(list(self.class_names)),
            "units": "ADU per pixel (image, image_psf_free), sky-subtracted; flux ADU; angles arcsec/deg",
        }

    def check_file(self, key: str, info: FileInfo) -> None:
        check_stamp_file(info.path, info, self.stamp_size, self.psf_size)

    def batch_builder(self, augment: bool) -> GalaxyBatchBuilder:
        return GalaxyBatchBuilder(self.transform, augment)

    # ------------------------------------------------------------------ for the model's PSF layer
    def psf_kernel(self, max_rows: int = 4096) -> torch.Tensor:
        """The training set's PSF [K, K] (float32, sum 1): mean of the ``psf`` rows of the training split.

        With one fixed PSF (the default simulation) this is that PSF exactly. Logs a warning when the
        rows differ by more than 1 % of the peak (per-sample PSFs: prefer the model's per-sample mode).
        """
        if "train" not in self.splits:
            self.setup("fit")
        ds = self.splits["train"]
        rows = ds.indices[:max_rows]
        with h5py.File(ds.path, "r") as h5:
            psf = np.asarray(h5["psf"][np.sort(rows)], dtype=np.float64)
        mean = psf.mean(axis=0)
        spread = float(np.abs(psf - mean).max() / mean.max())
        if spread > 0.01:
            log.warning(
                "%s: PSFs differ between galaxies (max deviation %.1f %% of the peak); the fixed PSF layer uses "
                "their mean (model.observation.psf_mode=per_sample uses each galaxy's own)",
                ds.path,
                100 * spread,
            )
        return torch.as_tensor(mean / mean.sum(), dtype=torch.float32)
