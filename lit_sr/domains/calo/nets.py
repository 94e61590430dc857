"""Calorimeter generator: the study's RRDBNet configuration, optionally energy-conserving.

No second copy of an architecture lives here: :func:`calo_generator` fixes ``RRDBNet`` options, and
two wrappers make any generator keep every LR crystal's energy: :class:`EnergyConservingGenerator`
rescales each block of a non-negative output, :class:`BlockSoftmaxGenerator` shares each crystal's
energy out with a softmax over its block.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lit_sr.domains.calo.metrics import conserve_energy
from lit_sr.nets.rrdb import RRDBNet

#: The calorimeter study's generator (Erdmann et al. 2022): conv -> 5 RRDBs -> conv with a global
#: residual, Swish inside the blocks, two x2 nearest-neighbour upsampling blocks (conv + Swish),
#: conv + Swish, last conv + ReLU (no negative energies); every conv has 32 filters of 3x3.
CALO_GENERATOR_DEFAULTS: dict[str, Any] = dict(
    in_channels=1,
    out_channels=1,
    num_features=32,
    num_blocks=5,
    growth_channels=32,
    activation="swish",
    scale=4,
    upsample="nearest",
    output_activation="relu",
)


class EnergyConservingGenerator(nn.Module):
    """Wraps a generator so every scale x scale block of its output sums to the LR crystal (physical units).

    Works in the model space of ``transform`` (output mapped to GeV, rescaled with
    :func:`~lit_sr.domains.calo.metrics.conserve_energy`, mapped back).
    """

    def __init__(self, net: nn.Module, scale: int, transform: nn.Module | None = None) -> None:
        super().__init__()
        self.net = net
        self.scale = int(scale)
        self.transform = transform

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        sr = self.net(lr)
        if self.transform is None:
            return conserve_energy(sr, lr, self.scale)
        out = conserve_energy(self.transform.inverse(sr), self.transform.inverse(lr), self.scale)
        return self.transform(out)


class BlockSoftmaxGenerator(EnergyConservingGenerator):
    """Energy-conserving generator: each LR crystal's energy shared out over its scale x scale block.

    Same constructor as :class:`EnergyConservingGenerator`; the wrapped net's output (no output
    activation) are logits; within every block
    E_HR = E_LR * softmax(logits over the block), so the block sums to the LR crystal exactly (GeV,
    through ``transform``) and every pixel keeps a gradient. The rescaling wrapper
    (:class:`EnergyConservingGenerator`) on a ReLU output can die: a block whose pixels are all 0 is
    filled uniformly with no gradient, and a short CPU run ended with 99.998 % zero pixels, i.e. the
    SR image was exactly the upsampled LR image. With ``input_skip`` the logits start uniform within
    each block, so the net starts as the flux-conserving nearest-neighbour upsampling.
    """

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        logits = self.net(lr)
        b, c, h, w = logits.shape
        s = self.scale
        if h != lr.shape[-2] * s or w != lr.shape[-1] * s:
            raise ValueError(
                f"BlockSoftmaxGenerator: output {tuple(logits.shape)} is not {s} x input {tuple(lr.shape)}"
            )
        blocks = (
            logits.reshape(b, c, h // s, s, w // s, s).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h // s, w // s, s * s)
        )
        frac = torch.softmax(blocks, dim=-1)
        lr_gev = lr[:, :c] if self.transform is None else self.transform.inverse(lr[:, :c])
        hr = frac * lr_gev.clamp_min(0.0).unsqueeze(-1)
        hr = hr.reshape(b, c, h // s, w // s, s, s).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w)
        return hr if self.transform is None else self.transform(hr)


ENERGY_CONSERVATION = (False, True, "rescale", "softmax")


def calo_generator(
    output_bias: float = 0.01,
    energy_conservation: bool | str = False,
    transform: nn.Module | None = None,
    **overrides: Any,
) -> nn.Module:
    """The study's generator, ``RRDBNet(1, 1, 32, 5, 32, 'swish', 4, 'nearest', 'relu')``.

    Keyword overrides replace single ``RRDBNet`` options, e.g. ``calo_generator(num_features=8,
    num_blocks=1)`` for fast tests, or ``input_skip=True`` (predict a correction of the upsampled LR
    image: on sparse shower images a plain ReLU output tends to die early in training, as most HR
    pixels are 0; starting from the upsampled LR avoids that). Unknown keys raise ``TypeError``.

    ``output_bias``: initial bias of the last conv when the output activation is ReLU and there is no
    input skip. With a zero bias a (small) generator can start "dead": every pre-activation negative,
    an all-zero image and no gradient at all; a small positive bias keeps about half of the output
    pixels active at start.

    ``energy_conservation`` (``transform``: the data's GeV <-> model-space transform), so the SR
    showers keep every LR crystal's energy exactly: ``true`` / ``"rescale"`` wraps the net in
    :class:`EnergyConservingGenerator`; ``"softmax"`` in :class:`BlockSoftmaxGenerator` (the net's
    output activation is then dropped: its output are logits).
    """
    if energy_conservation not in ENERGY_CONSERVATION:
        raise ValueError(
            f"energy_conservation must be false, true, 'rescale' or 'softmax', got {energy_conservation!r}"
        )
    opts = {**CALO_GENERATOR_DEFAULTS, **overrides}
    if energy_conservation == "softmax":
        opts["output_activation"] = None
    net = RRDBNet(**opts)
    if not net.input_skip and isinstance(net.output_activation, nn.ReLU):
        with torch.no_grad():
            net.conv_last.bias.fill_(float(output_bias))
    if energy_conservation == "softmax":
        return BlockSoftmaxGenerator(net, opts["scale"], transform)
    if energy_conservation:
        return EnergyConservingGenerator(net, opts["scale"], transform)
    return net
