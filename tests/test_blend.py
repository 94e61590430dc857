"""Blended full-frame inference and HDF5 frame cleaning."""

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lit_sr.data.normalise import PercentileNormaliser
from lit_sr.data.validate import DataFileError
from lit_sr.inference.blend import DEFAULT_OFFSETS, blend_predict
from lit_sr.inference.frames import clean_frames


@pytest.mark.parametrize("shape", [(32, 32), (33, 47), (64, 130), (131, 257)])
def test_identity_exact(shape):
    f = torch.rand(*shape) * 1000
    torch.testing.assert_close(blend_predict(lambda x: x, f, 32), f, rtol=0, atol=0)


def test_constant_offset_seamless():
    f = torch.rand(2, 70, 90)
    y = blend_predict(lambda x: x + 5.0, f, 32)
    torch.testing.assert_close(y, f + 5.0, rtol=0, atol=1e-5)


def test_percentile_normalisation_roundtrip():
    f = torch.rand(70, 90) * 100 + 10  # no outliers beyond the percentiles of interest
    y = blend_predict(lambda x: x, f, 32, normaliser=PercentileNormaliser())
    lo, hi = np.percentile(f.numpy(), [5, 95])
    inside = (f > lo) & (f < hi)
    torch.testing.assert_close(y[inside], f[inside], rtol=1e-5, atol=1e-3)


def test_scale_two_and_multi_outputs():
    f = torch.rand(3, 50, 70)
    up = lambda x: F.interpolate(x, scale_factor=2, mode="nearest")
    torch.testing.assert_close(blend_predict(up, f, 32), up(f[None])[0])
    out = blend_predict(lambda x: {"a": x, "b": 2 * x}, f, 32)
    torch.testing.assert_close(out["b"], 2 * f)
    a, b = blend_predict(lambda x: (x, x + 1), f, 32)
    torch.testing.assert_close(b, f + 1)


def test_weights_damp_outliers():
    f = torch.zeros(96, 96)

    def model(x):  # an edge artefact: +100 on the first column of every patch
        y = x.clone()
        y[..., 0] += 100.0
        return y

    y = blend_predict(model, f, 48, offsets=DEFAULT_OFFSETS)
    # one outlier among 4 predictions: m = 25, weights 1/39.5 vs 1/14.5 -> 10.89 instead of the mean 25
    expected = 100 / 39.5 / (1 / 39.5 + 3 / 14.5)
    assert ((y - expected).abs() < 1e-3).any()
    assert not ((y - 25.0).abs() < 1e-3).any()
    assert (y == 0).float().mean() > 0.5


def test_patch_larger_than_frame():
    with pytest.raises(ValueError, match="patch size 64 is larger than the frame 32x80"):
        blend_predict(lambda x: x, torch.zeros(32, 80), 64)


@pytest.fixture
def frames_file(tmp_path):
    p = tmp_path / "in.h5"
    with h5py.File(p, "w") as h5:
        h5.create_dataset("data", data=np.random.default_rng(0).random((3, 40, 72)).astype(np.float32) * 50)
        h5.create_dataset("single", data=np.ones((40, 72), np.float32))
        h5.create_dataset("rank4", data=np.ones((1, 1, 40, 72), np.float32))
        bad = np.ones((2, 40, 72), np.float32)
        bad[1, 3, 4] = np.nan
        h5.create_dataset("nan", data=bad)
        neg = np.ones((2, 40, 72), np.float32)
        neg[0, 5, 6] = -100
        h5.create_dataset("neg", data=neg)
    return p


def split_model(x):
    return {"signal": 0.75 * x, "noise": 0.25 * x}


SAXS_OUTPUTS = {"signal": "signal", "noise": "background"}  # the SAXS decomposition's dataset names


def test_clean_frames_roundtrip(frames_file, tmp_path):
    out = clean_frames(
        split_model,
        frames_file,
        tmp_path / "out.h5",
        "data",
        patch_size=32,
        progress=True,
        normaliser=PercentileNormaliser(),
        outputs=SAXS_OUTPUTS,
        units="keV",
    )
    with h5py.File(frames_file) as a, h5py.File(out) as b:
        x = a["data"][:]
        np.testing.assert_allclose(
            b["data_signal"][:] + b["data_background"][:],
            x + np.percentile(x.reshape(3, -1), 1, axis=1)[:, None, None] * 0,
            rtol=0.05,
            atol=2.0,
        )
        assert b["data_signal"].shape == x.shape and b.attrs["source_dataset"] == "data"
        assert b.attrs["units"] == "keV" and b["data_background"].attrs["units"] == "keV"
    out2 = clean_frames(split_model, frames_file, tmp_path / "o2.h5", "single", patch_size=32, outputs=SAXS_OUTPUTS)
    with h5py.File(out2) as b:
        np.testing.assert_allclose(b["single_signal"][:], 0.75)
    # generic defaults: every output under its own key, no units named
    out3 = clean_frames(split_model, frames_file, tmp_path / "o3.h5", "single", patch_size=32)
    with h5py.File(out3) as b:
        assert sorted(b) == ["single_noise", "single_signal"] and "units" not in b.attrs
        np.testing.assert_allclose(b["single_noise"][:], 0.25)


@pytest.mark.parametrize(
    "name,match",
    [
        ("missing", r"in.h5 \[missing\]: dataset missing"),
        ("rank4", r"\[rank4\]: expected frames of rank 2 \[H, W\] or 3"),
        ("nan", r"\[nan\]: non-finite value nan at index \(1, 3, 4\)"),
        ("neg", r"\[neg\]: value -100 at index \(0, 5, 6\) is below -10"),
    ],
)
def test_bad_input_messages(frames_file, tmp_path, name, match):
    with pytest.raises(DataFileError, match=match):
        clean_frames(split_model, frames_file, tmp_path / "o.h5", name, patch_size=32, negative_tolerance=10.0)
    assert not (tmp_path / "o.h5").exists()


def test_bad_patch_size_and_same_file(frames_file, tmp_path):
    with pytest.raises(DataFileError, match=r"\[data\]: patch size 64 is larger than the frames \(40x72\)"):
        clean_frames(split_model, frames_file, tmp_path / "o.h5", "data", patch_size=64)
    with pytest.raises(ValueError, match="never modified"):
        clean_frames(split_model, frames_file, frames_file, "data", patch_size=32)
    with pytest.raises(DataFileError, match="not found"):
        clean_frames(split_model, tmp_path / "nope.h5", tmp_path / "o.h5", "data", patch_size=32)


def test_border_slivers_are_skipped_by_the_shifted_grids_only():
    """A quarter-patch sliver at the frame border is not worth a patch in the shifted grids: fewer patches,
    every pixel still predicted (by the first grid at least), identity still exact."""
    seen = []

    def counting(x):
        seen.append(len(x))
        return x

    f = torch.rand(256, 512)
    torch.testing.assert_close(blend_predict(counting, f, 32, offsets=[[0, 0], [24, 8], [8, 24], [16, 16]]), f)
    skipped = sum(seen)
    seen.clear()
    blend_predict(counting, f, 32, offsets=[[0, 0], [24, 8], [8, 24], [16, 16]], min_edge_cell=0)
    everything = sum(seen)
    seen.clear()
    blend_predict(counting, f, 32, offsets=[[0, 0]])
    plain = sum(seen)
    assert plain == 8 * 16 and everything / plain > 4.4 and skipped / plain < 4.2
