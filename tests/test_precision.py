"""Evaluation runs in fp32 under a bf16-mixed trainer: the net's output, the logged loss and PSNR of val/test
steps and the predictions equal those of a fp32 trainer (to 1e-6), while the training step stays in bf16."""

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from lit_sr.models import adversarial, classifier, decomposition, gan_sr, progan, supervised
from lit_sr.models.base import EVALUATION_STEPS, LitSRModule
from lit_sr.models.supervised import SupervisedSRModule


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 4, 3, padding=1), nn.PixelShuffle(2), nn.Sigmoid()
    )


def _batches(n: int = 3) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        {"input": torch.rand(4, 1, 12, 12, generator=g), "target": torch.rand(4, 1, 24, 24, generator=g)}
        for _ in range(n)
    ]


class _Probe(SupervisedSRModule):
    """A subclass defined outside the library: its own steps are wrapped too. Records the test step's output
    and whether autocast was on in each kind of step."""

    def __init__(self) -> None:
        super().__init__(_net(), scale=2, physical_range=(0.0, 1.0), baselines=("bicubic",))
        self.outputs: list[torch.Tensor] = []
        self.autocast_in: dict[str, bool] = {}

    def training_step(self, batch, batch_idx):
        self.autocast_in["train"] = torch.is_autocast_enabled("cpu")
        return super().training_step(batch, batch_idx)

    def test_step(self, batch, batch_idx):
        self.autocast_in["test"] = torch.is_autocast_enabled("cpu")
        super().test_step(batch, batch_idx)
        out = self.eval_net(batch["input"])
        self.outputs.append(out)
        return out


def _trainer(precision: str) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )


def _evaluate(precision: str) -> tuple[_Probe, dict[str, float], list[dict]]:
    model = _Probe()
    trainer = _trainer(precision)
    # one training step at this precision: autocast must be on there (bf16 trains), then test and predict
    trainer.fit(model, DataLoader(_batches(1), batch_size=None))
    model.net.load_state_dict(_net().state_dict())  # the same weights in both precisions
    metrics = trainer.test(model, DataLoader(_batches(), batch_size=None), verbose=False)[0]
    predictions = trainer.predict(model, DataLoader(_batches(), batch_size=None))
    return model, metrics, predictions


def test_bf16_mixed_evaluation_equals_fp32():
    fp32, m32, p32 = _evaluate("32-true")
    bf16, m16, p16 = _evaluate("bf16-mixed")
    for a, b in zip(fp32.outputs, bf16.outputs, strict=True):
        assert b.dtype == torch.float32
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
    assert set(m16) == set(m32) and {"test/psnr", "test/loss", "test/bicubic_psnr"} <= set(m32)
    for key in m32:
        assert m16[key] == pytest.approx(m32[key], rel=1e-6, abs=1e-6), key
    for a, b in zip(p32, p16, strict=True):
        assert b["output"].dtype == torch.float32
        torch.testing.assert_close(b["output"], a["output"], rtol=0, atol=1e-6)
    # bf16 trained (autocast on in the training step), evaluation ran without autocast
    assert bf16.autocast_in == {"train": True, "test": False} and fp32.autocast_in == {"train": False, "test": False}
    # the check can fail: the same net and batches under bf16 autocast are off by far more than 1e-6
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        in_bf16 = _net()(_batches()[0]["input"]).float()
    assert (in_bf16 - fp32.outputs[0]).abs().max() > 1e-4


@pytest.mark.parametrize(
    "cls",
    [
        supervised.SupervisedSRModule,
        gan_sr.GANSRModule,
        adversarial.AdversarialModule,
        progan.ProGANModule,
        decomposition.DecompositionModule,
        classifier.ClassifierModule,
    ],
)
def test_every_module_evaluates_in_fp32(cls):
    assert issubclass(cls, LitSRModule)
    for name in EVALUATION_STEPS:
        step = getattr(cls, name)
        if step is not getattr(L.LightningModule, name):
            assert getattr(step, "_runs_in_fp32", False), f"{cls.__name__}.{name} is not wrapped"
