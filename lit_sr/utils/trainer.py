"""What the runner (``lit_sr.cli``) and its setup stage (``lit_sr.setup_hooks``) share: the one way a Lightning
Trainer is built from config, the run's output folder, and configs updated by copy, never in place."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

TRAINER_TARGET = "lightning.pytorch.Trainer"


def build_trainer(
    trainer_cfg: DictConfig | Mapping[str, Any],
    callbacks: Sequence[Any] = (),
    logger: Any = False,
    **overrides: Any,
) -> Any:
    """A Lightning Trainer from a ``trainer`` config (``_target_`` optional: Lightning's Trainer).

    ``trainer_cfg``: the run's ``cfg.trainer``, or the Trainer arguments of a setup-stage model (a classifier,
    a judge, a generator's pretraining: ``<key>.trainer``). ``callbacks``, ``logger`` and ``overrides``
    (Trainer arguments, objects allowed) take precedence over the config. Nested ``_target_`` nodes (a
    strategy, plugins) are instantiated too.
    """
    from hydra.utils import instantiate

    spec = OmegaConf.to_container(trainer_cfg, resolve=True) if OmegaConf.is_config(trainer_cfg) else dict(trainer_cfg)
    spec.setdefault("_target_", TRAINER_TARGET)
    for key in overrides:
        spec.pop(key, None)  # given objects replace the config's value (e.g. plugins)
    return instantiate(spec, callbacks=list(callbacks), logger=logger, **overrides)


def run_output_dir(cfg: DictConfig) -> Path:
    """The run's folder: Hydra's output directory inside a Hydra job, else ``cfg.paths.output_dir``."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir)


def with_updates(cfg: DictConfig, updates: Mapping[str, Any]) -> DictConfig:
    """A copy of ``cfg`` with ``updates`` (dotted key -> value, e.g. ``{"model.classifier_ckpt": path}``) set;
    ``cfg`` itself is left as it is. Interpolations in the copy see the new values."""
    new = copy.deepcopy(cfg)
    with open_dict(new):
        for key, value in updates.items():
            OmegaConf.update(new, key, value, merge=False, force_add=True)
    return new
