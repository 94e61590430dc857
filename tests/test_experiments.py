"""Every experiment file of conf/experiment/, discovered from the folder: one batch of fit/val/test with
its own simulated default data and its own nets, then mode=predict.

A new experiment is covered the day it lands. The data are the experiment's own domain defaults at
``data_size=tiny`` (conf/data/size/<domain>_tiny.yaml: the same simulators and files, tens of samples,
simulated once per session), so these runs exercise what a user's first
``python run.py experiment=<name> debug=fdr`` does, in seconds instead of minutes of simulation.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import pytest
import torch
from conftest import EXPERIMENTS, TINY, compose_config
from hydra.utils import instantiate

from lit_sr.cli import run


@pytest.fixture(scope="session")
def default_data_dir(tmp_path_factory) -> Path:
    """One data folder shared by all experiments: each domain's default data is simulated once."""
    return tmp_path_factory.mktemp("default_data")


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_fast_dev_run_then_predict(experiment, default_data_dir, tmp_path):
    common = [f"experiment={experiment}", *TINY, "data_size=tiny", f"paths.data_dir={default_data_dir}"]
    cfg = compose_config([*common, "debug=fdr"], tmp_path, tmp_path / "fdr")
    assert cfg.experiment_name == experiment, "an experiment file must set experiment_name"
    metrics = run(cfg)  # fast_dev_run logs nowhere: the runner returns the final metrics
    assert any(k.startswith("test/") for k in metrics), f"{experiment}: no test metrics logged: {sorted(metrics)}"
    assert all(v == v for k, v in metrics.items() if k.startswith("test/")), "NaN test metric"

    # mode=predict with a checkpoint of the freshly built model (weights are not the point here: the
    # data -> model -> writer path and its files are)
    build = compose_config([*common, "debug=fdr"], tmp_path, tmp_path / "build")
    if build.get("setup_hook"):
        from lit_sr.cli import setup_stage

        build = setup_stage(build)
    model = instantiate(build.model, _convert_="all")
    ckpt = tmp_path / "weights.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {}}, ckpt)
    extra = [] if not ("input" in build.predict and build.predict.input is None) else ["predict=h5"]
    if build.get("setup_hook"):
        extra.append(f"model.classifier_ckpt={build.model.classifier_ckpt}")
    pred_cfg = compose_config(
        [*common, "mode=predict", f"ckpt_path={ckpt}", "debug=fdr", *extra], tmp_path, tmp_path / "predict"
    )
    run(pred_cfg)
    written = [p for p in (tmp_path / "predict").iterdir() if p.suffix in (".h5", ".fits")]
    assert written, f"{experiment}: mode=predict wrote nothing"
    h5_files = [p for p in written if p.suffix == ".h5"]
    if h5_files:
        with h5py.File(h5_files[0]) as h5:
            assert len(h5.keys()) >= 1 and all(h5[k].shape[0] >= 1 for k in h5)
