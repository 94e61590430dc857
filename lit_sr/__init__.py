"""lit_sr: Lightning + Hydra super-resolution, denoising and generation for scientific images."""

from lit_sr.utils.config_resolvers import register_resolvers

__version__ = "0.1.0"

register_resolvers()
