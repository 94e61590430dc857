"""The setup stage of a run: models an experiment needs trained before its data and model are built.

A step of the one runner (:func:`lit_sr.cli.setup_stage`): after seeding, before ``cfg.data`` / ``cfg.model``
are instantiated, the runner calls the function named by ``cfg.setup_hook._target_`` (here
:func:`ensure_classifiers`) with the run's config (``cfg=cfg``, read only) and the hook's other keys. The hook
returns what it found or trained as dotted config keys -> values (``model.classifier_ckpt``, which the perceptual
net and the evaluator interpolate, ``judges.nets.<name>.ckpt``, ``generator_init.ckpt``); the runner merges them
into a new config (:func:`lit_sr.utils.trainer.with_updates`) and builds the run from it. No config is edited in
place. Every model trained here goes through the runner's own Trainer builder
(:func:`lit_sr.utils.trainer.build_trainer`) and is saved atomically. Generic: any domain whose GAN or evaluator
needs its own classifier (calorimeter photon/pion, lens substructure, galaxy morphology) uses the perceptual
classifier (:func:`ensure_classifier`); evaluators with independent judges (networks no model trains against)
use :func:`ensure_judges`; a GAN that starts from a trained PSNR model uses :func:`ensure_pretrained`.

Data without labels (a user's LR/HR folder): a classifier needs labels. When the user's training batches
carry no ``label`` the hooks ask the DataModule for a labelled stand-in (``labelled_stand_in()``: overrides
of ``cfg.data``, typically the built-in simulation at the user's image size); a perceptual classifier is
trained on it and cached under ``paths.data_dir``. Judges score the user's own test images against
their labels, so without labels they are not trained and the label-based metrics are skipped (one log
line says why). Training a classifier leaves the global random state as it was, so a run gives the
same model whether a classifier was trained or found in the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

from lit_sr.utils.trainer import build_trainer, run_output_dir, with_updates

log = logging.getLogger("lit_sr")

CLASSIFIER_SUBDIR = "classifier"
CLASSIFIER_FILE = "classifier.ckpt"


def _classifier_of_gan_checkpoint(ckpt_path: str) -> str | None:
    """The classifier path recorded in a GAN checkpoint's hyperparameters (``classifier_ckpt``), if any."""
    import torch

    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - Lightning reports an unreadable checkpoint itself
        return None
    return (ckpt.get("hyper_parameters") or {}).get("classifier_ckpt")


