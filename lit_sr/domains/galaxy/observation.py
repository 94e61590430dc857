"""The survey's instrument between the galaxy generator and the real stamps: the PSF and the CCD noise.

A galaxy ProGAN (:class:`lit_sr.models.progan.ProGANModule`) draws PSF-free galaxies; its ``observation``
(this module, set in conf/experiment/base/galaxy_progan.yaml) turns them into what a telescope records,
which the critic compares with the real stamps (Dia et al., arXiv:1909.12160). In physical units (ADU):

1. ``convolved`` = PSF * x, a true convolution with the non-trainable kernel (:class:`~lit_sr.nets.psf.FFTPSFConv`):
   ``psf_mode='fixed'``: one kernel, by default the training set's (the data module's ``psf_kernel()``,
   taken in :meth:`PSFObservation.setup`); ``'per_sample'``: each stamp's own ``batch['psf']``; ``'none'``:
   no PSF;
2. ``observed`` = convolved + sqrt((``noise_background`` + max(convolved, 0)) / ``noise_gain``) * eps: the
   CCD noise of a subtracted sky plus the source's shot noise, reparameterised so gradients pass
   (``noise_gain`` None: no noise). Without it a PSF-convolved (band-limited) fake can never look like a
   real noisy stamp, and the critic separates them by their noise alone.

The kernel is a buffer (``psf_layer.psf``): saved in checkpoints, so a trained model keeps its PSF.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from lit_sr.nets.psf import FFTPSFConv

PSF_MODES = ("fixed", "per_sample", "none")


class ObservationNoise(nn.Module):
    """x + sqrt((background + max(x, 0)) / gain) * eps, physical units (e.g. ADU, gain in e-/ADU)."""

    def __init__(self, background: float, gain: float) -> None:
        super().__init__()
        if not gain > 0 or background < 0:
            raise ValueError(
                f"ObservationNoise needs gain > 0 and background >= 0, got gain={gain}, background={background}"
            )
        self.background = float(background)
        self.gain = float(gain)

    def sigma(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.background + x.clamp_min(0.0)) / self.gain).sqrt()

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        eps = torch.randn_like(x) if eps is None else eps.to(x)
        return x + self.sigma(x) * eps

    def extra_repr(self) -> str:
        return f"background={self.background}, gain={self.gain}"


class PSFObservation(nn.Module):
    """PSF convolution then CCD noise (see the module docstring): the ``observation`` of a ProGAN.

    Args:
        psf_size: K, the side of the stored kernel (odd; checkpoints must agree; the data's ``psf_size``).
        psf: fixed kernel [K, K] (sums to 1) or None = the training set's (data module ``psf_kernel()``).
        psf_mode: 'fixed', 'per_sample' (``batch['psf']`` in training and evaluation) or 'none'.
        psf_padding: 'zeros' (empty sky outside the stamp) or 'reflect'.
        noise_background: sky level (ADU) of the noise variance; gain None = no noise.
        noise_gain: e-/ADU of the noise variance, or None (no noise).
    """

    def __init__(
        self,
        psf_size: int,
        psf: torch.Tensor | np.ndarray | None = None,
        psf_mode: str = "fixed",
        psf_padding: str = "zeros",
        noise_background: float | None = None,
        noise_gain: float | None = None,
    ) -> None:
        super().__init__()
        if psf_mode not in PSF_MODES:
            raise ValueError(f"model.observation.psf_mode must be one of {', '.join(PSF_MODES)}, got {psf_mode!r}")
        self.psf_mode = psf_mode
        self.psf_size = int(psf_size)
        self.psf_from_data = psf is None and psf_mode != "none"
        if psf is None:
            kernel = torch.zeros(self.psf_size, self.psf_size)
            kernel[self.psf_size // 2, self.psf_size // 2] = 1.0  # identity until the data's PSF is set
        else:
            kernel = torch.as_tensor(psf, dtype=torch.float32)
            if tuple(kernel.shape) != (self.psf_size, self.psf_size):
                raise ValueError(
                    f"model.observation.psf has shape {tuple(kernel.shape)}; model.observation.psf_size="
                    f"{self.psf_size} expects {self.psf_size}x{self.psf_size}"
                )
        self.psf_layer = FFTPSFConv(kernel, padding=psf_padding)
        self.noise = ObservationNoise(noise_background or 0.0, noise_gain) if noise_gain else None

    @property
    def has_noise(self) -> bool:
        return self.noise is not None

    def setup(self, datamodule: Any) -> None:
        """At fit: take the training set's PSF (``datamodule.psf_kernel()``) unless a kernel was given."""
        if not self.psf_from_data:
            return
        get = getattr(datamodule, "psf_kernel", None)
        if get is None:
            raise ValueError(
                "model.observation.psf is null (use the training set's PSF) but the data module has no "
                "psf_kernel(); give model.observation.psf or model.observation.psf_mode=none"
            )
        kernel = torch.as_tensor(get(), dtype=torch.float32)
        if tuple(kernel.shape) != (self.psf_size, self.psf_size):
            raise ValueError(
                f"the training set's PSF is {tuple(kernel.shape)} but model.observation.psf_size={self.psf_size}"
            )
        self.psf_layer.psf.copy_(kernel)

    def psf_of(self, batch: Mapping[str, Any]) -> torch.Tensor | None:
        """The per-sample PSFs a training or evaluation batch asks for (``per_sample`` mode), else None."""
        if self.psf_mode != "per_sample":
            return None
        if "psf" not in batch:
            raise ValueError("model.observation.psf_mode=per_sample needs a 'psf' entry [B, K, K] in every batch")
        return batch["psf"]

    def forward(
        self, x: torch.Tensor, psf: torch.Tensor | None = None, eps: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """PSF-free ``x`` [B, 1, S, S] (physical) -> ``convolved`` and ``observed``; ``psf`` [B, K, K] replaces
        the stored kernel (per-sample PSFs, or a prediction's override)."""
        if psf is not None and self.psf_mode == "none":
            raise ValueError("predict.psf: this model has no PSF layer (model.observation.psf_mode=none)")
        conv = x if self.psf_mode == "none" and psf is None else self.psf_layer(x, psf=psf)
        observed = self.noise(conv, eps) if self.noise is not None else conv
        return {"convolved": conv, "observed": observed}

    def attrs(self) -> dict[str, Any]:
        """What a sample file records about the instrument."""
        out: dict[str, Any] = {"psf_mode": self.psf_mode, "training_psf": self.psf_layer.psf.detach().cpu().numpy()}
        if self.noise is not None:
            out.update(noise_background=self.noise.background, noise_gain=self.noise.gain)
        return out
