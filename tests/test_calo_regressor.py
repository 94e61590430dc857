"""The LR impact-point regressor (``lr_regressor``): a baseline of the calo evaluator trained by the setup stage.

Known answers: a RegressorModule recovers a linear map from images to a 2-vector; the evaluator's row is the
resolution of the regressed position (the same definition as the barycentre rows, through the net's own
input transform); the setup stage trains the regressor on the train split only (validation for its logged
metric, never a test event), caches it keyed by its config and loads it on the next run without training.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import TINY, calo_overrides, compose_config
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lit_sr.data.transforms import IntensityTransform
from lit_sr.domains.calo.evaluator import CaloPhysicsEvaluator
from lit_sr.domains.calo.metrics import barycentre, resolution_summary
from lit_sr.models.classifier import ClassifierModule
from lit_sr.models.regressor import RegressorModule, load_frozen_regressor
from lit_sr.nets.classifier import CNNClassifier


# ----------------------------------------------------------------------------- the module
class _LinearImages(Dataset):
    """Images x ~ N(0, 1) [1, 6, 6] with y = A vec(x) + b: a map a linear net can represent exactly."""

    def __init__(self, n: int, a: torch.Tensor, b: torch.Tensor, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 1, 6, 6, generator=g)
        self.y = self.x.flatten(1) @ a.T + b

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.x[i], "position": self.y[i]}


def _linear_problem():
    g = torch.Generator().manual_seed(123)
    a, b = torch.randn(2, 36, generator=g) * 0.3, torch.tensor([0.5, -1.0])
    return a, b, _LinearImages(1024, a, b, 0), _LinearImages(256, a, b, 1)


def _fit_linear(tmp_path: Path, epochs: int = 25) -> tuple[RegressorModule, L.Trainer, _LinearImages]:
    torch.manual_seed(0)
    a, b, train, val = _linear_problem()
    module = RegressorModule(
        nn.Sequential(nn.Flatten(), nn.Linear(36, 2)),
        target_key="position",
        num_outputs=2,
        image_size=6,
        image_key="image",
        optimizer=functools.partial(torch.optim.Adam, lr=0.03),
        lr_decay="cosine",
    )
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, DataLoader(train, batch_size=64, shuffle=True), DataLoader(val, batch_size=128))
    return module, trainer, val


def test_regressor_recovers_a_known_linear_map(tmp_path):
    a, b, _, _ = _linear_problem()
    module, trainer, val = _fit_linear(tmp_path)
    lin = module.net[1]
    assert torch.allclose(lin.weight, a, atol=2e-3), (lin.weight - a).abs().max()
    assert torch.allclose(lin.bias, b, atol=2e-3)
    # the lr decayed to 0 along a cosine over the run's steps (400 = 25 epochs x 16 batches)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)
    assert trainer.global_step == 400
    # the logged validation metrics are the residual statistics of the final net, recomputed with numpy
    with torch.no_grad():
        r = (module.net(val.x) - val.y).double().numpy()
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert logged["val/residual_std"] == pytest.approx(np.std(r, axis=0, ddof=1).mean(), rel=1e-4, abs=1e-7)
    assert logged["val/loss"] == pytest.approx((r**2).sum(1).mean(), rel=1e-4, abs=1e-9)
    assert logged["val/residual_mean_0"] == pytest.approx(r[:, 0].mean(), abs=1e-6)


def test_regressor_of_a_constant_net_reports_the_target_spread(tmp_path):
    """A net that ignores the image (predicts 0) has residual std = the target's std: the metric is not the
    loss of a fit, it is the spread of prediction - target."""
    _, _, _, val = _linear_problem()

    class Zero(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(x.shape[0], 2) * self.w

    module = RegressorModule(Zero(), target_key="position", num_outputs=2, image_key="image")
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(module, DataLoader(val, batch_size=100))
    y = val.y.double().numpy()
    assert float(trainer.callback_metrics["val/residual_std"]) == pytest.approx(np.std(y, 0, ddof=1).mean(), rel=1e-5)


def test_load_frozen_regressor_checks_the_checkpoint(tmp_path):
    module, trainer, val = _fit_linear(tmp_path, epochs=1)
    ckpt = tmp_path / "reg.ckpt"
    trainer.save_checkpoint(str(ckpt))
    net = load_frozen_regressor(str(ckpt), nn.Sequential(nn.Flatten(), nn.Linear(36, 2)), "position", 2, 6)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert net.target_key == "position" and net.image_size == 6
    assert torch.equal(net(val.x), module.net(val.x).detach())
    for kwargs, found in [
        ({"target_key": "impact_cm"}, "target_key='position'"),
        ({"num_outputs": 3}, "num_outputs=2"),
        ({"image_size": 24}, "image_size=6"),
    ]:
        with pytest.raises(ValueError, match="not a usable regressor checkpoint") as err:
            load_frozen_regressor(str(ckpt), nn.Sequential(nn.Flatten(), nn.Linear(36, 2)), **kwargs)
        assert str(ckpt) in str(err.value) and found in str(err.value)
    with pytest.raises(ValueError, match="state dict"):
        load_frozen_regressor(str(ckpt), nn.Sequential(nn.Flatten(), nn.Linear(36, 3)))
    # a classifier checkpoint is not a regressor
    clf = ClassifierModule(CNNClassifier(channels=(4,), feature_dim=8), class_names=["a", "b"])
    clf_path = tmp_path / "clf.ckpt"
    torch.save({"state_dict": clf.state_dict(), "hyper_parameters": dict(clf.hparams)}, clf_path)
    with pytest.raises(ValueError, match="with target_key"):
        load_frozen_regressor(str(clf_path), CNNClassifier(channels=(4,), feature_dim=8))
    # no checkpoint (the setup stage trained none: the data lack the target) -> no row
    assert load_frozen_regressor(None, nn.Linear(1, 1)) is None


# ----------------------------------------------------------------------------- the evaluator row
class _EnergyBarycentre(nn.Module):
    """A 'regressor' with a known answer: the energy-weighted barycentre of the LR image, computed from its
    input space log1p(E / 0.1 GeV) (so the row is right only if the evaluator applies the input transform)."""

    def __init__(self) -> None:
        super().__init__()
        self.input_transform = IntensityTransform(0.1, log=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return barycentre(self.input_transform.inverse(x), "energy")


def test_evaluator_scores_the_regressed_position_like_the_barycentre_rows():
    g = torch.Generator().manual_seed(5)
    lr = torch.rand(300, 1, 6, 6, generator=g) ** 6 * 8.0
    impact = (torch.rand(300, 2, generator=g) - 0.5) * 2.2
    ev = CaloPhysicsEvaluator(baselines=("lr_native", "lr_regressor"), lr_regressor=_EnergyBarycentre())
    assert ev.has_judge("lr_regressor") and not ev.judges["lr_regressor"].training
    batches = [({"impact_cm": impact[i : i + 100]}, {"input": lr[i : i + 100]}) for i in range(0, 300, 100)]
    ev.prepare(batches)
    for batch, images in batches:
        ev.update(batch, images)
    out, _ = ev.results()
    expected = resolution_summary((barycentre(lr.double(), "energy") - impact.double()).float())
    assert out["barycentre_res_cm/lr_regressor"] == pytest.approx(float(expected["std"]), rel=1e-4)
    assert out["barycentre_q68_cm/lr_regressor"] == pytest.approx(float(expected["q68"]), rel=1e-4)
    assert out["barycentre_bias_cm/lr_regressor_x"] == pytest.approx(float(expected["mean_x"]), abs=1e-5)
    assert out["barycentre_bias_cm/lr_regressor_y"] == pytest.approx(float(expected["mean_y"]), abs=1e-5)
    # the same events as the other rows; the energy barycentre is not the tuned log barycentre
    assert ev.position["lr_regressor"].values().shape[0] == ev.position["lr_native"].values().shape[0] == 300
    assert abs(out["barycentre_res_cm/lr_regressor"] - out["barycentre_res_cm/lr_native"]) > 1e-3
    # not named in baselines -> not computed, whatever net is given
    ev2 = CaloPhysicsEvaluator(baselines=("lr_native",), lr_regressor=_EnergyBarycentre())
    ev2.prepare(batches)
    for batch, images in batches:
        ev2.update(batch, images)
    assert not any("lr_regressor" in k for k in ev2.results()[0])


# ----------------------------------------------------------------------------- the setup stage
TINY_REGRESSOR = [
    "judges.nets.lr_regressor.model.net.channels=[8]",
    "judges.nets.lr_regressor.model.net.feature_dim=16",
    "judges.nets.lr_regressor.trainer.max_epochs=2",
    # only the regressor is trained here
    "judges.nets.hr.ckpt=unused_hr.ckpt",
    "judges.nets.lr_cnn.ckpt=unused_lr_cnn.ckpt",
]


def test_setup_stage_trains_the_regressor_on_train_only_then_loads_it_from_the_cache(
    calo_data_dir, tmp_path, monkeypatch, caplog
):
    from lit_sr.domains.calo.data import CaloDataModule
    from lit_sr.setup_hooks import ensure_judges

    cfg = compose_config(["experiment=calo_srgan", *TINY, *calo_overrides(calo_data_dir), *TINY_REGRESSOR], tmp_path)
    assert cfg.model.evaluator.baselines[-1] == "lr_regressor"
    seen: dict[str, list[torch.Tensor]] = {"train": [], "val": []}
    train_step, val_step = RegressorModule.training_step, RegressorModule.validation_step

    def training_step(self, batch, batch_idx):
        seen["train"].append(batch["index"].clone())
        return train_step(self, batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        seen["val"].append(batch["index"].clone())
        return val_step(self, batch, batch_idx)

    def no_test(*args, **kwargs):
        raise AssertionError("the regressor's training asked for the test split")

    original_dataloader = CaloDataModule.dataloader

    def dataloader(self, split, *args, **kwargs):
        if split == "test":
            no_test()
        return original_dataloader(self, split, *args, **kwargs)

    monkeypatch.setattr(RegressorModule, "training_step", training_step)
    monkeypatch.setattr(RegressorModule, "validation_step", validation_step)
    monkeypatch.setattr(CaloDataModule, "test_dataloader", no_test)
    monkeypatch.setattr(CaloDataModule, "dataloader", dataloader)
    caplog.set_level(logging.INFO, logger="lit_sr")
    paths = ensure_judges(cfg)
    path = Path(paths["lr_regressor"])
    assert path.is_file() and path.parent == Path(calo_data_dir) / "judges" and path.name.startswith("lr_regressor-")
    assert paths["hr"] == "unused_hr.ckpt"  # given checkpoints are used as they are

    dm = CaloDataModule(data_dir=str(calo_data_dir), n_per_class=300)
    dm.prepare_data()
    dm.setup("fit")
    split = {s: set(dm.splits[s].indices.tolist()) for s in ("train", "val", "test")}
    train_seen = set(torch.cat(seen["train"]).tolist())
    val_seen = set(torch.cat(seen["val"]).tolist())
    assert train_seen <= split["train"] and len(train_seen) > 0.9 * len(split["train"])  # 2 passes
    assert val_seen == split["val"]
    assert not (train_seen | val_seen) & split["test"]
    n_steps = sum(len(t) for t in seen["train"]) / 16
    assert n_steps == pytest.approx(2 * len(split["train"]) / 16, abs=2)  # 2 epochs of batches of 16

    # the loader the evaluator uses gives back the trained weights, frozen
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["target_key"] == "impact_cm" and ckpt["global_step"] > 0
    from hydra.utils import instantiate

    node = cfg.model.evaluator.lr_regressor
    net = load_frozen_regressor(str(path), instantiate(node.net), "impact_cm", 2, 6)
    assert net.input_transform is not None and net(torch.zeros(3, 1, 6, 6)).shape == (3, 2)

    # a second run loads it: no training, the file untouched
    mtime = path.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("the cached regressor was trained again")

    monkeypatch.setattr("lit_sr.setup_hooks.train_classifier", no_training)
    caplog.clear()
    assert ensure_judges(cfg)["lr_regressor"] == str(path)
    assert path.stat().st_mtime_ns == mtime
    assert any("Judge 'lr_regressor': cached" in r.getMessage() for r in caplog.records)
    # another budget is another regressor (the cache is keyed by the config)
    cfg3 = compose_config(
        ["experiment=calo_srgan", *TINY, *calo_overrides(calo_data_dir), *TINY_REGRESSOR, "seed=0"]
        + ["judges.nets.lr_regressor.trainer.max_epochs=3"],
        tmp_path,
    )
    with pytest.raises(AssertionError, match="trained again"):
        ensure_judges(cfg3)


def test_default_budget_is_forty_passes_and_scales_with_the_data(tmp_path):
    """The study default trains 40 passes over the training split (40,000 batches of 32 on the 32k default
    training events); data_size=tiny keeps the same passes over its 480 events (600 steps, seconds)."""
    default = compose_config(["experiment=calo_srgan", *TINY], tmp_path)
    node = default.judges.nets.lr_regressor
    assert (
        node.trainer.max_epochs == 40 and "max_steps" not in node.trainer and "limit_train_batches" not in node.trainer
    )
    assert node.model.lr_decay == "cosine" and node.model.target_key == "impact_cm" and node.model.image_key == "input"
    n_train = round(0.8 * 2 * default.data.n_per_class)
    assert n_train // default.data.batch_size * node.trainer.max_epochs == 40000
    # the judge's size and architecture, two outputs
    judge = default.judges.nets.lr_cnn.model.net
    for key in ("channels", "feature_dim", "activation", "pooled_size"):
        assert node.model.net[key] == judge[key]
    assert node.model.net.num_classes == 2
    tiny = compose_config(["experiment=calo_srgan", *TINY, "data_size=tiny"], tmp_path)
    n_tiny = round(0.8 * 2 * tiny.data.n_per_class)
    assert n_tiny // tiny.data.batch_size * tiny.judges.nets.lr_regressor.trainer.max_epochs <= 600