def ensure_classifier(cfg: DictConfig, key: str = "classifier") -> str:
    """The checkpoint ``model.classifier_ckpt`` should name: the given one, or one found or trained now.

    The GAN's perceptual net and the physics evaluator read ``${model.classifier_ckpt}``. Order:
      1. ``model.classifier_ckpt`` given: used as is (``load_frozen_classifier`` checks it when the
         model is built and names the file and the mismatch if it is not a usable classifier).
      2. ``mode=test|predict``: the classifier recorded in the GAN checkpoint (``ckpt_path``).
      3. ``<output_dir>/classifier/classifier.ckpt`` exists (this run's classifier, e.g. in a DDP
         child process the parent has trained it already, or a restarted run): reused.
      4. otherwise a classifier is trained on the same datamodule with ``cfg[key].model`` (a
         ``ClassifierModule`` config) and ``cfg[key].trainer`` (Trainer keyword arguments), on
         one device, and written atomically to that path. With ``cfg[key].cache_dir`` set, or when
         the data carry no labels (then the classifier is trained on the DataModule's labelled
         stand-in), it is cached there instead (default ``<paths.data_dir>/classifiers``), named by a
         hash of the data, net, trainer and seed, and found there by later runs.
    Returns the checkpoint path (``cfg`` is not changed).
    """
    given = cfg.model.get("classifier_ckpt")
    if given:
        log.info("Classifier (perceptual features and downstream metrics): %s", given)
        return str(given)
    if cfg.get("mode", "train") != "train" and cfg.get("ckpt_path"):
        recorded = _classifier_of_gan_checkpoint(cfg.ckpt_path)
        if recorded and Path(recorded).is_file():
            log.info("Using the classifier recorded in %s: %s", cfg.ckpt_path, recorded)
            return str(recorded)
        raise ValueError(
            f"mode={cfg.mode}: the classifier recorded in {cfg.ckpt_path} ({recorded!r}) is not "
            "available; give one with model.classifier_ckpt=/path/to/classifier.ckpt"
        )
    path = run_output_dir(cfg) / CLASSIFIER_SUBDIR / CLASSIFIER_FILE
    if path.is_file():
        log.info("Using this run's classifier checkpoint %s", path)
        return str(path)
    from lit_sr.utils.distributed import is_ddp_child

    node = cfg.get(key)
    if node is None or node.get("model") is None:
        raise ValueError(
            f"No classifier checkpoint given (model.classifier_ckpt=null) and no `{key}.model` "
            "config to train one; set model.classifier_ckpt=/path/to/classifier.ckpt"
        )
    data_cfg, stand_in = labelled_data(cfg)
    if data_cfg is None:
        raise ValueError(
            f"No classifier checkpoint given (model.classifier_ckpt=null) and the data "
            f"({cfg.data.get('file')}) have no labels to train one on, nor a labelled stand-in "
            "(DataModule.labelled_stand_in); set model.classifier_ckpt=/path/to/classifier.ckpt"
        )
    if node.get("cache_dir") or stand_in:
        cache_dir = Path(node.get("cache_dir") or Path(cfg.paths.data_dir) / "classifiers")
        if not _fast_dev_run(cfg):  # a one-batch classifier is never cached
            path = cache_dir / f"{key}-{_config_hash(data_cfg, node, int(cfg.get('seed') or 0))}.ckpt"
        if path.is_file():
            log.info("Using the cached classifier %s", path)
            return str(path)
    if is_ddp_child():  # the parent trains it before it starts the children
        raise FileNotFoundError(f"{path}: the classifier checkpoint the parent process should have written is missing")
    with _exclusive(path):  # another run may be training the same cached classifier: wait for it
        if path.is_file():
            log.info("Using the cached classifier %s (another run trained it)", path)
        else:
            log.info(
                "No classifier checkpoint given (model.classifier_ckpt=null): training one first "
                "(the `%s.model` config, %s%s) -> %s",
                key,
                _describe(node.get("trainer")),
                ", on the labelled stand-in: the data have no labels" if stand_in else "",
                path,
            )
            train_classifier(cfg, node, path, data_cfg=data_cfg)
    return str(path)


# ---------------------------------------------------------------------------- labels and caching
def _fast_dev_run(cfg: DictConfig) -> bool:
    return bool((cfg.get("trainer") or {}).get("fast_dev_run"))


def batch_keys(data_cfg: DictConfig) -> set[str]:
    """The keys of the training batches of the DataModule ``data_cfg`` (reads one batch)."""
    from hydra.utils import instantiate

    with kept_random_state():  # a shuffled loader draws from the global generator
        datamodule = instantiate(data_cfg)
        datamodule.prepare_data()
        datamodule.setup("fit")
        return set(next(iter(datamodule.train_dataloader())))


def has_labels(data_cfg: DictConfig, label_key: str = "label") -> bool:
    """Whether the training batches of the DataModule ``data_cfg`` carry ``label_key`` (reads one batch)."""
    return label_key in batch_keys(data_cfg)


def labelled_data(cfg: DictConfig, label_key: str = "label") -> tuple[DictConfig | None, bool]:
    """The data config a classifier is trained on, and whether it is a stand-in.

    ``cfg.data`` itself when its batches carry labels; else ``cfg.data`` with the overrides its
    DataModule's ``labelled_stand_in()`` returns (e.g. the built-in simulation at the user's image
    size), or None when it has no such method or returns None.
    """
    if has_labels(cfg.data, label_key):
        return cfg.data, False
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data)
    stand_in = getattr(datamodule, "labelled_stand_in", None)
    overrides = stand_in() if callable(stand_in) else None
    if overrides is None:
        return None, False
    return OmegaConf.merge(cfg.data, OmegaConf.create(dict(overrides))), True


#: data settings that change neither the data nor the training (left out of the cache key)
_LOADER_KEYS = ("data_dir", "num_workers", "pin_memory", "eval_batch_size", "max_memory_mb", "sim_workers")


