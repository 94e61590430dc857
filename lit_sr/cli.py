"""The runner behind ``python run.py``: train (fit + test on the best checkpoint), test, predict.

Everything is built with ``hydra.utils.instantiate`` from the composed config; this module only
orchestrates. It is also the one place that knows about Hydra, files and Lightning together.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import hydra
import lightning as L
import torch
from hydra.errors import CompactHydraException
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from lit_sr.utils.atomic import atomic_path
from lit_sr.utils.errors import ConfigError, UserError
from lit_sr.utils.trainer import build_trainer, run_output_dir, with_updates

log = logging.getLogger("lit_sr")

MODES = ("train", "test", "predict")


# ---------------------------------------------------------------------------- printing
@rank_zero_only
def print_config(cfg: DictConfig, output_dir: Path) -> None:
    """Print the resolved config as a tree and save it beside Hydra's own copy."""
    from rich import print as rprint
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    order = [
        "mode",
        "experiment_name",
        "seed",
        "ckpt_path",
        "data",
        "model",
        "trainer",
        "callbacks",
        "logger",
        "paths",
        "monitor",
        "predict",
    ]
    keys = order + [k for k in cfg if k not in order]
    for key in keys:
        if key not in cfg:
            continue
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(key).add(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    if cfg.get("print_config", True):
        rprint(tree)
    with atomic_path(output_dir / "config_resolved.yaml") as tmp:
        OmegaConf.save(cfg, tmp, resolve=True)


@rank_zero_only
def print_metrics(metrics: dict[str, float], title: str) -> None:
    """Table of test metrics; model and baseline values of one metric side by side."""
    from rich.console import Console
    from rich.table import Table

    prefix = "test/"
    names = {k[len(prefix) :]: float(v) for k, v in metrics.items() if k.startswith(prefix)}
    if not names:
        return
    # "<metric>_lower_limit/<source>" = 1 flags "<metric>/<source>" as a lower limit (e.g. a rejection when
    # no background event passed): printed as "> value", the flag itself not as a row
    limits = {n.replace("_lower_limit/", "/", 1) for n, v in names.items() if "_lower_limit/" in n and v}
    names = {n: v for n, v in names.items() if "_lower_limit/" not in n}
    sources = ["model", "nearest", "bicubic", "input"]
    base = sorted({n.split("_", 1)[1] if n.split("_", 1)[0] in sources[1:] else n for n in names})
    table = Table(title=title)
    table.add_column("metric")
    present = [s for s in sources if s == "model" or any(n.startswith(s + "_") for n in names)]
    for s in present:
        table.add_column(s, justify="right")
    for metric in base:
        row = [metric]
        for s in present:
            key = metric if s == "model" else f"{s}_{metric}"
            row.append(("" if key not in names else f"> {names[key]:.0f}" if key in limits else f"{names[key]:.4f}"))
        table.add_row(*row)
    Console().print(table)


# ---------------------------------------------------------------------------- W&B
def _wandb_key(cfg: DictConfig) -> str | None:
    for name, node in (cfg.get("logger") or {}).items():
        if node is not None and "WandbLogger" in str(node.get("_target_", "")):
            return str(name)
    return None


def wandb_updates(cfg: DictConfig) -> dict[str, Any]:
    """Never block on W&B: offline unless credentials exist; resume the run id stored in a checkpoint.
    Returns the config updates of the W&B logger node (dotted key -> value)."""
    name = _wandb_key(cfg)
    if name is None:
        return {}
    node, at = cfg.logger[name], f"logger.{name}"
    os.environ.setdefault("WANDB_SILENT", "true")
    updates: dict[str, Any] = {}
    if not node.get("offline", True):
        has_key = bool(os.environ.get("WANDB_API_KEY")) or _netrc_has_wandb()
        if not has_key:
            log.warning(
                "W&B online logging requested but no API key found (WANDB_API_KEY or ~/.netrc); "
                "logging offline instead (sync later with `wandb sync`)"
            )
            updates[f"{at}.offline"] = True
    if cfg.get("ckpt_path") and not node.get("id"):
        run_id = _checkpoint_wandb_id(cfg.ckpt_path)
        if run_id:
            log.info("Resuming W&B run %s from %s", run_id, cfg.ckpt_path)
            updates.update({f"{at}.id": run_id, f"{at}.resume": "allow"})
    return updates


def _netrc_has_wandb() -> bool:
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def _checkpoint_wandb_id(ckpt_path: str) -> str | None:
    from lit_sr.callbacks.wandb_run_id import CHECKPOINT_KEY

    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a bad checkpoint is reported by Lightning with its own message
        return None
    return ckpt.get(CHECKPOINT_KEY)


def finish_wandb() -> None:
    import sys

    if "wandb" in sys.modules:  # never import wandb just to close it
        import wandb

        if wandb.run is not None:
            wandb.finish()


# ---------------------------------------------------------------------------- building
def instantiate_list(node: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a group like ``callbacks`` or ``logger`` (null entries skipped)."""
    if not node:
        return []
    return [instantiate(sub) for sub in node.values() if sub is not None and "_target_" in sub]


def resume_updates(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """``resume: auto``: a training job started again in a folder that holds ``checkpoints/last.ckpt`` (a
    requeued SLURM job, a re-run after preemption) continues from it instead of starting over. Returns the
    config update ``{"ckpt_path": <last.ckpt>}`` or nothing."""
    if cfg.mode != "train" or cfg.get("ckpt_path") or cfg.get("resume", "auto") != "auto":
        return {}
    last = output_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        log.info("Resuming from %s (found in this run's folder; resume=never starts over)", last)
        return {"ckpt_path": str(last)}
    return {}


def check_mode(cfg: DictConfig) -> None:
    if cfg.mode not in MODES:
        raise ConfigError(f"mode={cfg.mode!r} is not a mode; expected one of {', '.join(MODES)}")
    if cfg.mode in ("test", "predict") and not cfg.get("ckpt_path"):
        raise ConfigError(f"mode={cfg.mode} needs a trained model: add ckpt_path=/path/to/checkpoint.ckpt")
    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")


def setup_stage(cfg: DictConfig) -> DictConfig:
    """The setup stage, a step of every run before data and model are built: models the experiment needs
    first (a perceptual classifier, independent judges, a generator's PSNR model; ``lit_sr.setup_hooks``).

    ``setup_hook._target_`` names a function called as ``fn(cfg=cfg, **<the hook's other keys>)``; it reads the
    config and returns what it found or trained as dotted config keys -> values (e.g.
    ``{"model.classifier_ckpt": path}``). Returns a new config with those merged in (``cfg`` is not changed);
    without a hook, ``cfg`` itself.
    """
    hook = cfg.get("setup_hook")
    if not hook:
        return cfg
    from hydra.utils import get_method

    kwargs = {k: v for k, v in hook.items() if not k.startswith("_")}
    updates = get_method(hook._target_)(cfg=cfg, **kwargs)
    if updates is None:
        return cfg
    if not isinstance(updates, Mapping):
        raise ConfigError(
            f"setup_hook._target_={hook._target_} returned {type(updates).__name__}; a setup hook returns config "
            "updates (dotted key -> value), e.g. lit_sr.setup_hooks.ensure_classifiers"
        )
    return with_updates(cfg, updates)


# ---------------------------------------------------------------------------- modes
def prediction_writer(cfg: DictConfig) -> tuple[Any, Any | None]:
    """The writer callback of ``cfg.predict`` and its frame predictor (None without one).

    One predictor object serves both: the model blends frames with it (:func:`predict` sets
    ``model.frame_predictor``) and a writer that declares a ``frame_predictor`` key records its settings."""
    p = cfg.get("predict")
    if not (p and p.get("writer")):
        raise ConfigError(
            "mode=predict needs a prediction writer: choose predict=h5 (the test split) or "
            "predict=frames (predict.input=<file>)"
        )
    predictor = instantiate(p.frame_predictor, _convert_="all") if p.get("frame_predictor") else None
    extra = {"frame_predictor": predictor} if "frame_predictor" in p.writer else {}
    return instantiate(p.writer, _convert_="all", **extra), predictor


def predict(
    trainer: L.Trainer,
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    cfg: DictConfig,
    frame_predictor: Any | None = None,
) -> None:
    """``mode=predict``: the ``predict`` config group names the data (the experiment's test split, or a
    frames file), an optional frame predictor (from :func:`prediction_writer`) and the writer callback (added
    to the trainer)."""
    from lit_sr.inference.frames import load_module_weights

    p = cfg.predict
    if frame_predictor is not None:
        model.frame_predictor = frame_predictor
    if p.get("datamodule"):
        datamodule = instantiate(p.datamodule)
    # weights_only=True, and a clear message naming the differing tensors for another architecture
    load_module_weights(model, cfg.ckpt_path)
    trainer.predict(model, datamodule=datamodule, return_predictions=False)


def run(cfg: DictConfig) -> float | dict[str, float]:
    """One Hydra job: the value of ``optimized_metric`` (for sweepers) or all final metrics.

    Restores the process environment afterwards so multirun jobs are independent."""
    env_before = dict(os.environ)
    try:
        return _run(cfg)
    finally:
        finish_wandb()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(env_before)


def _run(cfg: DictConfig) -> float | dict[str, float]:
    check_mode(cfg)
    if cfg.get("seed") is not None:  # 0 is a seed like any other
        L.seed_everything(int(cfg.seed), workers=True)
    output_dir = run_output_dir(cfg)
    # The run's config is never edited in place: each step below returns a new one.
    cfg = with_updates(cfg, resume_updates(cfg, output_dir))
    cfg = with_updates(cfg, wandb_updates(cfg))
    if cfg.mode == "predict" and cfg.model.get("evaluator") is not None:
        cfg = with_updates(cfg, {"model.evaluator": None})  # prediction evaluates nothing: no judges to load
    cfg = setup_stage(cfg)  # models trained first (lit_sr.setup_hooks): a new config naming their checkpoints
    print_config(cfg, output_dir)

    datamodule: L.LightningDataModule = instantiate(cfg.data)
    # _convert_="all": plain lists/dicts in hparams, so checkpoints load with weights_only=True
    model: L.LightningModule = instantiate(cfg.model, _convert_="all")
    callbacks = instantiate_list(cfg.get("callbacks"))
    frame_predictor = None
    if cfg.mode == "predict":
        writer, frame_predictor = prediction_writer(cfg)
        callbacks.append(writer)
    loggers = instantiate_list(cfg.get("logger"))
    trainer: L.Trainer = build_trainer(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    metrics: dict[str, float] = {}
    if cfg.mode == "train":
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if cfg.get("test_after_training", True):
            if not best:
                log.warning("No best checkpoint recorded; testing the final weights")
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
            print_metrics(metrics, f"test metrics ({Path(best).name if best else 'final weights'})")
    elif cfg.mode == "test":
        trainer.test(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        print_metrics(metrics, f"test metrics ({Path(cfg.ckpt_path).name})")
    else:
        predict(trainer, model, datamodule, cfg, frame_predictor)

    optimized = cfg.get("optimized_metric")
    if optimized:
        if optimized not in metrics:
            raise ConfigError(f"optimized_metric={optimized!r} was not logged; logged: {sorted(metrics)}")
        return metrics[optimized]
    return metrics


# conf/ sits beside the package in the repository; an absolute path works for plain and editable installs.
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")


# ---------------------------------------------------------------------------- user errors
class UserInputError(CompactHydraException):
    """What ``main`` raises for a user's input or config error: Hydra prints a compact exception's message
    alone (no traceback) and exits with code 1, in single runs, multirun jobs and DDP child processes."""


def user_error(exc: BaseException) -> BaseException | None:
    """The error behind ``exc`` that the user fixes in their input or config, or None (a bug: keep the trace).

    User errors: :class:`~lit_sr.utils.errors.UserError` (``DataFileError``, ``ConfigError``), refusals to
    overwrite (``FileExistsError``), missing mandatory config values and failed interpolations, and what
    Hydra's ``instantiate`` reports (a constructor's config check, an unknown keyword, a target that does
    not exist: Hydra itself prints these as compact messages). Only explicit causes (``raise ... from``)
    are followed, never an error raised while handling another one.
    """
    from hydra.errors import InstantiationException
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (UserError, FileExistsError, MissingMandatoryValue, InterpolationResolutionError)):
            return exc
        if isinstance(exc, InstantiationException):
            return exc.__cause__ if isinstance(exc.__cause__, UserError) else exc
        exc = exc.__cause__
    return None


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | dict[str, float]:
    try:
        return run(cfg)
    except Exception as exc:
        error = user_error(exc)
        if error is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise  # a bug (or the full trace asked for): Hydra prints the traceback
        raise UserInputError(str(error)) from None
