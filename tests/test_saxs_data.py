"""Patch pipeline and DataModule of the SAXS domain."""

import h5py
import numpy as np
import pytest
import torch

from lit_sr.data.normalise import denormalise, normalise_patch
from lit_sr.domains.saxs.data import (
    SAXSDataModule,
    extract_noise_pool,
    rotation_region,
    sample_signal_patch,
    signal_mask,
)
from lit_sr.domains.saxs.sim import is_complete

SMALL = dict(
    frame_shape=(64, 128),
    n_xray_frames=3,
    n_full_frames=3,
    n_eval_frames=2,
    patch_size=32,
    n_train_signal_patches=16,
    n_noise_patches=16,
    n_val_patches=6,
    n_test_patches=6,
    signal_threshold=2000.0,
    mask_dilation=2,
    max_masked_fraction=0.2,
    batch_size=4,
)


@pytest.fixture(scope="module")
def dm(tmp_path_factory):
    d = SAXSDataModule(data_dir=str(tmp_path_factory.mktemp("saxs")), **SMALL)
    d.prepare_data()
    d.setup()
    return d


def test_normalise_roundtrip_and_bounds():
    x = torch.rand(3, 40, 40) * 1000
    xn, lo, hi = normalise_patch(x)
    assert xn.min() >= 0 and xn.max() <= 1
    np.testing.assert_allclose(lo.numpy(), np.percentile(x.numpy().reshape(3, -1), 1, axis=1), rtol=1e-5)
    np.testing.assert_allclose(hi.numpy(), np.percentile(x.numpy().reshape(3, -1), 99.95, axis=1), rtol=1e-5)
    inside = (x >= lo[:, None, None]) & (x <= hi[:, None, None])
    torch.testing.assert_close(denormalise(xn, lo, hi)[inside], x[inside], rtol=1e-5, atol=1e-3)
    xn0, lo0, hi0 = normalise_patch(torch.zeros(8, 8))  # flat patch stays finite
    assert torch.isfinite(xn0).all() and hi0 > lo0


def test_percentiles_from_a_partial_sort_are_torch_quantile_bit_for_bit():
    from lit_sr.data.normalise import quantiles

    g = torch.Generator().manual_seed(0)
    with_nan = torch.rand(4, 100, generator=g)
    with_nan[1, 7] = float("nan")
    cases = [
        torch.rand(16, 1, 1024, generator=g) ** 4 * 100,  # a SAXS batch: sparse bright pixels
        torch.randint(0, 5, (7, 3, 400), generator=g).float(),  # counts: many ties
        torch.zeros(2, 64),
        torch.rand(5, 1, generator=g),
        torch.rand(3, 2, 1000, generator=g).double(),
        with_nan,  # torch.quantile gives NaN for that row
    ]
    for x in cases:
        for q in ([0.01, 0.9995], [0.5], [0.0, 1.0], [0.25, 0.75, 1 / 3]):
            q = torch.tensor(q, dtype=x.dtype)
            got, ref = quantiles(x, q), torch.quantile(x, q, dim=-1)
            assert got.shape == ref.shape and got.dtype == ref.dtype
            assert torch.equal(got.isnan(), ref.isnan()) and torch.equal(got.nan_to_num(), ref.nan_to_num())


def test_prepare_data_resimulates_incomplete(tmp_path):
    d = SAXSDataModule(data_dir=str(tmp_path), **SMALL)
    bad = tmp_path / "saxs_train.h5"
    with h5py.File(bad, "w") as h5:
        h5.create_dataset("xray", data=np.zeros((1, 8, 8)))
    d.prepare_data()
    assert is_complete(bad)
    with h5py.File(bad) as h5:
        assert h5["xray"].shape == (3, 64, 128)


def test_batch_contract_and_additivity(dm):
    b = next(iter(dm.train_dataloader()))
    assert b["input"].shape == b["target"].shape == b["noise"].shape == (4, 1, 32, 32)
    assert b["bounds"].shape == (4, 2) and (b["bounds"][:, 1] > b["bounds"][:, 0]).all()
    for k in ("input", "target", "noise"):
        assert b[k].min() >= 0 and b[k].max() <= 1
    # input = s + n before normalisation: in keV, x = s + n where nothing was clipped
    lo, hi = b["bounds"][:, :1, None, None], b["bounds"][:, 1:, None, None]
    s_kev = b["target"] * (hi - lo) + lo
    n_kev = b["noise"] * (hi - lo) + lo
    x_kev = b["input"] * (hi - lo) + lo
    ok = (b["target"] > 0) & (b["target"] < 1) & (b["noise"] > 0) & (b["noise"] < 1) & (b["input"] < 1)
    assert ok.sum() > 100
    err = ((s_kev + n_kev - x_kev) / (hi - lo)).expand_as(ok)[ok]
    assert err.abs().max() < 1e-5


