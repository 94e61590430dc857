"""Azimuthal profile I(r): geometry, a Porod power law, the usable radius and the frame table."""

import h5py
import numpy as np
import pytest

from lit_sr.domains.saxs.radial_profile import log_radial_edges, profile_table, radial_profile, usable_radius
from lit_sr.domains.saxs.sim import simulate_saxs_file


def test_uniform_frame_flat_profile_and_annulus_areas():
    frame = np.full((200, 300), 3.5)
    edges = np.array([10.0, 20.0, 40.0, 80.0])
    prof, counts = radial_profile(frame, (100.0, 150.0), edges)
    np.testing.assert_allclose(prof, 3.5)
    areas = np.pi * (edges[1:] ** 2 - edges[:-1] ** 2)  # every annulus lies inside the frame
    np.testing.assert_allclose(counts, areas, rtol=0.02)


def test_porod_law_slope():
    h, w, c = 400, 400, (200.0, 200.0)
    y, x = np.mgrid[:h, :w] + 0.5
    r = np.hypot(y - c[0], x - c[1])
    frame = 1e8 / r**4
    edges = log_radial_edges(10.0, 190.0, 12)
    prof, _ = radial_profile(frame[None], c, edges)
    mid = np.sqrt(edges[1:] * edges[:-1])
    slope = np.polyfit(np.log(mid), np.log(prof[0]), 1)[0]
    assert slope == pytest.approx(-4.0, abs=0.05)


def test_usable_radius():
    edges = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    truth = np.array([10.0, 5.0, 2.0, 1.0])
    assert usable_radius(truth, truth, edges) == 16.0
    assert usable_radius(truth * [1.0, 1.05, 1.2, 1.0], truth, edges) == 4.0  # third bin off by 20 %
    assert usable_radius(truth * [0.5, 1, 1, 1], truth, edges) == 1.0


def test_profile_table_of_perfect_and_raw_cleaning(tmp_path):
    src = simulate_saxs_file(tmp_path / "f.h5", 0, 2, seed=3, height=64, width=128)
    with h5py.File(src) as h5:
        full, signal = h5["full"][:], h5["signal"][:]
    for name, cleaned in (("perfect", signal), ("raw", full)):
        out = tmp_path / f"{name}.h5"
        with h5py.File(out, "w") as h5:
            h5["full_signal"] = cleaned
        rows = profile_table(src, out, n_bins=8).splitlines()
        cleaned_col = [r.split("|")[5].strip() for r in rows[2:-1]]
        input_col = [r.split("|")[3].strip() for r in rows[2:-1]]
        if name == "perfect":
            assert all(v in ("+0.000", "-0.000") for v in cleaned_col), rows
            assert rows[-1].split("|")[5].strip() == rows[-2].split("|")[1].split("-")[1].strip()
        else:
            assert cleaned_col == input_col
            assert float(input_col[-1]) > 0.1  # background is additive: the far field is too bright
