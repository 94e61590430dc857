"""Noise2Noise pairs of real XMM-Newton observations (lit_sr.domains.xmm.heldout): the left-out ObsID is never
read for training, targets are the held-out counts over their exposure, leave-one-out scoring refuses a run
that trained on the scored ObsID; the unclipped scaling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits

import lit_sr.domains.xmm.real as real
from lit_sr.data.transforms import StretchTransform
from lit_sr.data.validate import DataFileError
from lit_sr.domains.xmm.heldout import XMMHeldoutDataModule
from lit_sr.losses.combined import PhysicalSpaceLoss

FIXTURE = Path(__file__).parent / "data" / "xmm_0781350101_20ks_cut64.fits.gz"
T_SLICE, T_FULL = {"0000000001": 2.0e4, "0000000002": 2.0e4}, {"0000000001": 6.0e4, "0000000002": 1.0e5}


def _write_pairs(root: Path, shape=(48, 40)) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two synthetic ObsIDs in the SAS layout (the committed cut-out's header: DETX/DETY axes, 4" pixels):
    a slice and a full observation whose counts are the slice's plus an independent Poisson draw."""
    header = fits.getheader(FIXTURE)
    rng = np.random.default_rng(1)
    out = {}
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for n, obsid in enumerate(T_SLICE):
        rate = 1e-4 + 5e-3 * np.exp(-((xx - 15 - 8 * n) ** 2 + (yy - 20) ** 2) / 20.0)  # counts/s per pixel
        s = rng.poisson(rate * T_SLICE[obsid]).astype(np.int32)
        f = s + rng.poisson(rate * (T_FULL[obsid] - T_SLICE[obsid])).astype(np.int32)
        for sub, data, t in (("20ks", s, T_SLICE[obsid]), ("full", f, T_FULL[obsid])):
            (root / sub).mkdir(parents=True, exist_ok=True)
            h = header.copy()
            h["EXPOSURE"] = t
            fits.PrimaryHDU(data, header=h).writeto(root / sub / f"{obsid}_{sub}.fits.gz")
        out[obsid] = (s.astype(np.float64), f.astype(np.float64))
    return out


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """Names of the FITS files opened through the real-data reader (counts and EXPOSURE cards)."""
    seen: list[str] = []
    read, header = real.read_observation, real.fits.getheader

    def spy_read(path, *a, **k):
        seen.append(Path(path).name)
        return read(path, *a, **k)

    def spy_header(path, *a, **k):
        seen.append(Path(path).name)
        return header(path, *a, **k)

    monkeypatch.setattr(real, "read_observation", spy_read)
    monkeypatch.setattr(real.fits, "getheader", spy_header)
    return seen


