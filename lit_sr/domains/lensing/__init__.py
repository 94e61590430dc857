"""Strong-lensing super-resolution: lenstronomy simulator (no_sub/cdm/vortex), LR/HR npy reader, ring fit."""
