"""Lensing DataModule: default file, D4 augmentation physics, npy-folder mode and its bad-input messages."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from lit_sr.data.transforms import IntensityTransform
from lit_sr.data.validate import DataFileError
from lit_sr.domains.lensing.data import (
    LensBatchBuilder,
    LensingDataModule,
    d4_images,
    d4_params,
    d4_spin2,
    d4_vector,
    lensing_schema,
)
from lit_sr.domains.lensing.sim import (
    PARAM_FIELDS,
    LensCosmology,
    LensRenderer,
    LensSimConfig,
    lr_from_hr,
    sample_lens_params,
)

ALL_FLIPS = np.array(list(itertools.product([False, True], repeat=3)))  # the 8 elements of D4


def _small_module(tmp_path: Path, **kw) -> LensingDataModule:
    kw = {
        "data_dir": str(tmp_path / "data"),
        "n_lenses": 30,
        "image_size": 24,
        "batch_size": 4,
        "eval_batch_size": 8,
        "split": (0.6, 0.2, 0.2),
        **kw,
    }
    return LensingDataModule(**kw)


# ---------------------------------------------------------------------------------------------- default file


def test_default_file_simulated_once_with_schema_and_provenance(tmp_path):
    dm = _small_module(tmp_path)
    dm.prepare_data()
    path = dm.path
    assert path.is_file() and path.parent == tmp_path / "data"
    info = lensing_schema().validate(path)
    assert info.n == 30 and info.shapes["hr"] == (24, 24) and info.shapes["lr"] == (12, 12)
    assert set(PARAM_FIELDS) <= set(info.fields)
    with h5py.File(path) as h5:
        assert h5.attrs["seed"] == 0 and "lenstronomy" in h5.attrs["simulator"]
        config = LensSimConfig.from_json(h5.attrs["config"])
        assert config.lr_psf_fwhm_arcsec is None and config.image_size == 24
        labels = h5["label"][:]
    assert np.bincount(labels, minlength=3).tolist() == [10, 10, 10]  # balanced in every triple
    mtime = path.stat().st_mtime_ns
    dm.prepare_data()  # complete: not simulated again
    assert path.stat().st_mtime_ns == mtime
    # another simulator option -> another file (never a stale one); Hydra's ListConfig ranges are accepted
    from omegaconf import OmegaConf

    other = _small_module(
        tmp_path, sim=OmegaConf.create({"lr_psf_fwhm_arcsec": 0.18, "vortex_mass_range_msun": [1.0e10, 2.0e10]})
    )
    assert other.path != path
    assert other.sim_config().vortex_mass_range_msun == (1.0e10, 2.0e10)


def test_batches_hold_file_rows_in_model_space(tmp_path):
    dm = _small_module(tmp_path, transform=IntensityTransform(2.0), augment=False)
    dm.prepare_data()
    dm.setup()
    assert sum(len(s) for s in dm.splits.values()) == 30
    batch = next(iter(dm.test_dataloader()))
    rows = batch["index"].numpy()
    with h5py.File(dm.path) as h5:
        np.testing.assert_allclose(batch["input"][:, 0].numpy(), h5["lr"][np.sort(rows)] / 2.0, rtol=1e-6)
        np.testing.assert_allclose(batch["target"][:, 0].numpy(), h5["hr"][np.sort(rows)] / 2.0, rtol=1e-6)
        np.testing.assert_allclose(batch["theta_e_arcsec"].numpy(), h5["theta_e_arcsec"][np.sort(rows)])
        assert batch["n_subhalos"].dtype == torch.int64
    assert batch["input"].shape[1:] == (1, 12, 12) and batch["target"].shape[1:] == (1, 24, 24)
    dm.check_batch(batch)
    # every split is disjoint and covers the file
    all_rows = np.concatenate([ds.indices for ds in dm.splits.values()])
    assert sorted(all_rows.tolist()) == list(range(30))


def test_bad_options_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown simulator option"):
        _small_module(tmp_path, sim={"lr_psf": 0.2}).prepare_data()
    with pytest.raises(ValueError, match="data.scale=4"):
        _small_module(tmp_path, scale=4)
    with pytest.raises(ValueError, match="contradicts data.image_size"):
        _small_module(tmp_path, sim={"image_size": 40}).sim_config()


def test_user_h5_file_with_wrong_factor_named(tmp_path):
    path = tmp_path / "mine.h5"
    with h5py.File(path, "w") as h5:
        h5["hr"] = np.zeros((4, 30, 30), np.float32)
        h5["lr"] = np.zeros((4, 10, 10), np.float32)
    dm = _small_module(tmp_path, file=str(path))
    dm.prepare_data()
    with pytest.raises(DataFileError, match=r"mine.h5 \[hr\]: HR images \(30, 30\) are not data.scale=2"):
        dm.setup()
    assert not (tmp_path / "data").exists()


# ---------------------------------------------------------------------------------------------- D4 physics


def test_d4_images_are_the_eight_symmetries():
    img = np.arange(16.0).reshape(1, 4, 4)
    outs = {d4_images(img, f[None]).tobytes() for f in ALL_FLIPS}
    assert len(outs) == 8  # all distinct
    expected = {np.rot90(m, k).tobytes() for k in range(4) for m in (img[0], img[0].T)}
    assert outs == expected  # and exactly the rotations / reflections


@pytest.fixture(scope="module")
def renderer() -> LensRenderer:
    return LensRenderer(LensSimConfig(image_size=40, supersampling=1), image_size=40)


@pytest.mark.parametrize("label", [0, 2])
def test_d4_parameters_render_the_transformed_image(renderer, label):
    """Transforming the parameters and re-rendering gives the transformed image, for all 8 elements: checks the
    spin-2 signs of ellipticity and shear and the vector rules against lenstronomy itself."""
    cfg = dataclasses.replace(renderer.config, lens_center_jitter_arcsec=0.2, shear_max=0.1)
    rng = np.random.default_rng(3)
    p = sample_lens_params(rng, label, cfg, LensCosmology.from_config(cfg))
    p = dataclasses.replace(p, theta_e_arcsec=0.6, source_r_eff_arcsec=0.15)  # the ring fits the 2" field
    image = renderer.render(p)[None]
    keys = (
        "lens_x_arcsec",
        "lens_y_arcsec",
        "lens_e1",
        "lens_e2",
        "shear_gamma1",
        "shear_gamma2",
        "source_x_arcsec",
        "source_y_arcsec",
    )
    errors = []
    for f in ALL_FLIPS:
        flips = f[None]
        moved = d4_params({k: np.array([getattr(p, k)]) for k in keys}, flips)
        se1, se2 = d4_spin2(np.array([p.source_e1]), np.array([p.source_e2]), flips)
        sx, sy = d4_vector(p.sub_x_arcsec[None], p.sub_y_arcsec[None], flips)
        q = dataclasses.replace(
            p,
            **{k: float(v[0]) for k, v in moved.items()},
            source_e1=float(se1[0]),
            source_e2=float(se2[0]),
            sub_x_arcsec=sx[0],
            sub_y_arcsec=sy[0],
        )
        errors.append(np.abs(renderer.render(q) - d4_images(image, flips)[0]).max() / image.max())
    assert max(errors) < 1e-6, errors
    # and a wrong rule would be seen: negating e2 under a transposition changes the image
    q = dataclasses.replace(
        p, lens_e1=-p.lens_e1, lens_e2=-p.lens_e2, lens_x_arcsec=p.lens_y_arcsec, lens_y_arcsec=p.lens_x_arcsec
    )
    assert np.abs(renderer.render(q) - d4_images(image, ALL_FLIPS[1][None])[0]).max() / image.max() > 1e-3


def test_batch_builder_moves_lr_hr_and_parameters_together():
    rng = np.random.default_rng(0)
    hr = rng.random((16, 8, 8)).astype(np.float32)
    raw = {
        "hr": hr,
        "lr": lr_from_hr(hr, LensSimConfig(image_size=8)).astype(np.float32),
        "label": rng.integers(0, 3, 16),
        "theta_e_arcsec": rng.random(16).astype(np.float32),
        "lens_e1": rng.random(16).astype(np.float32),
        "lens_e2": rng.random(16).astype(np.float32),
        "source_x_arcsec": rng.random(16).astype(np.float32),
        "source_y_arcsec": rng.random(16).astype(np.float32),
    }
    rows = np.arange(100, 116)
    batch = LensBatchBuilder(IntensityTransform(1.0), augment=True)(raw, rows, np.random.default_rng(7))
    out_hr, out_lr = batch["target"][:, 0].numpy(), batch["input"][:, 0].numpy()
    # LR is still the 2x2 mean of HR: both got the same operation
    np.testing.assert_allclose(out_hr.reshape(16, 4, 2, 4, 2).mean((2, 4)), out_lr, rtol=1e-5)
    changed = [not np.array_equal(a, b) for a, b in zip(out_hr, hr)]
    assert 8 <= sum(changed) < 16  # random per lens (7 of 8 elements change an image)
    flips = np.random.default_rng(7).integers(0, 2, size=(16, 3)).astype(bool)
    np.testing.assert_allclose(out_hr, d4_images(hr, flips))
    expected = d4_params({k: raw[k] for k in ("lens_e1", "lens_e2", "source_x_arcsec", "source_y_arcsec")}, flips)
    for k, v in expected.items():
        np.testing.assert_allclose(batch[k].numpy(), v)
    np.testing.assert_array_equal(batch["theta_e_arcsec"].numpy(), raw["theta_e_arcsec"])  # invariant
    np.testing.assert_array_equal(batch["index"].numpy(), rows)
    # no augmentation: identity
    plain = LensBatchBuilder(IntensityTransform(1.0), augment=False)(raw, rows, None)
    np.testing.assert_array_equal(plain["target"][:, 0].numpy(), hr)


def test_non_square_images_are_never_transposed():
    hr = np.random.default_rng(0).random((32, 4, 8)).astype(np.float32)
    raw = {"hr": hr, "lr": hr.reshape(32, 2, 2, 4, 2).mean((2, 4))}
    batch = LensBatchBuilder(IntensityTransform(1.0), augment=True)(raw, np.arange(32), np.random.default_rng(1))
    assert batch["target"].shape == (32, 1, 4, 8)
    for out, img in zip(batch["target"][:, 0].numpy(), hr):
        assert any(np.array_equal(out, m) for m in (img, img[::-1], img[:, ::-1], img[::-1, ::-1]))


# ---------------------------------------------------------------------------------------------- npy folder


def _npy_folder(folder: Path, n: int = 10, lr: int = 6, labels: bool = True) -> Path:
    rng = np.random.default_rng(0)
    (folder / "LR").mkdir(parents=True)
    (folder / "HR").mkdir()
    rows = ["name,label"]
    for k in range(n):
        hr = rng.random((2 * lr, 2 * lr)).astype(np.float32)
        np.save(folder / "HR" / f"lens_{k:02d}.npy", hr)
        np.save(folder / "LR" / f"lens_{k:02d}.npy", hr.reshape(lr, 2, lr, 2).mean((1, 3)))
        rows.append(f"lens_{k:02d},{['no_sub', 'cdm', 'vortex'][k % 3]}")
    if labels:
        (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_npy_folder_mode_reads_pairs_and_labels(tmp_path):
    folder = _npy_folder(tmp_path / "pairs")
    dm = _small_module(tmp_path, file=str(folder), augment=False, split=(0.6, 0.2, 0.2))
    dm.prepare_data()
    dm.setup()
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 6, "val": 2, "test": 2}
    batch = dm.splits["train"].__getitems__([0, 1, 2])
    names = dm.npy_index.names
    for i, row in enumerate(batch["index"].tolist()):
        np.testing.assert_array_equal(batch["target"][i, 0].numpy(), np.load(folder / "HR" / names[row]))
        np.testing.assert_array_equal(batch["input"][i, 0].numpy(), np.load(folder / "LR" / names[row]))
        assert batch["label"][i] == row % 3
    dm.check_batch(batch)
    loader = dm.train_dataloader()
    assert next(iter(loader))["input"].shape == (4, 1, 6, 6)
    assert not (tmp_path / "data").exists()  # nothing simulated, nothing written


def test_npy_folder_without_labels(tmp_path):
    dm = _small_module(tmp_path, file=str(_npy_folder(tmp_path / "pairs", labels=False)))
    dm.prepare_data()
    dm.setup()
    assert "label" not in dm.splits["val"].__getitems__([0])


def _break_unmatched(folder):
    (folder / "HR" / "lens_03.npy").rename(folder / "HR" / "other.npy")
    return "unmatched file names", "lens_03.npy"


def _break_shape(folder):
    np.save(folder / "LR" / "lens_04.npy", np.zeros((7, 7), np.float32))
    return "differs from", "lens_04.npy"


def _break_nan(folder):
    lr = np.load(folder / "LR" / "lens_05.npy")
    lr[2, 3] = np.nan
    np.save(folder / "LR" / "lens_05.npy", lr)
    return "non-finite value nan at (row, column) (2, 3)", "lens_05.npy"


def _break_factor(folder):
    for k in range(10):
        np.save(folder / "HR" / f"lens_{k:02d}.npy", np.zeros((18, 18), np.float32))
    return "is not 2x the LR shape", "lens_00.npy"


def _break_label(folder):
    (folder / "labels.csv").write_text(
        "name,label\n" + "".join(f"lens_{k:02d},{k % 3}\n" for k in range(9)) + "lens_09,strong\n"
    )
    return "label 'strong' of lens_09.npy is outside the classes", "labels.csv"


@pytest.mark.parametrize("breaker", [_break_unmatched, _break_shape, _break_nan, _break_factor, _break_label])
def test_bad_npy_folder_one_clear_message_nothing_written(tmp_path, breaker):
    folder = _npy_folder(tmp_path / "pairs")
    expected, file_name = breaker(folder)
    before = sorted((p, p.stat().st_mtime_ns) for p in folder.rglob("*"))
    dm = _small_module(tmp_path, file=str(folder))
    with pytest.raises(DataFileError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert expected in message and file_name in message, message
    assert sorted((p, p.stat().st_mtime_ns) for p in folder.rglob("*")) == before
    assert not (tmp_path / "data").exists()


def test_parallel_blocks_are_the_simulator_sequence(tmp_path):
    from lit_sr.domains.lensing.sim import concatenate_blocks, simulate_lenses

    dm = LensingDataModule(data_dir=str(tmp_path), n_lenses=50, image_size=16)
    fn, n_blocks = dm.simulate_blocks()
    assert n_blocks == 2
    ours = concatenate_blocks(fn(b) for b in range(n_blocks))
    ref = concatenate_blocks(simulate_lenses(50, 0, dm.sim_config()))
    assert ours.keys() == ref.keys() and len(ours["hr"]) == 50
    for k in ref:
        np.testing.assert_array_equal(ours[k], ref[k])
