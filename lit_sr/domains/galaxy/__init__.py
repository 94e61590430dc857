"""Galaxy image generation: galsim training-set simulator and morphology statistics (Dia et al., arXiv:1909.12160)."""
