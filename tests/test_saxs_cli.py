"""SAXS background removal through the spine: experiments compose, train + test, predict full frames.

Everything runs in-process (``compose_config`` + ``lit_sr.cli.run``) on tiny simulated frames
(64 x 128), 32 x 32 patches and nets of a few thousand parameters; one test goes through
``python run.py`` to check what a user sees on bad input.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import SAXS_SMALL, TINY, compose_config, run_py

from lit_sr.cli import run
from lit_sr.data.validate import DataFileError
from lit_sr.domains.saxs.data import SAXSDataModule
from lit_sr.domains.saxs.sim import SAXSSimConfig, make_geometry, simulate_background, simulate_xray_frame

SAXS_EXPERIMENTS = ["saxs_equnet", "saxs_unet"]
TINY_NETS = {"saxs_equnet": "model.net.features=[2,4,4,4]", "saxs_unet": "model.net.features=[4,8,8,8]"}


def _data_overrides(data_dir: Path) -> list[str]:
    out = [f"paths.data_dir={data_dir}"]
    for k, v in SAXS_SMALL.items():
        out.append(f"data.{k}=[{','.join(map(str, v))}]" if isinstance(v, tuple) else f"data.{k}={v}")
    return out


def _overrides(experiment: str, data_dir: Path) -> list[str]:
    return [
        f"experiment={experiment}",
        *TINY,
        *_data_overrides(data_dir),
        TINY_NETS[experiment],
        "debug=limit",
        "trainer.max_epochs=1",
        "model.optimizer.lr=1e-3",
    ]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def saxs_data_dir(tmp_path_factory) -> Path:
    """Tiny simulated train/val/test files, simulated once for the module."""
    d = tmp_path_factory.mktemp("saxs_data")
    SAXSDataModule(data_dir=str(d / "saxs"), **SAXS_SMALL).prepare_data()
    return d


@pytest.fixture(scope="module")
def trained(saxs_data_dir, tmp_path_factory) -> dict[str, Path]:
    """Train + test both experiments a few steps; returns the best checkpoint of each."""
    ckpts = {}
    for exp in SAXS_EXPERIMENTS:
        root = tmp_path_factory.mktemp(f"train_{exp}")
        cfg = compose_config(_overrides(exp, saxs_data_dir), root)
        run(cfg)
        found = sorted((root / "run" / "checkpoints").glob("epoch*.ckpt"))
        assert found, f"{exp}: no checkpoint written"
        ckpts[exp] = found[-1]
        metrics = (root / "run" / "metrics.csv").read_text()
        for key in ("test/signal_psnr", "test/input_psnr", "test/median_psnr", "test/hit_recall", "val/loss"):
            assert key in metrics, f"{exp}: {key} not logged"
    return ckpts


@pytest.mark.parametrize("experiment", SAXS_EXPERIMENTS)
def test_experiment_composes(experiment, tmp_path):
    cfg = compose_config([f"experiment={experiment}"], tmp_path)
    assert cfg.data._target_ == "lit_sr.domains.saxs.data.SAXSDataModule"
    assert cfg.model._target_ == "lit_sr.models.decomposition.DecompositionModule"
    assert cfg.model.net.backend == ("c4" if experiment == "saxs_equnet" else "plain")
    assert cfg.data.batch_size == 16
    assert cfg.model.optimizer._target_ == "torch.optim.AdamW" and cfg.model.optimizer.weight_decay == 0.0
    assert cfg.callbacks.image_panels.log_scale is True
    assert cfg.predict.patch_size == cfg.data.patch_size


def test_model_config_defaults_to_study(tmp_path):
    """Without the experiments' CPU recipe the model config is the study's: C4, AdamW lr 1e-4, 5.89 M."""
    from hydra.utils import instantiate

    cfg = compose_config(["~experiment", "data=saxs", "model=decomposition"], tmp_path).model
    assert cfg.net.backend == "c4" and cfg.net.features is None and cfg.net.noise_activation == "relu"
    assert cfg.optimizer._target_ == "torch.optim.AdamW"
    assert cfg.optimizer.lr == pytest.approx(1e-4) and cfg.optimizer.weight_decay == 0.0
    net = instantiate(cfg.net, _convert_="all")
    assert 5.8e6 < sum(p.numel() for p in net.parameters()) < 6.0e6


def test_train_and_test_both(trained):
    assert set(trained) == set(SAXS_EXPERIMENTS)
    ckpt = torch.load(trained["saxs_equnet"], map_location="cpu", weights_only=True)  # plain hparams only
    assert "state_dict" in ckpt


def _write_frames(path: Path, n: int = 2, shape=(64, 96), geometry: bool = True) -> tuple[tuple[float, float], float]:
    """Simulated full shots (keV) with the beam centre and beam-stop radius as file attributes (as the
    simulator writes them) unless ``geometry`` is False; returns (centre, beam-stop radius)."""
    cfg = SAXSSimConfig(height=shape[0], width=shape[1])
    rng = np.random.default_rng(3)
    geom = make_geometry(cfg, rng)
    frames = np.stack([simulate_xray_frame(cfg, geom, rng) + simulate_background(cfg, rng) for _ in range(n)])
    stop = max(2.0, cfg.beamstop_radius * cfg.scale())
    with h5py.File(path, "w") as h5:
        h5.create_dataset("shots", data=frames.astype(np.float32))
        h5.create_dataset("single", data=frames[0].astype(np.float32))
        if geometry:
            h5.attrs["beam_center"] = np.asarray(geom.center)
            h5.attrs["beamstop_radius_px"] = stop
    return geom.center, stop


def _profile_by_hand(frame: np.ndarray, centre, edges) -> np.ndarray:
    """Mean of the pixels whose centre (i + 0.5, j + 0.5) lies in [edge_k, edge_k+1) from the beam."""
    h, w = frame.shape
    out = np.full(len(edges) - 1, np.nan)
    for k in range(len(edges) - 1):
        vals = [
            frame[i, j]
            for i in range(h)
            for j in range(w)
            if edges[k] <= np.hypot(i + 0.5 - centre[0], j + 0.5 - centre[1]) < edges[k + 1]
        ]
        if vals:
            out[k] = np.mean(np.asarray(vals, np.float64))
    return out


def _predict_cfg(experiment, ckpt, data_dir, root, frames, dataset, *extra, out="run"):
    return compose_config(
        [
            *_overrides(experiment, data_dir),
            "mode=predict",
            f"ckpt_path={ckpt}",
            f"predict.input={frames}",
            f"predict.dataset={dataset}",
            "predict.batch_size=4",
            *extra,
        ],
        root,
        output_dir=root / out,
    )


def test_predict_frames_writes_kev_and_keeps_input(trained, saxs_data_dir, tmp_path):
    frames = tmp_path / "frames.h5"
    _write_frames(frames)
    before = _sha256(frames)
    cfg = _predict_cfg("saxs_equnet", trained["saxs_equnet"], saxs_data_dir, tmp_path, frames, "shots")
    run(cfg)
    out = tmp_path / "run" / "frames_cleaned.h5"
    assert out.is_file()
    with h5py.File(frames, "r") as src, h5py.File(out, "r") as h5:
        x = src["shots"][()]
        assert {"shots_signal", "shots_background", "shots_signal_profile", "shots_background_profile"} <= set(h5)
        s, b = h5["shots_signal"][()], h5["shots_background"][()]
        assert s.shape == b.shape == x.shape == (2, 64, 96)
        assert h5.attrs["units"] == "keV" and h5.attrs["patch_size"] == 32
        assert h5.attrs["source_dataset"] == "shots"
    assert np.isfinite(s).all() and np.isfinite(b).all()
    assert s.min() >= -1e-3 and b.min() >= -1e-3  # both non-negative (up to round-off of the blend)
    # keV scale, not normalised units: photons carry 8 keV, the signal's maximum is of the input's order
    assert s.max() > 100.0 and s.max() <= x.max() * 1.01
    assert _sha256(frames) == before  # the input is never modified
    # a rank-2 dataset (one frame) gives a rank-2 output
    run(
        _predict_cfg(
            "saxs_equnet", trained["saxs_equnet"], saxs_data_dir, tmp_path, frames, "single", "predict.output=single.h5"
        )
    )
    with h5py.File(tmp_path / "run" / "single.h5", "r") as h5:
        assert h5["single_signal"].shape == (64, 96)
    # an existing output is not overwritten
    stamp = out.stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        run(_predict_cfg("saxs_equnet", trained["saxs_equnet"], saxs_data_dir, tmp_path, frames, "shots"))
    assert out.stat().st_mtime_ns == stamp and _sha256(frames) == before


def test_predict_jungfrau_frame_writes_kev_and_the_radial_profiles(trained, saxs_data_dir, tmp_path):
    """A full 512 x 1024 Jungfrau-size frame: signal and background in keV and the I(r) of both about the
    beam centre of the file's attributes (or the one given), bin by bin as recomputed by hand."""
    frames = tmp_path / "jungfrau.h5"
    centre, stop = _write_frames(frames, n=1, shape=(512, 1024))
    run(
        _predict_cfg(
            "saxs_unet", trained["saxs_unet"], saxs_data_dir, tmp_path, frames, "shots", "predict.batch_size=64"
        )
    )
    with h5py.File(tmp_path / "run" / "jungfrau_cleaned.h5", "r") as h5:
        s, b = h5["shots_signal"][0], h5["shots_background"][0]
        edges = h5["radial_edges_px"][()]
        prof_s, prof_b = h5["shots_signal_profile"][()], h5["shots_background_profile"][()]
        assert s.shape == b.shape == (512, 1024) and h5["shots_signal"].attrs["units"] == "keV"
        assert prof_s.shape == prof_b.shape == (1, len(edges) - 1)
        assert h5["shots_signal_profile"].attrs["units"] == "keV/px"
        np.testing.assert_allclose(h5.attrs["beam_center"], centre)
        assert h5.attrs["beamstop_radius_px"] == pytest.approx(stop)
        pixels = h5["radial_pixels"][()]
    # bins from the beam-stop (+ 2 px of beam jitter) to the farthest corner of the frame
    assert edges[0] == pytest.approx(round(stop + 2.0))
    far = np.hypot(max(centre[0], 512 - centre[0]), max(centre[1], 1024 - centre[1]))
    assert edges[-1] == pytest.approx(round(far)) and np.all(np.diff(edges) > 0)
    r = np.hypot(np.arange(512)[:, None] + 0.5 - centre[0], np.arange(1024)[None, :] + 0.5 - centre[1])
    assert pixels.sum() == ((r >= edges[0]) & (r < edges[-1])).sum()
    for got, frame in ((prof_s[0], s), (prof_b[0], b)):
        # the six innermost bins lie inside a box about the beam: recounted pixel by pixel there
        half = int(edges[6]) + 2
        r0, c0 = int(centre[0]) - half, int(centre[1]) - half
        box = frame[r0 : r0 + 2 * half, c0 : c0 + 2 * half]
        np.testing.assert_allclose(
            got[:6], _profile_by_hand(box, (centre[0] - r0, centre[1] - c0), edges[:7]), rtol=1e-5
        )
        full = [frame[(r >= lo) & (r < hi)].mean(dtype=np.float64) for lo, hi in zip(edges[:-1], edges[1:])]
        np.testing.assert_allclose(got, full, rtol=1e-5)
    # keV per pixel: near the beam the Porod signal is thousands of keV per pixel, far out a few
    assert prof_s[0, 0] > 1e3 > prof_s[0, -1]
    # a file without the attributes: the given beam centre and beam-stop radius are used
    small = tmp_path / "small.h5"
    _write_frames(small, n=1, geometry=False)
    run(
        _predict_cfg(
            "saxs_unet",
            trained["saxs_unet"],
            saxs_data_dir,
            tmp_path,
            small,
            "shots",
            "predict.output=given.h5",
            "predict.beam_center=[30.0,20.0]",
            "predict.beamstop_radius_px=3",
        )
    )
    with h5py.File(tmp_path / "run" / "given.h5", "r") as h5:
        np.testing.assert_allclose(h5.attrs["beam_center"], (30.0, 20.0))
        assert h5["radial_edges_px"][0] == 5.0 and h5["radial_edges_px"][-1] == round(np.hypot(34.0, 76.0))


