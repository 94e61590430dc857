"""RDN, SRResNet and the VGG-style SRGAN discriminator: shapes, parameter counts, fitting, conditioning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lit_sr.nets.discriminator import VGGDiscriminator
from lit_sr.nets.rdn import RDN
from lit_sr.nets.srresnet import SRResNet


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv(c_in: int, c_out: int, k: int, bias: bool = True) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


# ---------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("scale", [1, 2, 4])
@pytest.mark.parametrize(
    "make",
    [
        lambda s: RDN(1, 1, num_features=8, growth=8, num_blocks=2, num_layers=2, scale=s),
        lambda s: SRResNet(1, 1, num_features=8, num_blocks=2, scale=s),
        lambda s: SRResNet(2, 3, num_features=8, num_blocks=1, scale=s, batch_norm=False),
    ],
    ids=["rdn", "srresnet", "srresnet_nobn"],
)
def test_generator_shapes_including_odd_sizes(make, scale):
    net = make(scale)
    c_in = net.head[0].in_channels if isinstance(net, SRResNet) else net.shallow1.in_channels
    c_out = net.tail.out_channels if isinstance(net, SRResNet) else net.last.out_channels
    for h, w in ((16, 16), (7, 11)):
        y = net(torch.randn(2, c_in, h, w))
        assert y.shape == (2, c_out, scale * h, scale * w)
        assert torch.isfinite(y).all()


def test_bad_scale_rejected():
    with pytest.raises(ValueError, match="scale"):
        RDN(scale=3)
    with pytest.raises(ValueError, match="scale"):
        SRResNet(scale=6)


def test_discriminator_any_size_and_logit_shape():
    d = VGGDiscriminator(1, num_stages=2, base_channels=8, hidden=16, pooled_size=3).eval()
    for h, w in ((16, 16), (23, 17), (150, 150)):
        out = d(torch.randn(3, 1, h, w))
        assert out.shape == (3,)


# ---------------------------------------------------------------------------------------------- parameter counts


def rdn_count(c_in, c_out, g0, g, d, c, scale) -> int:
    block = sum(conv(g0 + i * g, g, 3) for i in range(c)) + conv(g0 + c * g, g0, 1)
    ups = (scale.bit_length() - 1) * conv(g0, 4 * g0, 3)
    return (
        conv(c_in, g0, 3)
        + conv(g0, g0, 3)
        + d * block
        + conv(d * g0, g0, 1)
        + conv(g0, g0, 3)
        + ups
        + conv(g0, c_out, 3)
    )


def srresnet_count(c_in, c_out, f, b, scale, bn) -> int:
    conv_bn = conv(f, f, 3, bias=not bn) + (2 * f if bn else 0)
    block = 2 * conv_bn + 1  # + one PReLU slope
    ups = (scale.bit_length() - 1) * (conv(f, 4 * f, 3) + 1)
    return conv(c_in, f, 9) + 1 + b * block + conv_bn + ups + conv(f, c_out, 9)


def disc_count(c_in, c0, stages, pooled, hidden, norm) -> int:
    total, prev = conv(c_in, c0, 3), c0
    for s in range(stages):
        c = c0 * 2**s
        norm_p = 2 * c if norm in ("batch", "layer") else 0
        bias = norm != "batch"
        if s > 0:
            total += conv(prev, c, 3, bias) + norm_p
        total += conv(c, c, 3, bias) + norm_p
        prev = c
    return total + prev * pooled**2 * hidden + hidden + hidden + 1


@pytest.mark.parametrize(
    "args", [(1, 1, 32, 32, 6, 4, 2), (3, 3, 64, 64, 16, 8, 2), (1, 1, 64, 64, 16, 8, 4), (1, 1, 32, 32, 6, 4, 1)]
)
def test_rdn_parameter_count(args):
    assert n_params(RDN(*args)) == rdn_count(*args)


def test_reference_parameter_counts():
    # RDN paper configuration (G0 = G = 64, D = 16, C = 8), RGB x2: 22.1 M
    assert n_params(RDN(3, 3, 64, 64, 16, 8, 2)) == 22_123_395
    # SRResNet paper configuration, RGB x4: 1.55 M (1,549,462 with the redundant conv biases before BN)
    assert n_params(SRResNet(3, 3, 64, 16, 4, True)) == srresnet_count(3, 3, 64, 16, 4, True) == 1_547_350
    assert n_params(SRResNet(1, 1, 64, 16, 2, False)) == srresnet_count(1, 1, 64, 16, 2, False)
    # SRGAN discriminator, 64..512 channels, 6x6 features (96x96 input), dense 1024
    for norm in ("batch", "layer", "none"):
        assert n_params(VGGDiscriminator(3, norm=norm)) == disc_count(3, 64, 4, 6, 1024, norm)
    assert n_params(VGGDiscriminator(3)) == 23_563_649
    assert n_params(VGGDiscriminator(1, condition_channels=1)) == disc_count(2, 64, 4, 6, 1024, "batch")


# ---------------------------------------------------------------------------------------------- fitting


def _fit(
    net: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, loss_fn, steps: int = 60, lr: float = 2e-3
) -> tuple[float, float]:
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    first = last = None
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(net(x), target)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        last = loss.item()
    return first, last


def _smooth_images(n: int, size: int, sigma_px: float = 1.2, seed: int = 0) -> torch.Tensor:
    """Zero-mean unit-variance random fields blurred by a Gaussian (periodic): an LR 2x2 mean nearly fixes them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g)
    k = torch.exp(-(torch.arange(-3, 4.0) ** 2) / (2 * sigma_px**2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (3, 3, 0, 0), mode="circular"), k.view(1, 1, 1, 7))
    x = F.conv2d(F.pad(x, (0, 0, 3, 3), mode="circular"), k.view(1, 1, 7, 1))
    return (x - x.mean()) / x.std()


