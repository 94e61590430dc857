"""A finished run read back (lit_sr.inference.run_folder: metrics.csv, checkpoints), the mean ± std over seeds,
and the report drivers' subprocess harness (reports.runs)."""

from __future__ import annotations

import pytest

from lit_sr.inference.run_folder import best_checkpoint, read_test_metrics
from lit_sr.metrics.stats import mean_std


def test_test_metrics_reads_the_last_logged_test_values(tmp_path):
    (tmp_path / "metrics.csv").write_text("epoch,step,val/psnr,test/psnr,test/ssim\n0,10,20.5,,\n0,10,,31.25,0.875\n")
    assert read_test_metrics(tmp_path) == {"psnr": 31.25, "ssim": 0.875}
    (tmp_path / "metrics.csv").write_text("epoch,step,val/psnr\n0,10,20.5\n")
    with pytest.raises(ValueError, match=r"metrics.csv: no test/ metrics"):
        read_test_metrics(tmp_path)


def test_best_checkpoint_prefers_the_tested_epoch_checkpoint(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        best_checkpoint(tmp_path)
    (ckpts / "last.ckpt").write_bytes(b"")
    assert best_checkpoint(tmp_path).name == "last.ckpt"
    (ckpts / "epoch003-step000120.ckpt").write_bytes(b"")
    assert best_checkpoint(tmp_path).name == "epoch003-step000120.ckpt"


def test_mean_std_is_the_sample_standard_deviation():
    m, s = mean_std([1.0, 2.0, 4.0])
    assert m == pytest.approx(7 / 3) and s == pytest.approx(
        ((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) ** 0.5 / 2**0.5
    )
    assert mean_std([5.0]) == (5.0, 0.0)


def test_report_harness_runs_this_checkout_with_overrides_the_config_knows(tmp_path):
    """reports.runs: ``python run.py`` of the repository the reports sit in, with QUIET overrides that name
    existing config keys (a renamed key would fail every report run)."""
    from conftest import ROOT, compose_config

    from reports.runs import QUIET, REPO

    assert REPO == ROOT and (REPO / "run.py").is_file()
    cfg = compose_config(list(QUIET), tmp_path)
    assert cfg.print_config is False and cfg.callbacks.progress_bar is None
