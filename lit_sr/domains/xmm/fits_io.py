"""Reading X-ray counts images (FITS, also ``.fits.gz``) with their exposure, validation, and writing predictions.

A usable observation is a 2-D counts image in the primary HDU with finite, non-negative pixels, a known
pixel size and an exposure map in seconds from (in this order of precedence) an explicit exposure-map
file, a flat exposure given in ks, or the file's own 'EXPOSURE' image extension. Every problem raises
:class:`lit_sr.data.validate.DataFileError` naming the file, the HDU or keyword and what was expected.

Coordinates. Whatever 2-D WCS the image has is kept and carried to the outputs: a celestial one (RA/DEC,
e.g. RA---TAN from an XMM SAS ``evselect`` image in sky X/Y) or the linear detector axes of an ``evselect``
image in DETX/DETY (CDELT in SAS physical units of 0.05 arcsec: ``ximagebinsize=80`` gives 4.0" pixels).
No celestial WCS is a logged note, not an error; the pixel size then comes from the detector axes
(:data:`PHYSICAL_UNIT_ARCSEC`) or from ``pixel_arcsec`` given by the user.

Exposure without an exposure map. SAS images carry none: a flat exposure (``exposure_ks``) is multiplied by
a detector mask estimated from the counts themselves (:func:`estimate_detector_mask`): detector rows and
columns that are empty or far below their neighbours (EPIC-pn chip gaps, rows outside the CCDs, dead or
flagged columns) get exposure 0. Vignetting and per-CCD good-time differences (ONTIMEnn cards) are not
modelled (the note says so when the ONTIMEnn cards differ by more than 1 %).

Pixel-grid convention shared with the simulator: pixel i of an image covers pixels f*i .. f*i+f-1 of
an image ``f`` times finer. With 0-based pixel coordinates (pixel centres at integers, astropy
``origin=0``) x_fine = f * x + (f - 1) / 2; in FITS 1-based coordinates X_fine = f * X - (f - 1) / 2,
so :func:`scaled_wcs` divides CDELT (or the CD matrix) by f and sets CRPIX_fine = f * CRPIX - (f - 1) / 2.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from scipy import ndimage

from lit_sr.data.validate import DataFileError
from lit_sr.utils.atomic import atomic_path

log = logging.getLogger("lit_sr")

EXPOSURE_EXTNAME = "EXPOSURE"
#: arcsec per unit of the XMM SAS physical axes (DETX/DETY detector and X/Y sky coordinates): 0.05"
PHYSICAL_UNIT_ARCSEC = {"DETX": 0.05, "DETY": 0.05, "X": 0.05, "Y": 0.05}
#: relative pixel-size difference from the training data that is refused (above) or logged (above 5 %)
MAX_PIXEL_SCALE_MISMATCH = 0.25
# Header cards copied from an input file into a prediction (metadata only; structure and WCS are rebuilt).
_COPY_KEYS = (
    "TELESCOP",
    "INSTRUME",
    "OBJECT",
    "OBS_ID",
    "DATE-OBS",
    "DATE-END",
    "FILTER",
    "EXPOSURE",
    "RA_PNT",
    "DEC_PNT",
    "PA_PNT",
    "EQUINOX",
    "RADESYS",
    "ENERG_LO",
    "ENERG_HI",
)


@dataclass
class Observation:
    """One counts image: counts float32 [H, W], exposure_s float32 [H, W] (seconds), the file's 2-D WCS
    (celestial, or linear detector axes such as DETX/DETY: ``celestial`` False) and its pixel size (arcsec)."""

    counts: np.ndarray
    exposure_s: np.ndarray
    wcs: WCS
    header: fits.Header
    path: Path
    exposure_source: str = field(default="")  # where the exposure came from (for logs / provenance)
    pixel_arcsec: float = float("nan")
    celestial: bool = True

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
            raise DataFileError(
                path, field_name, f"{what} is truncated ({truncation()}); re-download or re-create it"
            ) from exc
        raise DataFileError(
            path, field_name, f"{what} is not a readable FITS file ({type(exc).__name__}: {exc})"
        ) from exc
    if truncation():
        raise DataFileError(path, field_name, f"{what} is truncated ({truncation()}); re-download or re-create it")
    return data, header, names


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _check_finite_nonneg(arr: np.ndarray, path: Path, field_name: str, what: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        kinds = "NaN" if np.isnan(arr).all(where=bad) else "non-finite (NaN/Inf)"
        raise DataFileError(
            path,
            field_name,
            f"{what} has {int(bad.sum())} {kinds} pixel(s), first at index "
            f"(row, col) = {_first_bad(bad)}; expected finite values",
        )
    neg = arr < 0
    if neg.any():
        raise DataFileError(
            path,
            field_name,
            f"{what} has {int(neg.sum())} negative pixel(s) (minimum "
            f"{float(arr.min()):g}), first at index (row, col) = {_first_bad(neg)}; "
            "expected values >= 0",
        )


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
        raise DataFileError(
            path,
            field_name,
            f"exposure map shape {data.shape} does not match the counts image "
            f"shape {tuple(shape)}; expected the same pixel grid",
        )
    return data


def image_wcs(header: fits.Header, path: Path, pixel_arcsec: float | None = None) -> tuple[WCS, bool, float]:
    """(2-D WCS of the image, whether it is celestial, pixel size in arcsec) from a primary header.

    A celestial WCS gives the pixel size from its CDELT / CD; linear SAS physical axes (DETX/DETY, X/Y)
    from CDELT x 0.05"; anything else needs ``pixel_arcsec``. A missing celestial WCS is logged, not refused.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FITSFixedWarning about date/obsgeo cards is noise here
            wcs = WCS(header, naxis=2)
    except Exception as exc:  # astropy raises several types for malformed WCS cards
        raise DataFileError(path, "HDU 0 WCS", f"cannot parse the WCS keywords ({type(exc).__name__}: {exc})") from exc
    ctypes = [str(header.get("CTYPE1", "")).strip(), str(header.get("CTYPE2", "")).strip()]
    if wcs.has_celestial:
        from astropy.wcs.utils import proj_plane_pixel_scales

        wcs = wcs.celestial
        scales = np.abs(proj_plane_pixel_scales(wcs)) * 3600.0
        if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
            raise DataFileError(
                path,
                "HDU 0 CDELT/CD",
                f"celestial WCS with pixel scale {scales} arcsec; expected "
                "positive finite CDELT1/CDELT2 (or CD matrix) in degrees",
            )
        return wcs, True, float(np.mean(scales))
    units = [PHYSICAL_UNIT_ARCSEC.get(c.upper()) for c in ctypes]
    cdelt = [header.get("CDELT1"), header.get("CDELT2")]
    if all(u is not None for u in units) and all(isinstance(c, (int, float)) and c != 0 for c in cdelt):
        pix_axes = [abs(float(c)) * u for c, u in zip(cdelt, units)]
        if abs(pix_axes[0] / pix_axes[1] - 1) > 0.01:
            raise DataFileError(
                path,
                "HDU 0 CDELT1/CDELT2",
                f'non-square pixels ({pix_axes[0]:g}" x {pix_axes[1]:g}"); expected the same binning on both axes',
            )
        pix = float(np.mean(pix_axes))
        how = f'{ctypes[0]}/{ctypes[1]} axes, CDELT {cdelt[0]:g} x 0.05"'
    elif pixel_arcsec is not None and np.isfinite(pixel_arcsec) and pixel_arcsec > 0:
        pix, how = float(pixel_arcsec), "given pixel_arcsec"
    else:
        raise DataFileError(
            path,
            "HDU 0 CTYPE1/CTYPE2",
            f"no celestial WCS and no known pixel size (CTYPE1, CTYPE2 = "
            f"{ctypes}); expected sky axes such as RA---TAN / DEC--TAN, "
            "SAS DETX/DETY or X/Y axes with CDELT, or predict.pixel_arcsec=<arcsec>",
        )
    log.info(
        "%s: no celestial WCS (CTYPE1, CTYPE2 = %s): the output keeps these axes; pixel size %.4g arcsec (%s)",
        path,
        ctypes,
        pix,
        how,
    )
    return wcs, False, pix


