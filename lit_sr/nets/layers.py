"""Small shared layer helpers for the nets package."""

from __future__ import annotations

from torch import nn


def make_activation(name: str | None, negative_slope: float = 0.2) -> nn.Module:
    """Activation by name: 'lrelu' (slope 0.2, ESRGAN), 'swish'/'silu', 'relu', 'softplus', 'sigmoid', None."""
    if name is None or name == "none" or name == "identity":
        return nn.Identity()
    name = name.lower()
    if name in ("lrelu", "leaky_relu", "leakyrelu"):
        return nn.LeakyReLU(negative_slope, inplace=True)
    if name in ("swish", "silu"):
        return nn.SiLU(inplace=True)
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "softplus":
        return nn.Softplus()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "tanh":
        return nn.Tanh()
    raise ValueError(f"unknown activation {name!r}; expected one of lrelu, swish, relu, softplus, sigmoid, tanh, none")
