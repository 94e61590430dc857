"""Named generator configurations built from the shared :class:`~lit_sr.nets.rrdb.RRDBNet`.

No second copy of an architecture lives here: each factory only fixes ``RRDBNet`` options (and
:class:`UpsampledInputSkip` optionally wraps one).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lit_sr.nets.layers import make_activation
from lit_sr.nets.rrdb import RRDBNet

#: The calorimeter study's generator (Erdmann et al. 2022): conv -> 5 RRDBs -> conv with a global
#: residual, Swish inside the blocks, two x2 nearest-neighbour upsampling blocks (conv + Swish),
#: conv + Swish, last conv + ReLU (no negative energies); every conv has 32 filters of 3x3.
CALO_GENERATOR_DEFAULTS: dict[str, Any] = dict(
    in_channels=1, out_channels=1, num_features=32, num_blocks=5, growth_channels=32,
    activation="swish", scale=4, upsample="nearest", output_activation="relu",
)


class UpsampledInputSkip(nn.Module):
    """``act(net(lr) + up(lr))``: the net predicts a correction of the flux-conserving nearest upsampling.

    ``up`` repeats every LR pixel over its ``scale x scale`` block divided by ``scale**2`` (the block
    sums to the LR value; exact in model space for a linear intensity transform). ``net`` is built
    without output activation; its last conv starts at zero, so the generator starts as the LR
    upsampling itself: never an all-zero ("dead" ReLU) output, and showers in place from step 0.
    """

    def __init__(self, net: RRDBNet, scale: int, output_activation: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.scale = int(scale)
        self.output_activation = output_activation
        with torch.no_grad():
            net.conv_last.weight.zero_()
            if net.conv_last.bias is not None:
                net.conv_last.bias.zero_()

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        up = nn.functional.interpolate(lr, scale_factor=self.scale, mode="nearest") / self.scale**2
        return self.output_activation(self.net(lr) + up)


def calo_generator(output_bias: float = 0.01, input_skip: bool = False, **overrides: Any) -> nn.Module:
    """The study's generator, ``RRDBNet(1, 1, 32, 5, 32, 'swish', 4, 'nearest', 'relu')``.

    Keyword overrides replace single options, e.g. ``calo_generator(num_features=8, num_blocks=1)``
    for fast tests. Unknown keys raise ``TypeError`` from ``RRDBNet``.

    ``output_bias``: initial bias of the last conv when the output activation is ReLU. With a zero
    bias a (small) generator can start "dead": every pre-activation negative, an all-zero image and
    no gradient at all. A small positive bias keeps about half of the output pixels active at
    start; training then moves it freely. Ignored for other output activations.

    ``input_skip=True`` (not in the study; off by default) returns :class:`UpsampledInputSkip`
    around the net: output = act(correction + flux-conserving nearest upsampling of the input).
    On sparse shower images a plain ReLU output tends to die early in training (most HR pixels are
    0, so the first updates push every pre-activation negative); starting from the upsampled LR
    image avoids that and lets short CPU runs learn the sub-crystal structure.
    """
    opts = {**CALO_GENERATOR_DEFAULTS, **overrides}
    if input_skip:
        if opts["in_channels"] != opts["out_channels"]:
            raise ValueError("calo_generator(input_skip=True) needs in_channels == out_channels")
        act = make_activation(opts["output_activation"])
        return UpsampledInputSkip(RRDBNet(**{**opts, "output_activation": None}), opts["scale"], act)
    net = RRDBNet(**opts)
    if net.conv_last.bias is not None and isinstance(net.output_activation, nn.ReLU):
        with torch.no_grad():
            net.conv_last.bias.fill_(float(output_bias))
    return net