def check_pixel_scale(
    pixel_arcsec: float, train_pixel_arcsec: float | None, path: Path, max_mismatch: float = MAX_PIXEL_SCALE_MISMATCH
) -> None:
    """Refuse an image whose pixels differ from the training pixels by more than ``max_mismatch`` (relative);
    log a note above 5 %. The message says by how much to rebin."""
    if not train_pixel_arcsec:
        return
    ratio = pixel_arcsec / float(train_pixel_arcsec)
    if abs(ratio - 1.0) > max_mismatch:
        if ratio < 1:
            hint = f"bin the image by {max(1, round(1 / ratio))} (e.g. evselect ximagebinsize / yimagebinsize x{max(1, round(1 / ratio))})"
        else:
            hint = 'make the image with smaller pixels (e.g. evselect ximagebinsize=80 for 4.0" pixels)'
        raise DataFileError(
            path,
            "pixel size",
            f"pixels of {pixel_arcsec:.4g} arcsec, the model was trained on "
            f"{train_pixel_arcsec:.4g} arcsec pixels (ratio {ratio:.3g}, more than "
            f"{max_mismatch:.0%} off: PSF and sources would have the wrong size in "
            f"pixels); {hint}",
        )
    if abs(ratio - 1.0) > 0.05:
        log.warning(
            "%s: pixels of %.4g arcsec, the model was trained on %.4g arcsec pixels",
            path,
            pixel_arcsec,
            train_pixel_arcsec,
        )