def test_signal_patches_rotated_thresholded_rescaled(dm):
    with h5py.File(dm.files["train"]) as h5:
        frames = h5["xray"][:]
    rng = np.random.default_rng(0)
    sums = [sample_signal_patch(frames, rng, 32, 2000.0, (1.0, 1.0)).sum() for _ in range(20)]
    assert min(sums) > 2000.0
    # no empty corners: the rotation region is large enough
    assert rotation_region(128) >= 128 * np.sqrt(2)
    rng = np.random.default_rng(0)
    a = sample_signal_patch(frames, rng, 32, 2000.0, (1.0, 1.0))
    rng = np.random.default_rng(0)
    b = sample_signal_patch(frames, rng, 32, 2000.0, (5.0, 5.0))
    np.testing.assert_allclose(b, 5.0 * a, rtol=1e-5)
    with pytest.raises(RuntimeError, match="signal_threshold"):
        sample_signal_patch(frames, rng, 32, 1e15, (1.0, 1.0), max_tries=5)


def test_noise_patches_avoid_signal(dm):
    pool = dm.train_set.noise_pool
    assert pool.shape == (16, 32, 32) and pool.min() >= 0
    with h5py.File(dm.files["train"]) as h5:
        sig = h5["signal"][:]
    m = signal_mask(sig[0], dm.mask_threshold, dm.mask_dilation)
    assert 0 < m.mean() < 1
    # noise patches carry much less signal than a typical X-ray region: mean keV far below the masked mean
    assert pool.mean() < sig[0][m].mean() / 10


def test_noise_pool_error_when_everything_masked(dm):
    with pytest.raises(ValueError, match="masked fraction"):
        extract_noise_pool(
            dm.files["train"],
            4,
            32,
            np.random.default_rng(0),
            mask_threshold=-1.0,
            mask_dilation=0,
            max_masked_fraction=0.0,
        )


def test_fresh_noise_each_access_and_fixed_eval(dm, tmp_path):
    a, b = dm.train_set[0], dm.train_set[0]
    assert not torch.equal(a["input"], b["input"])
    v1 = dm.val_set[3]
    d2 = SAXSDataModule(data_dir=str(dm.data_dir), **SMALL)
    d2.setup("validate")
    torch.testing.assert_close(d2.val_set[3]["input"], v1["input"])  # reproducible per seed
    assert not torch.equal(dm.test_set[0]["target"], dm.val_set[0]["target"])  # separate frames


def test_worker_opens_own_handle(dm):
    from lit_sr.data.base import pass_batch

    # the dataset builds whole batches (__getitems__), so the loader passes them on as they are
    loader = torch.utils.data.DataLoader(dm.train_set, batch_size=4, num_workers=2, collate_fn=pass_batch)
    batches = list(loader)
    assert len(batches) == 4 and all(b["input"].shape == (4, 1, 32, 32) for b in batches)
    assert dm.train_set.file._h5 is None or dm.train_set.file._pid is not None