def test_left_out_obsid_is_never_read_for_training_and_targets_are_heldout_rates(tmp_path, opened):
    counts = _write_pairs(tmp_path)
    dm = XMMHeldoutDataModule(str(tmp_path), leave_out="0000000002", train_patch=16, train_items=8, val_items=6)
    dm.setup("fit")
    assert opened and not any("0000000002" in name for name in opened), opened
    assert [p.obsid for p in dm.splits["train"].pairs] == ["0000000001"]
    t = dm.transform
    s, f = counts["0000000001"]
    pair = dm.splits["val"].pairs[0]
    for i in range(len(dm.splits["val"])):  # fixed crops: (pair, top, left) known, no flip
        item = dm.splits["val"][i]
        _, top, left, k, flip = dm.splits["val"]._fixed[i]
        assert (k, flip) == (0, False)
        win = (slice(top, top + 16), slice(left, left + 16))
        m = pair.mask[win]
        # the target is (full - slice) counts over the held-out exposure T - T_slice, 0 outside the detector
        want = np.where(m, (f - s)[win] / (T_FULL["0000000001"] - T_SLICE["0000000001"]), 0.0)
        np.testing.assert_allclose(t.inverse(item["target"][0]).numpy(), want, rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(
            t.inverse(item["input"][0]).numpy(), np.where(m, s[win] / T_SLICE["0000000001"], 0.0), rtol=1e-5, atol=1e-12
        )
        # exposure channel: 20 ks / exposure_norm_ks (100 ks) on exposed pixels
        np.testing.assert_allclose(item["input"][1].numpy(), 0.2 * m, rtol=1e-6)
    # the random training crops come from the training ObsID only, with the 8 flips/rotations of the same maps
    items = [dm.splits["train"][i] for i in range(8)]
    assert all(int(it["obsid_index"]) == 0 for it in items)
    assert all(it["input"].shape == (2, 16, 16) and it["target"].shape == (1, 16, 16) for it in items)
    # the bright pixels (up to ~0.005 counts/s, 2.5 x max_rate) are not clipped by the scaling
    assert float(t.inverse(torch.stack([it["target"] for it in items])).max()) > 2e-3

    opened.clear()
    dm.setup("test")
    assert set(opened) == {"0000000002_20ks.fits.gz", "0000000002_full.fits.gz"}
    (test_item,) = [dm.splits["test"][0]]
    s2, f2 = counts["0000000002"]
    m2 = dm.splits["test"].pairs[0].mask
    assert test_item["target"].shape == (1, *s2.shape)  # the whole left-out frame
    np.testing.assert_allclose(
        t.inverse(test_item["target"][0]).numpy(), np.where(m2, (f2 - s2) / 8.0e4, 0.0), rtol=1e-5, atol=1e-12
    )


def test_unknown_leave_out_and_leave_one_out_guard(tmp_path, monkeypatch):
    _write_pairs(tmp_path)
    with pytest.raises(ValueError, match=r"data.leave_out='0000000009': no such ObsID"):
        XMMHeldoutDataModule(str(tmp_path), leave_out="0000000009").setup("fit")
    pairs = real.load_pairs(tmp_path, only=["0000000001"])
    # a run that trained on the scored ObsID (leave_out is another one) is refused, naming the file
    fake = real.LoadedModel(None, StretchTransform(2e-3, clip=False), 1, 16, 100.0, Path("x"), "m", "0000000002")
    monkeypatch.setattr(real, "load_model", lambda path, unclipped=False: fake)
    with pytest.raises(DataFileError, match=r"loo_0000000001.*data.leave_out.*'0000000002'; expected '0000000001'"):
        real.leave_one_out_rates(str(tmp_path / "loo_{obsid}" / "last.ckpt"), pairs)


def test_unclipped_stretch_continues_above_max_value_and_poisson_loss_is_minimised_by_the_mean():
    x = torch.tensor([0.0, 1e-4, 2e-3, 8e-3, 0.27])
    clipped, free = StretchTransform(2e-3, "sqrt"), StretchTransform(2e-3, "sqrt", clip=False)
    np.testing.assert_allclose(free(x)[:3].numpy(), clipped(x)[:3].numpy())  # same map below max_value
    np.testing.assert_allclose(free(x).numpy(), np.sqrt(x.numpy() / 2e-3), rtol=1e-6)
    np.testing.assert_allclose(free.inverse(free(x)).numpy(), x.numpy(), rtol=1e-5)
    assert float(clipped.inverse(clipped(x))[-1]) == pytest.approx(2e-3)
    for stretch in ("asinh", "log", "linear"):
        t = StretchTransform(2e-3, stretch, clip=False)
        np.testing.assert_allclose(t.inverse(t(x)).numpy(), x.numpy(), rtol=1e-4, atol=1e-9)
    # Poisson likelihood of the rate against independent noisy targets: the best constant is their mean
    # (what makes full - slice a valid Noise2Noise target), here 5.5 x max_rate, beyond the old clip
    rng = np.random.default_rng(0)
    rates = torch.from_numpy(rng.poisson(0.011 * 5e4, size=4000) / 5e4).float()
    loss = PhysicalSpaceLoss(kind="poisson", transform=free)
    grid = torch.linspace(0.008, 0.014, 61)
    values = [float(loss(free(torch.full_like(rates, g)), free(rates))) for g in grid]
    assert float(grid[int(np.argmin(values))]) == pytest.approx(float(rates.mean()), abs=1e-4)
    with pytest.raises(ValueError, match="either a loss module or a PixelLoss kind"):
        PhysicalSpaceLoss(transform=free)


def test_sr_pairs_spread_the_heldout_rate_over_the_finer_pixels_and_the_pooled_loss_scores_the_sums(tmp_path):
    counts = _write_pairs(tmp_path)
    dm = XMMHeldoutDataModule(
        str(tmp_path), leave_out="0000000002", task="sr", scale=2, train_patch=16, train_items=4, val_items=3
    )
    dm.setup("fit")
    t, pair = dm.transform, dm.splits["val"].pairs[0]
    s, f = counts["0000000001"]
    for i in range(len(dm.splits["val"])):
        item = dm.splits["val"][i]
        _, top, left, _, _ = dm.splits["val"]._fixed[i]
        win = (slice(top, top + 16), slice(left, left + 16))
        assert item["input"].shape == (2, 16, 16) and item["target"].shape == (1, 32, 32)
        fine = t.inverse(item["target"][0]).numpy()
        # each input pixel's held-out rate is split evenly over its 2 x 2 finer pixels: the sums are the rate
        want = np.where(pair.mask[win], (f - s)[win] / 4.0e4, 0.0)
        np.testing.assert_allclose(fine.reshape(16, 2, 16, 2).sum(axis=(1, 3)), want, rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(fine[0::2, 0::2], want / 4, rtol=1e-5, atol=1e-12)
    with pytest.raises(ValueError, match=r"data.scale=1: task 'sr' needs scale 2"):
        XMMHeldoutDataModule(str(tmp_path), task="sr", scale=1)

    # pool=2: the Poisson loss of the x2 prediction summed 2 x 2 against the coarse sums; blind to how the
    # flux is spread inside a block, and minimised when the block sums are the target's
    free = StretchTransform(2e-3, "sqrt", clip=False)
    rng = np.random.default_rng(3)
    target_fine = torch.from_numpy(np.repeat(np.repeat(rng.gamma(2.0, 1e-3, (1, 1, 4, 4)), 2, 2), 2, 3) / 4).float()
    loss = PhysicalSpaceLoss(kind="poisson", transform=free, pool=2)
    coarse = target_fine.reshape(1, 1, 4, 2, 4, 2).sum(dim=(3, 5))
    for spread in (torch.tensor([[0.25, 0.25], [0.25, 0.25]]), torch.tensor([[0.7, 0.1], [0.1, 0.1]])):
        pred = (coarse * 1.3).repeat_interleave(2, 2).repeat_interleave(2, 3) * spread.repeat(4, 4)
        direct = torch.nn.functional.poisson_nll_loss(coarse * 1.3 / 2e-3, coarse / 2e-3, log_input=False)
        assert float(loss(free(pred), free(target_fine))) == pytest.approx(float(direct), rel=1e-5)
    values = [float(loss(free(target_fine * g), free(target_fine))) for g in (0.8, 0.9, 1.0, 1.1, 1.25)]
    assert int(np.argmin(values)) == 2
    with pytest.raises(ValueError, match=r"pool=2: image 3 x 4 is not a multiple"):
        loss(torch.zeros(1, 1, 3, 4), torch.zeros(1, 1, 3, 4))


def test_thinning_makes_a_fainter_field_with_the_same_exposures(tmp_path):
    """Binomial thinning with keep-probability p: the thinned slice and held-out counts are integers no larger
    than the originals, their totals are p x the originals (binomial errors) and the exposures are unchanged."""
    counts = _write_pairs(tmp_path)
    dm = XMMHeldoutDataModule(
        str(tmp_path), leave_out="0000000002", train_patch=40, train_items=64, thin=[0.25, 0.25], thin_prob=1.0
    )
    dm.setup("fit")
    ds, t = dm.splits["train"], dm.transform
    s, f = counts["0000000001"]
    pair = ds.pairs[0]
    tot_s = tot_h = kept_s = kept_h = 0.0
    for i in range(len(ds)):
        j, top, left, k, flip = ds._draw(np.random.default_rng(i))  # the crop, drawn with a known stream
        ds._rng = np.random.default_rng(1000 + i)
        ds._draw = lambda rng, c=(j, top, left, k, flip): c  # noqa: B023 - replay that crop
        item = ds[i]
        del ds._draw
        win = (slice(top, top + 40), slice(left, left + 40))
        m = pair.mask[win]
        back = lambda y: d4_inverse(t.inverse(y[0]).numpy(), k, flip)  # noqa: E731
        c_s, c_h = back(item["input"][:1]) * 2e4, back(item["target"]) * 4e4
        assert np.allclose(c_s, np.round(c_s), atol=1e-3) and np.allclose(c_h, np.round(c_h), atol=1e-3)
        assert (c_s <= s[win] * m + 1e-3).all() and (c_h <= (f - s)[win] * m + 1e-3).all()
        np.testing.assert_allclose(item["input"][1].numpy(), 0.2 * d4_np(m, k, flip), rtol=1e-6)  # same 20 ks
        tot_s, tot_h = tot_s + (s[win] * m).sum(), tot_h + ((f - s)[win] * m).sum()
        kept_s, kept_h = kept_s + c_s.sum(), kept_h + c_h.sum()
    for kept, tot in ((kept_s, tot_s), (kept_h, tot_h)):
        assert abs(kept / tot - 0.25) < 4 * np.sqrt(0.25 * 0.75 / tot)
    with pytest.raises(ValueError, match=r"data.thin=\[0.5, 2.0\]"):
        XMMHeldoutDataModule(str(tmp_path), leave_out="0000000002", train_patch=16, thin=[0.5, 2.0]).setup("fit")


def d4_np(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    return np.rot90(x[:, ::-1] if flip else x, k)


def d4_inverse(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    x = np.rot90(x, -k)
    return x[:, ::-1] if flip else x


def test_paired_heldout_report_scores_the_difference_to_the_smoothing(tmp_path, monkeypatch):
    """reports.xmm.paired_heldout: a 'model' that predicts the smoothing itself differs from it by exactly 0 (SE
    0); one that predicts the held-out rate (cheating, a known answer) is better than the smoothing; a run that
    did not leave out the scored ObsID is refused."""
    from reports.xmm import paired_heldout

    _write_pairs(tmp_path)
    (pair,) = real.load_pairs(tmp_path, only=["0000000002"])
    fake = {
        "a": ("0000000002", real.smoothed(pair, 2.5)),
        "b": ("0000000002", np.where(pair.mask, pair.heldout_counts / pair.heldout_exposure_s, 0.0)),
    }
    fake["c"] = ("0000000001", fake["a"][1])
    monkeypatch.setattr(
        real, "load_model", lambda path: real.LoadedModel(None, None, 1, 16, 100.0, Path(path), "m", fake[path][0])
    )
    monkeypatch.setattr(real, "model_rate", lambda model, p, ens=False: (fake[str(model.checkpoint)][1],) * 2)
    out = paired_heldout.main(
        ["--data", str(tmp_path), "--obsid", "0000000002", "--out", str(tmp_path / "p.json"), "a", "b"]
    )
    same = out["runs"]["a|ensemble=False|flux_conserving=False"]
    assert same["minus_smoothing"] == 0.0 and same["paired_se_iid"] == 0.0
    cheat = out["runs"]["b|ensemble=True|flux_conserving=False"]
    assert cheat["minus_smoothing"] < -3 * cheat["paired_se_iid"]
    with pytest.raises(SystemExit, match="data.leave_out is '0000000001'"):
        paired_heldout.main(["--data", str(tmp_path), "--obsid", "0000000002", "--out", str(tmp_path / "q.json"), "c"])
    # every ObsID of the folder with a {obsid} template: each pair scored by its own leave-one-out run
    pairs = {p.obsid: p for p in real.load_pairs(tmp_path)}
    for obsid, p in pairs.items():
        fake[f"x_{obsid}"] = (obsid, real.smoothed(p, 2.5))
    out = paired_heldout.main(
        ["--data", str(tmp_path), "--obsid", "all", "--out", str(tmp_path / "r.json"), "x_{obsid}"]
    )
    assert sorted(out["obsids"]) == sorted(pairs) and len(pairs) >= 2
    for obsid in pairs:
        assert out["obsids"][obsid]["runs"]["x_{obsid}|ensemble=True|flux_conserving=False"]["minus_smoothing"] == 0.0
    # the shares of the count bins add up to the mean difference
    assert sum(cheat["minus_smoothing_by_count_bin"].values()) == pytest.approx(cheat["minus_smoothing"])
    assert cheat["minus_smoothing_by_count_bin"]["[10, inf)"] < 0  # the held-out rate wins where the counts are