def estimate_detector_mask(
    counts: np.ndarray, deficit: float = 0.25, window: int = 31, p_value: float = 1e-6
) -> np.ndarray:
    """Exposed detector pixels (bool [H, W]) estimated from a counts image without an exposure map.

    A line (row or column) is unexposed when its counts are both below ``deficit`` x a reference and
    improbably low for a Poisson draw of that reference (P(N <= observed) < ``p_value``), so Poisson scatter
    of a faint field never empties a line:
    1. empty rows, then columns (reference: the median of the non-empty lines): rows off the CCDs, the
       EPIC-pn gap between the two CCD rows;
    2. between those rows (each band of CCDs separately, since the two pn CCD rows are offset), columns
       against the running median of ``window`` columns of the band, recomputed without the columns found
       until nothing changes (gaps come in clusters): chip gaps, dead or flagged columns; then rows of the
       band the same way (the partly exposed rows at the CCD edges). ``deficit`` is low (1/4) so that the
       steep flank of a bright source (2x over a few pixels) is not taken for a gap; lines exposed between
       1/4 and the full time stay "exposed".
    Too few counts to tell leave everything exposed. Pixels outside the circular field of view keep their
    out-of-field (particle background) counts and stay "exposed".
    """
    from scipy import stats

    c = np.asarray(counts, np.float64)
    mask = np.ones(c.shape, bool)

    def improbable(sums: np.ndarray, ref: np.ndarray) -> np.ndarray:
        return (sums < deficit * ref) & (stats.poisson.cdf(np.floor(sums), ref) < p_value)

    def empty_lines(sums: np.ndarray) -> np.ndarray:
        live = sums[sums > 0]
        if live.size == 0:
            return np.zeros(sums.shape, bool)
        return (sums == 0) & improbable(sums, np.full(sums.shape, float(np.median(live))))

    def deficit_lines(sums: np.ndarray) -> np.ndarray:
        bad = np.zeros(sums.shape, bool)
        for _ in range(5):  # the reference again without the lines found (gaps come in clusters)
            keep = np.flatnonzero(~bad)
            if keep.size == 0:
                break
            ref = np.empty_like(sums)
            ref[keep] = ndimage.median_filter(sums[keep], size=min(window, keep.size), mode="reflect")
            ref[bad] = np.interp(np.flatnonzero(bad), keep, ref[keep])
            new = improbable(sums, ref)
            if np.array_equal(new, bad):
                break
            bad = new
        return bad

    mask[empty_lines(c.sum(axis=1)), :] = False
    mask[:, empty_lines(c.sum(axis=0))] = False
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return mask
    bands = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)  # runs of consecutive exposed rows
    for band in bands:
        sub = c[band]
        cols = np.flatnonzero(mask[band[0]])
        bad_cols = cols[deficit_lines(sub[:, cols].sum(axis=0))]
        mask[np.ix_(band, bad_cols)] = False
        good_cols = np.flatnonzero(mask[band[0]])
        bad_rows = band[deficit_lines(sub[:, good_cols].sum(axis=1))] if good_cols.size else band[:0]
        mask[bad_rows, :] = False
    return mask


def _note_ontime(header: fits.Header, path: Path) -> None:
    ontime = [header.get(f"ONTIME{i:02d}") for i in range(1, 13)]
    ontime = [float(t) for t in ontime if isinstance(t, (int, float)) and t > 0]
    if len(ontime) > 1 and min(ontime) < 0.99 * max(ontime):
        log.warning(
            "%s: the per-CCD good times (ONTIMEnn) range from %.3g to %.3g ks; a flat exposure ignores "
            "this (pass an exposure map with predict.exposure=<file> for exact rates)",
            path,
            min(ontime) / 1e3,
            max(ontime) / 1e3,
        )


