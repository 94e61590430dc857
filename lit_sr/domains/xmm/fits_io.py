"""Reading X-ray counts images (FITS) with their exposure, validation, and writing predictions.

A usable observation is a 2-D counts image in the primary HDU with a celestial WCS, finite and
non-negative pixels, and an exposure map in seconds from (in this order of precedence) an explicit
exposure-map file, a flat exposure given in ks, or the file's own 'EXPOSURE' image extension.
Every problem raises :class:`lit_sr.data.validate.DataFileError` naming the file, the HDU or keyword
and what was expected.

Pixel-grid convention shared with the simulator: pixel i of an image covers pixels f*i .. f*i+f-1 of
an image ``f`` times finer. With 0-based pixel coordinates (pixel centres at integers, astropy
``origin=0``) x_fine = f * x + (f - 1) / 2; in FITS 1-based coordinates X_fine = f * X - (f - 1) / 2,
so :func:`scaled_wcs` divides CDELT (or the CD matrix) by f and sets CRPIX_fine = f * CRPIX - (f - 1) / 2.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from lit_sr.data.validate import DataFileError
from lit_sr.utils.atomic import atomic_path

EXPOSURE_EXTNAME = "EXPOSURE"
# Header cards copied from an input file into a prediction (metadata only; structure and WCS are rebuilt).
_COPY_KEYS = ("TELESCOP", "INSTRUME", "OBJECT", "OBS_ID", "DATE-OBS", "DATE-END", "FILTER", "EXPOSURE",
              "RA_PNT", "DEC_PNT", "PA_PNT", "EQUINOX", "RADESYS", "ENERG_LO", "ENERG_HI")


@dataclass
class Observation:
    """One counts image: counts float32 [H, W], exposure_s float32 [H, W] (seconds), celestial WCS."""

    counts: np.ndarray
    exposure_s: np.ndarray
    wcs: WCS
    header: fits.Header
    path: Path
    exposure_source: str = field(default="")   # where the exposure came from (for logs / provenance)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.counts.shape)  # type: ignore[return-value]


def _open_image(path: Path, hdu_key: int | str, what: str) -> tuple[np.ndarray | None, fits.Header, list[str]]:
    """Data and header of one HDU; unreadable or truncated files become DataFileError."""
    field_name = f"HDU {hdu_key}" if isinstance(hdu_key, int) else f"HDU '{hdu_key}'"
    caught: list = []

    def truncation() -> str | None:
        msgs = [str(w.message) for w in caught if "truncat" in str(w.message).lower()]
        return msgs[0] if msgs else None

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(path, mode="readonly", memmap=False, lazy_load_hdus=False) as hdul:
                names = [h.name for h in hdul]
                if isinstance(hdu_key, str) and hdu_key not in names:
                    return None, fits.Header(), names
                hdu = hdul[hdu_key]
                data = None if hdu.data is None else np.array(hdu.data)
                header = hdu.header.copy()
    except (OSError, ValueError, TypeError, IndexError, KeyError) as exc:
        if truncation():
            raise DataFileError(path, field_name, f"{what} is truncated ({truncation()}); "
                                                  "re-download or re-create it") from exc
        raise DataFileError(path, field_name, f"{what} is not a readable FITS file "
                                              f"({type(exc).__name__}: {exc})") from exc
    if truncation():
        raise DataFileError(path, field_name, f"{what} is truncated ({truncation()}); re-download or re-create it")
    return data, header, names


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _check_finite_nonneg(arr: np.ndarray, path: Path, field_name: str, what: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        kinds = "NaN" if np.isnan(arr).all(where=bad) else "non-finite (NaN/Inf)"
        raise DataFileError(path, field_name, f"{what} has {int(bad.sum())} {kinds} pixel(s), first at index "
                                              f"(row, col) = {_first_bad(bad)}; expected finite values")
    neg = arr < 0
    if neg.any():
        raise DataFileError(path, field_name, f"{what} has {int(neg.sum())} negative pixel(s) (minimum "
                                              f"{float(arr.min()):g}), first at index (row, col) = {_first_bad(neg)}; "
                                              "expected values >= 0")


def _check_2d(data: np.ndarray | None, path: Path, field_name: str, what: str) -> np.ndarray:
    if data is None:
        raise DataFileError(path, field_name, f"no image data (NAXIS=0); expected a 2-D {what} in this HDU")
    if data.ndim != 2:
        extra = " (a data cube: extract one 2-D plane first)" if data.ndim == 3 else ""
        raise DataFileError(path, field_name, f"expected a 2-D {what}, found {data.ndim}-D shape {data.shape}{extra}")
    return data


def read_exposure_map(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Exposure map (s) from a separate file: its 'EXPOSURE' extension if present, else the primary HDU."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(path, None, "exposure-map file not found (expected an existing FITS image in seconds)")
    data, _, _ = _open_image(path, EXPOSURE_EXTNAME, "exposure-map file")
    key: int | str = EXPOSURE_EXTNAME
    if data is None:
        data, _, _ = _open_image(path, 0, "exposure-map file")
        key = 0
    field_name = f"HDU {key}" if key == 0 else f"HDU '{key}'"
    data = _check_2d(data, path, field_name, "exposure map (s)").astype(np.float32)
    _check_finite_nonneg(data, path, field_name, "exposure map")
    if shape is not None and tuple(data.shape) != tuple(shape):
        raise DataFileError(path, field_name, f"exposure map shape {data.shape} does not match the counts image "
                                              f"shape {tuple(shape)}; expected the same pixel grid")
    return data


def read_observation(path: str | Path, exposure: str | Path | None = None, exposure_ks: float | None = None,
                     min_size: int | None = None) -> Observation:
    """Read and validate a counts image (primary HDU) and its exposure map.

    exposure: path of an exposure-map FITS file (s) on the same grid; exposure_ks: assume a flat exposure
    of this many ks. Give at most one; without both the file's 'EXPOSURE' extension is used.
    min_size: smallest accepted height and width (the model's patch size), in pixels.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(path, None, "counts image not found (expected an existing FITS file)")
    if exposure is not None and exposure_ks is not None:
        raise DataFileError(path, "exposure", "give either predict.exposure=<file> or predict.exposure_ks=<ks>, not both")
    data, header, names = _open_image(path, 0, "counts image")
    counts = _check_2d(data, path, "HDU 0 (PRIMARY)", "counts image").astype(np.float32)
    h, w = counts.shape
    if min_size is not None and (h < min_size or w < min_size):
        raise DataFileError(path, "HDU 0 (PRIMARY)", f"image is {h}x{w} pixels, smaller than the model patch size "
                                                     f"{min_size}x{min_size}; expected at least {min_size} pixels per side")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")       # FITSFixedWarning about date/obsgeo cards is noise here
            wcs = WCS(header, naxis=2)
    except Exception as exc:  # astropy raises several types for malformed WCS cards
        raise DataFileError(path, "HDU 0 WCS", f"cannot parse the WCS keywords ({type(exc).__name__}: {exc})") from exc
    if not wcs.has_celestial:
        ctypes = [header.get("CTYPE1"), header.get("CTYPE2")]
        raise DataFileError(path, "HDU 0 CTYPE1/CTYPE2", f"no celestial WCS (CTYPE1, CTYPE2 = {ctypes}); expected "
                                                          "sky axes such as RA---TAN / DEC--TAN with CRVAL, CRPIX, CDELT")
    wcs = wcs.celestial
    _check_finite_nonneg(counts, path, "HDU 0 (PRIMARY)", "counts image")

    if exposure is not None:
        exp = read_exposure_map(exposure, shape=(h, w))
        source = f"file {exposure}"
    elif exposure_ks is not None:
        if not (np.isfinite(exposure_ks) and exposure_ks > 0):
            raise DataFileError(path, "exposure_ks", f"flat exposure must be a positive number of ks, got {exposure_ks}")
        exp = np.full((h, w), exposure_ks * 1e3, np.float32)
        source = f"flat {exposure_ks:g} ks"
    elif EXPOSURE_EXTNAME in names:
        edata, _, _ = _open_image(path, EXPOSURE_EXTNAME, "counts image")
        field_name = f"HDU '{EXPOSURE_EXTNAME}'"
        exp = _check_2d(edata, path, field_name, "exposure map (s)").astype(np.float32)
        _check_finite_nonneg(exp, path, field_name, "exposure map")
        if exp.shape != counts.shape:
            raise DataFileError(path, field_name, f"exposure map shape {exp.shape} does not match the counts image "
                                                  f"shape {counts.shape}; expected the same pixel grid")
        source = f"extension {EXPOSURE_EXTNAME}"
    else:
        raise DataFileError(path, f"HDU '{EXPOSURE_EXTNAME}'", "no exposure map: the file has no 'EXPOSURE' image "
                            f"extension (HDUs: {names}); pass one with predict.exposure=<file> or assume a flat "
                            "exposure with predict.exposure_ks=<ks>")
    return Observation(counts=counts, exposure_s=exp, wcs=wcs, header=header, path=path, exposure_source=source)


def scaled_wcs(wcs: WCS, factor: int) -> WCS:
    """WCS of the same sky on a grid ``factor`` times finer (pixel i -> pixels f*i .. f*i+f-1).

    CDELT (or the CD matrix) is divided by ``factor``; CRPIX_fine = factor * CRPIX - (factor - 1) / 2
    (1-based FITS convention), so every sky position keeps its place. PC rotations and CD matrices are
    supported; SIP / lookup-table distortions are not (they are defined in pixel units).
    """
    if factor < 1 or int(factor) != factor:
        raise ValueError(f"scaled_wcs needs a positive integer factor, got {factor}")
    if wcs.sip is not None or wcs.cpdis1 is not None or wcs.cpdis2 is not None or wcs.det2im1 is not None:
        raise ValueError("scaled_wcs does not support SIP or lookup-table distortions")
    out = wcs.deepcopy()
    f = float(factor)
    if out.wcs.has_cd():
        out.wcs.cd = out.wcs.cd / f
    else:
        out.wcs.cdelt = out.wcs.cdelt / f
    out.wcs.crpix = f * out.wcs.crpix - (f - 1.0) / 2.0
    if wcs.pixel_shape is not None:
        out.pixel_shape = tuple(int(n * factor) for n in wcs.pixel_shape)
    out.wcs.set()
    return out


def _image_header(wcs: WCS | None, bunit: str) -> fits.Header:
    hdr = fits.Header()
    if wcs is not None:
        hdr.extend(wcs.to_header(relax=False), update=True)
    hdr["BUNIT"] = bunit
    return hdr


def write_prediction_fits(path: str | Path, image: np.ndarray, header_like: fits.Header | None, wcs: WCS | None,
                          bunit: str, extensions: Mapping[str, tuple] | None = None,
                          history: Sequence[str] = ()) -> Path:
    """Write a 2-D image (float32) with a WCS and optional named image extensions, atomically.

    header_like: a header whose metadata cards (TELESCOP, INSTRUME, OBJECT, DATE-OBS, ...) are copied.
    extensions: name -> (array, bunit) on the image's grid, or (array, bunit, wcs) on another grid.
    history: lines added as FITS HISTORY cards. Never overwrites: an existing ``path`` raises
    FileExistsError before anything is written.
    """
    path = Path(path)
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"write_prediction_fits expects a 2-D image, got shape {image.shape}")
    hdr = fits.Header()
    if header_like is not None:
        for key in _COPY_KEYS:
            if key in header_like:
                hdr[key] = (header_like[key], header_like.comments[key])
    hdr.extend(_image_header(wcs, bunit), update=True)
    for line in history:
        hdr.add_history(str(line))
    hdus: list[fits.PrimaryHDU | fits.ImageHDU] = [fits.PrimaryHDU(image.astype(np.float32), header=hdr)]
    for name, spec in (extensions or {}).items():
        arr, unit = np.asarray(spec[0]), spec[1]
        ext_wcs = spec[2] if len(spec) > 2 else wcs
        if len(spec) <= 2 and arr.shape != image.shape:
            raise ValueError(f"extension {name!r} has shape {arr.shape} but the image is {image.shape}; "
                             "pass (array, bunit, wcs) for another grid")
        hdus.append(fits.ImageHDU(arr.astype(np.float32), header=_image_header(ext_wcs, unit), name=name.upper()))
    with atomic_path(path, overwrite=False) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True)
    return path
