"""LR/HR npy-folder reader: round trip and one clear error per kind of bad folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lit_sr.data.validate import DataFileError
from lit_sr.domains.lensing.npy_folder import load_npy_pair, scan_npy_pairs

CLASSES = ("no_sub", "cdm", "vortex")


def _make(folder: Path, n: int = 4, lr: int = 5, leading_axis: bool = False, seed: int = 0) -> dict[str, tuple]:
    rng = np.random.default_rng(seed)
    (folder / "LR").mkdir(parents=True)
    (folder / "HR").mkdir()
    pairs = {}
    for k in range(n):
        hr = rng.random((2 * lr, 2 * lr))
        low = hr.reshape(lr, 2, lr, 2).mean(axis=(1, 3))
        name = f"lens_{k:03d}.npy"
        np.save(folder / "HR" / name, hr[None] if leading_axis else hr)
        np.save(folder / "LR" / name, (low[None] if leading_axis else low).astype(np.float32))
        pairs[name] = (low, hr)
    return pairs


def test_round_trip_labels_and_leading_axis(tmp_path):
    pairs = _make(tmp_path, leading_axis=True)
    (tmp_path / "labels.csv").write_text("name,label\nlens_000.npy,2\nlens_001,cdm\nlens_002,0\nlens_003.npy,vortex\n")
    idx = scan_npy_pairs(tmp_path, class_names=CLASSES)
    assert len(idx) == 4 and idx.names == tuple(sorted(pairs))
    assert idx.lr_shape == (5, 5) and idx.hr_shape == (10, 10)
    np.testing.assert_array_equal(idx.labels, [2, 1, 0, 2])
    for i, name in enumerate(idx.names):
        lr, hr = load_npy_pair(idx, i)
        assert lr.dtype == np.float32 and hr.dtype == np.float32 and lr.shape == (5, 5) and hr.shape == (10, 10)
        np.testing.assert_allclose(hr, pairs[name][1], rtol=1e-6)
        np.testing.assert_allclose(lr, pairs[name][0], rtol=1e-6)
        # the pair is consistent: LR is the 2x2 mean of HR
        np.testing.assert_allclose(lr, hr.reshape(5, 2, 5, 2).mean(axis=(1, 3)), rtol=1e-5)


def test_no_labels_file(tmp_path):
    _make(tmp_path, n=2)
    assert scan_npy_pairs(tmp_path).labels is None


def _err(folder, **kw) -> str:
    with pytest.raises(DataFileError) as info:
        scan_npy_pairs(folder, **kw)
    return str(info.value)


def test_missing_subfolder(tmp_path):
    (tmp_path / "LR").mkdir()
    msg = _err(tmp_path)
    assert "HR" in msg and "missing HR subfolder" in msg


def test_unmatched_names_listed_on_both_sides(tmp_path):
    _make(tmp_path, n=3)
    np.save(tmp_path / "LR" / "extra_lr.npy", np.zeros((5, 5)))
    np.save(tmp_path / "HR" / "extra_hr.npy", np.zeros((10, 10)))
    msg = _err(tmp_path)
    assert (
        "extra_lr.npy" in msg and "extra_hr.npy" in msg and "without HR partner" in msg and "without LR partner" in msg
    )


def test_shape_mismatch_names_file_and_both_shapes(tmp_path):
    _make(tmp_path, n=3)
    np.save(tmp_path / "HR" / "lens_002.npy", np.zeros((12, 10)))
    msg = _err(tmp_path)
    assert "lens_002.npy" in msg and "(12, 10)" in msg and "(10, 10)" in msg and "lens_000.npy" in msg


def test_non_finite_value_names_file_and_index(tmp_path):
    _make(tmp_path, n=3)
    hr = np.ones((10, 10))
    hr[3, 7] = np.nan
    np.save(tmp_path / "HR" / "lens_001.npy", hr)
    msg = _err(tmp_path)
    assert "HR/lens_001.npy" in msg and "(3, 7)" in msg and "nan" in msg
    assert scan_npy_pairs(tmp_path, check_finite=False).names  # the check can be skipped


def test_wrong_factor(tmp_path):
    folder = tmp_path / "f"
    (folder / "LR").mkdir(parents=True)
    (folder / "HR").mkdir()
    np.save(folder / "LR" / "a.npy", np.zeros((5, 5)))
    np.save(folder / "HR" / "a.npy", np.zeros((15, 15)))
    msg = _err(folder)
    assert "a.npy" in msg and "(15, 15)" in msg and "(5, 5)" in msg and "2x" in msg


def test_label_outside_classes(tmp_path):
    _make(tmp_path, n=2)
    (tmp_path / "labels.csv").write_text("name,label\nlens_000,1\nlens_001,7\n")
    msg = _err(tmp_path, class_names=CLASSES)
    assert "labels.csv" in msg and "'7'" in msg and "lens_001" in msg and "vortex" in msg
    (tmp_path / "labels.csv").write_text("name,label\nlens_000,1\n")
    assert "no label for 1 pair(s): lens_001.npy" in _err(tmp_path, class_names=CLASSES)
    (tmp_path / "labels.csv").write_text("name,label\nlens_000,1\nlens_001,1\nlens_009,1\n")
    assert "lens_009" in _err(tmp_path, class_names=CLASSES)


def test_not_an_image(tmp_path):
    _make(tmp_path, n=2)
    np.save(tmp_path / "LR" / "lens_001.npy", np.zeros((2, 5, 5)))
    msg = _err(tmp_path)
    assert "LR/lens_001.npy" in msg and "(2, 5, 5)" in msg
    np.save(tmp_path / "LR" / "lens_001.npy", np.array(["a", "b"]))
    assert "dtype" in _err(tmp_path)
