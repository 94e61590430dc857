"""LightningModule for signal/noise decomposition: loss, metrics, baselines, predict in keV."""

import functools
import types

import lightning as L
import pytest
import torch
from conftest import SAXS_SMALL

from lit_sr.domains.saxs.data import SAXSDataModule
from lit_sr.metrics.background import HitPrecision, HitRecall, median_hit_filter
from lit_sr.models.decomposition import DecompositionModule
from lit_sr.nets.decomposition import DecompositionNet


def test_hit_metrics():
    p, r = HitPrecision(0.5), HitRecall(0.5)
    pred = torch.tensor([0.9, 0.9, 0.1, 0.1, 0.9])
    true = torch.tensor([0.9, 0.1, 0.9, 0.1, 0.9])
    p.update(pred, true)
    r.update(pred, true)
    assert p.compute().item() == pytest.approx(2 / 3) and r.compute().item() == pytest.approx(2 / 3)
    assert HitPrecision(0.5).compute().item() == 0.0


def test_median_filter_removes_hit_keeps_smooth():
    x = torch.linspace(0, 1, 16).repeat(16, 1)[None, None].clone()
    x[0, 0, 7, 7] += 5.0
    s, n = median_hit_filter(x)
    assert n[0, 0, 7, 7] > 4.5 and abs(s[0, 0, 7, 7] - x[0, 0, 7, 6]) < 0.1
    assert n.sum() - n[0, 0, 7, 7] < 1e-5


class Oracle(torch.nn.Module):
    """Perfect net given the batch (for metric checks)."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))
        self.batch = None

    def forward(self, x):
        return {"signal": self.batch["target"] + 0 * self.p, "noise": self.batch["noise"] + 0 * self.p}


def test_loss_and_perfect_metrics():
    m = DecompositionModule(Oracle())
    b = {
        "input": torch.rand(2, 1, 16, 16),
        "target": torch.rand(2, 1, 16, 16),
        "noise": torch.rand(2, 1, 16, 16),
        "bounds": torch.tensor([[1.0, 11.0], [0.0, 2.0]]),
    }
    m.net.batch = b
    assert m.loss_fn(m(b["input"]), b).item() == 0.0
    pred = m.predict_step(b, 0)
    torch.testing.assert_close(pred["signal"][0], b["target"][0] * 10 + 1)
    torch.testing.assert_close(pred["noise"][1], b["noise"][1] * 2)
    panels = m.panel_images(b)
    assert list(panels) == ["input", "predicted signal", "true signal", "predicted noise"]


@pytest.mark.slow
def test_fit_validate_test(tmp_path):
    torch.manual_seed(0)
    dm = SAXSDataModule(data_dir=str(tmp_path), **SAXS_SMALL)
    net = DecompositionNet("c4", features=(2, 4, 4, 4))
    model = DecompositionModule(net, optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.0))
    assert "net" not in model.hparams
    tr = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    tr.fit(model, dm)
    keys = tr.callback_metrics
    for k in (
        "val/loss",
        "val/signal_psnr",
        "val/input_psnr",
        "val/median_psnr",
        "val/signal_ssim",
        "val/noise_l1",
        "val/hit_precision",
        "val/hit_recall",
        "val/median_hit_recall",
    ):
        assert k in keys, k
    # the raw-input baseline: its signal L1 equals the mean normalised noise... up to clipping
    res = tr.test(model, dm, verbose=False)[0]
    assert res["test/input_hit_recall"] == 0.0  # zero noise estimate finds no hit
    assert res["test/median_hit_recall"] > 0.0
    assert torch.isfinite(torch.tensor(res["test/signal_psnr"]))


def test_component_loss_choice():
    b = {"target": torch.zeros(1, 1, 2, 2), "noise": torch.zeros(1, 1, 2, 2)}
    out = {"signal": torch.full((1, 1, 2, 2), 0.5), "noise": torch.full((1, 1, 2, 2), 0.2)}
    assert DecompositionModule(Oracle()).loss_fn(out, b).item() == pytest.approx(0.5 + 0.2)
    assert DecompositionModule(Oracle(), loss="mse").loss_fn(out, b).item() == pytest.approx(0.25 + 0.04)
    with pytest.raises(ValueError, match="'l1'.*'mse'"):
        DecompositionModule(Oracle(), loss="huber")
    with pytest.raises(ValueError, match="warmup_loss"):
        DecompositionModule(Oracle(), warmup_loss="l2")


def test_warmup_loss_only_in_its_epochs():
    b = {"input": torch.zeros(1, 1, 2, 2), "target": torch.zeros(1, 1, 2, 2), "noise": torch.zeros(1, 1, 2, 2)}

    class Half(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return {"signal": x + 0.5 + self.p, "noise": x + self.p}

    m = DecompositionModule(Half(), loss="l1", warmup_loss="mse", warmup_epochs=2)
    m.log = lambda *a, **k: None
    for epoch, expected in ((0, 0.25), (1, 0.25), (2, 0.5)):
        m._trainer = types.SimpleNamespace(current_epoch=epoch)
        assert m.training_step(b, 0).item() == pytest.approx(expected), epoch
    assert m.loss_fn(m(b["input"]), b).item() == pytest.approx(0.5)  # val/test: always the main loss


@pytest.mark.slow
def test_short_training_removes_background_hits(tmp_path):
    """The CPU recipe's ingredients (C4 net, mean group pooling, straight-through ReLU head, squared
    error, lr 1e-3) must learn the hits within a few hundred steps: the net's signal PSNR on held-out
    patches beats the raw input by 4 dB and the median filter (300 steps, about 20 s)."""
    torch.manual_seed(0)
    dm = SAXSDataModule(
        data_dir=str(tmp_path),
        frame_shape=(128, 256),
        n_xray_frames=4,
        n_full_frames=4,
        n_eval_frames=2,
        patch_size=32,
        n_train_signal_patches=16 * 300,
        n_noise_patches=256,
        n_val_patches=64,
        signal_threshold=1250.0,
        batch_size=16,
    )
    dm.prepare_data()
    dm.setup("fit")
    net = DecompositionNet("c4", features=(4, 8, 16, 32), noise_activation="relu_st")
    model = DecompositionModule(
        net, optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.0), loss="mse", hit_threshold=0.1
    )
    tr = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    tr.fit(model, dm)
    m = tr.callback_metrics
    assert m["val/signal_psnr"] > m["val/input_psnr"] + 4.0, {k: float(v) for k, v in m.items()}
    assert m["val/signal_psnr"] > m["val/median_psnr"]
    # hits above 10 % of the patch range: the net flags them more precisely than the median filter
    assert m["val/hit_precision"] > m["val/median_hit_precision"] and m["val/hit_recall"] > 0.2
