"""The evaluator base every domain evaluator subclasses.

Contract (the LightningModules call it; see ``lit_sr.models.image_to_image``):

* ``prepare(pairs)`` once before the first validation or test pass: ``pairs`` iterates over the
  **validation split** as ``(batch, images)`` with physical-unit ``images`` (``input``, ``input_up``,
  ``target``; no model output). Subclasses override :meth:`tune` to fit the free parameters of their
  classical baselines there (a barycentre's w0, a smoothing sigma) and return them; the base stores them
  in ``self.tuned`` and :meth:`results` reports them as ``tuned/<name>``. Nothing is fitted on the
  test split.
* ``update(batch, images)`` per batch, ``images`` the physical-unit tensors of the model and baselines.
* ``compute()`` -> flat dict of named floats (collective under DDP: states are torchmetrics ``cat``
  / ``sum`` states, or gathered by :meth:`synced`).
* ``figures()`` -> named matplotlib figures (optional), ``reset()``.

Judges (frozen networks: classifiers that score images) are registered with :meth:`add_judge`: they are
put in eval mode with gradients off, and stay so through ``train()``. A judge must be a network the
model never trained against; the perceptual net of a GAN is a different object.

An evaluator is not part of the model's state: its judges come from their own checkpoints and its
baselines are tuned again on every run, so its tensors are left out of the parent module's
``state_dict()`` and a checkpoint saved with or without them loads either way.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torchmetrics import Metric

log = logging.getLogger(__name__)

Images = dict[str, torch.Tensor]
Batch = dict[str, Any]


class Evaluator(nn.Module):
    """Base of the domain evaluators: judges kept frozen, baselines tuned on validation, finite results."""

    def __init__(self) -> None:
        super().__init__()
        self.judges = nn.ModuleDict()
        self._judge_transforms: dict[str, Callable[[torch.Tensor], torch.Tensor] | None] = {}
        self.tuned: dict[str, float] = {}
        self.prepared = False
        self._cache: Any = None  # what the last compute() gathered, for figures()
        self._state_prefix = ""
        self._register_state_dict_hook(_leave_out_of_state_dict)
        self.register_load_state_dict_post_hook(_ignore_in_loaded_state)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        # Nothing of a checkpoint is loaded into the evaluator (its children get their keys from this
        # same dict); the post hook then drops what the key lists say about it.
        for k in [k for k in state_dict if k.startswith(prefix)]:
            del state_dict[k]
        self._state_prefix = prefix
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ judges
    def add_judge(
        self, name: str, net: nn.Module | None, transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> nn.Module | None:
        """Register a frozen judge (eval mode, no gradients). ``transform`` maps physical-unit images to
        its input space; None -> the net's ``input_transform`` attribute (set when a classifier
        checkpoint is loaded) if any, else identity. ``net`` None registers nothing."""
        if net is None:
            return None
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.judges[name] = net
        self._judge_transforms[name] = transform if transform is not None else getattr(net, "input_transform", None)
        return net

    def has_judge(self, name: str) -> bool:
        return name in self.judges

    def set_judge_transform(self, name: str, transform: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        self._judge_transforms[name] = transform

    def judge_transform(self, name: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
        return self._judge_transforms.get(name)

    @torch.no_grad()
    def judge(self, name: str, images: torch.Tensor) -> torch.Tensor:
        """The judge's output on physical-unit ``images`` (through its input transform)."""
        t = self._judge_transforms.get(name)
        return self.judges[name](t(images) if t is not None else images)

    @torch.no_grad()
    def judge_features(self, name: str, images: torch.Tensor) -> torch.Tensor:
        """The judge's feature vector [B, D] (its ``features`` method) on physical-unit ``images``."""
        t = self._judge_transforms.get(name)
        return self.judges[name].features(t(images) if t is not None else images)

    def train(self, mode: bool = True) -> "Evaluator":
        super().train(mode)
        for j in self.judges.values():
            j.eval()
        return self

    # ------------------------------------------------------------------ baselines
    def tune(self, pairs: Iterable[tuple[Batch, Images]]) -> dict[str, float]:
        """Fit the baselines' free parameters on the validation split; returns ``{name: value}``."""
        return {}

    def prepare(self, pairs: Iterable[tuple[Batch, Images]]) -> None:
        """Tune once (later calls do nothing); every DDP rank sees the whole validation split, so the
        tuned values agree across ranks."""
        if self.prepared:
            return
        self.tuned = {k: float(v) for k, v in self.tune(pairs).items()}
        self.prepared = True
        if self.tuned:
            log.info(
                "baselines tuned on the validation split: %s",
                ", ".join(f"{k} = {v:.4g}" for k, v in self.tuned.items()),
            )

    # ------------------------------------------------------------------ contract
    def update(self, batch: Batch, images: Images) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError

    def figures(self) -> dict[str, Any]:
        return {}

    def reset(self) -> None:
        for m in self.modules():
            if isinstance(m, Metric):
                m.reset()
        self._cache = None

    @staticmethod
    def synced(metric: Metric, fn: Callable[[], Any]) -> Any:
        """``fn()`` evaluated on the states gathered from all processes (plain local states otherwise)."""
        if metric._update_count == 0:
            return fn()
        with metric.sync_context(should_sync=True, should_unsync=True):
            return fn()

    def results(self) -> tuple[dict[str, float], list[str]]:
        """``compute()`` plus ``tuned/<name>``, without non-finite values; and the names left out."""
        values = {k: float(v) for k, v in self.compute().items()}
        values.update({f"tuned/{k}": v for k, v in self.tuned.items()})
        skipped = sorted(k for k, v in values.items() if not math.isfinite(v))
        return {k: v for k, v in values.items() if math.isfinite(v)}, skipped


def _leave_out_of_state_dict(module: Evaluator, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for k in [k for k in state_dict if k.startswith(prefix)]:
        del state_dict[k]


def _ignore_in_loaded_state(module: Evaluator, incompatible_keys) -> None:  # noqa: ANN001
    prefix = module._state_prefix
    for keys in (incompatible_keys.missing_keys, incompatible_keys.unexpected_keys):
        keys[:] = [k for k in keys if not k.startswith(prefix)]
