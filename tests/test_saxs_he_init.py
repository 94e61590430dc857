"""He initialisation of the C4 backbone (lit_sr/nets/c4.py he_init_), the fix of the SAXS seed whose noise head
never trained (docs/saxs.md): with PyTorch's default conv init the CPU recipe's narrow C4 UNet (4/8/16/32 fields)
barely responds to its input at the start, and its last ReLU can be off at every pixel."""

from __future__ import annotations

import math

import pytest
import torch

from lit_sr.nets.c4 import GroupConv2d, GroupConvTranspose2d, LiftingConv2d, he_init_
from lit_sr.nets.decomposition import DecompositionNet

CPU_FIELDS = (4, 8, 16, 32)


def sparse_saxs_like_input(seed: int = 0, batch: int = 8, size: int = 32) -> tuple[torch.Tensor, tuple[int, int]]:
    """[B, 2, P, P]: channel 0 a percentile-normalised patch (weak fog near 0, a few hits up to 1), channel 1 an
    absolute-energy-like log channel; returns the position of a hit in sample 0."""
    g = torch.Generator().manual_seed(seed)
    x0 = 0.03 * torch.rand(batch, 1, size, size, generator=g) ** 4
    hits = torch.rand(batch, 1, size, size, generator=g) < 0.003
    x0 = torch.where(hits, torch.rand(batch, 1, size, size, generator=g) * 0.7 + 0.3, x0)
    hit = (11, 17)
    x0[0, 0, hit[0], hit[1]] = 1.0
    x1 = torch.log1p(x0 * 125.0) / math.log1p(1.25e4)
    return torch.cat([x0, x1], dim=1), hit


def cpu_net(init: str, seed: int) -> DecompositionNet:
    torch.manual_seed(seed)
    return DecompositionNet(backend="c4", in_channels=2, out_channels=1, features=CPU_FIELDS, init=init)


def relu_active_fractions(net: DecompositionNet, x: torch.Tensor) -> dict[str, float]:
    acts: dict[str, float] = {}
    hooks = [
        m.register_forward_hook(lambda m, i, o, name=name: acts.__setitem__(name, (o > 0).float().mean().item()))
        for name, m in net.named_modules()
        if isinstance(m, torch.nn.ReLU)
    ]
    with torch.no_grad():
        net.backbone(x)
    for h in hooks:
        h.remove()
    return acts


def test_he_init_weight_scale_is_gain_over_root_fan_in_and_biases_are_zero() -> None:
    torch.manual_seed(0)
    lift, group, up, linear = (
        LiftingConv2d(2, 64),
        GroupConv2d(16, 64),
        GroupConvTranspose2d(32, 64),
        GroupConv2d(16, 64, 1),
    )
    he_init_(torch.nn.ModuleList([lift, group, up, linear]), linear=(linear,))
    expected = {
        lift: math.sqrt(2.0 / (2 * 9)),  # C k^2, followed by a ReLU
        group: math.sqrt(2.0 / (16 * 4 * 9)),  # 4 C k^2
        up: math.sqrt(1.0 / (32 * 4)),  # one tap per input channel reaches an output pixel; no ReLU follows
        linear: math.sqrt(1.0 / (16 * 4)),
    }
    for m, std in expected.items():
        assert m.weight.std().item() == pytest.approx(std, rel=0.1)
        assert m.weight.mean().abs().item() < 0.1 * std
        assert torch.count_nonzero(m.bias) == 0


def test_he_init_keeps_every_relu_alive_and_a_hit_moves_the_noise_head() -> None:
    x, (i, j) = sparse_saxs_like_input()
    for seed in range(6):
        net = cpu_net("he", seed)
        for name, frac in relu_active_fractions(net, x).items():
            assert 0.01 < frac < 0.99, f"seed {seed}: {name} active on {frac:.4f} of the units"
        xg = x.clone().requires_grad_(True)
        z = net.head(net.backbone(xg))  # the noise head's pre-activation
        z[0, 0, i, j].backward()
        assert xg.grad[0, :, i, j].abs().sum() > 0  # the hit pixel's own value reaches its noise estimate


def test_he_init_makes_the_noise_head_respond_to_a_hit_far_more_than_the_default_init() -> None:
    """The default init's deep pre-activations are set by the biases: the head's response to removing the hit is
    tiny (seed 1 of the SAXS runs: the last ReLU off everywhere, response exactly 0). He init: >= 10x larger."""
    x, (i, j) = sparse_saxs_like_input()
    x_nohit = x.clone()
    x_nohit[0, :, i, j] = 0.0
    ratios = []
    for seed in range(6):
        resp = {}
        for init in ("torch", "he"):
            net = cpu_net(init, seed)
            with torch.no_grad():
                dz = net.head(net.backbone(x))[0, 0, i, j] - net.head(net.backbone(x_nohit))[0, 0, i, j]
            resp[init] = dz.abs().item()
        ratios.append(resp["he"] / max(resp["torch"], 1e-12))
    assert sorted(ratios)[len(ratios) // 2] > 10.0, ratios


def test_default_init_of_seed_1_starts_with_the_last_relu_off_everywhere_and_he_init_does_not() -> None:
    """The failure of the SAXS seed-1 runs, reproduced on the net alone (torch.manual_seed(1), the CPU recipe's
    fields): the last decoder ReLU is off for every unit of the batch, so the latent is the same at every pixel."""
    x, _ = sparse_saxs_like_input()
    assert relu_active_fractions(cpu_net("torch", 1), x)["backbone.dec.2.3"] == 0.0
    with torch.no_grad():
        latent = cpu_net("torch", 1).backbone(x)
    assert latent.std(dim=(2, 3)).max().item() == 0.0  # a constant map: no pixel is told from another
    assert relu_active_fractions(cpu_net("he", 1), x)["backbone.dec.2.3"] > 0.1


@torch.no_grad()
def test_he_init_net_stays_rot90_equivariant() -> None:
    net = cpu_net("he", 0)
    x, _ = sparse_saxs_like_input(batch=2)
    out = net(x)["noise"]
    for k in (1, 2, 3):
        rotated = net(torch.rot90(x, k, dims=(-2, -1)))["noise"]
        assert torch.allclose(rotated, torch.rot90(out, k, dims=(-2, -1)), atol=1e-6)


def test_unknown_or_unsupported_init_is_refused() -> None:
    with pytest.raises(ValueError, match="init must be one of"):
        DecompositionNet(backend="c4", features=CPU_FIELDS, init="xavier")
    with pytest.raises(ValueError, match="not 'escnn'"):
        DecompositionNet(backend="escnn", features=CPU_FIELDS, init="he")


def test_plain_unet_he_init_weight_scale_and_live_relus() -> None:
    torch.manual_seed(0)
    net = DecompositionNet(backend="plain", in_channels=2, out_channels=1, features=(8, 16, 32, 64), init="he")
    bb = net.backbone
    assert bb.down[1][0].weight.std().item() == pytest.approx(math.sqrt(2.0 / (8 * 9)), rel=0.15)
    assert bb.up[0].weight.std().item() == pytest.approx(math.sqrt(1.0 / 64), rel=0.1)
    assert bb.out.weight.std().item() == pytest.approx(math.sqrt(1.0 / 8), rel=0.2)
    assert all(torch.count_nonzero(m.bias) == 0 for m in bb.modules() if isinstance(m, torch.nn.Conv2d))
    x, _ = sparse_saxs_like_input()
    for name, frac in relu_active_fractions(net, x).items():
        assert 0.01 < frac < 0.99, f"{name} active on {frac:.4f} of the units"
