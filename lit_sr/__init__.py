"""lit_sr: Lightning + Hydra super-resolution, denoising and generation for scientific images."""

__version__ = "0.1.0"
