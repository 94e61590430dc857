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


def register_resolvers() -> None:
    for name, fn in (("lit_sr.cwd", os.getcwd), ("lit_sr.div", _exact_div), ("lit_sr.mul", _mul),
                     ("lit_sr.num_logits", _num_logits)):
        if not OmegaConf.has_resolver(name):
            _register(name, fn)
