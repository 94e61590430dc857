"""Generic data layer: HDF5 schema store, lazy vs in-memory reading, chunk-wise shuffling, progress logs."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest
import torch

from lit_sr.data.base import ChunkShuffleSampler, H5RowsDataset
from lit_sr.data.h5store import Field, H5Schema, ensure_simulated, is_complete, write_h5
from lit_sr.data.validate import DataFileError
from lit_sr.utils.progress import ProgressLog, track

SCHEMA = H5Schema(
    [
        Field("image", (4, 4), "float32", nonnegative=True, units="counts"),
        Field("label", (), "int64", allowed=(0, 1, 2), allowed_names=("a", "b", "c")),
        Field("extra", (2,), "float32", required=False),
    ],
    what="test file",
)


def _blocks(n: int, block: int = 100, seed: int = 0):
    rng = np.random.default_rng(seed)
    for start in range(0, n, block):
        m = min(block, n - start)
        yield {
            "image": rng.random((m, 4, 4), dtype=np.float32) + np.arange(start, start + m)[:, None, None],
            "label": rng.integers(0, 3, m),
        }


def _file(tmp_path, n=1000, chunk_rows=64):
    return write_h5(
        tmp_path / "f.h5",
        SCHEMA,
        n,
        _blocks(n),
        attrs={"seed": 0, "config": {"a": 1}},
        chunk_rows=chunk_rows,
        progress=False,
    )


def _builder(raw, rows, rng):
    return {"input": torch.from_numpy(raw["image"]), "index": torch.from_numpy(rows)}


def test_write_validate_and_complete(tmp_path):
    path = _file(tmp_path)
    info = SCHEMA.validate(path)
    assert info.n == 1000 and info.fields == ("image", "label") and info.shapes["image"] == (4, 4)
    assert is_complete(path, SCHEMA)
    with h5py.File(path) as h5:
        assert h5["image"].chunks == (64, 4, 4) and h5["image"].attrs["units"] == "counts"
        assert h5.attrs["config"] == '{"a": 1}' and bool(h5.attrs["complete"])
    with h5py.File(path, "a") as h5:
        del h5.attrs["complete"]
    assert not is_complete(path, SCHEMA)


def test_write_refuses_a_short_simulation_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="fewer samples than announced"):
        write_h5(tmp_path / "short.h5", SCHEMA, 500, _blocks(300), progress=False)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "change, field, message",
    [
        (
            lambda h5: h5["image"].__setitem__((3, 0, 0), -1.0),
            "image",
            "negative value -1.0 at index (3, 0, 0) (expected values >= 0 counts)",
        ),
        (lambda h5: h5["label"].__setitem__(5, 7), "label", "expected values 0 (a), 1 (b) or 2 (c), found [0 1 2 7]"),
        (
            lambda h5: h5["image"].__setitem__((999, 3, 3), np.nan),
            "image",
            "non-finite value nan at index (999, 3, 3) (expected finite numbers)",
        ),
    ],
)
def test_validation_names_file_field_and_expectation(tmp_path, change, field, message):
    path = _file(tmp_path)
    with h5py.File(path, "a") as h5:
        change(h5)
    with pytest.raises(DataFileError) as err:
        SCHEMA.validate(path)
    assert str(err.value) == f"{path} [{field}]: {message}"


def test_ensure_simulated_replaces_an_interrupted_file(tmp_path, caplog):
    path = tmp_path / "sim.h5"
    path.write_bytes(b"half a file")
    ensure_simulated(path, SCHEMA, 200, lambda: _blocks(200), {}, "simulating", progress=False)
    assert is_complete(path, SCHEMA) and "incomplete" in caplog.text
    stamp = path.stat().st_mtime_ns
    ensure_simulated(path, SCHEMA, 200, lambda: _blocks(200), {}, "simulating", progress=False)
    assert path.stat().st_mtime_ns == stamp  # complete: not simulated again


def test_lazy_and_in_memory_reads_agree_and_lazy_reads_each_chunk_once(tmp_path):
    path = _file(tmp_path)
    rows = np.arange(3, 1000, 2)
    memory = H5RowsDataset(path, rows, ("image", "label"), _builder)
    lazy = H5RowsDataset(path, rows, ("image", "label"), _builder, max_memory_mb=0)
    assert memory.in_memory and not lazy.in_memory
    sampler = ChunkShuffleSampler(len(lazy), lazy.chunk_rows(), window=2, seed=0)
    order = list(sampler)
    assert sorted(order) == list(range(len(rows)))  # a permutation of the split
    reads = []
    decoded = lazy._decoded_chunk

    def spy(c, step):  # a miss of the decoded-chunk cache = one decompression
        if not (lazy._chunks and c in lazy._chunks):
            reads.append(c)
        return decoded(c, step)

    lazy._decoded_chunk = spy
    for start in range(0, len(order), 50):
        pos = order[start : start + 50]
        a, b = memory.__getitems__(pos), lazy.__getitems__(pos)
        torch.testing.assert_close(a["input"], b["input"], rtol=0, atol=0)
        assert a["index"].tolist() == b["index"].tolist() == rows[pos].tolist()
        # values encode their row: image - row is in [0, 1)
        frac = a["input"] - a["index"][:, None, None].float()
        assert (frac >= 0).all() and (frac <= 1).all()
    n_chunks = len(np.unique(rows // 64))
    assert len(reads) == len(set(reads)) == n_chunks  # every chunk decompressed once per epoch


def test_chunk_shuffle_sampler_windows_and_epochs():
    s = ChunkShuffleSampler(1000, chunk_rows=50, window=2, seed=3)
    first = list(s)
    # consecutive blocks of 100 positions come from one window of 2 chunks
    for k in range(0, 1000, 100):
        assert len({p // 100 for p in first[k : k + 100]}) == 1
    s.set_epoch(1)
    assert list(s) != first and sorted(s) == list(range(1000))


def test_progress_logs_plain_lines_without_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="lit_sr")
    items = list(track(range(50), 50, "simulating things", unit="things"))
    assert items == list(range(50))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("simulating things")]
    assert lines[0] == "simulating things: started (50 things)"
    assert any("50/50 things (100 %)" in line and "ETA" in line for line in lines)
    assert 2 <= len(lines) <= 12  # about every 10 %, not every item
    assert "ETA ?" in ProgressLog(None, "x").line() or "things" not in ProgressLog(None, "x").line()


def test_parallel_and_sharded_simulation_equal_the_serial_file(tmp_path):
    """Two simulation processes, and shards behind a virtual-dataset index file: the same events as one
    process writing one file; the DataModule reads the sharded file as one dataset."""
    from lit_sr.domains.calo.data import CaloDataModule

    serial = CaloDataModule(data_dir=str(tmp_path / "serial"), n_per_class=300)
    serial.prepare_data()
    sharded = CaloDataModule(data_dir=str(tmp_path / "sharded"), n_per_class=300, sim_workers=2, shard_gb=0.0005)
    assert sharded.shard_samples(600) is not None and sharded.shard_samples(600) < 600
    sharded.prepare_data()
    shards = sorted((tmp_path / "sharded").glob("*.shard*.h5"))
    assert len(shards) >= 2
    with h5py.File(serial.path) as a, h5py.File(sharded.path) as b:
        assert b["hr"].is_virtual and not a["hr"].is_virtual
        for name in ("hr", "lr", "label", "impact_cm", "energy_gev"):
            np.testing.assert_array_equal(a[name][()], b[name][()])
    sharded.setup("fit")
    lazy = sharded.splits["train"]
    lazy.max_memory_mb = 0  # read through the index file lazily, chunk by chunk
    lazy._cache = None
    serial.setup("fit")
    pos = [5, 1, 300, 17]
    for key in ("input", "target", "impact_cm"):
        torch.testing.assert_close(lazy.__getitems__(pos)[key], serial.splits["train"].__getitems__(pos)[key])
    shards[0].unlink()  # a lost shard: the dataset is incomplete, never read as fill values
    assert not is_complete(sharded.path)