def _config_hash(data_cfg: DictConfig, node: DictConfig, seed: int) -> str:
    """12 hex digits naming a classifier by what it is trained on and how: data, model, trainer, seed."""
    data = {k: v for k, v in OmegaConf.to_container(data_cfg, resolve=True).items() if k not in _LOADER_KEYS}
    data.pop("augment_seed", None)  # the classifier's own seed drives its augmentation
    what = {
        "data": data,
        "model": OmegaConf.to_container(node.model, resolve=True),
        "trainer": OmegaConf.to_container(node.get("trainer") or {}, resolve=True),
        "seed": seed,
    }
    return hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def _exclusive(path: Path, poll_s: float = 5.0) -> Iterator[None]:
    """Hold ``<path>.lock`` while the body runs (it trains ``path``): a second run wanting the same cached
    checkpoint waits for it instead of training it twice. A lock whose process (pid inside) is gone on this
    host is taken over."""
    import os
    import socket
    import time

    lock = _lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = f"{socket.gethostname()} {os.getpid()}"
    announced = False
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if path.is_file():
                yield
                return
            try:
                host, pid = lock.read_text().split()
                alive = host != socket.gethostname() or Path(f"/proc/{int(pid)}").exists()
            except (OSError, ValueError):
                alive = True  # being written: look again
            if not alive:
                lock.unlink(missing_ok=True)
                continue
            if not announced:
                log.info("Waiting for %s: another run (%s) is training it", path, lock.read_text().strip())
                announced = True
            time.sleep(poll_s)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
        return


# ---------------------------------------------------------------------------- judges
def ensure_judges(cfg: DictConfig, key: str = "judges") -> dict[str, str | None]:
    """The checkpoint ``cfg[key].nets.<name>.ckpt`` should name for every judge: a classifier no model trains
    against.

    ``cfg[key]``: ``cache_dir`` (default ``<paths.data_dir>/judges``) and ``nets``: name ->
    ``{model: LightningModule config, trainer: Trainer arguments, seed: int, ckpt: path | null}``; the model
    is a ``ClassifierModule`` (trained against ``label``) or any module whose config names the batch key it
    learns as ``target_key`` (e.g. a ``RegressorModule`` of ``impact_cm``: an LR baseline trained like a judge).
    A given ``ckpt`` is used as is. Otherwise the judge is trained once on ``cfg.data`` with its own
    seed (its augmentation too) and cached as ``<cache_dir>/<name>-<hash>.ckpt`` (hash of data, net,
    trainer and seed, so every experiment and seed on the same data shares it); later runs load it.
    Under ``debug=fdr`` a one-batch judge goes to ``<output_dir>/judges`` (never into the cache). In
    ``mode=predict`` nothing is trained (no evaluation). When the data carry no labels (no ``target_key``)
    those judges are not trained (``ckpt`` stays null): the evaluator skips the metrics that need them, as one
    log line says. A judge's checkpoint may not be the perceptual classifier's (``model.classifier_ckpt``).
    Returns name -> checkpoint path (None when skipped); ``cfg`` is not changed.
    """
    node = cfg.get(key)
    if node is None or not node.get("nets"):
        return {}
    perceptual = cfg.model.get("classifier_ckpt")
    out: dict[str, str | None] = {}
    todo = [name for name, j in node.nets.items() if not j.get("ckpt")]
    for name in node.nets:
        given = node.nets[name].get("ckpt")
        if given:
            out[name] = str(given)
    if todo and cfg.get("mode", "train") == "predict":
        log.info("mode=predict: judges %s not loaded (no evaluation)", ", ".join(todo))
        todo = []
    if todo:
        keys = batch_keys(cfg.data)
        missing: dict[str, list[str]] = {}
        for name in todo:
            target = str(node.nets[name].model.get("target_key") or "label")
            if target not in keys:
                missing.setdefault(target, []).append(name)
        for target, names in missing.items():
            if target == "label":
                log.warning(
                    "Label-based metrics skipped: the data (%s) carry no labels, so judges %s have nothing to "
                    "score against; the label-free metrics (PSNR, SSIM, flux, image-to-image comparisons) run.",
                    cfg.data.get("file"),
                    ", ".join(names),
                )
            else:
                log.warning(
                    "Metrics of %s skipped: the data (%s) carry no `%s` for them to learn",
                    ", ".join(names),
                    cfg.data.get("file"),
                    target,
                )
            for name in names:
                out[name] = None
        todo = [name for name in todo if name not in out]
    from lit_sr.utils.distributed import is_ddp_child

    plans = {}
    for name in todo:
        judge = node.nets[name]
        seed = int(judge.get("seed") or 0)
        data_cfg = OmegaConf.merge(cfg.data, {"augment_seed": seed}) if "augment_seed" in cfg.data else cfg.data
        if _fast_dev_run(cfg):
            path = run_output_dir(cfg) / "judges" / f"{name}.ckpt"
        else:
            cache_dir = Path(node.get("cache_dir") or Path(cfg.paths.data_dir) / "judges")
            path = cache_dir / f"{name}-{_config_hash(data_cfg, judge, seed)}.ckpt"
        plans[name] = (judge, seed, data_cfg, path)
    # judges another run is training right now (its lock file exists) are waited for last, so runs started
    # together train different judges instead of the same one twice
    pending = list(plans)
    while pending:
        pending.sort(key=lambda n: _lock_path(plans[n][3]).exists())
        name = pending.pop(0)
        judge, seed, data_cfg, path = plans[name]
        if not path.is_file() and is_ddp_child():
            raise FileNotFoundError(f"{path}: judge {name!r} the parent process should have trained is missing")
        with _exclusive(path):
            if path.is_file():
                log.info("Judge %r: cached %s", name, path)
            else:
                log.info(
                    "Judge %r: training it once (the `%s.nets.%s.model` config, seed %d, %s) -> %s",
                    name,
                    key,
                    name,
                    seed,
                    _describe(judge.get("trainer")),
                    path,
                )
                metrics = train_classifier(cfg, judge, path, data_cfg=data_cfg, seed=seed)
                if metrics.get("val/auc", 1.0) < 0.6:
                    log.warning(
                        "Judge %r reached only val/auc=%.3f (chance: 0.5): the label-based metrics it "
                        "gives mean little; train it longer (%s.nets.%s.trainer)",
                        name,
                        metrics["val/auc"],
                        key,
                        name,
                    )
        out[name] = str(path)
    for name, path in out.items():
        if path is not None and perceptual and Path(path).resolve() == Path(str(perceptual)).resolve():
            raise ValueError(
                f"{key}.nets.{name}.ckpt={path} is the perceptual classifier (model.classifier_ckpt): "
                "a judge must be a network the model never trained against"
            )
    return out


