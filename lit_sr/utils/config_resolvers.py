"""OmegaConf resolvers the configs use, registered when :mod:`lit_sr` is imported.

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


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("lit_sr.cwd"):
        _register("lit_sr.cwd", os.getcwd)