@pytest.mark.parametrize(
    "make",
    [
        lambda: RDN(1, 1, num_features=16, growth=8, num_blocks=2, num_layers=3, scale=2),
        lambda: SRResNet(1, 1, num_features=16, num_blocks=2, scale=2),
        lambda: SRResNet(1, 1, num_features=16, num_blocks=2, scale=2, batch_norm=False),
    ],
    ids=["rdn", "srresnet", "srresnet_nobn"],
)
def test_generator_overfits_one_batch(make):
    torch.manual_seed(0)
    hr = _smooth_images(4, 16)  # 16x16 targets
    lr = F.avg_pool2d(hr, 2)  # 8x8 inputs
    bicubic = F.mse_loss(F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False), hr).item()
    first, last = _fit(make(), lr, hr, F.mse_loss, steps=60, lr=3e-3)
    assert last < first / 10, (first, last)
    assert last < bicubic, (last, bicubic)  # it learned more than interpolation


def test_discriminator_overfits_real_vs_fake():
    torch.manual_seed(0)
    d = VGGDiscriminator(1, base_channels=8, num_stages=2, hidden=32, pooled_size=2, norm="layer")
    real = torch.rand(4, 1, 16, 16)
    fake = torch.rand(4, 1, 16, 16)
    x = torch.cat([real, fake])
    y = torch.cat([torch.ones(4), torch.zeros(4)])
    first, last = _fit(d, x, y, F.binary_cross_entropy_with_logits)
    assert last < first / 10, (first, last)


# ---------------------------------------------------------------------------------------------- conditioning


def test_discriminator_uses_condition_and_inputs():
    torch.manual_seed(0)
    d = VGGDiscriminator(1, condition_channels=1, base_channels=8, num_stages=2, hidden=16, pooled_size=2, norm="none")
    x = torch.randn(2, 1, 16, 16)
    cond = torch.randn(2, 1, 8, 8, requires_grad=True)  # LR: resized to 16x16 inside
    out = d(x, cond)
    assert out.shape == (2,)
    assert not torch.allclose(out[0], out[1])  # different inputs, different logits
    (grad,) = torch.autograd.grad(out.sum(), cond)
    assert grad.abs().sum() > 0 and grad.shape == cond.shape  # the condition reaches the logit
    assert not torch.allclose(d(x, cond), d(x, torch.zeros_like(cond)))
    with pytest.raises(ValueError, match="condition"):
        d(x)
    with pytest.raises(ValueError, match="condition"):
        d(x, torch.randn(2, 2, 8, 8))
    with pytest.raises(ValueError, match="condition_channels=0"):
        VGGDiscriminator(1, base_channels=8, num_stages=1)(x, cond)


@pytest.mark.parametrize("norm,independent", [("batch", False), ("layer", True), ("none", True)])
def test_per_sample_norms_do_not_mix_the_batch(norm, independent):
    """WGAN-GP needs each logit to depend on its own sample only: true for 'layer'/'none', not for 'batch'."""
    torch.manual_seed(0)
    d = VGGDiscriminator(1, base_channels=8, num_stages=2, hidden=16, pooled_size=2, norm=norm).train()
    x = torch.randn(4, 1, 16, 16)
    x2 = x.clone()
    x2[1:] = torch.randn(3, 1, 16, 16)  # change the other samples only
    same = torch.allclose(d(x)[0], d(x2)[0], atol=1e-6)
    assert same == independent
