"""Image classifier on one batch key, and the loader that freezes it for perceptual losses and evaluators.

A domain classifier trained on HR images (photon vs pi0, lens substructure classes, galaxy morphology)
gives the GANs their perceptual features (no downloaded VGG) and the evaluators their downstream-task
verdict on LR-upsampled / SR / HR images. The checkpoint's hyperparameters record the class names,
the image size and the data transform, so :func:`load_frozen_classifier` can check that a checkpoint
fits the configured net and task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, MulticlassAccuracy, MulticlassAUROC

from lit_sr.models.base import LitSRModule, OptimizerFactory, SchedulerFactory, transform_hparams


class ClassifierModule(LitSRModule):
    """Cross-entropy of ``net(batch[image_key])`` against ``batch["label"]``.

    Binary (two class names): the net returns one logit of class 1 (BCE with logits). More classes: one
    logit per class (softmax cross-entropy). Logs ``train/loss``, ``train/acc``, ``{val,test}/loss``,
    ``{val,test}/acc`` and ``{val,test}/auc`` (macro one-vs-rest for several classes; monitor
    ``val/auc``, mode max).

    Args:
        net: the classifier network (e.g. :class:`lit_sr.nets.classifier.CNNClassifier`).
        class_names: names of the labels 0..K-1 (checked when the checkpoint is loaded).
        image_size: image size the classifier is trained on (checked when loaded).
        image_key: batch key holding the images ('target' = HR; 'input' for an LR classifier).
        transform: the data's intensity transform (recorded, so the frozen net knows its input space).
    """

    def __init__(
        self,
        net: nn.Module,
        class_names: Sequence[str] = ("0", "1"),
        image_size: int | None = None,
        image_key: str = "target",
        transform: nn.Module | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_monitor: str | None = None,
        scheduler_interval: str = "epoch",
        channels_last: bool = False,
        compile: bool | dict = False,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_monitor, scheduler_interval, channels_last, compile)
        class_names = [str(c) for c in class_names]
        if len(class_names) < 2:
            raise ValueError(f"a classifier needs at least two class names, got {class_names}")
        # Plain values only, so Lightning's own checkpoint loading (weights_only=True) works.
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "transform"])
        self.hparams["class_names"] = class_names
        self.hparams["transform"] = transform_hparams(transform)
        self.net = net
        self.transform = transform
        self.image_key = image_key
        self.binary = len(class_names) == 2
        k = len(class_names)

        def metrics(prefix: str) -> MetricCollection:
            if self.binary:
                return MetricCollection({"acc": BinaryAccuracy(), "auc": BinaryAUROC()}, prefix=prefix)
            return MetricCollection(
                {"acc": MulticlassAccuracy(k, average="micro"), "auc": MulticlassAUROC(k, average="macro")},
                prefix=prefix,
            )

        self.train_acc = metrics("train/")["acc"]
        self.metrics = nn.ModuleDict({s: metrics(f"{s}/") for s in ("val", "test")})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.net(batch[self.image_key])
        y = batch["label"].long()
        loss = F.binary_cross_entropy_with_logits(logits, y.float()) if self.binary else F.cross_entropy(logits, y)
        return loss, logits, y

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, logits, y = self._step(batch)
        self.train_acc(logits, y)
        self.log("train/loss", loss, prog_bar=True, batch_size=y.shape[0])
        self.log("train/acc", self.train_acc, batch_size=y.shape[0])
        return loss

    def _eval(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        loss, logits, y = self._step(batch)
        self.metrics[stage].update(logits, y)  # both metrics take logits (sigmoid/softmax applied inside)
        self.log(f"{stage}/loss", loss, batch_size=y.shape[0], sync_dist=True)
        self.log_dict(self.metrics[stage], batch_size=y.shape[0], prog_bar=stage == "val")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval(batch, "test")

    def predict_samples(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.net(batch[self.image_key])
        out = {"logit": logits, "probability": torch.sigmoid(logits) if self.binary else torch.softmax(logits, dim=-1)}
        if "label" in batch:
            out["label"] = batch["label"]
        if "index" in batch:
            out["index"] = batch["index"]
        return out


def rebuild_transform(stored: Any) -> nn.Module | None:
    """Transform parameters stored by ``transform_hparams`` -> the transform (classes of lit_sr.data.transforms)."""
    if stored is None or isinstance(stored, nn.Module):
        return stored
    from lit_sr.data import transforms  # pure-torch building blocks

    params = dict(stored)
    name = str(params.pop("class", "lit_sr.data.transforms.IntensityTransform")).rsplit(".", 1)[-1]
    cls = getattr(transforms, name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"stored transform class {name!r} is not one of lit_sr.data.transforms")
    return cls(**params)


def frozen(classifier: nn.Module | None, transform=None) -> tuple[nn.Module | None, Any]:
    """An evaluator's classifier, frozen for good (eval mode, no gradients), and the transform of GeV /
    physical images into its input space: ``transform`` if given, else its ``input_transform``
    attribute (set by :func:`load_frozen_classifier`), else None."""
    if classifier is None:
        return None, transform
    classifier.eval()
    for p in classifier.parameters():
        p.requires_grad_(False)
    return classifier, transform if transform is not None else getattr(classifier, "input_transform", None)


def _bad(path: str, found: str, expected: str, kind: str = "classifier") -> ValueError:
    return ValueError(f"{path}: not a usable {kind} checkpoint: found {found}; expected {expected}")


def load_frozen_net(
    ckpt_path: str,
    net: nn.Module,
    kind: str,
    required_key: str,
    expected: dict[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
    module_class: str | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load the ``net.*`` weights of a LightningModule checkpoint into ``net`` and freeze it (eval, no grad).

    The checkpoint's hyperparameters must hold ``required_key`` (what makes it a ``kind`` checkpoint, e.g.
    ``class_names``) and every ``expected`` key -> value that is not None; its ``net.*`` state dict must match
    ``net``. Any mismatch raises one ``ValueError`` naming the file, what was found and what was expected.
    Sets ``net.input_transform`` (the data transform it was trained with, or None) and ``net.image_size``;
    returns (net, hyperparameters)."""
    path = str(ckpt_path)
    if not Path(path).is_file():
        raise ValueError(f"{path}: {kind} checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ValueError(f"{path}: cannot read {kind} checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise _bad(path, f"an object without 'state_dict' ({type(ckpt).__name__})", "a Lightning checkpoint", kind)
    hp = dict(ckpt.get("hyper_parameters") or {})
    if required_key not in hp:
        what = f"a {module_class or kind} checkpoint (with {required_key})"
        raise _bad(path, f"hyperparameters {sorted(hp)}", what, kind)
    for key, value in (expected or {}).items():
        if value is not None and hp.get(key) != value:
            raise _bad(path, f"{key}={hp.get(key)!r}", f"{key}={value!r}", kind)
    sd = {k[len("net.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    found_shapes = {k: tuple(v.shape) for k, v in sd.items()}
    expected_shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    if found_shapes != expected_shapes:
        diff = sorted(set(found_shapes.items()) ^ set(expected_shapes.items()))[:6]
        raise _bad(
            path,
            f"state dict 'net.*' entries differing from the configured net, e.g. {diff}",
            f"weights of {type(net).__name__} as configured (use the net config it was trained with)",
            kind,
        )
    net.load_state_dict(sd)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    net.input_transform = rebuild_transform(hp.get("transform"))
    net.image_size = hp.get("image_size")
    return net, hp


def load_frozen_classifier(
    ckpt_path: str,
    net: nn.Module,
    class_names: Sequence[str] | None = None,
    image_size: int | None = None,
    map_location: str | torch.device = "cpu",
) -> nn.Module:
    """Load the weights of a :class:`ClassifierModule` checkpoint into ``net`` and freeze it (eval, no grad).

    ``net`` is the configured architecture (the same config the classifier was trained with). Checks
    that the checkpoint is a classifier with ``class_names`` and ``image_size`` (when given) and that
    its state dict matches ``net``; any mismatch raises one ``ValueError`` naming the file, what was
    found and what was expected. The returned net gets ``input_transform`` (the data transform it was
    trained with, or None), ``image_size`` and ``class_names`` attributes.
    """
    names = None if class_names is None else [str(c) for c in class_names]
    net, hp = load_frozen_net(
        ckpt_path,
        net,
        "classifier",
        "class_names",
        {"class_names": names, "image_size": image_size},
        map_location,
        module_class="ClassifierModule",
    )
    net.class_names = list(hp["class_names"])
    return net
