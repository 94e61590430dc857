"""OmegaConf resolvers the configs use, registered when :mod:`lit_sr` is imported.

``${lit_sr.cwd:}`` is the launch directory. ``${hydra:runtime.cwd}`` gives the same in a job but is
not set when Hydra's sweeper resolves ``hydra.sweep.dir`` before the first job of a ``-m`` run, so
``python run.py -m ...`` failed with "HydraConfig was not set" when the paths used it.
"""

from __future__ import annotations

import os

from omegaconf import OmegaConf


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("lit_sr.cwd"):
        OmegaConf.register_new_resolver("lit_sr.cwd", os.getcwd)
