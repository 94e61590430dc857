"""X-ray FITS reader (every bad input gives a clear DataFileError), prediction writer, scaled WCS."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from lit_sr.data.validate import DataFileError
from lit_sr.domains.xmm.fits_io import (
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
    with pytest.raises(DataFileError, match=r"exp_bad.fits.*shape \(16, 32\) does not match the counts image shape \(32, 32\)"):
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
    trunc.write_bytes(path.read_bytes()[:4000])        # header complete, data cut
    with pytest.raises(DataFileError, match=r"trunc.fits \[HDU 0\]: counts image is truncated \(File may have been truncated: actual file length \(4000\)"):
        read_observation(trunc)
    head = tmp_path / "head.fits"
    head.write_bytes(path.read_bytes()[:1000])         # header cut
    with pytest.raises(DataFileError, match=r"head.fits.*not a readable FITS file"):
        read_observation(head)
    with pytest.raises(DataFileError, match="not found"):
        read_observation(tmp_path / "nope.fits")


def test_no_image_or_cube_in_primary(tmp_path):
    empty = tmp_path / "table_only.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("X", "D", array=np.arange(3.0))])]).writeto(empty)
    with pytest.raises(DataFileError, match=r"table_only.fits \[HDU 0 \(PRIMARY\)\]: no image data \(NAXIS=0\)"):
        read_observation(empty)
    cube = _write(tmp_path / "cube.fits", np.zeros((3, 32, 32), np.float32), wcs=False)
    with pytest.raises(DataFileError, match=r"cube.fits.*expected a 2-D counts image, found 3-D shape \(3, 32, 32\).*cube"):
        read_observation(cube)


def test_no_celestial_wcs(tmp_path):
    lin = tmp_path / "linear.fits"
    fits.PrimaryHDU(np.zeros((32, 32), np.float32)).writeto(lin)   # no WCS keywords at all
    with pytest.raises(DataFileError, match=r"linear.fits \[HDU 0 CTYPE1/CTYPE2\]: no celestial WCS"):
        read_observation(lin, exposure_ks=20)
    det = tmp_path / "detector.fits"
    hdr = fits.Header({"CTYPE1": "DETX", "CTYPE2": "DETY", "CRPIX1": 1.0, "CRPIX2": 1.0})
    fits.PrimaryHDU(np.zeros((32, 32), np.float32), header=hdr).writeto(det)
    with pytest.raises(DataFileError, match=r"no celestial WCS \(CTYPE1, CTYPE2 = \['DETX', 'DETY'\]\)"):
        read_observation(det, exposure_ks=20)


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
    with pytest.raises(DataFileError, match=r"mismatch.fits \[HDU 'EXPOSURE'\]: exposure map shape \(32, 16\) does not match"):
        read_observation(p)
    small = _write(tmp_path / "small.fits", np.ones((32, 32), np.float32), np.ones((32, 32), np.float32))
    with pytest.raises(DataFileError, match=r"small.fits.*image is 32x32 pixels, smaller than the model patch size 48x48"):
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
    write_prediction_fits(out, img, obs.header, hr_wcs, "count/s",
                          extensions={"STD": (img * 0.1, "count/s"), "DEVIANCE": (dev, "", obs.wcs)},
                          history=["lit_sr SR x2", "model=rrdb"])
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.fits", "pred.fits"]   # no temporary left
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
    assert np.allclose(np.abs(np.linalg.det(hr.pixel_scale_matrix)) * factor ** 2,
                       np.abs(np.linalg.det(lr.pixel_scale_matrix)))
    # pixel-edge correspondence: LR pixel 0 left edge (-0.5) is HR pixel 0 left edge
    e_lr = lr.pixel_to_world_values(-0.5, -0.5)
    e_hr = hr.pixel_to_world_values(-0.5, -0.5)
    np.testing.assert_allclose(e_lr, e_hr, atol=1e-12)


def test_scaled_wcs_rejects_bad_factor():
    with pytest.raises(ValueError):
        scaled_wcs(_wcs(), 0)
