"""mode=predict predict=fits: whole X-ray observations -> FITS with WCS, units, hallucination maps; bad inputs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.wcs import WCS
from conftest import TINY, compose_config
from hydra.utils import instantiate

from lit_sr.cli import run
from lit_sr.data.validate import DataFileError
from lit_sr.domains.xmm.fits_io import read_observation
from lit_sr.domains.xmm.predict import FITSFramesDataModule
from lit_sr.domains.xmm.psf import KingPSF

SHAPE = (72, 88)  # not a multiple of the patch, not square
SOURCE_XY = (41.3, 30.6)  # 0-based input pixels (x, y)
PIX_ARCSEC = 4.1


def _wcs(rot_deg: float = 25.0) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [201.365, -43.019]
    w.wcs.crpix = [44.3, 35.8]
    s = PIX_ARCSEC / 3600
    c, si = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    w.wcs.cdelt = [-s, s]
    w.wcs.pc = np.array([[c, -si], [si, c]])
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.set()
    return w


def _counts(shape=SHAPE, xy=SOURCE_XY, total=400.0, bkg=0.3) -> np.ndarray:
    """Noiseless expected counts: flat background + a King-PSF point source (the centroid is exact)."""
    img = np.full(shape, bkg)
    k = KingPSF.from_fwhm(6.0).kernel(PIX_ARCSEC, offset_pix=(xy[1] - round(xy[1]), xy[0] - round(xy[0])), half_size=10)
    y0, x0 = round(xy[1]) - 10, round(xy[0]) - 10
    img[y0 : y0 + 21, x0 : x0 + 21] += total * k
    return img.astype(np.float32)


def write_obs(path, counts=None, exposure_s=2e4, wcs=True, exposure_ext=True):
    counts = _counts() if counts is None else counts
    hdr = _wcs().to_header() if wcs else fits.Header()
    hdr["TELESCOP"] = "XMM"
    hdus = [fits.PrimaryHDU(counts, header=hdr)]
    if exposure_ext:
        hdus.append(fits.ImageHDU(np.full(counts.shape, exposure_s, np.float32), name="EXPOSURE"))
    fits.HDUList(hdus).writeto(path)
    return path


def _centroid(img: np.ndarray, x: float, y: float, half: int) -> tuple[float, float]:
    cy, cx = round(y), round(x)
    cut = img[cy - half : cy + half + 1, cx - half : cx + half + 1].astype(np.float64)
    edge = np.median(np.concatenate([cut[0], cut[-1], cut[:, 0], cut[:, -1]]))
    w = np.clip(cut - edge, 0, None)
    yy, xx = np.mgrid[cy - half : cy + half + 1, cx - half : cx + half + 1]
    return float((w * xx).sum() / w.sum()), float((w * yy).sum() / w.sum())


def _identity_checkpoint(tmp_path, experiment: str) -> str:
    """A checkpoint of the experiment's net with input_skip and a zero last conv: x1 -> the input image,
    x2 -> its nearest-neighbour upsampling (divided by 4 in model space): positions are kept exactly."""
    cfg = compose_config(
        [f"experiment={experiment}", *TINY, "model.net.num_blocks=1", "model.net.input_skip=true"],
        tmp_path,
        tmp_path / "build",
    )
    model = instantiate(cfg.model, _convert_="all")
    path = tmp_path / f"{experiment}.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {}}, path)
    return str(path)


def _predict(tmp_path, experiment, ckpt, inp, out_name, *extra):
    cfg = compose_config(
        [
            f"experiment={experiment}",
            *TINY,
            "mode=predict",
            f"ckpt_path={ckpt}",
            "predict=fits",
            f"predict.input={inp}",
            "model.net.num_blocks=1",
            "model.net.input_skip=true",
            "predict.patch_size=32",
            *extra,
        ],
        tmp_path,
        tmp_path / out_name,
    )
    run(cfg)
    return tmp_path / out_name


def test_sr_prediction_keeps_sky_positions_units_and_provenance(tmp_path):
    inp = write_obs(tmp_path / "obs.fits")
    before = hashlib.sha256(inp.read_bytes()).hexdigest()
    ckpt = _identity_checkpoint(tmp_path, "xmm_sr")
    out_dir = _predict(tmp_path, "xmm_sr", ckpt, inp, "pred")
    out = out_dir / "obs_sr.fits"
    assert hashlib.sha256(inp.read_bytes()).hexdigest() == before  # input never modified
    with fits.open(out) as h:
        img, hdr = h[0].data.astype(np.float64), h[0].header
        names = [x.name for x in h]
        ens, dev = h["ENS_STD"].data, h["LR_DEV"].data
        lr_wcs_ext = WCS(h["LR_DEV"].header)
    assert img.shape == (2 * SHAPE[0], 2 * SHAPE[1]) and hdr["BUNIT"] == "count/s"
    assert {"ENS_STD", "LR_DEV", "LR_EXPCT"} <= set(names) and dev.shape == SHAPE
    history = "\n".join(str(c) for c in hdr["HISTORY"])
    assert ckpt[-20:] in history.replace("\n", "") and "StretchTransform" in history and "sqrt" in history
    # world coordinates of the source before (input grid) and after (x2 grid) agree to < 0.1 input pixel
    w_in, w_out = _wcs(), WCS(hdr)
    x_in, y_in = _centroid(_counts(), *SOURCE_XY, half=6)
    x_out, y_out = _centroid(img, 2 * SOURCE_XY[0] + 0.5, 2 * SOURCE_XY[1] + 0.5, half=12)
    sky_in = w_in.pixel_to_world(x_in, y_in)
    sky_out = w_out.pixel_to_world(x_out, y_out)
    sep_pix = sky_in.separation(sky_out).arcsec / PIX_ARCSEC
    assert sep_pix < 0.1
    true_sky = w_in.pixel_to_world(*SOURCE_XY)
    assert true_sky.separation(sky_out).arcsec / PIX_ARCSEC < 0.1
    assert abs(w_out.wcs.cdelt[0]) == pytest.approx(abs(w_in.wcs.cdelt[0]) / 2)
    assert lr_wcs_ext.pixel_to_world(*SOURCE_XY).separation(true_sky).arcsec < 1e-6
    # flips and quarter turns commute with this net: the self-ensemble spread vanishes
    assert np.abs(ens).max() <= 1e-6 * img.max()
    # an existing output is never overwritten (the run stops before predicting)
    stamp = out.stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        _predict(tmp_path, "xmm_sr", ckpt, inp, "pred")
    assert out.stat().st_mtime_ns == stamp


def test_dn_identity_returns_the_count_rate_and_zero_deviance(tmp_path):
    rng = np.random.default_rng(1)
    counts = rng.poisson(_counts()).astype(np.float32)
    inp = write_obs(tmp_path / "noisy.fits", counts)
    ckpt = _identity_checkpoint(tmp_path, "xmm_dn")
    out_dir = _predict(
        tmp_path, "xmm_dn", ckpt, inp, "pred_dn", "predict.self_ensemble=false", "predict.exposure_ks=20"
    )
    with fits.open(out_dir / "noisy_dn.fits") as h:
        rate, hdr = h[0].data.astype(np.float64), h[0].header
        dev = h["LR_DEV"].data
        assert "ENS_STD" not in h
    assert rate.shape == SHAPE
    below_clip = counts / 2e4 < 2e-3
    # x1 identity: the output is the input count rate, i.e. output x exposure = the observed counts
    np.testing.assert_allclose(rate[below_clip] * 2e4, counts[below_clip], rtol=1e-5, atol=1e-4)
    assert np.abs(dev[below_clip]).max() < 1e-4 and hdr["LRDEVRAT"] < 0.01
    assert "flat 20 ks" in "\n".join(str(c) for c in hdr["HISTORY"])


def test_flux_conserving_output_has_the_inputs_total_rate(tmp_path):
    """predict.flux_conserving: the x2 identity net (nearest upsampling / 4 in the sqrt scaling: each 2x2 block
    holds 1/4 of the input pixel's rate) gives 1/4 of the input's flux below the scaling's clip; rescaled, its
    2x2 sums add up to the input counts / exposure over the exposed pixels, and the factor is in FLUXFAC."""
    rng = np.random.default_rng(2)
    counts = rng.poisson(_counts(total=60.0)).astype(np.float32)  # every pixel below the clip (40 counts)
    assert counts.max() < 40
    inp = write_obs(tmp_path / "obs.fits", counts)
    ckpt = _identity_checkpoint(tmp_path, "xmm_sr")
    out = {}
    for flag in ("false", "true"):
        d = _predict(
            tmp_path,
            "xmm_sr",
            ckpt,
            inp,
            f"pred_{flag}",
            "predict.self_ensemble=false",
            f"predict.flux_conserving={flag}",
        )
        with fits.open(d / "obs_sr.fits") as h:
            out[flag] = (h[0].data.astype(np.float64), h[0].header)
    plain, (fixed, hdr) = out["false"][0], out["true"]
    total = counts.sum() / 2e4
    assert plain.sum() == pytest.approx(total / 4, rel=1e-4) and "FLUXFAC" not in out["false"][1]
    assert fixed.reshape(72, 2, 88, 2).sum(axis=(1, 3)).sum() == pytest.approx(total, rel=1e-6)
    assert hdr["FLUXFAC"] == pytest.approx(4.0, rel=1e-4)
    np.testing.assert_allclose(fixed, plain * hdr["FLUXFAC"], rtol=1e-6, atol=1e-12)


def test_sr_made_consistent_with_a_denoiser_output(tmp_path):
    """predict.consistent_with: the x2 identity net spreads each input pixel evenly over its 2x2 block, so with
    a denoiser image d the block-sum projection writes d / 4 in every fine pixel of the block (2x2 sums = d
    exactly; card CONSIST); with Richardson-Lucy iterations the PSF forward model of the output gets closer to
    d than the plain output's. A missing denoiser file stops the run before anything is written."""
    from lit_sr.domains.xmm.hallucination import forward_model_to_input
    from lit_sr.domains.xmm.psf import matching_kernel

    rng = np.random.default_rng(4)
    counts = rng.poisson(_counts(total=60.0)).astype(np.float32)
    inp = write_obs(tmp_path / "obs.fits", counts)
    d = (_counts(total=60.0) / 2e4).astype(np.float64)  # the noiseless rate: a stand-in denoiser output
    dn_dir = tmp_path / "dn"
    dn_dir.mkdir()
    fits.PrimaryHDU(d.astype(np.float32)).writeto(dn_dir / "obs_dn.fits")
    d = d.astype(np.float32).astype(np.float64)
    ckpt = _identity_checkpoint(tmp_path, "xmm_sr")
    common = ("predict.self_ensemble=false", f"predict.consistent_with={dn_dir}")
    out = _predict(tmp_path, "xmm_sr", ckpt, inp, "pred_block", *common)
    with fits.open(out / "obs_sr.fits") as h:
        y, hdr = h[0].data.astype(np.float64), h[0].header
    assert hdr["CONSIST"] == "block sums"
    np.testing.assert_allclose(y.reshape(72, 2, 88, 2).sum(axis=(1, 3)), d, rtol=2e-6)
    np.testing.assert_allclose(y, np.repeat(np.repeat(d, 2, 0), 2, 1) / 4, rtol=2e-6)
    plain = _predict(tmp_path, "xmm_sr", ckpt, inp, "pred_plain", "predict.self_ensemble=false")
    out_rl = _predict(tmp_path, "xmm_sr", ckpt, inp, "pred_rl", *common, "predict.consistent_rl_iterations=20")
    psf = KingPSF.from_fwhm(6.0, 1.5)
    kernel = matching_kernel(psf, psf.narrower(2), PIX_ARCSEC / 2)
    errs = []
    for folder in (plain, out_rl):
        with fits.open(folder / "obs_sr.fits") as h:
            errs.append(np.abs(forward_model_to_input(h[0].data.astype(np.float64), 2, 1.0, kernel) - d).sum())
            assert (h[0].data >= 0).all()
    assert errs[1] < 0.5 * errs[0]  # zero-count pixels of the plain output stay 0 (RL keeps the support)
    (dn_dir / "obs_dn.fits").unlink()
    with pytest.raises(DataFileError, match="no denoiser output for obs.fits"):
        _predict(tmp_path, "xmm_sr", ckpt, inp, "pred_missing", *common)
    assert not (tmp_path / "pred_missing" / "obs_sr.fits").exists()


def _dm(path, **kw) -> FITSFramesDataModule:
    dm = FITSFramesDataModule(str(path), patch_size=32, **kw)
    dm.setup("predict")
    return dm


def test_bad_inputs_one_clear_message_each(tmp_path):
    good = write_obs(tmp_path / "good.fits")
    cases = {
        "nowcs.fits": (dict(wcs=False), r"nowcs.fits \[HDU 0 CTYPE1/CTYPE2\]: no celestial WCS"),
        "noexp.fits": (
            dict(exposure_ext=False),
            r"noexp.fits.*no exposure map.*predict.exposure=<file>.*"
            r"predict.exposure_ks=<ks>",
        ),
        "nan.fits": (
            dict(counts=np.where(np.arange(SHAPE[1]) == 5, np.nan, _counts()).astype(np.float32)),
            r"nan.fits \[HDU 0 \(PRIMARY\)\]: counts image has 72 NaN pixel",
        ),
        "neg.fits": (dict(counts=_counts() - 1.0), r"neg.fits \[HDU 0 \(PRIMARY\)\]: counts image has \d+ negative"),
        "small.fits": (
            dict(counts=_counts()[:20, :40]),
            r"small.fits.*20x40 pixels, smaller than the model patch size",
        ),
    }
    for name, (kw, message) in cases.items():
        if name == "small.fits":
            path = write_obs(tmp_path / name, _counts()[:20, :40].copy())
        else:
            path = write_obs(tmp_path / name, **kw)
        with pytest.raises(DataFileError, match=message):
            _dm(path)
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(DataFileError, match=r"truncated.fits.*truncated"):
        _dm(truncated)
    # a flat exposure makes the file without an exposure map usable
    _dm(tmp_path / "noexp.fits", exposure_ks=20.0)
    with pytest.raises(DataFileError, match="one exposure-map file for 2 inputs"):
        folder = tmp_path / "two"
        folder.mkdir()
        write_obs(folder / "a.fits")
        write_obs(folder / "b.fits")
        _dm(folder, exposure=str(good))
    with pytest.raises(DataFileError, match="no FITS files"):
        (tmp_path / "empty").mkdir()
        _dm(tmp_path / "empty")


def test_a_bad_file_in_a_folder_stops_before_anything_is_written(tmp_path):
    folder = tmp_path / "obs"
    folder.mkdir()
    write_obs(folder / "a_good.fits")
    write_obs(folder / "b_nowcs.fits", wcs=False)
    ckpt = _identity_checkpoint(tmp_path, "xmm_dn")
    with pytest.raises(DataFileError, match="b_nowcs.fits.*no celestial WCS"):
        _predict(tmp_path, "xmm_dn", ckpt, folder, "pred_bad", "predict.self_ensemble=false")
    assert not list((tmp_path / "pred_bad").glob("*.fits"))


REAL_CUT = Path(__file__).parent / "data" / "xmm_0781350101_20ks_cut64.fits.gz"


def test_real_sas_detector_image_gz_goes_through_and_keeps_its_detector_axes(tmp_path, caplog):
    """A 64 x 64 cut-out of a real EPIC-pn evselect image (DETX/DETY, 4.0" pixels, no exposure map, .fits.gz):
    x2 prediction with a flat 20 ks exposure x the estimated detector mask; the output carries the DETX/DETY
    axes (CDELT 80 -> 40, same detector position of every pixel centre)."""
    ckpt = _identity_checkpoint(tmp_path, "xmm_sr")
    with caplog.at_level("INFO", logger="lit_sr"):
        out_dir = _predict(
            tmp_path, "xmm_sr", ckpt, REAL_CUT, "pred_real", "predict.self_ensemble=false", "predict.exposure_ks=20"
        )
    assert "no celestial WCS" in caplog.text
    out = out_dir / "xmm_0781350101_20ks_cut64_sr.fits"
    with fits.open(REAL_CUT) as h:
        counts, w_in = h[0].data.astype(np.float64), WCS(h[0].header, naxis=2)
    with fits.open(out) as h:
        rate, hdr = h[0].data.astype(np.float64), h[0].header
        w_dev = WCS(h["LR_DEV"].header)
    w_out = WCS(hdr)
    assert list(w_out.wcs.ctype) == ["DETX", "DETY"] and w_out.wcs.cdelt[0] == pytest.approx(40.0)
    # the 2 x 2 block of output pixels (2i, 2i+1) is centred on input pixel i: same DETX/DETY
    for x, y in ((0, 0), (17, 40), (63, 63)):
        np.testing.assert_allclose(
            np.array(w_out.pixel_to_world_values(2 * x + 0.5, 2 * y + 0.5), float),
            np.array(w_in.pixel_to_world_values(x, y), float),
            atol=1e-6,
        )
    np.testing.assert_allclose(
        np.array(w_dev.pixel_to_world_values(5, 9), float), np.array(w_in.pixel_to_world_values(5, 9), float), atol=1e-9
    )
    # this net copies the sqrt-scaled input / 4 to each of the 4 output pixels: each holds rate / 16, the 2x2 sum
    # is the input rate / 4 where exposed (below the scaling's clip), 0 in the gaps
    lr = rate.reshape(64, 2, 64, 2).sum(axis=(1, 3))
    exposed = read_observation(REAL_CUT, exposure_ks=20).exposure_s > 0
    assert 0.7 < exposed.mean() < 0.95 and counts[~exposed].sum() < 0.01 * counts.sum()
    assert np.all(lr[~exposed] == 0)
    ok = exposed & (counts / 2e4 < 2e-3)
    np.testing.assert_allclose(4 * lr[ok] * 2e4, counts[ok], rtol=1e-4, atol=1e-3)
    assert "pixel size of the input: 4 arcsec" in "\n".join(str(c) for c in hdr["HISTORY"])


def test_pixels_far_from_the_training_pixels_are_refused_before_predicting(tmp_path):
    with fits.open(REAL_CUT) as h:
        hdr, data = h[0].header, h[0].data
    hdr["CDELT1"] = hdr["CDELT2"] = 40.0  # 2.0" pixels (evselect bin 40)
    fine = tmp_path / "bin40.fits.gz"
    fits.PrimaryHDU(data, header=hdr).writeto(fine)
    with pytest.raises(
        DataFileError,
        match=r"bin40.fits.gz \[pixel size\]: pixels of 2 arcsec.*4.1 arcsec.*bin the "
        r"image by 2",
    ):
        _dm(fine, exposure_ks=20.0, train_pixel_arcsec=4.1)
