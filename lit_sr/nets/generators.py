"""Named generator configurations built from the shared :class:`~lit_sr.nets.rrdb.RRDBNet`.

No second copy of an architecture lives here: each factory only fixes ``RRDBNet`` options.
"""

from __future__ import annotations

from typing import Any

from lit_sr.nets.rrdb import RRDBNet

#: The calorimeter study's generator (Erdmann et al. 2022): conv -> 5 RRDBs -> conv with a global
#: residual, Swish inside the blocks, two x2 nearest-neighbour upsampling blocks (conv + Swish),
#: conv + Swish, last conv + ReLU (no negative energies); every conv has 32 filters of 3x3.
CALO_GENERATOR_DEFAULTS: dict[str, Any] = dict(
    in_channels=1, out_channels=1, num_features=32, num_blocks=5, growth_channels=32,
    activation="swish", scale=4, upsample="nearest", output_activation="relu",
)


def calo_generator(**overrides: Any) -> RRDBNet:
    """The study's generator, ``RRDBNet(1, 1, 32, 5, 32, 'swish', 4, 'nearest', 'relu')``.

    Keyword overrides replace single options, e.g. ``calo_generator(num_features=8, num_blocks=1)``
    for fast tests. Unknown keys raise ``TypeError`` from ``RRDBNet``.
    """
    return RRDBNet(**{**CALO_GENERATOR_DEFAULTS, **overrides})
