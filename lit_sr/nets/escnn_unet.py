"""Optional escnn backend of the C4-equivariant UNet (``backend="escnn"``).

escnn is not a core dependency (it needs a compiler / older numpy on some platforms): install it with
``pip install lit_sr[equivariant]``. The pure-PyTorch :class:`lit_sr.nets.c4.C4UNet` is the default.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from lit_sr.nets.c4 import group_pool

try:  # pragma: no cover - depends on the optional extra
    from escnn import gspaces
    from escnn import nn as enn

    _ESCNN_ERROR: Exception | None = None
except Exception as err:  # ImportError, or a broken build raising something else at import
    gspaces = enn = None
    _ESCNN_ERROR = err


def require_escnn() -> None:
    if _ESCNN_ERROR is not None:
        raise ImportError(
            "backend='escnn' needs the optional escnn package: pip install lit_sr[equivariant] "
            "(or use the built-in backend='c4', which needs nothing extra); "
            f"import failed with: {_ESCNN_ERROR!r}"
        ) from _ESCNN_ERROR


class EscnnC4UNet(nn.Module):
    """escnn C4 UNet: regular fields per level, R2Conv 3x3, pointwise ReLU and max-pool, R2Upsampling
    (nearest) + 1x1 conv up, skips by direct sum (concatenation of field types), group pooling to a
    ``latent_channels``-channel invariant scalar latent by :func:`lit_sr.nets.c4.group_pool` (escnn
    lays a regular field out as 4 contiguous channels, as the pure-PyTorch net does): ``"mean"`` by
    default, as in :class:`lit_sr.nets.c4.C4UNet`, where max pooling did not train, or ``"max"``."""

    equivariant = True

    def __init__(
        self,
        in_channels: int = 1,
        latent_channels: int = 16,
        fields: Sequence[int] = (32, 64, 128, 256),
        group_pool: str = "mean",
    ) -> None:
        super().__init__()
        require_escnn()
        self.group_pool_mode = group_pool
        fields = list(fields)
        self.factor = 2 ** (len(fields) - 1)
        self.latent_channels = latent_channels
        gs = gspaces.rot2dOnR2(N=4)
        self.in_type = enn.FieldType(gs, in_channels * [gs.trivial_repr])
        reg = [enn.FieldType(gs, f * [gs.regular_repr]) for f in fields]

        def block(t_in, t_out):
            return enn.SequentialModule(
                enn.R2Conv(t_in, t_out, 3, padding=1),
                enn.ReLU(t_out, inplace=True),
                enn.R2Conv(t_out, t_out, 3, padding=1),
                enn.ReLU(t_out, inplace=True),
            )

        self.down = nn.ModuleList()
        t = self.in_type
        for r in reg:
            self.down.append(block(t, r))
            t = r
        self.pools = nn.ModuleList([enn.PointwiseMaxPool2D(r, 2) for r in reg[:-1]])
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for r_hi, r in zip(reg[::-1][:-1], reg[::-1][1:]):
            self.up.append(enn.SequentialModule(enn.R2Upsampling(r_hi, 2, mode="nearest"), enn.R2Conv(r_hi, r, 1)))
            self.dec.append(block(r + r, r))
        out_type = enn.FieldType(gs, latent_channels * [gs.regular_repr])
        self.out = enn.R2Conv(reg[0], out_type, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from lit_sr.nets.unet import check_divisible

        check_divisible(x, self.factor, type(self).__name__)
        g = enn.GeometricTensor(x, self.in_type)
        skips = []
        for i, block in enumerate(self.down):
            g = block(g if i == 0 else self.pools[i - 1](g))
            skips.append(g)
        g = skips.pop()
        for up, dec in zip(self.up, self.dec):
            g = dec(enn.tensor_directsum([up(g), skips.pop()]))
        return group_pool(self.out(g).tensor, self.group_pool_mode)
