"""Photon / neutral-pion classifier on HR calorimeter images, and its frozen loader.

The trained net serves the GAN as the perceptual-loss feature extractor Phi and the physics
evaluator as the separation probe. Its hyperparameters carry the architecture, the domain and the
image size, so :func:`load_frozen_classifier` can rebuild and check it from the checkpoint alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from lit_sr.models.base import LitSRModule, OptimizerFactory, SchedulerFactory, transform_hparams
from lit_sr.nets.calo_classifier import CaloClassifier

ARCH_KEYS = ("in_channels", "channels", "feature_dim", "activation", "pooled_size", "dropout")


class CaloClassifierModule(LitSRModule):
    """BCE-with-logits on ``batch["target"]`` (HR, model space) vs ``batch["label"]`` (1 = pion).

    Logs ``train/loss``, ``train/acc``, ``{val,test}/loss``, ``{val,test}/acc`` and ``{val,test}/auc``
    (monitor ``val/auc``, mode max).

    Args:
        in_channels, channels, feature_dim, activation, pooled_size, dropout: ``CaloClassifier`` options.
        image_size: HR image size the classifier is trained on (checked when loaded).
        domain: data domain (checked when loaded).
        image_key: batch key holding the images ('target' = HR; 'input' for an LR classifier).
        transform: the data's intensity transform (saved so the frozen net knows its input space).
    """

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (32, 64), feature_dim: int = 128,
                 activation: str = "swish", pooled_size: int = 3, dropout: float = 0.0, image_size: int = 24,
                 domain: str = "calorimeter", image_key: str = "target", transform: nn.Module | None = None,
                 optimizer: OptimizerFactory | None = None, scheduler: SchedulerFactory | None = None,
                 scheduler_monitor: str | None = None, scheduler_interval: str = "epoch") -> None:
        super().__init__(optimizer, scheduler, scheduler_monitor, scheduler_interval)
        if isinstance(channels, (list, tuple)) or hasattr(channels, "__iter__"):
            channels = [int(c) for c in channels]
        # Plain values only, so Lightning's own checkpoint loading (weights_only=True, e.g. the test
        # after training) works: the transform is stored as its parameters, rebuilt by the loader.
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "transform"])
        self.hparams["transform"] = transform_hparams(transform)
        self.net = CaloClassifier(in_channels, channels, feature_dim, activation, pooled_size, dropout)
        self.transform = transform
        self.image_key = image_key
        self.train_acc = BinaryAccuracy()
        self.metrics = nn.ModuleDict({s: MetricCollection({"acc": BinaryAccuracy(), "auc": BinaryAUROC()},
                                                          prefix=f"{s}/") for s in ("val", "test")})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = batch[self.image_key], batch["label"].float()
        logits = self.net(x)
        return F.binary_cross_entropy_with_logits(logits, y), logits, batch["label"].long()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, logits, y = self._step(batch)
        self.train_acc(logits, y)
        self.log("train/loss", loss, prog_bar=True, batch_size=y.shape[0])
        self.log("train/acc", self.train_acc, batch_size=y.shape[0])
        return loss

    def _eval(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        loss, logits, y = self._step(batch)
        self.metrics[stage].update(logits, y)  # both metrics take logits (sigmoid applied inside)
        self.log(f"{stage}/loss", loss, batch_size=y.shape[0], sync_dist=True)
        self.log_dict(self.metrics[stage], batch_size=y.shape[0], prog_bar=stage == "val")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval(batch, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        logits = self.net(batch[self.image_key])
        out = {"pion_probability": torch.sigmoid(logits), "logit": logits}
        if "label" in batch:
            out["label"] = batch["label"]
        return out


def _rebuild_transform(stored: Any) -> nn.Module | None:
    """Stored transform parameters -> ``IntensityTransform`` (older checkpoints hold the object itself)."""
    if stored is None or isinstance(stored, nn.Module):
        return stored
    from lit_sr.data.transforms import IntensityTransform  # pure-torch building block

    return IntensityTransform(**dict(stored))


def _bad(path: str, found: str, expected: str) -> ValueError:
    return ValueError(f"{path}: not a usable photon/pion classifier checkpoint: found {found}; expected {expected}")


def load_frozen_classifier(ckpt_path: str, domain: str = "calorimeter", image_size: int | None = None,
                           map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the ``CaloClassifier`` of a ``CaloClassifierModule`` Lightning checkpoint, frozen (eval, no grad).

    Checks that the hyperparameters describe a CaloClassifierModule of ``domain`` (and ``image_size``
    when given) and that the state dict matches the architecture; any mismatch raises one
    ``ValueError`` naming the file, what was found and what was expected. The returned net has
    ``input_transform`` (the data transform it was trained with, or None) and ``image_size`` attributes.
    """
    path = str(ckpt_path)
    if not Path(path).is_file():
        raise ValueError(f"{path}: classifier checkpoint not found")
    try:
        # Lightning checkpoints hold pickled hyperparameters (the transform): trusted local file.
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ValueError(f"{path}: cannot read classifier checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise _bad(path, f"an object without 'state_dict' ({type(ckpt).__name__})", "a Lightning checkpoint")
    hp = dict(ckpt.get("hyper_parameters") or {})
    missing = [k for k in ARCH_KEYS if k not in hp]
    if missing:
        raise _bad(path, f"hyperparameters {sorted(hp)} (missing {missing})",
                   f"a CaloClassifierModule checkpoint with {list(ARCH_KEYS)}")
    if hp.get("domain") != domain:
        raise _bad(path, f"domain={hp.get('domain')!r}", f"domain={domain!r}")
    if image_size is not None and hp.get("image_size") != image_size:
        raise _bad(path, f"image_size={hp.get('image_size')!r}", f"image_size={image_size!r}")
    net = CaloClassifier(hp["in_channels"], hp["channels"], hp["feature_dim"], hp["activation"],
                         hp["pooled_size"], hp["dropout"])
    sd = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    expected = net.state_dict()
    found_shapes = {k: tuple(v.shape) for k, v in sd.items()}
    expected_shapes = {k: tuple(v.shape) for k, v in expected.items()}
    if found_shapes != expected_shapes:
        diff = sorted(set(found_shapes.items()) ^ set(expected_shapes.items()))[:6]
        raise _bad(path, f"state dict 'net.*' entries differing from the architecture, e.g. {diff}",
                   f"CaloClassifier weights for {({k: hp[k] for k in ARCH_KEYS})}")
    net.load_state_dict(sd)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    net.input_transform = _rebuild_transform(hp.get("transform"))
    net.image_size = hp.get("image_size")
    return net
