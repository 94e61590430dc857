"""Physical facts of the SAXS simulator."""

import h5py
import numpy as np
import pytest

from lit_sr.domains.saxs.sim import SAXSSimConfig, expected_signal, is_complete, make_geometry, simulate_saxs_file


@pytest.fixture(scope="module")
def simfile(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "saxs.h5"
    simulate_saxs_file(path, n_xray=3, n_full=3, seed=3, height=128, width=256)
    return path


def test_layout_and_attributes(simfile):
    with h5py.File(simfile) as h5:
        assert h5["xray"].shape == (3, 128, 256) and h5["full"].shape == h5["signal"].shape == (3, 128, 256)
        assert h5.attrs["complete"] and h5.attrs["photon_energy_keV"] == 8.0 and h5.attrs["seed"] == 3
        assert h5.attrs["pixel_size_um"] == 75.0 and h5.attrs["units"] == "keV"
    assert is_complete(simfile)


def test_photon_counting_and_dynamic_range(simfile):
    with h5py.File(simfile) as h5:
        x = h5["xray"][:]
    assert (x >= 0).all()
    np.testing.assert_array_equal(np.mod(x, 8.0), 0.0)  # integer photons x 8 keV
    for frame in x:
        pos = frame[frame > 0]
        assert pos.min() == 8.0
        assert pos.max() / pos.min() >= 1e4  # >= four orders of magnitude


def test_porod_falloff_and_beamstop():
    cfg = SAXSSimConfig(height=512, width=1024, porod_exponent=4.0, n_streaks_range=(0, 0), anisotropy_range=(0, 0))
    rng = np.random.default_rng(0)
    geom = make_geometry(cfg, rng)
    lam = expected_signal(cfg, geom, rng)
    cy, cx = geom.center
    # radial profile along the row through the centre, away from the rod: slope -> -4 in log-log
    ys = int(cy)
    r1, r2 = 60, 240
    vals = []
    for r in (r1, r2):
        ring = [
            lam[int(cy + r * np.sin(t)), int(cx + r * np.cos(t))]
            for t in np.linspace(0, 2 * np.pi, 64)
            if 0 <= int(cy + r * np.sin(t)) < 512 and 0 <= int(cx + r * np.cos(t)) < 1024
        ]
        vals.append(np.median(ring))
    slope = np.log(vals[1] / vals[0]) / np.log(r2 / r1)
    assert -4.3 < slope < -3.7
    assert lam[ys, int(cx)] == 0.0  # beam-stop shadow at the centre


def test_full_is_signal_plus_nonnegative_background(simfile):
    with h5py.File(simfile) as h5:
        full, sig = h5["full"][:], h5["signal"][:]
    bg = full - sig
    assert bg.min() >= -1e-3 * max(1.0, float(full.max())) * 1e-3
    assert (bg > 100).mean() > 1e-4  # high-energy hits exist
    assert np.median(bg) > 0  # diffuse fog everywhere


def test_streak_direction_varies_between_shots():
    cfg = SAXSSimConfig(height=256, width=512, anisotropy_range=(0, 0))
    rng = np.random.default_rng(1)
    geom = make_geometry(cfg, rng)
    cy, cx = geom.center
    y, x = np.mgrid[0:256, 0:512]
    phi = np.arctan2(y + 0.5 - cy, x + 0.5 - cx)
    ring = np.abs(np.hypot(y + 0.5 - cy, x + 0.5 - cx) - 40) < 2
    dirs = []
    for _ in range(6):
        lam = expected_signal(cfg, geom, rng)
        k = np.argmax(np.where(ring, lam, 0))
        dirs.append(np.mod(phi.flat[k], np.pi))
    assert np.ptp(dirs) > 0.5  # dominant direction changes


def test_incomplete_file_detected(tmp_path):
    p = tmp_path / "bad.h5"
    with h5py.File(p, "w") as h5:
        h5.create_dataset("xray", data=np.zeros((1, 8, 8)))
    assert not is_complete(p)
    assert not is_complete(tmp_path / "missing.h5")
