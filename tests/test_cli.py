"""The runner end to end: composition of every experiment, train/test/predict, resume, seeds, DDP, sweeps."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import TINY, calo_overrides, compose_config, run_py
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from lit_sr.cli import run

TINY_RRDB = ["model.net.num_features=8", "model.net.num_blocks=1", "model.net.growth_channels=8"]


def _calo_rrdb(data_dir: Path, *extra: str) -> list[str]:
    return ["experiment=calo_rrdb", *TINY, *calo_overrides(data_dir), *TINY_RRDB, "debug=limit", *extra]


def _metrics_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_train_then_test_best_checkpoint_and_outputs(calo_data_dir, tmp_path):
    cfg = compose_config(_calo_rrdb(calo_data_dir), tmp_path)
    run(cfg)
    out = Path(HydraConfig.get().runtime.output_dir)
    ckpts = sorted(p.name for p in (out / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in ckpts and len(ckpts) == 2, ckpts
    assert not list((out / "checkpoints").glob("*.partial")), "temporary checkpoint files left behind"
    assert (out / "config_resolved.yaml").is_file()
    rows = _metrics_rows(out / "metrics.csv")
    test_rows = [r for r in rows if r.get("test/psnr")]
    assert len(test_rows) == 1
    # The baseline is logged beside the model and is a sensible number (calorimeter, 20 GeV scale).
    assert 20.0 < float(test_rows[0]["test/bicubic_psnr"]) < 60.0
    assert list((out / "figures").glob("val_panels_label*_epoch*.png")), "image panels missing"


def test_resume_continues_steps_and_test_mode_reproduces_metrics(calo_data_dir, tmp_path):
    first = compose_config(_calo_rrdb(calo_data_dir), tmp_path, tmp_path / "first")
    run(first)
    out = Path(HydraConfig.get().runtime.output_dir)
    steps_first = max(int(r["step"]) for r in _metrics_rows(out / "metrics.csv") if r.get("train/loss"))
    trained_psnr = float([r for r in _metrics_rows(out / "metrics.csv") if r.get("test/psnr")][0]["test/psnr"])
    best = next(p for p in (out / "checkpoints").glob("epoch*.ckpt"))

    resumed = compose_config(
        _calo_rrdb(calo_data_dir, f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}", "trainer.max_epochs=3"),
        tmp_path,
        tmp_path / "resumed",
    )
    run(resumed)
    ckpt = torch.load(Path(HydraConfig.get().runtime.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 9 and steps_first == 5  # 3 batches x 2 epochs, then one more epoch

    tested = compose_config(
        [*_calo_rrdb(calo_data_dir), "mode=test", f"ckpt_path={best}"], tmp_path, tmp_path / "tested"
    )
    run(tested)
    rows = _metrics_rows(Path(HydraConfig.get().runtime.output_dir) / "metrics.csv")
    assert float(rows[-1]["test/psnr"]) == pytest.approx(trained_psnr, rel=1e-6)


def test_seed_zero_is_honoured(calo_data_dir, tmp_path):
    def final_loss(seed: int, name: str) -> float:
        cfg = compose_config(
            _calo_rrdb(calo_data_dir, f"seed={seed}", "test_after_training=false", "trainer.max_epochs=1"),
            tmp_path,
            tmp_path / name,
        )
        run(cfg)
        rows = _metrics_rows(Path(HydraConfig.get().runtime.output_dir) / "metrics.csv")
        return float([r for r in rows if r.get("val/loss")][-1]["val/loss"])

    a, b, c = final_loss(0, "a"), final_loss(0, "b"), final_loss(1, "c")
    assert a == b, "seed=0 must make runs reproducible"
    assert a != c


def test_predict_writes_physical_units_without_overwriting(calo_data_dir, tmp_path):
    train = compose_config(
        _calo_rrdb(calo_data_dir, "test_after_training=false", "trainer.max_epochs=1"), tmp_path, tmp_path / "train"
    )
    run(train)
    ckpt = Path(HydraConfig.get().runtime.output_dir) / "checkpoints" / "last.ckpt"
    cfg = compose_config(
        [*_calo_rrdb(calo_data_dir), "mode=predict", f"ckpt_path={ckpt}"], tmp_path, tmp_path / "predict"
    )
    run(cfg)
    pred = Path(HydraConfig.get().runtime.output_dir) / "predictions.h5"
    data_file = next(Path(calo_data_dir).glob("*.h5"))
    with h5py.File(pred) as p, h5py.File(data_file) as d:
        idx = p["index"][:]
        assert p["output"].shape == (len(idx), 1, 24, 24) and len(idx) == 60  # 10 % of 600 events
        assert (p["output"][:] >= 0).all()  # ReLU output: no negative energies
        order = np.argsort(idx)
        # Targets come back in GeV: exactly the file's HR images (inverse of the x / 20 GeV transform).
        np.testing.assert_allclose(p["target"][:][order, 0], d["hr"][np.sort(idx)], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(p["input"][:][order, 0], d["lr"][np.sort(idx)], rtol=1e-6, atol=1e-7)
    before = pred.read_bytes()
    with pytest.raises(FileExistsError):
        run(cfg)
    assert pred.read_bytes() == before


def test_unknown_config_key_is_named(tmp_path):
    with pytest.raises(ConfigCompositionException, match="learning_rate"):
        compose_config(["experiment=calo_rrdb", "model.learning_rate=1e-3"], tmp_path)


def found_a_classifier(cfg, path: str) -> dict[str, str]:
    """A setup hook for the test below: reports a classifier checkpoint as the stage's result."""
    return {"model.classifier_ckpt": path}


