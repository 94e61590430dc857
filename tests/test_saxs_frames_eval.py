"""Whole-frame SAXS scores with known answers: the truth and the raw input as estimators, the spot, and
the median filter's floor tuned on validation frames where single photons must survive."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_sr.domains.saxs.frames_eval import (
    Frames,
    input_estimator,
    median_estimator,
    parse_run,
    score,
    spot_fractions,
    tune_median,
)

PHOTON_KEV = 8.0
CENTRE = (32.0, 20.0)


def synthetic_frames(seed: int, n: int = 2) -> Frames:
    """Porod-like signal of 8 keV photons (sparse single photons in the far field) plus 300 keV hits."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:64, :128] + 0.5
    r = np.hypot(y - CENTRE[0], x - CENTRE[1])
    lam = 400.0 / (1.0 + (r / 4.0) ** 2) ** 2 + 0.08
    signal = rng.poisson(lam, (n, 64, 128)) * PHOTON_KEV
    hits = (rng.random((n, 64, 128)) < 0.003) * 300.0
    return Frames(full=(signal + hits).astype(np.float32), signal=signal.astype(np.float32), centre=CENTRE, r_stop=3.0)


def truth_estimator(frames: Frames):
    lookup = {f.tobytes(): (s, f - s) for f, s in zip(frames.full, frames.signal)}
    return lambda frame: lookup[np.asarray(frame, np.float32).tobytes()]


def test_truth_and_raw_input_scores() -> None:
    f = synthetic_frames(0)
    truth = score(truth_estimator(f), f, spot=False)
    assert truth["radius_10"] == truth["radius_05"] == f.edges[-1]
    assert truth["signal_kept"] == 1.0 and truth["background_left"] == 0.0
    raw = score(input_estimator, f)
    assert raw["signal_kept"] == 1.0 and raw["background_left"] == pytest.approx(1.0)
    assert raw["spot_in_signal"] == raw["spot_in_total"] == pytest.approx(1.0)
    # 300 keV hits on 0.3 % of the pixels outweigh a far field of 0.08 photons (0.64 keV) per pixel
    assert raw["radius_10"] < f.edges[-1]


def test_median_floor_tuned_on_validation_keeps_single_photons() -> None:
    val, test = synthetic_frames(1), synthetic_frames(2)
    tuned, tried = tune_median(val)
    # with a floor below one photon the filter removes every isolated photon of the far field (MAD 0)
    assert tuned["median_floor_keV"] >= PHOTON_KEV
    assert len(tried) > 10
    best = score(median_estimator(tuned["median_k"], tuned["median_floor_keV"]), test, spot=False)
    no_floor = score(median_estimator(5.0, 0.0), test, spot=False)
    raw = score(input_estimator, test, spot=False)
    assert best["radius_10"] > max(no_floor["radius_10"], raw["radius_10"])
    assert best["background_left"] < 0.2 and no_floor["signal_kept"] < best["signal_kept"]
    # a 2x2 spot is a compact bright cluster: the 3x3 median replaces it by its dim surroundings
    s, total = spot_fractions(median_estimator(tuned["median_k"], tuned["median_floor_keV"]), test.full[0], CENTRE)
    assert s < 0.01 and total == pytest.approx(1.0, rel=1e-5)


def test_parse_run_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="LABEL=PATH"):
        parse_run(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="config_resolved.yaml missing"):
        parse_run(f"UNet={tmp_path}")
    (tmp_path / "config_resolved.yaml").write_text("{}")
    assert parse_run(f"UNet={tmp_path}") == ("UNet", tmp_path, None)
    with pytest.raises(FileNotFoundError, match="not found"):
        parse_run(f"UNet={tmp_path / 'checkpoints' / 'x.ckpt'}")


def test_flat_pedestal_from_the_far_field_is_removed_exactly() -> None:
    """An estimate = truth + a constant c everywhere: the pedestal taken beyond a radius where the truth
    is zero is c, and the truth comes back; a real flat offset of the frames is what it removes."""
    f = synthetic_frames(3)
    y, x = np.mgrid[:64, :128] + 0.5
    r = np.hypot(y - CENTRE[0], x - CENTRE[1])
    truth = np.where(r < 60.0, f.signal, 0.0).astype(np.float32)
    frames = Frames(full=truth + 5.0, signal=truth, centre=CENTRE, r_stop=3.0)
    from lit_sr.domains.saxs.frames_eval import with_pedestal

    est = with_pedestal(input_estimator, CENTRE, 60.0)
    for frame, t in zip(frames.full, frames.signal):
        s, n = est(frame)
        np.testing.assert_allclose(s, t, atol=1e-4)
        np.testing.assert_allclose(n, 5.0, atol=1e-4)
    got, exact = score(est, frames, spot=False), score(truth_estimator(frames), frames, spot=False)
    assert got["radius_05"] == exact["radius_05"] and got["background_left"] == pytest.approx(0.0, abs=1e-6)
    assert score(input_estimator, frames, spot=False)["background_left"] == pytest.approx(1.0)


def test_normalised_patches_and_equivariance_error_tell_c4_from_plain() -> None:
    from lit_sr.domains.saxs.frames import equivariance_error
    from lit_sr.domains.saxs.frames_eval import normalised_patches
    from lit_sr.domains.saxs.nets import SAXSDecompositionNet

    f = synthetic_frames(3)
    patches = normalised_patches(f.full, 16, n=4)
    assert patches.shape == (4, 1, 16, 16)
    assert float(patches.min()) == 0.0 and float(patches.max()) == 1.0  # clipped to the percentile range
    torch.manual_seed(0)
    c4 = SAXSDecompositionNet(backend="c4", latent_channels=4, features=[2, 4]).eval()
    plain = SAXSDecompositionNet(backend="plain", latent_channels=4, features=[4, 8]).eval()
    assert equivariance_error(c4, patches) < 1e-5
    assert equivariance_error(plain, patches) > 1e-3


def test_porod_fit_recovers_the_constant_background_and_its_subtraction_restores_the_profile() -> None:
    from lit_sr.domains.saxs.frames_eval import porod_background, with_porod_background
    from lit_sr.domains.saxs.radial_profile import log_radial_edges, radial_profile

    y, x = np.mgrid[:128, :256] + 0.5
    r = np.hypot(y - CENTRE[0], x - CENTRE[1])
    true = 5.0e5 * np.maximum(r, 1.0) ** -4.0
    frame = (true + 0.3).astype(np.float32)  # a flat background of 0.3 keV/px
    edges = log_radial_edges(4.0, 230.0)
    a, p, b = porod_background(frame, CENTRE, edges, 10.0)
    assert b == pytest.approx(0.3, rel=0.02) and p == pytest.approx(4.0, abs=0.05)
    s, n = with_porod_background(lambda f: (f, np.zeros_like(f)), CENTRE, edges, 10.0)(frame)
    prof = radial_profile(s, CENTRE, edges)[0]
    ref = radial_profile(true, CENTRE, edges)[0]
    assert np.allclose(prof, ref, rtol=0.05, atol=0.01)
    assert np.allclose(s + n, frame)  # what leaves the signal goes to the background


def test_continuation_rows_are_keyed_by_the_row_they_continue() -> None:
    from lit_sr.domains.saxs.frames_eval import full_row_names

    names = ["raw input", "… less a pedestal", "UNet", "… less a pedestal", "C4", "… less a pedestal"]
    full = full_row_names(names)
    assert len(set(full)) == len(names)
    assert full[3] == "UNet … less a pedestal" and full[4] == "C4"
