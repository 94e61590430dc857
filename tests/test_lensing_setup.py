"""The lensing setup stage: independent judges (cached once, never the perceptual net) and a user's folder of
LR/HR pairs without labels, which every lensing SR experiment trains and tests on."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, compose_config
from omegaconf import OmegaConf

from lit_sr.cli import run
from lit_sr.domains.lensing.sim import LensSimConfig, concatenate_blocks, simulate_lenses
from lit_sr.setup_hooks import ensure_classifier, ensure_judges

SR_EXPERIMENTS = ("lensing_rdn", "lensing_srresnet", "lensing_srgan", "lensing_rrdb", "lensing_esrgan")
# a 32 px field (16 px LR), 24 simulated lenses, classifiers of 2 batches
SMALL = [
    "data.n_lenses=24",
    "data.image_size=32",
    "data.batch_size=4",
    "data.eval_batch_size=8",
    "judges.nets.hr.trainer.max_epochs=1",
    "+judges.nets.hr.trainer.limit_train_batches=2",
    "+judges.nets.hr.trainer.limit_val_batches=1",
]


@pytest.fixture(scope="module")
def unlabelled_folder(tmp_path_factory) -> Path:
    """12 simulated lenses (HR 32 px, LR 16 px) saved as LR/*.npy + HR/*.npy, names matching, no labels.csv."""
    folder = tmp_path_factory.mktemp("user_lenses")
    d = concatenate_blocks(simulate_lenses(12, seed=7, config=LensSimConfig(image_size=32)))
    for split, key in (("LR", "lr"), ("HR", "hr")):
        (folder / split).mkdir()
        for i, img in enumerate(d[key]):
            np.save(folder / split / f"lens_{i:03d}.npy", img)
    return folder


def test_judges_are_not_the_perceptual_net(tmp_path):
    """The GAN config: the evaluator's judges are other checkpoints, another architecture and other seeds than the
    perceptual net; a judge pointed at the perceptual checkpoint is refused."""
    cfg = compose_config(["experiment=lensing_srgan", *TINY], tmp_path)
    raw = OmegaConf.to_container(cfg, resolve=False)
    assert raw["model"]["perceptual_net"]["classifier"]["ckpt_path"] == "${model.classifier_ckpt}"
    assert raw["model"]["evaluator"]["judge"]["ckpt_path"] == "${judges.nets.hr.ckpt}"
    assert raw["model"]["evaluator"]["lr_judge"]["ckpt_path"] == "${judges.nets.lr.ckpt}"
    judge_net = OmegaConf.to_container(cfg.judges.nets.hr.model.net, resolve=True)
    perceptual_net = OmegaConf.to_container(cfg.model.perceptual_net.classifier.net, resolve=True)
    assert judge_net != perceptual_net and judge_net["channels"] != perceptual_net["channels"]
    assert cfg.judges.nets.hr.model.image_key == "target" and cfg.judges.nets.lr.model.image_key == "input"
    assert len({cfg.seed, cfg.judges.nets.hr.seed, cfg.judges.nets.lr.seed}) == 3
    cfg.model.classifier_ckpt = str(tmp_path / "perceptual.ckpt")
    cfg.judges.nets.hr.ckpt = str(tmp_path / "perceptual.ckpt")
    cfg.judges.nets.lr.ckpt = str(tmp_path / "lr.ckpt")
    with pytest.raises(ValueError, match="perceptual classifier"):
        ensure_judges(cfg)


def test_judges_trained_once_cached_and_random_state_kept(tmp_path):
    data_dir = tmp_path / "data"
    overrides = ["experiment=lensing_rdn", *TINY, *SMALL, f"paths.data_dir={data_dir}"]
    cfg = compose_config(overrides, tmp_path, tmp_path / "run1")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    paths = ensure_judges(cfg)
    assert torch.equal(torch.rand(3), expected), "training the judges changed the run's random state"
    assert set(paths) == {"hr", "lr"}
    assert all(Path(p).parent == data_dir / "judges" and Path(p).is_file() for p in paths.values())
    assert paths["hr"] != paths["lr"] and cfg.judges.nets.hr.ckpt is None  # the config is read, never edited
    mtimes = {k: Path(p).stat().st_mtime_ns for k, p in paths.items()}
    # a later run (another experiment, another run seed) finds them: nothing is trained again
    cfg2 = compose_config(
        ["experiment=lensing_srresnet", *TINY, *SMALL, f"paths.data_dir={data_dir}", "seed=5"],
        tmp_path,
        tmp_path / "run2",
    )
    assert ensure_judges(cfg2) == paths
    assert {k: Path(p).stat().st_mtime_ns for k, p in paths.items()} == mtimes
    # another judge seed is another judge
    cfg3 = compose_config([*overrides, "judges.nets.hr.seed=7"], tmp_path, tmp_path / "run3")
    assert ensure_judges(cfg3)["hr"] != paths["hr"]
    # the LR judge was trained on the native LR grid: its checkpoint records image_key=input
    hp = torch.load(paths["lr"], map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hp["image_key"] == "input"


def test_unlabelled_folder_perceptual_classifier_from_the_simulation_cached(unlabelled_folder, tmp_path, caplog):
    """No labels: the GANs' perceptual classifier is trained on the built-in simulation at the user's image size
    (32 px), cached under data_dir and found by the next run; the judges are skipped with one log line."""
    data_dir = tmp_path / "data"
    overrides = [
        "experiment=lensing_srgan",
        *TINY,
        f"data.file={unlabelled_folder}",
        f"paths.data_dir={data_dir}",
        "data.n_lenses=12",
        "data.batch_size=4",
        "classifier.trainer.max_epochs=1",
        "+classifier.trainer.limit_train_batches=2",
        "+classifier.trainer.limit_val_batches=1",
    ]
    cfg = compose_config(overrides, tmp_path, tmp_path / "run1")
    path = ensure_classifier(cfg)
    assert Path(path).parent == data_dir / "classifiers" and Path(path).is_file()
    assert [p.name for p in data_dir.glob("lensing_*.h5")] and all("x32px" in p.name for p in data_dir.glob("*.h5"))
    mtime = Path(path).stat().st_mtime_ns
    cfg2 = compose_config(overrides, tmp_path, tmp_path / "run2")
    assert ensure_classifier(cfg2) == path and Path(path).stat().st_mtime_ns == mtime
    with caplog.at_level(logging.INFO, logger="lit_sr"):
        assert ensure_judges(cfg2) == {"hr": None, "lr": None}
    skipped = [r.getMessage() for r in caplog.records if "Label-based metrics skipped" in r.getMessage()]
    assert len(skipped) == 1 and str(unlabelled_folder) in skipped[0] and "no labels" in skipped[0]


@pytest.mark.parametrize("experiment", SR_EXPERIMENTS)
def test_every_lensing_experiment_trains_and_tests_on_an_unlabelled_folder(experiment, unlabelled_folder, tmp_path):
    """python run.py experiment=<E> data.file=<folder without labels> debug=fdr: runs through, with the label-free
    metrics and without the label-based ones (the folder's own images cannot be scored against labels)."""
    cfg = compose_config(
        [
            f"experiment={experiment}",
            *TINY,
            f"data.file={unlabelled_folder}",
            "debug=fdr",
            f"paths.data_dir={tmp_path / 'data'}",
            "data.n_lenses=12",
            "data.batch_size=4",
        ],
        tmp_path,
        tmp_path / "fdr",
    )
    metrics = run(cfg)
    for key in (
        "test/psnr",
        "test/bicubic_psnr",
        "test/psnr_minmax/sr",
        "test/flux_ratio/sr",
        "test/theta_e_vs_hr_abs_err_arcsec/bicubic",
    ):  # an untrained SR net may give no ring
        assert key in metrics and np.isfinite(metrics[key]), (key, sorted(metrics))
    assert not [k for k in metrics if "auc" in k or "acc/" in k], sorted(metrics)
    assert cfg.judges.nets.hr.ckpt is None and cfg.judges.nets.lr.ckpt is None


def test_a_second_run_waits_for_the_checkpoint_another_run_is_training(tmp_path):
    """Two runs started together share a cached checkpoint: the second waits for the first instead of training
    it again; a lock left by a dead process is taken over."""
    import threading
    import time

    from lit_sr.setup_hooks import _exclusive, _lock_path

    path = tmp_path / "judge.ckpt"
    events: list = []

    def first():
        with _exclusive(path, poll_s=0.05):
            events.append("first trains")
            time.sleep(0.3)
            path.write_text("weights")

    def second():
        time.sleep(0.05)
        with _exclusive(path, poll_s=0.05):
            events.append(("second finds it trained", path.is_file()))

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert events == ["first trains", ("second finds it trained", True)] and not _lock_path(path).exists()
    import socket

    other = tmp_path / "other.ckpt"
    _lock_path(other).write_text(f"{socket.gethostname()} 999999999")  # no such process
    with _exclusive(other, poll_s=0.05):
        assert _lock_path(other).exists()
    assert not _lock_path(other).exists()


def test_the_gan_starts_from_a_psnr_model_trained_once_and_cached(tmp_path):
    from lit_sr.setup_hooks import ensure_classifiers, ensure_pretrained
    from lit_sr.utils.trainer import with_updates

    data_dir = tmp_path / "data"
    overrides = [
        "experiment=lensing_srgan",
        *TINY,
        *SMALL,
        f"paths.data_dir={data_dir}",
        "generator_init.trainer.max_steps=2",
        "+generator_init.trainer.limit_val_batches=1",
    ]
    cfg = compose_config(overrides, tmp_path, tmp_path / "run1")
    updates = ensure_classifiers(cfg, perceptual=False, pretrained=True, judges_key="no_judges")
    path = updates["generator_init.ckpt"]
    assert Path(path).parent == data_dir / "pretrained" and cfg.generator_init.ckpt is None  # read, not edited
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert any(k.startswith("net.") for k in state)
    # the runner's merged config: the callback that loads the generator sees the path
    new = with_updates(cfg, updates)
    assert OmegaConf.to_container(new.callbacks.init_generator, resolve=True)["ckpt_path"] == path
    mtime = Path(path).stat().st_mtime_ns
    cfg2 = compose_config(overrides, tmp_path, tmp_path / "run2")
    assert ensure_pretrained(cfg2) == path and Path(path).stat().st_mtime_ns == mtime  # found, not retrained
    given = compose_config([*overrides, f"generator_init.ckpt={tmp_path / 'srresnet.ckpt'}"], tmp_path, tmp_path / "r3")
    assert ensure_pretrained(given) == str(tmp_path / "srresnet.ckpt")