def read_observation(
    path: str | Path,
    exposure: str | Path | None = None,
    exposure_ks: float | None = None,
    min_size: int | None = None,
    detector_mask: str = "auto",
    pixel_arcsec: float | None = None,
) -> Observation:
    """Read and validate a counts image (primary HDU, ``.fits`` or ``.fits.gz``) and its exposure map.

    exposure: path of an exposure-map FITS file (s) on the same grid; exposure_ks: assume a flat exposure
    of this many ks. Give at most one; without both the file's 'EXPOSURE' extension is used.
    min_size: smallest accepted height and width (the model's patch size), in pixels.
    detector_mask: with ``exposure_ks``, 'auto' multiplies the flat exposure by
        :func:`estimate_detector_mask` of the counts (chip gaps, empty rows and columns get 0); 'none' keeps
        it flat everywhere.
    pixel_arcsec: pixel size (arcsec) when the header gives none (neither celestial nor SAS physical axes);
        ignored otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(path, None, "counts image not found (expected an existing FITS file)")
    if exposure is not None and exposure_ks is not None:
        raise DataFileError(
            path, "exposure", "give either predict.exposure=<file> or predict.exposure_ks=<ks>, not both"
        )
    data, header, names = _open_image(path, 0, "counts image")
    counts = _check_2d(data, path, "HDU 0 (PRIMARY)", "counts image").astype(np.float32)
    h, w = counts.shape
    if min_size is not None and (h < min_size or w < min_size):
        raise DataFileError(
            path,
            "HDU 0 (PRIMARY)",
            f"image is {h}x{w} pixels, smaller than the model patch size "
            f"{min_size}x{min_size}; expected at least {min_size} pixels per side",
        )
    wcs, celestial, pix = image_wcs(header, path, pixel_arcsec)
    _check_finite_nonneg(counts, path, "HDU 0 (PRIMARY)", "counts image")

    if exposure is not None:
        exp = read_exposure_map(exposure, shape=(h, w))
        source = f"file {exposure}"
    elif exposure_ks is not None:
        if not (np.isfinite(exposure_ks) and exposure_ks > 0):
            raise DataFileError(
                path, "exposure_ks", f"flat exposure must be a positive number of ks, got {exposure_ks}"
            )
        if detector_mask not in ("auto", "none"):
            raise DataFileError(path, "detector_mask", f"detector_mask={detector_mask!r}; expected 'auto' or 'none'")
        exp = np.full((h, w), exposure_ks * 1e3, np.float32)
        source = f"flat {exposure_ks:g} ks"
        if detector_mask == "auto":
            mask = estimate_detector_mask(counts)
            exp *= mask
            source += f" x detector mask from the counts ({int((~mask).sum())} of {mask.size} pixels unexposed)"
        _note_ontime(header, path)
    elif EXPOSURE_EXTNAME in names:
        edata, _, _ = _open_image(path, EXPOSURE_EXTNAME, "counts image")
        field_name = f"HDU '{EXPOSURE_EXTNAME}'"
        exp = _check_2d(edata, path, field_name, "exposure map (s)").astype(np.float32)
        _check_finite_nonneg(exp, path, field_name, "exposure map")
        if exp.shape != counts.shape:
            raise DataFileError(
                path,
                field_name,
                f"exposure map shape {exp.shape} does not match the counts image "
                f"shape {counts.shape}; expected the same pixel grid",
            )
        source = f"extension {EXPOSURE_EXTNAME}"
    else:
        raise DataFileError(
            path,
            f"HDU '{EXPOSURE_EXTNAME}'",
            "no exposure map: the file has no 'EXPOSURE' image "
            f"extension (HDUs: {names}); pass one with predict.exposure=<file> or assume a flat "
            "exposure with predict.exposure_ks=<ks>",
        )
    return Observation(
        counts=counts,
        exposure_s=exp,
        wcs=wcs,
        header=header,
        path=path,
        exposure_source=source,
        pixel_arcsec=pix,
        celestial=celestial,
    )


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


def write_prediction_fits(
    path: str | Path,
    image: np.ndarray,
    header_like: fits.Header | None,
    wcs: WCS | None,
    bunit: str,
    extensions: Mapping[str, tuple] | None = None,
    history: Sequence[str] = (),
) -> Path:
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
            raise ValueError(
                f"extension {name!r} has shape {arr.shape} but the image is {image.shape}; "
                "pass (array, bunit, wcs) for another grid"
            )
        hdus.append(fits.ImageHDU(arr.astype(np.float32), header=_image_header(ext_wcs, unit), name=name.upper()))
    with atomic_path(path, overwrite=False) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True)
    return path