# ---------------------------------------------------------------------------- a model to start from
def ensure_pretrained(cfg: DictConfig, key: str = "generator_init") -> str | None:
    """The checkpoint ``cfg[key].ckpt`` should name: the trained model a run starts from (a GAN's PSNR model).

    ``cfg[key]``: ``ckpt`` (a given checkpoint, e.g. a finished supervised run of the same net: used as is),
    ``model`` (the LightningModule config that trains it), ``trainer`` (Trainer arguments), ``seed`` and
    ``cache_dir`` (default ``<paths.data_dir>/pretrained``). Without ``ckpt`` and in ``mode=train`` the model is
    trained once on ``cfg.data`` and cached as ``<cache_dir>/<key>-<hash>.ckpt`` (hash of data, model, trainer
    and seed); later runs load it. ``debug=fdr``: a one-batch model in the run folder, never cached. Other
    modes: nothing (the run's own checkpoint holds the weights). Returns the path or None (``cfg`` is not changed).
    """
    node = cfg.get(key)
    if node is None:
        return None
    if node.get("ckpt"):
        log.info("Starting point (%s.ckpt): %s", key, node.ckpt)
        return str(node.ckpt)
    if cfg.get("mode", "train") != "train":
        return None
    seed = int(node.get("seed") or 0)
    if _fast_dev_run(cfg):
        path = run_output_dir(cfg) / "pretrained" / f"{key}.ckpt"
    else:
        data_cfg = OmegaConf.merge(cfg.data, {"augment_seed": seed}) if "augment_seed" in cfg.data else cfg.data
        path = (
            Path(node.get("cache_dir") or Path(cfg.paths.data_dir) / "pretrained")
            / f"{key}-{_config_hash(data_cfg, node, seed)}.ckpt"
        )
    from lit_sr.utils.distributed import is_ddp_child

    if not path.is_file() and is_ddp_child():
        raise FileNotFoundError(f"{path}: the model the parent process should have trained first is missing")
    with _exclusive(path):
        if path.is_file():
            log.info("Starting point (%s): cached %s", key, path)
        else:
            log.info(
                "Starting point (%s): training it first (the `%s.model` config, seed %d, %s) -> %s",
                key,
                key,
                seed,
                _describe(node.get("trainer")),
                path,
            )
            data_cfg = OmegaConf.merge(cfg.data, {"augment_seed": seed}) if "augment_seed" in cfg.data else cfg.data
            train_classifier(cfg, node, path, data_cfg=data_cfg, seed=seed)
    return str(path)


