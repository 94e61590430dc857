"""Real XMM-Newton held-out evaluation (lit_sr.domains.xmm.real): pairs, scores, models summed back, bad inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits

from lit_sr.data.transforms import StretchTransform
from lit_sr.data.validate import DataFileError
from lit_sr.domains.xmm.photometry import poisson_deviance_reference
from lit_sr.domains.xmm.real import (
    MU_FLOOR,
    LoadedModel,
    RealPair,
    flux_conserving,
    load_pairs,
    model_rate,
    psf_matched_rate,
    score,
    smoothed,
    sr_consistent_rate,
)

FIXTURES = Path(__file__).parent / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "xmm_real"
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data/xmm_real")


def _fixture_dir(tmp_path: Path) -> Path:
    """The committed 64x64 cut-outs of ObsID 0781350101 laid out as the real data folder."""
    for sub, name in (("20ks", "xmm_0781350101_20ks_cut64.fits.gz"), ("full", "xmm_0781350101_full_cut64.fits.gz")):
        (tmp_path / "real" / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / name, tmp_path / "real" / sub / f"0781350101_{sub}.fits.gz")
    return tmp_path / "real"


def _synthetic_pair(rng, shape=(48, 56), t_s=2e4, t_h=8e4) -> tuple[RealPair, np.ndarray]:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    rate = 2e-5 + 4e-4 * np.exp(-((xx - 30) ** 2 + (yy - 20) ** 2) / (2 * 6.0**2))  # counts/s per pixel
    mask = np.ones(shape, bool)
    mask[:, 17:19] = False  # a chip gap
    s = rng.poisson(rate * t_s * mask).astype(np.float64)
    h = rng.poisson(rate * t_h * mask).astype(np.float64)
    return RealPair("0000000000", s, h, t_s, t_h, mask, 4.0, Path("s"), Path("f")), rate


def _poisson_pair(rate: np.ndarray, mask: np.ndarray, seed: int, t_s: float = 2e4, t_h: float = 8e4) -> RealPair:
    """A RealPair of Poisson slice (t_s s) and held-out (t_h s) counts of ``rate`` (counts/s per pixel); the
    held-out counts are 0 outside ``mask``."""
    rng = np.random.default_rng(seed)
    slice_counts = rng.poisson(rate * t_s).astype(float)
    held_out = rng.poisson(rate * t_h).astype(float) * mask
    return RealPair("0", slice_counts, held_out, t_s, t_h, mask, 4.0, Path("s"), Path("f"))


def test_loads_the_committed_cut_outs_as_a_held_out_pair(tmp_path):
    pairs = load_pairs(_fixture_dir(tmp_path))
    assert [p.obsid for p in pairs] == ["0781350101"]
    p = pairs[0]
    full = fits.getdata(FIXTURES / "xmm_0781350101_full_cut64.fits.gz").astype(np.float64)
    np.testing.assert_array_equal(p.slice_counts + p.heldout_counts, full)
    assert p.slice_exposure_s == pytest.approx(2e4) and p.heldout_exposure_s == pytest.approx(124437.96 - 2e4, abs=1)
    assert p.pixel_arcsec == pytest.approx(4.0) and 0.7 < p.mask.mean() < 0.95
    assert full[~p.mask].sum() < 0.01 * full.sum()
    np.testing.assert_allclose(p.raw_rate[p.mask], p.slice_counts[p.mask] / 2e4)


def test_bad_data_folders_give_one_message(tmp_path):
    with pytest.raises(DataFileError, match=r"expected sub-folders '20ks/'.*'full/'"):
        load_pairs(tmp_path)
    d = _fixture_dir(tmp_path)
    # a "full" observation with fewer counts than its slice somewhere: not a superset of the slice's events
    path = d / "full" / "0781350101_full.fits.gz"
    with fits.open(path) as h:
        hdr, data = h[0].header, h[0].data.copy()
    sl = fits.getdata(d / "20ks" / "0781350101_20ks.fits.gz")
    y, x = np.unravel_index(np.argmax(sl), sl.shape)
    data[y, x] = sl[y, x] - 1
    path.unlink()
    fits.PrimaryHDU(data, header=hdr).writeto(path)
    with pytest.raises(
        DataFileError,
        match=r"0781350101_full.fits.gz \[HDU 0\]: \d+ pixels have fewer counts than "
        r"in the slice",
    ):
        load_pairs(d)


def test_scores_rank_the_truth_first_and_have_their_expected_values():
    rng = np.random.default_rng(0)
    pair, rate = _synthetic_pair(rng)
    t = StretchTransform(2e-3, "sqrt")
    truth, raw = score(rate, pair, t), score(pair.raw_rate, pair, t)
    # the truth: mean deviance = its expectation under Poisson(rate x T_h) (within 3 standard errors)
    mu = (rate * pair.heldout_exposure_s)[pair.mask]
    ed, _ = poisson_deviance_reference(mu)
    n = mu.size
    assert abs(truth["deviance"] - ed.mean()) < 3 * np.sqrt(2.0 / n) * 1.2 + 0.02
    # raw rate: its squared-error ratio is 1 by definition, the truth's ~0 (Poisson variance subtracted)
    assert raw["se_ratio"] == pytest.approx(1.0) and abs(truth["se_ratio"]) < 0.1
    assert truth["deviance"] < raw["deviance"] and truth["psnr"] > raw["psnr"]
    # summed counts: unbiased for the truth and (in expectation) for the raw rate, within 3 Poisson sigma
    k = pair.heldout_counts[pair.mask].sum()
    assert abs(truth["count_ratio"] - 1) < 3 / np.sqrt(k)
    assert abs(raw["count_ratio"] - 1) < 3 * np.sqrt(1 / k + 1 / pair.slice_counts[pair.mask].sum())
    # smoothing of a smooth sky beats the raw rate, and the truth beats the smoothing
    sm = score(smoothed(pair, 1.5), pair, t)
    assert truth["deviance"] < sm["deviance"] < raw["deviance"] and sm["se_ratio"] < 1
    # the raw rate's zero-count pixels: expected counts floored, not infinite
    assert np.isfinite(raw["deviance"]) and MU_FLOOR > 0


class _Copy(torch.nn.Module):
    """x2 'model' copying the scaled input channel to 2x2 blocks (model space) -- a known flux mapping."""

    def frame_forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x[:, :1], scale_factor=2, mode="nearest")


def test_sr_output_is_summed_2x2_back_to_the_input_grid():
    rng = np.random.default_rng(1)
    pair, _ = _synthetic_pair(rng)
    t = StretchTransform(2e-3, "sqrt")
    model = LoadedModel(_Copy(), t, 2, 32, 100.0, Path("x.ckpt"), "copy")
    hr, lr = model_rate(model, pair)
    assert hr.shape == (96, 112) and lr.shape == pair.slice_counts.shape
    # every HR pixel holds the input rate (the copy in model space), so the 2x2 sum is 4x the input rate
    np.testing.assert_allclose(lr, 4 * pair.raw_rate, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(lr, hr.reshape(48, 2, 56, 2).sum(axis=(1, 3)))


def test_psf_matched_sr_truth_scores_as_the_lr_truth_and_the_unmatched_one_worse():
    """A point source drawn as the x2 SR target draws it (PSF narrowed 2x, 2 arcsec pixels) and the same source
    through the LR PSF on the input grid: PSF-matched and summed 2x2, the sharp image is the LR expectation
    (flux and profile within 2 % of the peak); summed 2x2 alone it is too peaked and its held-out deviance
    is higher than the matched one's."""
    from lit_sr.domains.xmm.psf import KingPSF

    lr_psf = KingPSF.from_fwhm(6.0, 1.5)
    n, c = 64, 64  # LR size; HR pixel of the source

    def stamp(kernel: np.ndarray) -> np.ndarray:  # a 4e-3 counts/s source at HR pixel (c, c) on the x2 grid
        img = np.zeros((2 * n, 2 * n))
        h = kernel.shape[0] // 2
        img[c - h : c + h + 1, c - h : c + h + 1] = 4e-3 * kernel
        return img

    sharp = stamp(lr_psf.narrower(2).kernel(2.0)) + 2e-6
    lr_truth = (stamp(lr_psf.kernel(2.0)) + 2e-6).reshape(n, 2, n, 2).sum(axis=(1, 3))
    pair = _poisson_pair(lr_truth, np.ones((n, n), bool), seed=3)
    matched = psf_matched_rate(sharp, pair)
    summed = sharp.reshape(n, 2, n, 2).sum(axis=(1, 3))
    inner = (slice(c // 2 - 8, c // 2 + 9),) * 2
    assert np.abs(matched[inner] - lr_truth[inner]).max() < 0.02 * lr_truth.max()
    assert np.abs(summed[inner] - lr_truth[inner]).max() > 0.3 * lr_truth.max()  # the check can fail
    assert score(matched, pair)["deviance"] < score(summed, pair)["deviance"]


def test_sr_made_consistent_with_an_input_grid_estimate():
    """sr_consistent_rate: 0 iterations gives block sums equal to the estimate on exposed pixels (masked
    blocks keep the SR's); Richardson-Lucy on the PSF forward model brings a sharp source with a 40 % excess
    and a background 3x too high to the LR expectation through psf_matched_rate (what the --psf-matched
    score sees), lowering the held-out deviance, and keeps the output >= 0."""
    from lit_sr.domains.xmm.psf import KingPSF

    lr_psf = KingPSF.from_fwhm(6.0, 1.5)
    n, c = 48, 50
    img_hr, img_lr = np.zeros((2 * n, 2 * n)), np.zeros((2 * n, 2 * n))
    for img, k in ((img_hr, lr_psf.narrower(2).kernel(2.0)), (img_lr, lr_psf.kernel(2.0))):
        h = k.shape[0] // 2
        img[c - h : c + h + 1, c - h : c + h + 1] = 4e-3 * k
    truth_lr = (img_lr + 2e-6).reshape(n, 2, n, 2).sum(axis=(1, 3))
    mask = np.ones((n, n), bool)
    mask[:, 5:7] = False
    pair = _poisson_pair(truth_lr, mask, seed=5)
    y0 = 1.4 * img_hr + 6e-6
    block = sr_consistent_rate(y0, truth_lr, pair, 0)
    sums = block.reshape(n, 2, n, 2).sum(axis=(1, 3))
    np.testing.assert_allclose(sums[mask], truth_lr[mask], rtol=1e-12)
    np.testing.assert_array_equal(block[:, 10:14], y0[:, 10:14])  # masked columns 5, 6 -> fine columns 10-13
    err0 = np.abs(psf_matched_rate(y0, pair) - truth_lr)[mask].max()
    rl = sr_consistent_rate(y0, truth_lr, pair, 30)
    err = np.abs(psf_matched_rate(rl, pair) - truth_lr)[mask].max()
    assert (rl >= 0).all() and err < 0.1 * err0
    assert score(psf_matched_rate(rl, pair), pair)["deviance"] < score(psf_matched_rate(y0, pair), pair)["deviance"]


def test_flux_conserving_rescale_restores_the_total_and_lowers_the_deviance_of_a_biased_prediction():
    """A prediction of the right shape with a uniform background excess (the faint-field failure of a model
    trained on brighter fields): rescaled to the slice's total it matches the held-out total within the
    Poisson errors of the two images, and most of its excess held-out deviance goes (not all: one factor
    cannot undo an additive error, the source is now scaled down a little too)."""
    rng = np.random.default_rng(2)
    pair, rate = _synthetic_pair(rng, shape=(96, 112))
    biased = rate + 0.4 * rate[pair.mask].mean()  # + 40 % of the mean rate, everywhere
    fixed = flux_conserving(biased, pair)
    m = pair.mask
    assert fixed[m].sum() == pytest.approx(pair.slice_counts[m].sum() / pair.slice_exposure_s, rel=1e-9)
    np.testing.assert_allclose(fixed / biased, (fixed / biased)[0, 0])  # one factor
    b, f, t = score(biased, pair), score(fixed, pair), score(rate, pair)
    k_s, k_h = pair.slice_counts[m].sum(), pair.heldout_counts[m].sum()
    assert b["count_ratio"] > 1.2 and abs(f["count_ratio"] - 1) < 3 * np.sqrt(1 / k_s + 1 / k_h)
    assert t["deviance"] <= f["deviance"] < b["deviance"] and f["deviance"] - t["deviance"] < 0.25 * (
        b["deviance"] - t["deviance"]
    )
    # an x2 prediction: the total of its 2 x 2 sums is matched, the finer pixels keep their ratios
    fine = np.repeat(np.repeat(biased, 2, 0), 2, 1) / 4
    fine[::2, ::2] *= 2.0
    fixed2 = flux_conserving(fine, pair)
    assert fixed2.reshape(96, 2, 112, 2).sum(axis=(1, 3))[m].sum() == pytest.approx(
        pair.slice_counts[m].sum() / pair.slice_exposure_s, rel=1e-9
    )
    np.testing.assert_allclose(fixed2 / fine, (fixed2 / fine)[0, 0])


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the real XMM-Newton files ({SHARED}) are not on this machine")
def test_real_observations_smoothing_beats_the_raw_rate_in_held_out_deviance():
    pairs = load_pairs(SHARED)
    assert len(pairs) == 6
    for p in pairs:
        assert 51e3 <= p.slice_exposure_s + p.heldout_exposure_s <= 125e3 and p.slice_exposure_s == pytest.approx(
            2e4, rel=1e-3
        )
        raw, sm = score(p.raw_rate, p), score(smoothed(p, 1.5), p)
        assert sm["deviance"] < raw["deviance"]


def test_image_statistics_of_a_flat_poisson_field_match_the_truth():
    from lit_sr.domains.xmm.real import image_statistics

    rng = np.random.default_rng(2)
    lam, pix = 0.4, 4.0  # counts per pixel in 20 ks, 4" pixels
    counts = [rng.poisson(lam, (96, 96)).astype(np.float64) for _ in range(3)]
    exps = [np.full((96, 96), 2e4) for _ in range(3)]
    st = image_statistics(counts, exps, pix)
    assert st["frac_pixels_0"] == pytest.approx(np.exp(-lam), abs=0.01)
    assert st["frac_pixels_1"] == pytest.approx(lam * np.exp(-lam), abs=0.01)
    truth = lam / 2e4 / (pix / 60) ** 2  # counts/s/arcmin^2
    assert st["background_per_arcmin2_s"] == pytest.approx(truth, rel=0.03)
    assert st["detections"] <= 1 and st["bright_area_fraction"] < 0.01 and st["source_count_fraction"] < 0.02
    assert st["exposed_arcmin2_per_image"] == pytest.approx(96 * 96 * (pix / 60) ** 2)


def test_denoiser_matches_the_studys_generator_size(tmp_path):
    """xmm_dn: no HR conv after the trunk, 314,529 parameters (the study's denoiser, small config); xmm_sr keeps
    the HR conv after the x2 upsampling: 326,129 (the study's architecture table)."""
    from conftest import TINY, compose_config
    from hydra.utils import instantiate

    for experiment, n_params, has_hr in (("xmm_dn", 314_529, False), ("xmm_sr", 326_129, True)):
        cfg = compose_config([f"experiment={experiment}", *TINY], tmp_path, tmp_path / experiment)
        net = instantiate(cfg.model.net)
        assert sum(p.numel() for p in net.parameters()) == n_params
        assert (net.conv_hr is not None) == has_hr


def test_leave_one_out_ensemble_averages_members_and_checks_each(monkeypatch):
    """Templates joined by | are averaged (on both grids); every member must be the run that left the ObsID out."""
    import lit_sr.domains.xmm.real as real

    rng = np.random.default_rng(4)
    pair, _ = _synthetic_pair(rng)
    level = {"a": 1e-4, "b": 3e-4}

    def fake_load(path):
        name = Path(path).parts[0]
        leave = "0000000000" if name != "wrong" else "1111111111"
        return LoadedModel(None, None, 2, 32, 100.0, Path(path), name, leave)

    def fake_rate(model, p, self_ensemble=False):
        hr = np.full((2 * p.slice_counts.shape[0], 2 * p.slice_counts.shape[1]), level.get(model.experiment, 0.0))
        return hr, hr.reshape(hr.shape[0] // 2, 2, hr.shape[1] // 2, 2).sum(axis=(1, 3))

    monkeypatch.setattr(real, "load_model", fake_load)
    monkeypatch.setattr(real, "model_rate", fake_rate)
    rates, used, native = real.leave_one_out_rates("a/{obsid}.ckpt | b/{obsid}.ckpt", [pair], scale=2)
    np.testing.assert_allclose(native[pair.obsid], 2e-4)
    np.testing.assert_allclose(rates[pair.obsid], 8e-4)
    assert used[pair.obsid] == "a/0000000000.ckpt | b/0000000000.ckpt"
    with pytest.raises(DataFileError, match=r"wrong/0000000000.ckpt.*data.leave_out"):
        real.leave_one_out_rates("a/{obsid}.ckpt|wrong/{obsid}.ckpt", [pair], scale=2)
