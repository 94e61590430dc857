"""Patch pipeline and DataModule of the SAXS domain."""

import h5py
import numpy as np
import pytest
import torch

from lit_sr.data.normalise import denormalise, normalise_patch
from lit_sr.domains.saxs.data import (SAXSDataModule, extract_noise_pool, rotation_region,
                              sample_signal_patch, signal_mask)
from lit_sr.domains.saxs.sim import is_complete

SMALL = dict(frame_shape=(64, 128), n_xray_frames=3, n_full_frames=3, n_eval_frames=2, patch_size=32,
             n_train_signal_patches=16, n_noise_patches=16, n_val_patches=6, n_test_patches=6,
             signal_threshold=2000.0, mask_dilation=2, max_masked_fraction=0.2, batch_size=4)


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
    xn0, lo0, hi0 = normalise_patch(torch.zeros(8, 8))         # flat patch stays finite
    assert torch.isfinite(xn0).all() and hi0 > lo0


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
        extract_noise_pool(dm.files["train"], 4, 32, np.random.default_rng(0), mask_threshold=-1.0,
                           mask_dilation=0, max_masked_fraction=0.0)


def test_fresh_noise_each_access_and_fixed_eval(dm, tmp_path):
    a, b = dm.train_set[0], dm.train_set[0]
    assert not torch.equal(a["input"], b["input"])
    v1 = dm.val_set[3]
    d2 = SAXSDataModule(data_dir=str(dm.data_dir), **SMALL)
    d2.setup("validate")
    torch.testing.assert_close(d2.val_set[3]["input"], v1["input"])   # reproducible per seed
    assert not torch.equal(dm.test_set[0]["target"], dm.val_set[0]["target"])  # separate frames


def test_worker_opens_own_handle(dm):
    loader = torch.utils.data.DataLoader(dm.train_set, batch_size=4, num_workers=2)
    batches = list(loader)
    assert len(batches) == 4
    assert dm.train_set.file._h5 is None or dm.train_set.file._pid is not None
