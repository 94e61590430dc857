"""Calorimeter DataModule: file validation, half-written files, splits, augmentation physics."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from lit_sr.data.base import H5RowsDataset
from lit_sr.data.h5store import is_complete
from lit_sr.data.transforms import IntensityTransform
from lit_sr.data.validate import DataFileError
from lit_sr.domains.calo.data import CaloBatchBuilder, CaloDataModule, calo_schema
from lit_sr.domains.calo.metrics import barycentre

FIELDS = ("hr", "lr", "label", "impact_cm", "energy_gev")


def validate_calo_file(path):
    return calo_schema().validate(path)


def is_complete_calo_file(path):
    return is_complete(path, calo_schema())


def _default_file(data_dir: Path) -> Path:
    return next(Path(data_dir).glob("calo_*.h5"))


def _user_file(tmp_path: Path, n: int = 20, **changes) -> Path:
    """A user file in the documented layout; ``changes`` replace or (value None) drop datasets."""
    rng = np.random.default_rng(0)
    data = {
        "hr": rng.random((n, 24, 24), dtype=np.float32),
        "lr": rng.random((n, 6, 6), dtype=np.float32),
        "label": rng.integers(0, 2, n).astype(np.int8),
        "impact_cm": rng.random((n, 2), dtype=np.float32),
        "energy_gev": np.full(n, 20.0, np.float32),
    }
    data.update(changes)
    path = tmp_path / "user.h5"
    with h5py.File(path, "w") as h5:
        for name, arr in data.items():
            if arr is not None:
                h5.create_dataset(name, data=arr)
    return path


@pytest.mark.parametrize(
    "changes, field, expected",
    [
        ({"lr": None}, "lr", "dataset missing"),
        ({"hr": np.zeros((20, 32, 32), np.float32)}, "hr", "expected trailing shape 24x24"),
        ({"lr": np.zeros((20, 36), np.float32)}, "lr", "expected 3 dimensions"),
        ({"lr": np.zeros((19, 6, 6), np.float32)}, "hr,lr", "same number of samples"),
        (
            {
                "hr": np.zeros((0, 24, 24), np.float32),
                "lr": np.zeros((0, 6, 6), np.float32),
                "label": None,
                "impact_cm": None,
                "energy_gev": None,
            },
            "hr,lr",
            "contains no samples",
        ),
        ({"hr": np.full((20, 24, 24), np.nan, np.float32)}, "hr", "non-finite value nan at index (0, 0, 0)"),
        ({"impact_cm": np.zeros((20, 3), np.float32)}, "impact_cm", "expected trailing shape 2"),
        ({"label": np.full(20, 7, np.int8)}, "label", "expected values 0 (photon) or 1 (pion)"),
    ],
)
def test_bad_user_file_names_file_field_and_expectation(tmp_path, changes, field, expected):
    path = _user_file(tmp_path, **changes)
    with pytest.raises(DataFileError) as err:
        validate_calo_file(path)
    message = str(err.value)
    assert str(path) in message and f"[{field}" in message and expected in message, message


def test_missing_user_file_is_reported_not_simulated(tmp_path):
    dm = CaloDataModule(data_dir=str(tmp_path), file=str(tmp_path / "mine.h5"))
    with pytest.raises(DataFileError, match="mine.h5.*not found"):
        dm.prepare_data()
    assert not list(tmp_path.iterdir()), "nothing may be written for a user's missing file"


def test_user_file_without_impact_trains_and_is_never_modified(tmp_path, caplog):
    path = _user_file(tmp_path, impact_cm=None)
    before = path.read_bytes()
    dm = CaloDataModule(data_dir=str(tmp_path), file=str(path), batch_size=4)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert "impact_cm" not in batch and batch["input"].shape == (4, 1, 6, 6)
    assert "has no impact_cm" in caplog.text
    assert path.read_bytes() == before


def test_half_written_default_file_is_resimulated(calo_data_dir, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    complete = _default_file(calo_data_dir)
    broken = data_dir / complete.name
    shutil.copy(complete, broken)
    with h5py.File(broken, "a") as h5:
        del h5.attrs["complete"]  # as if the simulation was killed before the end
    dm = CaloDataModule(data_dir=str(data_dir), n_per_class=300)
    with pytest.raises(DataFileError, match="incomplete"):
        dm.setup("fit")  # never trained on
    dm.prepare_data()
    assert is_complete_calo_file(broken)
    with h5py.File(broken) as a, h5py.File(complete) as b:
        np.testing.assert_array_equal(a["hr"][:50], b["hr"][:50])  # same seed, same events


def test_splits_are_disjoint_and_reproducible(calo_data_dir):
    def split_indices():
        dm = CaloDataModule(data_dir=str(calo_data_dir), n_per_class=300)
        dm.setup("fit")
        return {k: set(v.indices.tolist()) for k, v in dm.splits.items()}

    a, b = split_indices(), split_indices()
    assert a == b
    assert not (a["train"] & a["val"]) and not (a["train"] & a["test"]) and not (a["val"] & a["test"])
    assert sum(len(v) for v in a.values()) == 600 and len(a["val"]) == 60


def test_intensity_transform_is_invertible():
    x = torch.rand(3, 1, 8, 8) * 20
    for log in (False, True):
        t = IntensityTransform(20.0, log=log)
        torch.testing.assert_close(t.inverse(t(x)), x, rtol=1e-5, atol=1e-6)
    assert IntensityTransform(20.0)(torch.tensor(20.0)) == 1.0


def _dataset(calo_data_dir: Path, augment: bool, rows=np.arange(64), **kw) -> H5RowsDataset:
    path = _default_file(calo_data_dir)
    return H5RowsDataset(
        path, rows, FIELDS, CaloBatchBuilder(IntensityTransform(20.0), augment), augment=augment, seed=0, **kw
    )


def test_augmentation_moves_impact_with_the_shower(calo_data_dir):
    """D4 symmetry: the energy barycentre of the transformed image equals the transformed truth shift."""
    plain, augmented = _dataset(calo_data_dir, False), _dataset(calo_data_dir, True)
    changed = 0
    for i in range(32):
        p, a = plain[i], augmented[i]
        # barycentre - impact is a displacement; D4 maps it like the impact itself, so the
        # residual length is invariant and the LR/HR energy sums are too.
        res_p = barycentre(p["target"][None], weighting="energy")[0] - p["impact_cm"]
        res_a = barycentre(a["target"][None], weighting="energy")[0] - a["impact_cm"]
        torch.testing.assert_close(res_p.norm(), res_a.norm(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a["input"].sum(), p["input"].sum())
        changed += int(not torch.equal(p["target"], a["target"]))
    assert changed > 16  # 7 of the 8 group elements change the image


def test_augmentation_streams_differ_per_rank_and_repeat_per_rank(calo_data_dir, monkeypatch):
    def draws(rank: int) -> list[tuple]:
        monkeypatch.setenv("RANK", str(rank))
        ds = _dataset(calo_data_dir, True)
        return [tuple(ds[i]["impact_cm"].tolist()) for i in range(24)]

    assert draws(0) == draws(0)
    assert draws(0) != draws(1)


def test_in_memory_and_lazy_reads_give_the_same_events(calo_data_dir):
    path = _default_file(calo_data_dir)
    idx = np.arange(5, 200, 3)
    cached = _dataset(calo_data_dir, False, idx)
    lazy = _dataset(calo_data_dir, False, idx, max_memory_mb=0)
    order = [7, 1, 30, 1, 12]
    a, b = cached.__getitems__(order), lazy.__getitems__(order)
    assert cached._cache and lazy._cache == {}  # one held in memory, the other read lazily
    assert a["index"].tolist() == b["index"].tolist() == idx[order].tolist()
    for key in ("input", "target", "impact_cm", "label", "energy_gev"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    with h5py.File(path) as h5:
        np.testing.assert_allclose(cached[7]["target"][0].numpy() * 20.0, h5["hr"][idx[7]], rtol=1e-6)


def test_batched_d4_equals_the_per_event_definition(calo_data_dir):
    """The vectorised augmentation applies, per event, the draws (flip_x, flip_y, transpose) as:
    transpose (x <-> y), then reverse columns (x -> -x), then reverse rows (y -> -y)."""
    plain, augmented = _dataset(calo_data_dir, False), _dataset(calo_data_dir, True)
    positions = list(range(40))
    a = augmented.__getitems__(positions)
    rng = np.random.default_rng([0, 0, 0])  # stream_rng(seed=0) in the main process of rank 0
    draws = rng.integers(0, 2, size=(len(positions), 3))
    p = plain.__getitems__(positions)
    for k, (flip_x, flip_y, transpose) in enumerate(draws):
        hr, lr, impact = p["target"][k], p["input"][k], p["impact_cm"][k].clone()
        if transpose:
            hr, lr, impact = hr.transpose(-1, -2), lr.transpose(-1, -2), impact.flip(0)
        if flip_x:
            hr, lr, impact = hr.flip(-1), lr.flip(-1), impact * torch.tensor([-1.0, 1.0])
        if flip_y:
            hr, lr, impact = hr.flip(-2), lr.flip(-2), impact * torch.tensor([1.0, -1.0])
        torch.testing.assert_close(a["target"][k], hr, rtol=0, atol=0)
        torch.testing.assert_close(a["input"][k], lr, rtol=0, atol=0)
        torch.testing.assert_close(a["impact_cm"][k], impact, rtol=0, atol=0)
