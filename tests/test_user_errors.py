"""A user's bad input or config ends ``python run.py`` with its one message and exit code 1, no traceback
(single runs, multirun jobs, DDP); ``HYDRA_FULL_ERROR=1`` still gives the whole trace. A bug keeps its trace."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import TINY, run_py
from hydra.errors import InstantiationException
from omegaconf.errors import MissingMandatoryValue

from lit_sr.cli import main, user_error
from lit_sr.utils.errors import ConfigError, DataFileError


def _bad_calo_file(path: Path) -> Path:
    """A calorimeter file whose HR images are 20 x 20 crystals instead of 24 x 24."""
    with h5py.File(path, "w") as h5:
        h5["hr"] = np.zeros((8, 20, 20), np.float32)
        h5["lr"] = np.zeros((8, 6, 6), np.float32)
    return path


@pytest.mark.ddp
def test_bad_data_file_under_multirun_and_ddp_prints_only_the_message(tmp_path):
    bad = _bad_calo_file(tmp_path / "bad.h5")
    res = run_py(
        [
            "-m",
            "experiment=calo_rrdb",
            *TINY,
            "debug=fdr",
            "trainer=ddp_sim",
            f"data.file={bad}",
            f"paths.root_dir={tmp_path}",
        ],
        cwd=tmp_path,
        timeout=240,
    )
    assert res.returncode != 0, res.stdout[-3000:]
    assert f"{bad} [hr]: expected trailing shape 24x24, found shape (8, 20, 20)" in res.stdout, res.stdout[-3000:]
    assert "Traceback" not in res.stdout, res.stdout[-3000:]
    assert "Error executing job with overrides" in res.stdout  # multirun names the failing job


def _main(monkeypatch, tmp_path: Path, *overrides: str) -> None:
    """``python run.py OVERRIDES`` in this process. Hydra configures no logging ("none"): its "disabled"
    config would disable every existing logger, and caplog in later tests of the session with it."""
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "run.py",
            *overrides,
            f"hydra.run.dir={tmp_path / 'run'}",
            "hydra/job_logging=none",
            "hydra/hydra_logging=none",
        ],
    )
    main()


def test_config_error_exits_with_its_message_and_full_trace_on_request(monkeypatch, tmp_path, capfd):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        _main(monkeypatch, tmp_path, "experiment=calo_rrdb", "mode=test")
    err = capfd.readouterr().err
    assert exit_info.value.code == 1
    assert "mode=test needs a trained model: add ckpt_path=" in err and "Traceback" not in err, err

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError, match="mode=test needs a trained model"):
        _main(monkeypatch, tmp_path, "experiment=calo_rrdb", "mode=test")


def _raised(exc: BaseException, cause: BaseException | None = None, context: BaseException | None = None):
    try:
        try:
            raise context or RuntimeError("unrelated")
        except BaseException:
            if cause is None:
                raise exc
            raise exc from cause
    except BaseException as caught:
        return caught


def test_user_errors_are_told_apart_from_bugs():
    data = DataFileError("x.h5", "hr", "dataset missing")
    assert user_error(data) is data
    assert user_error(ConfigError("mode='x' is not a mode")) is not None
    assert user_error(FileExistsError("out.h5: output file exists; refusing to overwrite it")) is not None
    assert user_error(MissingMandatoryValue("Missing mandatory value: data.file")) is not None
    # a constructor's check reported by hydra.utils.instantiate: the user's error itself, or Hydra's message
    assert user_error(_raised(InstantiationException("Error in call to target 'X'"), cause=data)) is data
    wrapped = _raised(
        InstantiationException("Error in call to target 'X':\nValueError('scale=3')"), cause=ValueError("scale=3")
    )
    assert user_error(wrapped) is wrapped
    # bugs keep their traceback, also when they happen while a user error is being handled
    assert user_error(RuntimeError("shape mismatch")) is None
    assert user_error(ValueError("operands could not be broadcast")) is None
    assert user_error(_raised(RuntimeError("teardown failed"), context=data)) is None
    assert user_error(_raised(RuntimeError("wrapped"), cause=data)) is data
