"""OmegaConf resolvers the configs use, registered when :mod:`lit_sr` is imported.

``${lit_sr.div:a,b}`` / ``${lit_sr.mul:a,b}`` derive sizes from others (e.g. the SR scale from the HR
and LR image sizes), so no yaml holds a number computed by hand.

``${lit_sr.cwd:}`` is the launch directory. ``${hydra:runtime.cwd}`` gives the same in a job but is
not set when Hydra's sweeper resolves ``hydra.sweep.dir`` before the first job of a ``-m`` run, so
``python run.py -m ...`` failed with "HydraConfig was not set" when the paths used it.
"""

from __future__ import annotations

import os

import omegaconf
from omegaconf import OmegaConf


def _register(name: str, fn) -> None:
    # omegaconf 2.4 deprecates register_new_resolver for register_resolver, which before 2.4 was the
    # old string-only API: pick by version
    major_minor = tuple(int(v) for v in omegaconf.__version__.split(".")[:2])
    if major_minor >= (2, 4):
        OmegaConf.register_resolver(name, fn)
    else:
        OmegaConf.register_new_resolver(name, fn)


def _exact_div(a: int, b: int) -> int:
    """``${lit_sr.div:24,6}`` -> 4; refuses a non-integer ratio (sizes that must divide)."""
    a, b = int(a), int(b)
    if b == 0 or a % b:
        raise ValueError(f"lit_sr.div: {a} is not a multiple of {b}")
    return a // b


def _mul(*values: float) -> float | int:
    """``${lit_sr.mul:6,4}`` -> 24 (ints stay ints)."""
    out: float | int = 1
    for v in values:
        out = out * v
    return out


def _num_logits(class_names) -> int:
    """``${lit_sr.num_logits:${..class_names}}``: 1 logit for two classes (binary), else one per class."""
    n = len(class_names)
    return 1 if n == 2 else n


def _loader_workers(accelerator: str, devices) -> int:
    """``${lit_sr.loader_workers:${trainer.accelerator},${trainer.devices}}``: DataLoader workers per rank.

    0 on CPU (workers would compete with the training step for the same cores); on GPUs the CPUs of
    this task (SLURM_CPUS_PER_TASK) or of the machine shared by the ranks, minus one for the rank
    itself, at most 8.
    """
    if str(accelerator) not in ("gpu", "cuda", "mps", "auto"):
        return 0
    if str(accelerator) == "auto":
        try:
            import torch

            if not torch.cuda.is_available():
                return 0
        except ImportError:
            return 0
    per_task = os.environ.get("SLURM_CPUS_PER_TASK")
    try:
        n_dev = max(1, int(devices))
    except (TypeError, ValueError):  # "auto" or a list of ids
        n_dev = 1
    cpus = int(per_task) if per_task else (os.cpu_count() or 1) // n_dev
    return max(0, min(8, cpus - 1))


def _on_gpu(accelerator: str) -> bool:
    """``${lit_sr.on_gpu:${trainer.accelerator}}``: pin host memory only when batches go to a GPU."""
    return str(accelerator) in ("gpu", "cuda")


def register_resolvers() -> None:
    for name, fn in (
        ("lit_sr.cwd", os.getcwd),
        ("lit_sr.div", _exact_div),
        ("lit_sr.mul", _mul),
        ("lit_sr.num_logits", _num_logits),
        ("lit_sr.loader_workers", _loader_workers),
        ("lit_sr.on_gpu", _on_gpu),
    ):
        if not OmegaConf.has_resolver(name):
            _register(name, fn)
