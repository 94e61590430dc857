"""XMM data module (FITS folders -> 2-channel batches) and the X-ray evaluator on simulated truth."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from astropy.io import fits

from lit_sr.data.validate import DataFileError
from lit_sr.domains.xmm.data import XMMDataModule, d4
from lit_sr.domains.xmm.metrics import XMMEvaluator, gap_mask

N_FIELDS = {"train": 2, "val": 1, "test": 5}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("xmm_data")
    XMMDataModule(data_dir=str(d), n_fields=N_FIELDS, progress=False).prepare_data()
    return d


def _dm(data_dir, **kw) -> XMMDataModule:
    kw.setdefault("n_fields", N_FIELDS)
    return XMMDataModule(data_dir=str(data_dir), progress=False, **kw)


def _read(path, hdu=0):
    with fits.open(path) as h:
        return np.asarray(h[hdu].data, np.float64)


def test_simulated_once_and_batches_are_the_files_in_model_space(data_dir):
    dm = _dm(data_dir, task="sr")
    root = dm.default_root
    marker = (root / "xmm_dataset.json").stat().st_mtime_ns
    dm.prepare_data()  # complete dataset: not simulated again
    assert (root / "xmm_dataset.json").stat().st_mtime_ns == marker
    dm.setup("test")
    item = dm.splits["test"][1]
    files = dm.splits["test"].files[1]
    counts, expo = _read(files["input"]), _read(files["input"], "EXPOSURE")
    rate = np.divide(counts, expo, out=np.zeros_like(counts), where=expo > 0)
    t = dm.transform
    assert item["input"].shape == (2, 64, 64) and item["target"].shape == (1, 128, 128)
    # channel 0: the stretched count rate; inverting it gives counts / exposure back (below the clip)
    back = t.inverse(item["input"][0]).double().numpy()
    ok = rate < t.max_value
    np.testing.assert_allclose(back[ok] * expo[ok], counts[ok], rtol=1e-4, atol=1e-4)
    # channel 1: detector mask x exposure_ks / 100 (20 ks on axis -> <= 0.2)
    np.testing.assert_allclose(item["input"][1].double().numpy(), expo / 1e5, rtol=1e-6, atol=1e-9)
    assert 0.1 < item["input"][1].max() <= 0.2
    # target: the 100 ks x2 file's rate; truth keys: its noiseless rate and the source table
    tcounts, texpo = _read(files["target"]), _read(files["target"], "EXPOSURE")
    np.testing.assert_allclose(item["counts_target"][0].numpy(), tcounts)
    expected = _read(files["target"], "EXPECTED")
    np.testing.assert_allclose(
        item["rate_true"][0].numpy(),
        np.divide(expected, texpo, out=np.zeros_like(expected), where=texpo > 0),
        rtol=1e-5,
        atol=1e-12,
    )
    with fits.open(files["sources"]) as h:
        table = h["SOURCES"].data
        inside = (table["X_LR"] > -2.5) & (table["X_LR"] < 65.5) & (table["Y_LR"] > -2.5) & (table["Y_LR"] < 65.5)
        n = int(inside.sum())
        np.testing.assert_allclose(np.sort(item["src_rate"][:n].numpy()), np.sort(table["RATE"][inside]), rtol=1e-6)
    assert torch.isnan(item["src_xy"][n:]).all() and (item["src_kind"][n:] == -1).all()
    # HR rates per pixel: the 2x2 block sums of the noiseless HR sky rate are close to the LR one (flux conserving)
    lr_true = _read(dm.splits["test"].files[1]["input"], "EXPECTED")
    live = expo > 0
    hr_sum = torch.nn.functional.avg_pool2d(item["rate_true"][None], 2)[0, 0].numpy() * 4
    ratio = hr_sum[live].sum() / (lr_true[live] / expo[live]).sum()
    assert ratio == pytest.approx(1.0, abs=0.03)


def test_dn_task_and_declarations(data_dir):
    dm = _dm(data_dir, task="dn")
    assert dm.scale == 1 and dm.in_channels == 2 and dm.image_channels == (0,)
    dm.setup("test")
    item = dm.splits["test"][0]
    assert item["target"].shape == (1, 64, 64)
    assert "50ks" in str(dm.splits["test"].files[0]["target"])
    with pytest.raises(ValueError, match="does not match data.task"):
        _dm(data_dir, task="dn", scale=2)
    with pytest.raises(ValueError, match="data.task"):
        _dm(data_dir, task="deblur")


@pytest.mark.parametrize("task,crop_bias", [("dn", 0.0), ("sr", 1.0)])
def test_training_crops_and_flips_keep_input_and_target_aligned(data_dir, task, crop_bias):
    plain = _dm(data_dir, task=task, augment=False)
    plain.setup("fit")
    aug = _dm(data_dir, task=task, augment=True, train_patch=16, augment_seed=3, crop_bias=crop_bias)
    aug.setup("fit")
    s = plain.scale
    full = plain.splits["train"][0]
    seen = set()
    for _ in range(8):
        item = aug.splits["train"][0]
        assert item["input"].shape == (2, 16, 16) and item["target"].shape == (1, 16 * s, 16 * s)
        match = None
        for k in range(4):
            for flip in (False, True):
                # the crop of the flipped/rotated full field must equal the item, for input and target alike
                xf, yf = d4(full["input"], k, flip), d4(full["target"], k, flip)
                found = [
                    (t, l)
                    for t in range(49)
                    for l in range(49)
                    if torch.equal(xf[:, t : t + 16, l : l + 16], item["input"])
                ]
                for t, l in found:
                    if torch.equal(yf[:, s * t : s * (t + 16), s * l : s * (l + 16)], item["target"]):
                        match = (k, flip)
        assert match is not None, "augmented crop is not a crop of one symmetry of the field"
        seen.add(match)
    assert len(seen) >= 3  # several symmetries drawn


def test_biased_crops_are_centred_on_bright_sources(data_dir):
    def mean_peak(bias):
        dm = _dm(data_dir, task="dn", augment=False, train_patch=16, crop_bias=bias, augment_seed=1)
        dm.setup("fit")
        t = dm.transform
        crops = [dm.splits["train"][i % 2]["input"] for i in range(60)]
        # brightest 3x3 sum of input counts (rate x exposure) in the crop
        return float(
            np.mean(
                [torch.nn.functional.avg_pool2d((t.inverse(c[0]) * c[1] * 1e5)[None, None], 3, 1).max() for c in crops]
            )
            * 9
        )

    uniform, biased = mean_peak(0.0), mean_peak(1.0)
    assert biased > 1.3 * uniform  # measured 16.3 vs 11.1 counts
    with pytest.raises(ValueError, match="crop_bias"):
        from lit_sr.domains.xmm.data import XMMFieldsDataset

        XMMFieldsDataset([], 1, None, crop_bias=1.5)


def _user_copy(data_dir, tmp_path):
    root = _dm(data_dir).default_root
    user = tmp_path / "user"
    shutil.copytree(root, user)
    (user / "xmm_dataset.json").unlink()
    return user


def test_user_folder_validation_messages(data_dir, tmp_path):
    user = _user_copy(data_dir, tmp_path)
    dm = _dm(data_dir, root=str(user), task="sr")
    dm.setup("test")  # a copy of the layout works
    assert len(dm.splits["test"]) == 5
    # target folder that is not 2x the input grid
    dm = _dm(data_dir, root=str(user), task="sr", tags={"sr": "target_50ks"})
    dm.setup("test")
    with pytest.raises(DataFileError, match=r"target_50ks.*expected 128x128"):
        dm.splits["test"][0]
    # missing split folder
    shutil.rmtree(user / "val")
    with pytest.raises(DataFileError, match=r"val.*not found"):
        _dm(data_dir, root=str(user)).setup("fit")
    # file lists that differ
    (user / "test" / "target_100ks_x2" / "field_000004.fits").unlink()
    with pytest.raises(DataFileError, match="field files differ"):
        _dm(data_dir, root=str(user)).setup("test")
    # a NaN pixel names the file and the HDU
    bad = user / "train" / "input_20ks" / "field_000001.fits"
    with fits.open(bad) as h:
        h[0].data = h[0].data.astype(np.float32)
        h[0].data[3, 4] = np.nan
        h.writeto(bad, overwrite=True)
    dm = _dm(data_dir, root=str(user), augment=False)
    dm.train_patch = None
    dm.splits = {}
    from lit_sr.domains.xmm.data import XMMFieldsDataset

    ds = XMMFieldsDataset(dm.split_files("train"), 2, dm.transform)
    with pytest.raises(DataFileError, match=r"field_000001.fits \[HDU 0 \(PRIMARY\)\].*NaN"):
        ds[1]
    with pytest.raises(DataFileError, match="not found"):
        _dm(data_dir, root=str(tmp_path / "nowhere")).prepare_data()


def test_gap_mask_leaves_out_exposure_edges():
    e = np.full((20, 20), 2e4)
    e[:, 10] = 0.0  # a chip gap one pixel wide
    m = gap_mask(e, 3)
    assert not m[:, 7:14].any() and m[:, :6].all() and m[:, 15:].all()


def _evaluate(dm, task_images):
    # thresholds lowered so that the few test fields hold enough bright point sources
    ev = XMMEvaluator(scale=dm.scale, transform=dm.transform, flux_min_rate=5e-4, fwhm_min_rate=1e-3)
    dm.setup("validate")
    t = dm.transform
    ev.prepare((b, {"input": t.inverse(b["input"][:, :1])}) for b in dm.val_dataloader())
    for b in dm.test_dataloader():
        ev.update(b, task_images(b))
    return ev.compute()


def test_evaluator_truth_is_consistent_and_noise_copy_is_not(data_dir):
    dm = _dm(data_dir, task="dn", eval_batch_size=5)
    dm.setup("test")
    t = dm.transform
    # "model" = the noiseless truth: consistent with the input counts, fluxes recovered
    out = _evaluate(
        dm,
        lambda b: {"input": t.inverse(b["input"][:, :1]), "output": b["rate_true"], "target": t.inverse(b["target"])},
    )
    assert out["lr_consistency/model"] == pytest.approx(1.0, abs=0.1)
    assert out["lr_consistency/model"] == pytest.approx(out["lr_consistency/truth"], rel=1e-6)
    assert out["flux_n/model"] >= 3 and out["flux_median/model"] == pytest.approx(1.0, abs=0.1)
    assert out["psnr_noisy_target/model"] > out["psnr_noisy_target/input"] + 2.0  # the noiseless rate beats the input
    assert out["psnr_truth/input"] < out["psnr_truth/smooth"]  # tuned smoothing beats the input
    assert out["fwhm_arcsec/truth"] == pytest.approx(6.0, abs=0.5)
    # "model" = the noisy input: it reproduces the input counts exactly -> deviance far below its expectation
    out = _evaluate(
        dm,
        lambda b: {
            "input": t.inverse(b["input"][:, :1]),
            "output": t.inverse(b["input"][:, :1]),
            "target": t.inverse(b["target"]),
        },
    )
    assert out["lr_consistency/model"] < 0.05
    assert out["psnr_noisy_target/model"] == pytest.approx(out["psnr_noisy_target/input"], abs=1e-6)
    assert out["psnr_truth/model"] == pytest.approx(out["psnr_truth/input"], abs=1e-6)


def test_evaluator_sr_psf_and_bicubic(data_dir):
    dm = _dm(data_dir, task="sr", eval_batch_size=5)
    dm.setup("test")
    t = dm.transform

    def images(b):
        lr = t.inverse(b["input"][:, :1])
        return {"input": lr, "output": b["rate_true"], "target": t.inverse(b["target"])}

    out = _evaluate(dm, images)
    # the truth has the 2x narrower PSF (3"); bicubic keeps the input's blur (6" PSF, noisy 20 ks fits)
    assert out["fwhm_arcsec/model"] == pytest.approx(3.0, abs=0.4)
    assert out["fwhm_arcsec/bicubic"] > out["fwhm_arcsec/model"] + 1.5
    assert out["lr_consistency/model"] == pytest.approx(1.0, abs=0.1)
    assert out["flux_median/model"] == pytest.approx(1.0, abs=0.1)
    assert out["completeness/model"] >= out["completeness/input"]


def _one_at_a_time(ds, i):
    """The per-item path the batched one replaced: rate, transform and exposure channel of the whole field,
    then the item's crop and flip / quarter turn (the reference for the batched path)."""
    from lit_sr.domains.xmm.data import count_rate, model_input

    a = ds.read_field(i)
    rate_in = torch.from_numpy(count_rate(a["counts_in"], a["exposure_in"]))[None]
    rate_t = torch.from_numpy(count_rate(a["counts_target"], a["exposure_target"]))[None]
    x = model_input(rate_in, torch.from_numpy(a["exposure_in"])[None], ds.transform, ds.exposure_norm_ks)
    y = ds.transform(rate_t)
    rng = ds._generator()
    p, s = ds.train_patch, ds.scale
    h, w = x.shape[-2:]
    top, left = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
    if ds.crop_bias and rng.random() < ds.crop_bias:
        cdf = ds._bright_cdf(i, a["counts_in"])
        if cdf[-1] > 0:
            cy, cx = divmod(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), w)
            top = min(max(cy - p // 2 + int(rng.integers(-(p // 4), p // 4 + 1)), 0), h - p)
            left = min(max(cx - p // 2 + int(rng.integers(-(p // 4), p // 4 + 1)), 0), w - p)
    x, y = x[:, top : top + p, left : left + p], y[:, s * top : s * (top + p), s * left : s * (left + p)]
    k, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
    return d4(x, k, flip), d4(y, k, flip)


@pytest.mark.parametrize("task", ["dn", "sr"])
def test_batched_training_items_equal_one_at_a_time_items(data_dir, task):
    def dataset():
        dm = _dm(data_dir, task=task, augment=True, train_patch=16, crop_bias=0.5, augment_seed=5)
        dm.setup("fit")
        return dm.splits["train"]

    batched, single = dataset(), dataset()
    order = [1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1]
    got = batched.__getitems__(order[:7])
    got2 = batched.__getitems__(order[7:])
    assert got["input"].shape == (7, 2, 16, 16) and got["target"].shape == (7, 1, 16 * single.scale, 16 * single.scale)
    assert torch.equal(got["index"], torch.tensor(order[:7]))
    refs = [_one_at_a_time(single, i) for i in order]
    for j, (x, y) in enumerate(refs):  # the same random stream, the same pixels (bit for bit)
        b, k = (got, j) if j < 7 else (got2, j - 7)
        assert torch.equal(b["input"][k], x) and torch.equal(b["target"][k], y)
    assert len({tuple(r[0][0, 0, :3].tolist()) for r in refs}) > 3  # crops differ from item to item


def test_batched_eval_items_are_the_stacked_items(data_dir):
    dm = _dm(data_dir, task="sr")
    dm.setup("test")
    ds = dm.splits["test"]
    batch = next(iter(dm.test_dataloader()))
    assert len(batch["index"]) == min(len(ds), dm.eval_batch_size)
    for j in range(len(batch["index"])):
        item = ds[j]
        assert set(item) == set(batch)
        for key, value in item.items():
            torch.testing.assert_close(batch[key][j], value, rtol=0, atol=0, equal_nan=True, msg=key)
