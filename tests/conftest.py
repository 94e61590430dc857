"""Shared fixtures: compose the real configs in-process, run run.py in a subprocess, tiny data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import lit_sr  # noqa: F401  (registers the config resolvers, as run.py does)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs 2 xdist workers on 2 cores: one thread each (and in every run.py they start), not 2 x 2
    # threads fighting over the cores. A plain `pytest` keeps torch's default.
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))

# Options that make any experiment a seconds-long CPU run; tests add their own on top.
TINY = [
    "trainer.accelerator=cpu",
    "trainer.enable_model_summary=false",
    "print_config=false",
    "callbacks.progress_bar=null",
]


# A SAXS dataset that simulates in seconds (3 + 3 frames of 64 x 128, 32 px patches), shared by the SAXS tests.
SAXS_SMALL = dict(
    frame_shape=(64, 128),
    n_xray_frames=3,
    n_full_frames=3,
    n_eval_frames=2,
    patch_size=32,
    n_train_signal_patches=16,
    n_noise_patches=16,
    n_val_patches=8,
    n_test_patches=8,
    signal_threshold=2000.0,
    mask_dilation=2,
    max_masked_fraction=0.2,
    batch_size=4,
)


def compose_config(overrides: list[str], root: Path, output_dir: Path | None = None) -> DictConfig:
    """Compose conf/config.yaml as ``python run.py`` would, with Hydra's runtime set for ``run(cfg)``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("config", overrides=[f"paths.root_dir={root}", *overrides], return_hydra_config=True)
    out = Path(output_dir or root / "run")
    out.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.runtime.cwd = str(root)
        cfg.hydra.job.name = "test"
    HydraConfig.instance().set_config(cfg)  # keeps its own copy of the hydra node
    with open_dict(cfg):
        del cfg["hydra"]  # as in a real run, the task sees the config without it
    return cfg


def run_py(args: list[str], cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python run.py ARGS`` in its own process group; on timeout kill the group (DDP children too)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"run.py {' '.join(args)} timed out after {timeout} s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


@pytest.fixture(scope="session")
def calo_data_dir(tmp_path_factory) -> Path:
    """A small default-layout calorimeter file (300 events per class), simulated once per session."""
    from lit_sr.domains.calo.data import CaloDataModule

    data_dir = tmp_path_factory.mktemp("calo_data")
    CaloDataModule(data_dir=str(data_dir), n_per_class=300).prepare_data()
    return data_dir


def calo_overrides(data_dir: Path) -> list[str]:
    return [f"paths.data_dir={data_dir}", "data.n_per_class=300", "data.batch_size=16", "data.eval_batch_size=64"]
