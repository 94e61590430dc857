"""Running on a cluster: the SLURM launcher config, preemption -> last.ckpt -> resume, submitit sweeps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import CONF_DIR, ROOT, TINY, calo_overrides
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

TINY_RRDB = ["model.net.num_features=8", "model.net.num_blocks=1", "model.net.growth_channels=8"]


def test_slurm_launcher_config_follows_the_trainer(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(
            "config",
            return_hydra_config=True,
            overrides=[
                "hydra/launcher=slurm",
                "experiment=calo_srgan",
                "trainer=ddp",
                "trainer.devices=4",
                "trainer.num_nodes=2",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.account=proj",
            ],
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert launcher.partition == "gpu" and launcher.account == "proj" and launcher.max_num_timeout > 0
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.num_nodes == 2
    # one DataLoader worker per spare CPU of the task on GPUs; none on CPU
    from lit_sr.utils.config_resolvers import _loader_workers

    assert _loader_workers("cpu", 1) == 0
    os.environ["SLURM_CPUS_PER_TASK"] = "8"
    try:
        assert _loader_workers("gpu", 4) == 7
    finally:
        del os.environ["SLURM_CPUS_PER_TASK"]


def _train_args(data_dir: Path, run_dir: Path) -> list[str]:
    tiny = [a for a in TINY if "progress_bar" not in a]  # keep the (plain-line) progress callback
    return [
        "experiment=calo_rrdb",
        *tiny,
        *calo_overrides(data_dir),
        *TINY_RRDB,
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1.0",
        "+trainer.limit_val_batches=1",
        "test_after_training=false",
        "callbacks.progress_bar.every_n_steps=1",
        f"hydra.run.dir={run_dir}",
    ]


@pytest.mark.slow
def test_preemption_signal_saves_last_checkpoint_and_the_rerun_resumes(calo_data_dir, tmp_path):
    """SIGUSR1 during training (what SLURM sends before preempting): last.ckpt is written at the end of the
    batch and the process exits; started again in the same folder, the run continues from that step."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    cmd = [sys.executable, str(ROOT / "run.py"), *_train_args(calo_data_dir, run_dir)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if " step 3/30" in line:  # 480 training events / 16 per batch = 30 steps
                proc.send_signal(signal.SIGUSR1)
                break
        out = "".join(seen) + proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGUSR1, out[-3000:]
    assert "SIGUSR1 received: saved" in out
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    stopped_at = saved["global_step"]
    assert 3 <= stopped_at < 30
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert "Resuming from" in res.stdout + res.stderr
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == 30  # continued, not restarted: one epoch of 30 steps in all
    assert f"step {stopped_at + 1}/30" in res.stdout + res.stderr and "step 1/30" not in res.stdout + res.stderr


@pytest.mark.slow
def test_submitit_local_sweep_runs_two_jobs(calo_data_dir, tmp_path):
    args = [
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "experiment=calo_rrdb",
        *TINY,
        *calo_overrides(calo_data_dir),
        *TINY_RRDB,
        "debug=limit",
        "trainer.max_epochs=1",
        f"paths.root_dir={tmp_path}",
        "model.optimizer.lr=1e-3,1e-4",
    ]
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"},
        timeout=600,
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    (sweep,) = list((tmp_path / "outputs" / "multirun").iterdir())
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0_calo_rrdb", "1_calo_rrdb"], jobs
    for job in jobs:
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        assert "test/psnr" in (sweep / job / "metrics.csv").read_text()
    assert (sweep / ".submitit").is_dir() and time.perf_counter() - t0 < 600