def test_predict_frames_without_beam_geometry_refused(trained, saxs_data_dir, tmp_path):
    frames = tmp_path / "nogeom.h5"
    _write_frames(frames, n=1, geometry=False)
    with pytest.raises(DataFileError, match=r"attribute 'beam_center' missing.*predict.beam_center"):
        run(_predict_cfg("saxs_unet", trained["saxs_unet"], saxs_data_dir, tmp_path, frames, "shots"))
    assert not list((tmp_path / "run").glob("*.h5*")), "no (partial) output without the beam geometry"


def test_predict_wrong_checkpoint(trained, saxs_data_dir, tmp_path):
    frames = tmp_path / "frames.h5"
    _write_frames(frames, n=1)
    cfg = _predict_cfg("saxs_unet", trained["saxs_equnet"], saxs_data_dir, tmp_path, frames, "shots")
    with pytest.raises(ValueError, match="checkpoint does not match the configured model"):
        run(cfg)
    assert not (tmp_path / "run" / "frames_cleaned.h5").exists()


@pytest.fixture()
def bad_frames(tmp_path) -> Path:
    path = tmp_path / "bad.h5"
    rng = np.random.default_rng(0)
    good = rng.uniform(0, 50, (2, 64, 96)).astype(np.float32)
    nan = good.copy()
    nan[1, 5, 7] = np.nan
    with h5py.File(path, "w") as h5:
        h5.create_dataset("nan", data=nan)
        h5.create_dataset("rank4", data=good[None])
        h5.create_dataset("small", data=good[:, :16, :16])
    return path


