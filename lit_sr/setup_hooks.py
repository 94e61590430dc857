"""Setup hooks: work an experiment needs done before its data and model are built (``setup_hook`` key).

``lit_sr.cli`` calls the function named by ``cfg.setup_hook._target_`` with the job's own config
object (``cfg=cfg``) after seeding and before instantiating ``cfg.data`` / ``cfg.model``, so a hook
hands results on by filling in config values (here ``model.classifier_ckpt``, which the perceptual
net and the evaluator interpolate). Generic: any domain whose GAN or evaluator needs its own
classifier (calorimeter photon/pion, lens substructure) uses :func:`ensure_classifier`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("lit_sr")

CLASSIFIER_SUBDIR = "classifier"
CLASSIFIER_FILE = "classifier.ckpt"


def _output_dir(cfg: DictConfig) -> Path:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir)


def _classifier_of_gan_checkpoint(ckpt_path: str) -> str | None:
    """The classifier path recorded in a GAN checkpoint's hyperparameters (``classifier_ckpt``), if any."""
    import torch

    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - Lightning reports an unreadable checkpoint itself
        return None
    return (ckpt.get("hyper_parameters") or {}).get("classifier_ckpt")


def _use(cfg: DictConfig, path: str) -> None:
    with open_dict(cfg):
        cfg.model.classifier_ckpt = str(path)


def ensure_classifier(cfg: DictConfig, key: str = "classifier") -> str:
    """Make sure ``cfg.model.classifier_ckpt`` names a classifier checkpoint; train one if null.

    The GAN's perceptual net and the physics evaluator read ``${model.classifier_ckpt}``. Order:
      1. ``model.classifier_ckpt`` given: used as is (``load_frozen_classifier`` checks it when the
         model is built and names the file and the mismatch if it is not a usable classifier).
      2. ``mode=test|predict``: the classifier recorded in the GAN checkpoint (``ckpt_path``).
      3. ``<output_dir>/classifier/classifier.ckpt`` exists (this run's classifier, e.g. in a DDP
         child process the parent has trained it already, or a restarted run): reused.
      4. otherwise a classifier is trained on the same datamodule with ``cfg[key].model`` (a
         ``ClassifierModule`` config) and ``cfg[key].trainer`` (Trainer keyword arguments), on
         one device, and written atomically to that path.
    Returns the checkpoint path.
    """
    given = cfg.model.get("classifier_ckpt")
    if given:
        log.info("Classifier (perceptual features and downstream metrics): %s", given)
        return str(given)
    if cfg.get("mode", "train") != "train" and cfg.get("ckpt_path"):
        recorded = _classifier_of_gan_checkpoint(cfg.ckpt_path)
        if recorded and Path(recorded).is_file():
            log.info("Using the classifier recorded in %s: %s", cfg.ckpt_path, recorded)
            _use(cfg, recorded)
            return str(recorded)
        raise ValueError(f"mode={cfg.mode}: the classifier recorded in {cfg.ckpt_path} ({recorded!r}) is not "
                         "available; give one with model.classifier_ckpt=/path/to/classifier.ckpt")
    path = _output_dir(cfg) / CLASSIFIER_SUBDIR / CLASSIFIER_FILE
    if path.is_file():
        log.info("Using this run's classifier checkpoint %s", path)
        _use(cfg, str(path))
        return str(path)
    from lit_sr.utils.distributed import is_ddp_child

    if is_ddp_child():  # the parent trains it before it starts the children
        raise FileNotFoundError(f"{path}: the classifier checkpoint the parent process should have written is missing")
    node = cfg.get(key)
    if node is None or node.get("model") is None:
        raise ValueError(f"No classifier checkpoint given (model.classifier_ckpt=null) and no `{key}.model` "
                         "config to train one; set model.classifier_ckpt=/path/to/classifier.ckpt")
    log.info("No classifier checkpoint given (model.classifier_ckpt=null): training one first "
             "(the `%s.model` config, %s) -> %s", key, _describe(node.get("trainer")), path)
    train_classifier(cfg, node, path)
    _use(cfg, str(path))
    return str(path)


def _describe(trainer_node: Any) -> str:
    if not trainer_node:
        return "Trainer defaults"
    d = OmegaConf.to_container(trainer_node, resolve=True)
    return ", ".join(f"{k}={v}" for k, v in d.items() if k in ("max_epochs", "max_steps", "limit_train_batches", "accelerator"))


def train_classifier(cfg: DictConfig, node: DictConfig, path: Path) -> dict[str, float]:
    """Fit ``node.model`` on ``cfg.data`` (one device), validate, save the checkpoint atomically to ``path``."""
    import time

    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.loggers import CSVLogger

    from lit_sr.utils.checkpoint_io import AtomicCheckpointIO

    out_dir = path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    datamodule = instantiate(cfg.data)
    module = instantiate(node.model, _convert_="all")
    kwargs: dict[str, Any] = {"accelerator": "auto", "enable_progress_bar": False, "enable_model_summary": False}
    kwargs.update(OmegaConf.to_container(node.get("trainer") or {}, resolve=True))
    if (cfg.get("trainer") or {}).get("fast_dev_run"):  # debug=fdr: one batch through the classifier too
        kwargs = {k: v for k, v in kwargs.items() if not k.startswith(("limit_", "max_", "min_"))}
        kwargs["fast_dev_run"] = True
    kwargs["devices"] = 1  # single process, also inside a DDP job (rank 0 trains it before the children start)
    trainer = L.Trainer(**kwargs, default_root_dir=str(out_dir), enable_checkpointing=False,
                        logger=CSVLogger(str(out_dir), name="", version=""), plugins=[AtomicCheckpointIO()])
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    trainer.save_checkpoint(str(path))  # AtomicCheckpointIO: temp file + rename, never half-written
    log.info("Classifier trained in %.0f s (%d steps): val/auc=%.4f val/acc=%.4f -> %s",
             time.perf_counter() - t0, trainer.global_step, metrics.get("val/auc", float("nan")),
             metrics.get("val/acc", float("nan")), path)
    return metrics
