"""X-ray FITS reader (every bad input gives a clear DataFileError), prediction writer, scaled WCS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from lit_sr.data.validate import DataFileError
from lit_sr.domains.xmm.fits_io import (
    check_pixel_scale,
    estimate_detector_mask,
    read_exposure_map,
    read_observation,
    scaled_wcs,
    write_prediction_fits,
)


def _wcs(n: int = 32, rot_deg: float = 0.0, cd: bool = False) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [83.6, 22.0]
    w.wcs.crpix = [n / 2 + 0.3, n / 2 - 0.7]
    s = 4.1 / 3600
    c, si = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    if cd:
        w.wcs.cd = np.array([[-s * c, s * si], [s * si, s * c]])
    else:
        w.wcs.cdelt = [-s, s]
        w.wcs.pc = np.array([[c, -si], [si, c]])
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.set()
    return w


def _write(path, data, exposure=None, header=None, wcs=True):
    hdr = _wcs(data.shape[-1] if data.ndim else 32).to_header() if wcs else fits.Header()
    if header:
        hdr.update(header)
    hdus = [fits.PrimaryHDU(data, header=hdr)]
    if exposure is not None:
        hdus.append(fits.ImageHDU(exposure, name="EXPOSURE"))
    fits.HDUList(hdus).writeto(path)
    return path


@pytest.fixture
def good(tmp_path):
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.5, (32, 32)).astype(np.int32)
    return _write(tmp_path / "good.fits", counts, np.full((32, 32), 2e4, np.float32)), counts


def test_reads_counts_exposure_and_wcs(good):
    path, counts = good
    obs = read_observation(path)
    assert obs.counts.dtype == np.float32 and obs.exposure_s.dtype == np.float32
    np.testing.assert_array_equal(obs.counts, counts)
    assert np.all(obs.exposure_s == 2e4) and obs.exposure_source == "extension EXPOSURE"
    assert obs.wcs.has_celestial and obs.wcs.wcs.ctype[0] == "RA---TAN"
    # a flat exposure in ks overrides the extension
    assert np.all(read_observation(path, exposure_ks=50).exposure_s == 5e4)


def test_exposure_from_separate_file(tmp_path, good):
    path, _ = good
    exp = tmp_path / "exp.fits"
    fits.PrimaryHDU(np.full((32, 32), 1234.0, np.float32)).writeto(exp)
    obs = read_observation(path, exposure=exp)
    assert np.all(obs.exposure_s == 1234.0) and "exp.fits" in obs.exposure_source
    bad = tmp_path / "exp_bad.fits"
    fits.PrimaryHDU(np.ones((16, 32), np.float32)).writeto(bad)
    with pytest.raises(
        DataFileError, match=r"exp_bad.fits.*shape \(16, 32\) does not match the counts image shape \(32, 32\)"
    ):
        read_observation(path, exposure=bad)
    with pytest.raises(DataFileError, match="exposure-map file not found"):
        read_observation(path, exposure=tmp_path / "missing.fits")
    neg = tmp_path / "exp_neg.fits"
    fits.PrimaryHDU(-np.ones((32, 32), np.float32)).writeto(neg)
    with pytest.raises(DataFileError, match="exposure map has 1024 negative"):
        read_exposure_map(neg)


def test_missing_exposure_says_how_to_pass_one(tmp_path):
    path = _write(tmp_path / "noexp.fits", np.zeros((32, 32), np.int32))
    with pytest.raises(DataFileError) as err:
        read_observation(path)
    msg = str(err.value)
    assert "noexp.fits" in msg and "EXPOSURE" in msg
    assert "predict.exposure=<file>" in msg and "predict.exposure_ks=<ks>" in msg
    with pytest.raises(DataFileError, match="not both"):
        read_observation(path, exposure=path, exposure_ks=20)
    with pytest.raises(DataFileError, match="positive number of ks"):
        read_observation(path, exposure_ks=-1)


def test_not_fits_and_truncated(tmp_path, good):
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"this is not a FITS file " * 200)
    with pytest.raises(DataFileError, match=r"junk.fits \[HDU 0\]: counts image is not a readable FITS file"):
        read_observation(junk)
    path, _ = good
    trunc = tmp_path / "trunc.fits"
    trunc.write_bytes(path.read_bytes()[:4000])  # header complete, data cut
    with pytest.raises(
        DataFileError,
        match=r"trunc.fits \[HDU 0\]: counts image is truncated \(File may have been truncated: actual file length \(4000\)",
    ):
        read_observation(trunc)
    head = tmp_path / "head.fits"
    head.write_bytes(path.read_bytes()[:1000])  # header cut
    with pytest.raises(DataFileError, match=r"head.fits.*not a readable FITS file"):
        read_observation(head)
    with pytest.raises(DataFileError, match="not found"):
        read_observation(tmp_path / "nope.fits")


def test_no_image_or_cube_in_primary(tmp_path):
    empty = tmp_path / "table_only.fits"
    fits.HDUList(
        [fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("X", "D", array=np.arange(3.0))])]
    ).writeto(empty)
    with pytest.raises(DataFileError, match=r"table_only.fits \[HDU 0 \(PRIMARY\)\]: no image data \(NAXIS=0\)"):
        read_observation(empty)
    cube = _write(tmp_path / "cube.fits", np.zeros((3, 32, 32), np.float32), wcs=False)
    with pytest.raises(
        DataFileError, match=r"cube.fits.*expected a 2-D counts image, found 3-D shape \(3, 32, 32\).*cube"
    ):
        read_observation(cube)


def test_no_celestial_wcs_needs_a_known_pixel_size(tmp_path, caplog):
    lin = tmp_path / "linear.fits"
    fits.PrimaryHDU(np.zeros((32, 32), np.float32)).writeto(lin)  # no WCS keywords at all
    with pytest.raises(
        DataFileError,
        match=r"linear.fits \[HDU 0 CTYPE1/CTYPE2\]: no celestial WCS and no known "
        r"pixel size.*predict.pixel_arcsec",
    ):
        read_observation(lin, exposure_ks=20)
    obs = read_observation(lin, exposure_ks=20, pixel_arcsec=4.1)  # the user gives the pixel size
    assert obs.pixel_arcsec == 4.1 and not obs.celestial
    det = tmp_path / "detector.fits"
    hdr = fits.Header({"CTYPE1": "DETX", "CTYPE2": "DETY", "CRPIX1": 1.0, "CRPIX2": 1.0})
    fits.PrimaryHDU(np.zeros((32, 32), np.float32), header=hdr).writeto(det)
    with pytest.raises(
        DataFileError, match=r"no celestial WCS and no known pixel size \(CTYPE1, CTYPE2 = \['DETX', 'DETY'\]\)"
    ):
        read_observation(det, exposure_ks=20)  # DETX/DETY without CDELT: the binning is unknown
    hdr.update({"CDELT1": 80.0, "CDELT2": 80.0, "CRVAL1": -18243.5, "CRVAL2": -17487.5})
    det80 = tmp_path / "detector80.fits"
    fits.PrimaryHDU(np.zeros((32, 32), np.float32), header=hdr).writeto(det80)
    with caplog.at_level("INFO", logger="lit_sr"):
        obs = read_observation(det80, exposure_ks=20)
    assert obs.pixel_arcsec == pytest.approx(4.0) and not obs.celestial  # 80 x 0.05 arcsec
    assert "no celestial WCS" in caplog.text and "detector80.fits" in caplog.text  # a note, not an error
    assert list(obs.wcs.wcs.ctype) == ["DETX", "DETY"]
    hdr["CDELT2"] = 40.0
    rect = tmp_path / "rect.fits"
    fits.PrimaryHDU(np.zeros((32, 32), np.float32), header=hdr).writeto(rect)
    with pytest.raises(DataFileError, match=r"rect.fits \[HDU 0 CDELT1/CDELT2\]: non-square pixels"):
        read_observation(rect, exposure_ks=20)


def test_pixel_scale_far_from_training_is_refused_with_the_binning_to_use(tmp_path):
    check_pixel_scale(4.0, 4.1, tmp_path / "a.fits")  # 2.4 % off: accepted
    with pytest.raises(
        DataFileError,
        match=r"b.fits \[pixel size\]: pixels of 2 arcsec.*trained on 4.1 arcsec.*"
        r"bin the image by 2",
    ):
        check_pixel_scale(2.0, 4.1, tmp_path / "b.fits")
    with pytest.raises(DataFileError, match=r"c.fits \[pixel size\]: pixels of 8 arcsec.*smaller pixels"):
        check_pixel_scale(8.0, 4.1, tmp_path / "c.fits")


# ------------------------------------------------------------------------------------------------ real SAS image
# tests/data: a 64 x 64 cut-out (rows 180-243, columns 180-243) of the XMM-Newton EPIC-pn 0.5-2 keV images of
# ObsID 0781350101 as made by SAS evselect in DETX/DETY (bin 80 = 4.0"): the 20 ks slice and the full 124.4 ks
# observation, headers kept (DETX/DETY WCS and LTV shifted to the cut-out). The EPIC-pn gap between the two CCD
# rows crosses it at rows 204-205 and a chip gap at columns 200-201 (0 counts in the full observation there).

REAL = Path(__file__).parent / "data"
GAP_ROWS, GAP_COLS, CUT0 = (204, 205), (200, 201), 180


def test_reads_a_real_sas_detector_image_gzipped_with_a_detector_mask():
    path = REAL / "xmm_0781350101_20ks_cut64.fits.gz"
    obs = read_observation(path, exposure_ks=20)
    with fits.open(path) as h:
        raw = h[0].data
    np.testing.assert_array_equal(obs.counts, raw)  # BITPIX 32 counts read exactly from .fits.gz
    assert not obs.celestial and list(obs.wcs.wcs.ctype) == ["DETX", "DETY"]
    assert obs.pixel_arcsec == pytest.approx(4.0)
    # the DETX/DETY of a pixel is the full frame's (checked against the evselect header of the full image:
    # CRVAL -18243.5 / -17487.5 at its pixel 1, 80 units per pixel)
    x, y = obs.wcs.pixel_to_world_values(3, 5)
    assert (x, y) == pytest.approx((-18243.5 + 80 * (CUT0 + 3), -17487.5 + 80 * (CUT0 + 5)))
    # detector mask from the 20 ks counts against the 124 ks observation: every pixel of a line (a column within
    # one CCD row, or a row) with 0 counts in the full observation is unexposed, the masked pixels hold < 1 % of
    # the full observation's counts, and the mask agrees with the one estimated from the full observation
    full = fits.getdata(REAL / "xmm_0781350101_full_cut64.fits.gz").astype(np.float64)
    mask = obs.exposure_s > 0
    assert not mask[[r - CUT0 for r in GAP_ROWS]].any() and not mask[:, [c - CUT0 for c in GAP_COLS]].any()
    for band in (slice(0, GAP_ROWS[0] - CUT0), slice(GAP_ROWS[1] - CUT0 + 1, 64)):
        empty = full[band].sum(axis=0) == 0
        assert empty.sum() >= 2 and not mask[band][:, empty].any()
    assert full[~mask].sum() < 0.01 * full.sum() and 0.7 < mask.mean() < 0.95
    assert (mask == estimate_detector_mask(full)).mean() > 0.97
    assert np.all(obs.exposure_s[mask] == 2e4) and "detector mask" in obs.exposure_source
    flat = read_observation(path, exposure_ks=20, detector_mask="none")
    assert np.all(flat.exposure_s == 2e4)


def test_detector_mask_leaves_a_faint_flat_field_alone_and_finds_a_dead_column():
    rng = np.random.default_rng(3)
    counts = rng.poisson(0.3, (72, 88)).astype(np.float64)  # ~22 counts per column: no line is improbable
    assert estimate_detector_mask(counts).all()
    counts[:, 40] = rng.poisson(0.3 * 0.05, 72)  # a column at 5 % of the rate (a bad column)
    counts[10] = 0  # an empty row
    mask = estimate_detector_mask(counts)
    assert not mask[:, 40].any() and not mask[10].any()
    assert mask.sum() == (72 - 1) * (88 - 1)


def test_full_minus_slice_is_a_poisson_image_and_the_real_files_are_consistent():
    """The committed cut-outs: the slice's events are a subset of the full observation's."""
    s = fits.getdata(REAL / "xmm_0781350101_20ks_cut64.fits.gz").astype(np.int64)
    f = fits.getdata(REAL / "xmm_0781350101_full_cut64.fits.gz").astype(np.int64)
    assert np.all(f - s >= 0)
    # counts scale with the exposure: 20 / 124.44 of the events in the slice, within 3 Poisson-binomial sigma
    p = 20.0 / 124.44
    n = f.sum()
    assert abs(s.sum() - p * n) < 3 * np.sqrt(n * p * (1 - p)) + 0.05 * p * n  # + 5 % for rate variations


@pytest.mark.skipif(
    not Path("/work/shared/data/xmm_real").is_dir()
    and not (Path(__file__).parents[2] / "shared/data/xmm_real").is_dir(),
    reason="the real XMM-Newton files (../shared/data/xmm_real) are not on this machine",
)
def test_every_real_observation_reads_with_4_arcsec_pixels_and_chip_gaps():
    root = Path("/work/shared/data/xmm_real")
    if not root.is_dir():
        root = Path(__file__).parents[2] / "shared/data/xmm_real"
    files = sorted(root.glob("*/*.fits.gz"))
    assert len(files) == 12
    for path in files:
        obs = read_observation(path, exposure_ks=20)
        assert obs.shape == (411, 403) and obs.pixel_arcsec == pytest.approx(4.0) and not obs.celestial
        mask = obs.exposure_s > 0
        # the pn gap between the CCD rows and the three full-height chip gaps are unexposed
        assert not mask[204:206].any() and not mask[:, [132, 133, 134, 200, 201, 267, 268, 269]].any()
        assert 0.85 < mask.mean() < 0.95 and obs.counts[~mask].sum() < 0.01 * obs.counts.sum()


def test_nan_and_negative_pixels(tmp_path):
    data = np.ones((32, 32), np.float32)
    data[3, 7] = np.nan
    data[20, 1] = np.nan
    nan = _write(tmp_path / "nan.fits", data, np.ones((32, 32), np.float32))
    with pytest.raises(DataFileError, match=r"nan.fits.*2 NaN pixel\(s\), first at index \(row, col\) = \(3, 7\)"):
        read_observation(nan)
    data = np.ones((32, 32), np.float32)
    data[5, 9] = -2
    neg = _write(tmp_path / "neg.fits", data, np.ones((32, 32), np.float32))
    with pytest.raises(DataFileError, match=r"neg.fits.*1 negative pixel\(s\) \(minimum -2\).*\(5, 9\)"):
        read_observation(neg)
    exp = np.ones((32, 32), np.float32)
    exp[0, 0] = np.inf
    bad_exp = _write(tmp_path / "badexp.fits", np.ones((32, 32), np.float32), exp)
    with pytest.raises(DataFileError, match=r"\[HDU 'EXPOSURE'\]: exposure map has 1 non-finite"):
        read_observation(bad_exp)


def test_exposure_extension_shape_mismatch_and_min_size(tmp_path):
    p = _write(tmp_path / "mismatch.fits", np.ones((32, 32), np.float32), np.ones((32, 16), np.float32))
    with pytest.raises(
        DataFileError, match=r"mismatch.fits \[HDU 'EXPOSURE'\]: exposure map shape \(32, 16\) does not match"
    ):
        read_observation(p)
    small = _write(tmp_path / "small.fits", np.ones((32, 32), np.float32), np.ones((32, 32), np.float32))
    with pytest.raises(
        DataFileError, match=r"small.fits.*image is 32x32 pixels, smaller than the model patch size 48x48"
    ):
        read_observation(small, min_size=48)
    assert read_observation(small, min_size=32).shape == (32, 32)


def test_input_file_is_not_modified(good):
    path, _ = good
    before = path.read_bytes()
    read_observation(path)
    assert path.read_bytes() == before


def test_write_prediction_roundtrip_and_never_overwrites(tmp_path, good):
    src, _ = good
    obs = read_observation(src)
    obs.header["OBJECT"] = "test field"
    hr_wcs = scaled_wcs(obs.wcs, 2)
    img = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    dev = np.ones((32, 32))
    out = tmp_path / "pred.fits"
    write_prediction_fits(
        out,
        img,
        obs.header,
        hr_wcs,
        "count/s",
        extensions={"STD": (img * 0.1, "count/s"), "DEVIANCE": (dev, "", obs.wcs)},
        history=["lit_sr SR x2", "model=rrdb"],
    )
    with fits.open(out) as h:
        np.testing.assert_array_equal(h[0].data, img)
        assert h[0].header["BUNIT"] == "count/s" and h[0].header["OBJECT"] == "test field"
        assert "model=rrdb" in str(h[0].header["HISTORY"])
        assert h["STD"].data.shape == (64, 64) and h["DEVIANCE"].data.shape == (32, 32)
        w = WCS(h[0].header)
        np.testing.assert_allclose(w.wcs.crpix, hr_wcs.wcs.crpix)
        np.testing.assert_allclose(WCS(h["DEVIANCE"].header).wcs.crpix, obs.wcs.wcs.crpix)
    before = out.read_bytes()
    with pytest.raises(FileExistsError):
        write_prediction_fits(out, img * 0, None, hr_wcs, "count/s")
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.fits", "pred.fits"]  # no temporary left
    with pytest.raises(ValueError, match="pass \\(array, bunit, wcs\\)"):
        write_prediction_fits(tmp_path / "p2.fits", img, None, hr_wcs, "count/s", extensions={"X": (dev, "")})
    assert not (tmp_path / "p2.fits").exists()


@pytest.mark.parametrize("rot, cd, factor", [(0.0, False, 2), (23.0, False, 2), (-40.0, True, 2), (10.0, True, 4)])
def test_scaled_wcs_preserves_sky_positions(rot, cd, factor):
    lr = _wcs(32, rot, cd)
    hr = scaled_wcs(lr, factor)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-0.5, 31.5, 500), rng.uniform(-0.5, 31.5, 500)
    ra, dec = lr.pixel_to_world_values(x, y)
    xh, _ = hr.pixel_to_world_values(factor * x + (factor - 1) / 2, factor * y + (factor - 1) / 2)
    # same sky position: compare via HR pixels, required < 0.1 HR pixel, achieved to rounding
    xb, yb = hr.world_to_pixel_values(ra, dec)
    assert np.abs(xb - (factor * x + (factor - 1) / 2)).max() < 1e-6
    assert np.abs(yb - (factor * y + (factor - 1) / 2)).max() < 1e-6
    np.testing.assert_allclose(xh, ra, atol=1e-10)
    # pixel scale really shrank
    assert np.allclose(
        np.abs(np.linalg.det(hr.pixel_scale_matrix)) * factor**2, np.abs(np.linalg.det(lr.pixel_scale_matrix))
    )
    # pixel-edge correspondence: LR pixel 0 left edge (-0.5) is HR pixel 0 left edge
    e_lr = lr.pixel_to_world_values(-0.5, -0.5)
    e_hr = hr.pixel_to_world_values(-0.5, -0.5)
    np.testing.assert_allclose(e_lr, e_hr, atol=1e-12)


def test_scaled_wcs_rejects_bad_factor():
    with pytest.raises(ValueError):
        scaled_wcs(_wcs(), 0)