def ensure_classifiers(
    cfg: DictConfig,
    perceptual: bool = True,
    key: str = "classifier",
    judges_key: str = "judges",
    pretrained: bool = False,
    pretrained_key: str = "generator_init",
) -> dict[str, Any]:
    """The setup stage (the experiment's ``setup_hook``): with ``pretrained`` a trained model to start from
    (:func:`ensure_pretrained`), with ``perceptual`` the perceptual classifier (:func:`ensure_classifier`), then
    the independent judges of ``cfg[judges_key]`` if any (:func:`ensure_judges`, which refuses the perceptual
    checkpoint as a judge). Returns the config updates (dotted key -> checkpoint path) for the runner to merge;
    ``cfg`` is not changed."""
    updates: dict[str, Any] = {}
    if pretrained:
        path = ensure_pretrained(cfg, pretrained_key)
        if path is not None:
            updates[f"{pretrained_key}.ckpt"] = path
    if perceptual:
        updates["model.classifier_ckpt"] = ensure_classifier(cfg, key)
    judges = ensure_judges(with_updates(cfg, updates), judges_key)  # sees the perceptual checkpoint
    updates.update({f"{judges_key}.nets.{name}.ckpt": path for name, path in judges.items()})
    return updates


def _describe(trainer_node: Any) -> str:
    if not trainer_node:
        return "Trainer defaults"
    d = OmegaConf.to_container(trainer_node, resolve=True)
    return ", ".join(
        f"{k}={v}" for k, v in d.items() if k in ("max_epochs", "max_steps", "limit_train_batches", "accelerator")
    )


def train_classifier(
    cfg: DictConfig, node: DictConfig, path: Path, data_cfg: DictConfig | None = None, seed: int | None = None
) -> dict[str, float]:
    """Fit ``node.model`` on ``data_cfg`` (default ``cfg.data``; one device), validate, save the
    checkpoint atomically to ``path``. ``seed`` seeds the classifier's initialisation and batches; the
    global random state is restored afterwards either way."""
    with kept_random_state():
        return _train_classifier(cfg, node, path, data_cfg if data_cfg is not None else cfg.data, seed)


@contextlib.contextmanager
def kept_random_state() -> Iterator[None]:
    """The global random state (python, numpy, torch CPU and CUDA) is restored on exit."""
    import random

    import numpy as np
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _train_classifier(
    cfg: DictConfig, node: DictConfig, path: Path, data_cfg: DictConfig, seed: int | None
) -> dict[str, float]:
    import time

    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.loggers import CSVLogger

    from lit_sr.utils.checkpoint_io import AtomicCheckpointIO

    out_dir = path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    if seed is not None:
        L.seed_everything(int(seed), workers=True, verbose=False)
    datamodule = instantiate(data_cfg)
    module = instantiate(node.model, _convert_="all")
    spec: dict[str, Any] = {"accelerator": "auto", "enable_progress_bar": False, "enable_model_summary": False}
    spec.update(OmegaConf.to_container(node.get("trainer") or {}, resolve=True))
    if (cfg.get("trainer") or {}).get("fast_dev_run"):  # debug=fdr: one batch through the classifier too
        spec = {k: v for k, v in spec.items() if not k.startswith(("limit_", "max_", "min_"))}
        spec["fast_dev_run"] = True
    trainer = build_trainer(
        spec,
        logger=CSVLogger(str(out_dir), name=path.stem if path.stem != "classifier" else "", version=""),
        devices=1,  # single process, also inside a DDP job (rank 0 trains it before the children start)
        default_root_dir=str(out_dir),
        enable_checkpointing=False,
        plugins=[AtomicCheckpointIO()],
    )
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    trainer.save_checkpoint(str(path))  # AtomicCheckpointIO: temp file + rename, never half-written
    shown = ", ".join(
        f"{k}={v:.4f}"
        for k, v in sorted(metrics.items())
        if k in ("val/auc", "val/acc", "val/psnr", "val/ssim", "val/residual_std")
    )
    log.info(
        "%s trained in %.0f s (%d steps): %s -> %s",
        type(module).__name__,
        time.perf_counter() - t0,
        trainer.global_step,
        shown,
        path,
    )
    return metrics
