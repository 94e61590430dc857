"""Bragg-like peaks of the SAXS simulator (lit_sr/domains/saxs/sim.py) and the data module's simulator overrides."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from lit_sr.domains.saxs.data import SAXSDataModule
from lit_sr.domains.saxs.sim import SAXSSimConfig, bragg_peaks, simulate_saxs_file

E_PHOTON = 8.0  # keV


def test_bragg_peaks_are_centrosymmetric_pairs_holding_the_drawn_photons() -> None:
    cfg = SAXSSimConfig(height=128, width=128, bragg_pairs=5, bragg_radius_range=(80.0, 160.0))  # 20-40 px here
    centre = (63.3, 64.6)
    image, peaks = bragg_peaks(cfg, centre, np.random.default_rng(3))
    assert peaks.shape == (10, 4)
    a, b = peaks[0::2], peaks[1::2]
    assert np.allclose(a[:, :2] + b[:, :2], 2 * np.asarray(centre))  # Friedel pairs about the beam
    assert np.array_equal(a[:, 2:], b[:, 2:])  # same photons and width
    radii = np.hypot(peaks[:, 0] - centre[0], peaks[:, 1] - centre[1])
    assert np.allclose(radii, radii[0]) and 20.0 <= radii[0] <= 40.0  # one ring per shot
    assert (peaks[:, 2] >= 1.0e3).all() and (peaks[:, 2] <= 1.0e5).all()
    assert (peaks[:, 3] >= 0.5).all() and (peaks[:, 3] <= 1.0).all()
    assert image.sum() == pytest.approx(peaks[:, 2].sum(), rel=1e-9)  # every peak lies inside the frame
    # compact: the 3x3 pixels about each peak hold most of its photons (sigma <= 1 px)
    for row, col, photons, sigma in peaks:
        r, c = int(row), int(col)
        assert image[r - 1 : r + 2, c - 1 : c + 2].sum() > 0.45 * photons


def test_simulated_file_with_peaks_is_poisson_counted_and_the_default_frames_unchanged(tmp_path) -> None:
    small = dict(height=64, width=128)
    plain = simulate_saxs_file(tmp_path / "plain.h5", 2, 1, seed=5, **small)
    same = simulate_saxs_file(tmp_path / "same.h5", 2, 1, seed=5, bragg_photons_range=(1.0, 2.0), **small)
    peaks = simulate_saxs_file(tmp_path / "peaks.h5", 2, 1, seed=5, bragg_pairs=6, **small)
    with h5py.File(plain) as p, h5py.File(same) as s, h5py.File(peaks) as q:
        assert np.array_equal(p["xray"][()], s["xray"][()])  # no peaks, no extra random draws
        assert int(q.attrs["bragg_pairs"]) == 6
        x = q["xray"][()]
        counts = x / E_PHOTON
        assert np.array_equal(counts, np.round(counts))  # whole photons


def test_data_module_simulates_peak_files_under_their_own_prefix(tmp_path) -> None:
    kw = dict(frame_shape=(64, 128), n_xray_frames=2, n_full_frames=2, n_eval_frames=1, patch_size=32)
    dm = SAXSDataModule(data_dir=str(tmp_path), file_prefix="saxs_bragg", sim={"bragg_pairs": 4}, **kw)
    assert {p.name for p in dm.paths.values()} == {f"saxs_bragg_{s}.h5" for s in ("train", "val", "test")}
    dm.prepare_data()
    with h5py.File(dm.paths["train"]) as h5:
        assert int(h5.attrs["bragg_pairs"]) == 4
    with pytest.raises(ValueError, match="data.sim"):
        SAXSDataModule(data_dir=str(tmp_path), sim={"bragg_peaks": 4}, **kw)
    with pytest.raises(ValueError, match="frame_shape"):
        SAXSDataModule(data_dir=str(tmp_path), sim={"height": 64}, **kw)