def returns_a_path(cfg, path: str) -> str:
    """A hook that returns a path instead of config updates (refused)."""
    return path


def test_setup_stage_merges_the_hook_results_into_a_new_config(tmp_path):
    """The setup stage is a step of the runner: the hook reads the config and returns its results; the runner
    builds the run from a new config with them merged in (interpolations see them), the old one stays as it was;
    a hook that returns no updates is refused with a message naming it."""
    from omegaconf import OmegaConf, open_dict

    from lit_sr.cli import setup_stage
    from lit_sr.utils.errors import ConfigError

    cfg = compose_config(["experiment=calo_srgan", *TINY], tmp_path)
    with open_dict(cfg):
        cfg.setup_hook = {"_target_": "test_cli.found_a_classifier", "path": str(tmp_path / "clf.ckpt")}
    new = setup_stage(cfg)
    assert cfg.model.classifier_ckpt is None and new.model.classifier_ckpt == str(tmp_path / "clf.ckpt")
    assert OmegaConf.to_container(new.model.perceptual_net, resolve=True)["ckpt_path"] == str(tmp_path / "clf.ckpt")
    with open_dict(cfg):
        cfg.setup_hook = {"_target_": "test_cli.returns_a_path", "path": "x.ckpt"}
    with pytest.raises(ConfigError, match=r"setup_hook._target_=test_cli.returns_a_path returned str"):
        setup_stage(cfg)


def test_test_mode_without_checkpoint_is_refused(tmp_path):
    cfg = compose_config(["experiment=calo_rrdb", "mode=test"], tmp_path)
    with pytest.raises(ValueError, match="ckpt_path"):
        run(cfg)


@pytest.mark.ddp
def test_ddp_sim_single_run_one_output_dir(calo_data_dir, tmp_path):
    args = [*_calo_rrdb(calo_data_dir), f"paths.root_dir={tmp_path}", "trainer=ddp_sim"]
    res = run_py(args, cwd=tmp_path, timeout=240)
    assert res.returncode == 0, res.stdout[-4000:]
    runs = [p for p in (tmp_path / "outputs" / "calo_rrdb").iterdir()]
    assert len(runs) == 1, runs  # children share the parent's directory
    out = runs[0]
    assert (out / ".hydra").is_dir() and (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "cli_rank1.log").exists()  # rank 1 ran inside the same directory
    rows = _metrics_rows(out / "metrics.csv")
    assert len([r for r in rows if r.get("test/psnr")]) == 1  # logged once, not once per rank
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in res.stdout