@pytest.mark.parametrize(
    "dataset, message",
    [
        ("absent", r"\[absent\]: dataset missing \(datasets present: nan, rank4, small\)"),
        ("nan", r"\[nan\]: non-finite value nan at index \(1, 5, 7\)"),
        ("rank4", r"\[rank4\]: expected frames of rank 2 \[H, W\] or 3 \[N, H, W\], found shape \(1, 2, 64, 96\)"),
        ("small", r"\[small\]: patch size 32 is larger than the frames \(16x16\)"),
    ],
)
def test_predict_bad_input(trained, saxs_data_dir, tmp_path, bad_frames, dataset, message):
    before = _sha256(bad_frames)
    cfg = _predict_cfg("saxs_equnet", trained["saxs_equnet"], saxs_data_dir, tmp_path, bad_frames, dataset)
    with pytest.raises(DataFileError, match=message):
        run(cfg)
    assert not list((tmp_path / "run").glob("*.h5*")), "no (partial) output on bad input"
    assert _sha256(bad_frames) == before


def test_predict_bad_input_cli_message(trained, saxs_data_dir, tmp_path, bad_frames):
    """Through ``python run.py``: non-zero exit and the file/dataset/problem in the output."""
    res = run_py(
        [
            "mode=predict",
            "experiment=saxs_equnet",
            *TINY,
            *_data_overrides(saxs_data_dir),
            TINY_NETS["saxs_equnet"],
            f"paths.root_dir={tmp_path}",
            f"ckpt_path={trained['saxs_equnet']}",
            f"predict.input={bad_frames}",
            "predict.dataset=absent",
        ],
        cwd=tmp_path,
        timeout=120,
    )
    assert res.returncode != 0
    assert f"{bad_frames} [absent]: dataset missing (datasets present: nan, rank4, small)" in res.stdout


@pytest.mark.ddp
def test_ddp_two_processes_train_and_test(saxs_data_dir, tmp_path):
    """saxs_equnet on 2 CPU processes: the hit counts and PSNR states are reduced over both ranks and
    the test metrics are written once."""
    args = [
        *_overrides("saxs_equnet", saxs_data_dir),
        f"paths.root_dir={tmp_path}",
        "trainer=ddp_sim",
        "model.warmup_epochs=1",
        "trainer.max_epochs=2",
    ]
    res = run_py(args, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:]
    (out,) = list((tmp_path / "outputs" / "saxs_equnet").iterdir())
    with open(out / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("test/signal_psnr")]
    assert len(rows) == 1, rows
    assert 0.0 <= float(rows[0]["test/hit_recall"]) <= 1.0 and float(rows[0]["test/input_hit_recall"]) == 0.0
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in res.stdout