def _scipy_patch(frames, rng, patch_size, threshold, amplitude_range):
    """The one-at-a-time sampler the batched one replaced (scipy rotation), as the reference."""
    from scipy import ndimage

    n, h, w = frames.shape
    side = rotation_region(patch_size)
    while True:
        i = int(rng.integers(n))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        region = np.asarray(frames[i, top : top + side, left : left + side], np.float32)
        rot = ndimage.rotate(region, float(rng.uniform(0.0, 360.0)), reshape=False, order=1, mode="nearest")
        c = (side - patch_size) // 2
        p = np.clip(rot[c : c + patch_size, c : c + patch_size], 0.0, None)
        if float(p.sum(dtype=np.float64)) > threshold:
            lo, hi = amplitude_range
            return p * np.float32(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def test_batched_rotation_is_scipys(dm):
    from scipy import ndimage

    from lit_sr.domains.saxs.data import cut_rotated_patch, rotated_crops

    with h5py.File(dm.files["train"]) as h5:
        frames = h5["xray"][:]
    rng = np.random.default_rng(3)
    for size in (32, 21):
        side = rotation_region(size)
        m = 12
        i, top = rng.integers(len(frames), size=m), rng.integers(0, frames.shape[1] - side + 1, size=m)
        left, angle = rng.integers(0, frames.shape[2] - side + 1, size=m), rng.uniform(0, 360, size=m)
        angle[:3] = (0.0, 90.0, 33.0)
        got = rotated_crops(frames, i, top, left, angle, size)
        for k in range(m):
            region = frames[i[k], top[k] : top[k] + side, left[k] : left[k] + side]
            c = (side - size) // 2
            ref = np.clip(
                ndimage.rotate(region, angle[k], reshape=False, order=1, mode="nearest")[c : c + size, c : c + size],
                0.0,
                None,
            )
            np.testing.assert_allclose(got[k], ref, rtol=1e-5, atol=1e-5 * ref.max())
            np.testing.assert_array_equal(cut_rotated_patch(frames, i[k], top[k], left[k], angle[k], size), got[k])
    np.testing.assert_array_equal(
        got[0],
        np.clip(frames[i[0], top[0] : top[0] + side, left[0] : left[0] + side], 0, None)[
            (side - 21) // 2 : (side - 21) // 2 + 21, (side - 21) // 2 : (side - 21) // 2 + 21
        ],
    )


def test_batch_of_one_is_the_per_item_sampler_and_batches_share_its_distribution(dm):
    from scipy import stats

    from lit_sr.domains.saxs.data import sample_signal_patches

    with h5py.File(dm.files["train"]) as h5:
        frames = h5["xray"][:]
        # the same seed gives the same patches one at a time (scipy reference), in memory and read from the file
        ref_rng, rng, lazy_rng = (np.random.default_rng(7) for _ in range(3))
        for _ in range(5):
            ref = _scipy_patch(frames, ref_rng, 32, 2000.0, (0.5, 2.0))
            np.testing.assert_allclose(
                sample_signal_patch(frames, rng, 32, 2000.0, (0.5, 2.0)), ref, rtol=1e-5, atol=1e-5 * ref.max()
            )
            np.testing.assert_allclose(
                sample_signal_patch(h5["xray"], lazy_rng, 32, 2000.0, (0.5, 2.0)), ref, rtol=1e-5, atol=1e-5 * ref.max()
            )
        lazy = sample_signal_patches(h5["xray"], np.random.default_rng(9), 16, 32, 2000.0, (0.5, 2.0))
    np.testing.assert_array_equal(
        sample_signal_patches(frames, np.random.default_rng(9), 16, 32, 2000.0, (0.5, 2.0)), lazy
    )
    # a batch draws its candidates round by round (another order of the stream): the same distribution
    one_by_one = np.array([_scipy_patch(frames, ref_rng, 32, 2000.0, (1.0, 1.0)).sum() for _ in range(300)])
    batched = sample_signal_patches(frames, np.random.default_rng(11), 300, 32, 2000.0, (1.0, 1.0)).sum(axis=(1, 2))
    assert batched.min() > 2000.0
    assert stats.ks_2samp(one_by_one, batched).pvalue > 1e-3
    # while without the threshold the sums are distributed differently (the test can tell)
    unthresholded = sample_signal_patches(frames, np.random.default_rng(11), 300, 32, -1.0, (1.0, 1.0)).sum(axis=(1, 2))
    assert stats.ks_2samp(one_by_one, unthresholded).pvalue < 1e-3


def test_training_batch_is_built_whole_and_item_is_its_batch_of_one(dm):
    ds = dm.train_set
    b = ds.__getitems__(list(range(6)))
    assert b["input"].shape == (6, 1, 32, 32) and b["bounds"].shape == (6, 2)
    assert isinstance(ds.frames(), np.ndarray)  # small frames are held in memory
    # an item is the per-item path: the one-at-a-time sampler, a noise patch from the pool, make_item
    from lit_sr.domains.saxs.data import make_item, stream_rng

    ds._rng = None
    item = ds[0]
    rng = stream_rng(ds.seed, torch.initial_seed() & 0xFFFFFFFF)
    with h5py.File(dm.files["train"]) as h5:
        s = _scipy_patch(h5["xray"][:], rng, 32, ds.signal_threshold, ds.amplitude_range)
    ref = make_item(s, ds.noise_pool[int(rng.integers(len(ds.noise_pool)))], ds.normaliser)
    for key in ("input", "target", "noise", "bounds"):
        torch.testing.assert_close(item[key], ref[key], rtol=1e-4, atol=1e-5)