@pytest.mark.ddp
def test_multirun_sweep_with_ddp_gives_exactly_two_runs(calo_data_dir, tmp_path):
    # no paths.root_dir: outputs go under the launch directory, which the sweep dir must resolve
    # before any job has started (${hydra:runtime.cwd} is not set then)
    args = ["-m", *_calo_rrdb(calo_data_dir), "trainer=ddp_sim", "model.optimizer.lr=1e-3,1e-4"]
    res = run_py(args, cwd=tmp_path, timeout=420)
    assert res.returncode == 0, res.stdout[-4000:]
    sweeps = list((tmp_path / "outputs" / "multirun").iterdir())
    assert len(sweeps) == 1, sweeps
    jobs = sorted(p.name for p in sweeps[0].iterdir() if p.is_dir())
    assert jobs == ["0_calo_rrdb", "1_calo_rrdb"], jobs
    lrs = []
    for job in jobs:
        out = sweeps[0] / job
        assert (out / "checkpoints" / "last.ckpt").is_file()
        rows = _metrics_rows(out / "metrics.csv")
        assert len([r for r in rows if r.get("test/psnr")]) == 1
        lrs.append(float([r for r in rows if r.get("lr-Adam")][0]["lr-Adam"]))
    assert lrs == [1e-3, 1e-4]
    assert res.stdout.count("Launching 2 jobs locally") == 1


def test_wandb_never_blocks_and_resumes_its_run(calo_data_dir, tmp_path, monkeypatch):
    """Online requested without credentials -> offline; the run id travels in the checkpoint."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    extra = ["logger=wandb", "logger.wandb.offline=false", "test_after_training=false", "trainer.max_epochs=1"]
    first = compose_config(_calo_rrdb(calo_data_dir, *extra), tmp_path, tmp_path / "first")
    run(first)
    out = Path(HydraConfig.get().runtime.output_dir)
    run_id = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["wandb_run_id"]
    assert run_id and list((out / "wandb").glob(f"offline-run-*-{run_id}"))

    resumed = compose_config(
        _calo_rrdb(
            calo_data_dir, *extra[:-1], "trainer.max_epochs=2", f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}"
        ),
        tmp_path,
        tmp_path / "second",
    )
    run(resumed)
    out2 = Path(HydraConfig.get().runtime.output_dir)
    assert torch.load(out2 / "checkpoints" / "last.ckpt", weights_only=True)["wandb_run_id"] == run_id
    import wandb

    assert wandb.run is None  # finished at the end of the job (multirun jobs each get their own run)


@pytest.mark.parametrize(
    "debug", sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "debug").glob("*.yaml"))
)
def test_debug_configs_compose_into_a_trainer(debug, tmp_path):
    cfg = compose_config(["experiment=calo_rrdb", f"debug={debug}", *TINY], tmp_path)
    trainer = instantiate(cfg.trainer)
    assert trainer.max_epochs is not None


def test_optuna_search_space_composes(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    GlobalHydra = pytest.importorskip("hydra.core.global_hydra").GlobalHydra
    from hydra import compose, initialize_config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(Path(__file__).resolve().parents[1] / "conf")):
        cfg = compose("config", overrides=["hparams_search=optuna", "experiment=calo_rrdb"], return_hydra_config=True)
    assert cfg.optimized_metric == "val/psnr" and cfg.monitor.metric == "val/psnr"
    assert "model.optimizer.lr" in cfg.hydra.sweeper.params
    assert cfg.hydra.sweeper.direction == "maximize"


def test_progress_lines_without_a_terminal(calo_data_dir, tmp_path):
    """stdout to a file (as under SLURM or CI): plain progress lines replace the Rich bar."""
    args = [a for a in _calo_rrdb(calo_data_dir) if not a.startswith("callbacks.progress_bar")]
    res = run_py(
        [*args, f"paths.root_dir={tmp_path}", "callbacks.progress_bar.every_n_steps=2", "test_after_training=false"],
        cwd=tmp_path,
        timeout=240,
    )
    assert res.returncode == 0, res.stdout[-3000:]
    lines = [line for line in res.stdout.splitlines() if "lit_sr" in line and " step " in line]
    assert any(
        "epoch 0 step 2/6 (33 %)" in line and "it/s" in line and "ETA" in line and "train/loss=" in line
        for line in lines
    ), res.stdout[-3000:]
    assert any("epoch 1 step 6/6 (100 %)" in line for line in lines)
    assert any("validation after epoch 1 step 6: " in line and "val/psnr=" in line for line in res.stdout.splitlines())


def test_summary_table_prints_a_lower_limit_as_such(capsys):
    from lit_sr.cli import print_metrics

    print_metrics(
        {
            "test/pion_rejection/hr": 2090.0,
            "test/pion_rejection_lower_limit/hr": 1.0,
            "test/pion_rejection/sr": 4.2566,
            "test/pion_rejection_lower_limit/sr": 0.0,
        },
        "t",
    )
    out = capsys.readouterr().out
    assert "> 2090" in out and "4.2566" in out and "lower_limit" not in out
