"""CLI-level tests of the calorimeter GAN experiments: calo_classifier, calo_srgan (+ classifier pre-training),
physics metrics, a file without impact_cm, a wrong classifier checkpoint, and the GAN under 2-process DDP."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import h5py
import pytest
import torch
from conftest import TINY, calo_overrides, compose_config, run_py

from lit_sr.cli import run
from lit_sr.models.classifier import load_frozen_classifier
from lit_sr.nets.classifier import CNNClassifier

# Tiny nets: seconds per run on one CPU core.
TINY_CLASSIFIER = ["model.net.channels=[8]", "model.net.feature_dim=16"]
TINY_GAN = [
    "model.net.num_features=8",
    "model.net.num_blocks=1",
    "model.net.growth_channels=8",
    "model.critic.channels=[8,8,8,8,8,8]",
    "model.critic.hidden=16",
]
# calo_srgan's own classifier pre-training, tiny
TINY_PRETRAIN = [
    "classifier.model.net.channels=[8]",
    "classifier.model.net.feature_dim=16",
    "classifier.trainer.max_epochs=1",
    "classifier.trainer.limit_train_batches=3",
    "+classifier.trainer.limit_val_batches=2",
    # the judge and the LR CNN (trained once per data file, cached under <data_dir>/judges), tiny
    "judges.nets.hr.model.net.channels=[8]",
    "judges.nets.hr.model.net.feature_dim=16",
    "judges.nets.lr_cnn.model.net.channels=[8]",
    "judges.nets.lr_cnn.model.net.feature_dim=16",
    "judges.trainer.limit_train_batches=3",
    "+judges.trainer.limit_val_batches=2",
    # the LR impact-point regressor (trained and cached like the judges), tiny
    "judges.nets.lr_regressor.model.net.channels=[8]",
    "judges.nets.lr_regressor.model.net.feature_dim=16",
    "judges.nets.lr_regressor.trainer.max_epochs=1",
    "+judges.nets.lr_regressor.trainer.limit_train_batches=3",
    "+judges.nets.lr_regressor.trainer.limit_val_batches=2",
]
PRETRAIN_LOG = "No classifier checkpoint given (model.classifier_ckpt=null): training one first"


def _metrics(run_dir: Path) -> dict[str, float]:
    """Last logged value of every metric in the CSV logger's file."""
    out: dict[str, float] = {}
    with open(run_dir / "metrics.csv") as fh:
        for row in csv.DictReader(fh):
            out.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return out


@pytest.fixture(scope="module")
def classifier_ckpt(calo_data_dir, tmp_path_factory) -> Path:
    """Train the calo_classifier experiment (tiny) once for this module; its last checkpoint."""
    root = tmp_path_factory.mktemp("clf")
    cfg = compose_config(
        [
            "experiment=calo_classifier",
            *TINY,
            *calo_overrides(calo_data_dir),
            "debug=limit",
            "trainer.max_epochs=1",
            *TINY_CLASSIFIER,
        ],
        root,
    )
    run(cfg)
    ckpt = root / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return ckpt


def _tiny_classifier():
    return CNNClassifier(channels=(8,), feature_dim=16)


def test_calo_classifier_experiment_checkpoint_loads_frozen(classifier_ckpt):
    net = load_frozen_classifier(
        str(classifier_ckpt), _tiny_classifier(), class_names=["photon", "pion"], image_size=24
    )
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert net.input_transform is not None and net.image_size == 24
    assert net.features(torch.rand(2, 1, 24, 24)).shape == (2, 16)
    metrics = _metrics(classifier_ckpt.parents[1])
    assert "val/auc" in metrics and "test/auc" in metrics


def test_calo_srgan_trains_classifier_first_then_gan(calo_data_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="lit_sr")
    cfg = compose_config(
        [
            "experiment=calo_srgan",
            *TINY,
            *calo_overrides(calo_data_dir),
            "debug=limit",
            "trainer.devices=1",
            *TINY_GAN,
            *TINY_PRETRAIN,
            "model.pretrain_steps=2",
            "optimized_metric=test/barycentre_res_cm/sr",
        ],
        tmp_path,
    )
    assert cfg.model.classifier_ckpt is None
    value = run(cfg)
    run_dir = tmp_path / "run"
    assert sum(PRETRAIN_LOG in r.getMessage() for r in caplog.records) == 1
    clf = run_dir / "classifier" / "classifier.ckpt"
    assert clf.is_file()
    load_frozen_classifier(str(clf), _tiny_classifier(), image_size=24)
    m = _metrics(run_dir)
    assert value == pytest.approx(m["test/barycentre_res_cm/sr"], rel=1e-5)
    for stage in ("val", "test"):
        # (lr_fit needs twice as many validation events as its 46 parameters: not on this 60-event split)
        assert f"{stage}/barycentre_res_cm/lr_fit" not in m
        for src in ("sr", "hr", "lr_native", "lr_regressor"):
            for name in ("barycentre_res_cm", "barycentre_q68_cm", "barycentre_bias_cm"):
                key = f"{stage}/{name}/{src}" + ("_x" if name == "barycentre_bias_cm" else "")
                assert key in m, f"{key} not logged"
        for src in ("sr", "hr", "lr_shape", "lr_cnn"):
            for name in ("auc", "pion_rejection", "pion_rejection_lower_limit"):
                assert f"{stage}/{name}/{src}" in m, f"{stage}/{name}/{src} not logged"
        for src in ("sr", "hr"):
            assert f"{stage}/width_mean_cm/{src}" in m
        assert f"{stage}/width_w1/sr_vs_hr" in m
        assert f"{stage}/psnr" in m and f"{stage}/bicubic_psnr" in m
        # the LR barycentre's w0, tuned on the validation split, is logged
        assert 2.0 <= m[f"{stage}/tuned/lr_native_w0"] <= 7.0
    # the judge and the LR CNN are other networks than the perceptual net (another file, architecture and
    # seed), cached beside the data
    cfg_judges = [p.name for p in (Path(calo_data_dir) / "judges").glob("*.ckpt")]
    assert any(n.startswith("hr-") for n in cfg_judges) and any(n.startswith("lr_cnn-") for n in cfg_judges)
    assert any(n.startswith("lr_regressor-") for n in cfg_judges)
    from omegaconf import OmegaConf

    resolved = OmegaConf.load(run_dir / "config_resolved.yaml")
    judge_path, perceptual_path = Path(resolved.judges.nets.hr.ckpt), Path(resolved.model.classifier_ckpt)
    assert judge_path.resolve() != perceptual_path.resolve() and judge_path.is_file()
    shapes = [
        {k: tuple(v.shape) for k, v in torch.load(p, map_location="cpu", weights_only=True)["state_dict"].items()}
        for p in (judge_path, perceptual_path)
    ]
    assert shapes[0] != shapes[1]  # another architecture
    assert resolved.judges.nets.hr.seed != resolved.seed
    # 2 pre-training batches then 4 GAN batches; global_step counts batches
    assert m["train/pretraining"] == 0.0 and "train/gp" in m
    gan = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert gan["global_step"] == 6
    assert gan["hyper_parameters"]["classifier_ckpt"] == str(clf)
    # end-of-validation physics plots
    assert list((run_dir / "figures").glob("val_barycentre_residuals_epoch*.png"))


def test_calo_srgan_file_without_impact_trains_with_a_note(calo_data_dir, classifier_ckpt, tmp_path, caplog):
    src = next(Path(calo_data_dir).glob("*.h5"))
    user = tmp_path / "no_impact.h5"
    with h5py.File(src, "r") as fin, h5py.File(user, "w") as fout:
        for key in ("hr", "lr", "label", "energy_gev"):
            fout.create_dataset(key, data=fin[key][:])
    caplog.set_level(logging.INFO)
    cfg = compose_config(
        [
            "experiment=calo_srgan",
            *TINY,
            *calo_overrides(calo_data_dir),
            "debug=limit",
            "trainer.devices=1",
            *TINY_GAN,
            *TINY_PRETRAIN,
            f"data.file={user}",
            f"model.classifier_ckpt={classifier_ckpt}",
        ],
        tmp_path,
    )
    run(cfg)
    notes = [r.getMessage() for r in caplog.records if "has no impact_cm" in r.getMessage()]
    # (one note per DataModule set up: the setup hook reads a batch to check for labels)
    assert notes and all("metrics that need them are skipped" in n for n in notes)
    assert not any(PRETRAIN_LOG in r.getMessage() for r in caplog.records)
    # no impact_cm to learn: the LR regressor is not trained, its row is skipped with one warning naming it
    skipped = [r.getMessage() for r in caplog.records if "Metrics of lr_regressor skipped" in r.getMessage()]
    assert len(skipped) == 1 and "impact_cm" in skipped[0]
    m = _metrics(tmp_path / "run")
    assert not any("barycentre" in k for k in m)
    assert "test/width_w1/sr_vs_hr" in m and "test/auc/sr" in m and "test/psnr" in m


def test_calo_srgan_wrong_classifier_checkpoint_is_named(calo_data_dir, classifier_ckpt, tmp_path):
    ckpt = torch.load(classifier_ckpt, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["class_names"] = ["no_sub", "cdm", "vortex"]  # a lensing classifier's
    wrong_task = tmp_path / "lensing_classifier.ckpt"
    torch.save(ckpt, wrong_task)
    for path, extra, found in [
        (wrong_task, [], "class_names=['no_sub', 'cdm', 'vortex']"),
        (classifier_ckpt, ["classifier.model.net.channels=[16]"], "state dict"),
    ]:
        cfg = compose_config(
            [
                "experiment=calo_srgan",
                *TINY,
                *calo_overrides(calo_data_dir),
                "debug=limit",
                *TINY_GAN,
                *TINY_PRETRAIN,
                *extra,
                f"model.classifier_ckpt={path}",
            ],
            tmp_path,
        )
        with pytest.raises(Exception, match="not a usable classifier checkpoint") as err:
            run(cfg)
        assert str(path) in str(err.value) and found in str(err.value)


def test_calo_srgan_ddp_sim_two_processes(calo_data_dir, tmp_path):
    """GAN (gradient penalty = double backward) under 2 gloo processes; classifier trained once by rank 0."""
    args = [
        "experiment=calo_srgan",
        "trainer=ddp_sim",
        f"paths.root_dir={tmp_path}",
        *TINY,
        *calo_overrides(calo_data_dir),
        "debug=limit",
        *TINY_GAN,
        *TINY_PRETRAIN,
        "model.pretrain_steps=1",
    ]
    proc = run_py(args, cwd=tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stdout[-4000:]
    runs = [p for p in (tmp_path / "outputs" / "calo_srgan").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    run_dir = runs[0]
    assert proc.stdout.count(PRETRAIN_LOG) == 1  # rank 0 trains it, the child process reuses the file
    assert (run_dir / "classifier" / "classifier.ckpt").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    m = _metrics(run_dir)
    assert "test/barycentre_res_cm/sr" in m and "train/gp" in m
