"""SmoothingGatedNet: its smoothing is the X-ray baseline's, its gate follows the count level, it keeps the
symmetries of its parts, its gate learns toward the smoothing on a faint flat sky, and InitNetFrom fills its
inner net from a checkpoint of the bare net."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lit_sr.callbacks.init_from import InitNetFrom
from lit_sr.data.transforms import StretchTransform
from lit_sr.domains.xmm.baselines import gaussian_smooth_rate, smoothing_matrix
from lit_sr.nets.smoothing_gate import SmoothingGatedNet, exposure_weighted_smoothing, pixel_gaussian_kernel

MAX_RATE = 2e-3  # counts/s, the X-ray data's scaling
EXPO_NORM_KS = 100.0


class RawRate(nn.Module):
    """A 'denoiser' that returns its input image channel (the raw rate)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x[:, :1]


def frame(rate: torch.Tensor, exposure_s: torch.Tensor, transform: nn.Module) -> torch.Tensor:
    return torch.cat([transform(rate), exposure_s / (1e3 * EXPO_NORM_KS)], dim=1)


def gated(net: nn.Module | None = None, **kw) -> SmoothingGatedNet:
    transform = StretchTransform(MAX_RATE, "sqrt", None, clip=False)
    return SmoothingGatedNet(net or RawRate(), transform, 2.5, EXPO_NORM_KS, **kw)


def test_kernel_is_the_baselines_pixel_integrated_gaussian():
    k = pixel_gaussian_kernel(2.5).numpy()
    column = smoothing_matrix(64, 2.5)[:, 32]  # an interior column of the baseline's operator: its kernel
    r = k.size // 2
    np.testing.assert_allclose(k, column[32 - r : 32 + r + 1], atol=1e-12)
    assert abs(k.sum() - 1) < 1e-12


def test_smoothing_equals_the_baseline_in_the_interior_and_keeps_a_flat_sky_flat_across_a_gap():
    g = torch.Generator().manual_seed(0)
    rate = torch.rand(1, 1, 48, 48, generator=g, dtype=torch.float64) * 1e-3
    expo = torch.full_like(rate, 2e4)
    expo[..., :10, :] = 1e4  # a shorter-exposed strip
    expo[..., 20:23] = 0  # a chip gap
    ours = exposure_weighted_smoothing(rate, expo, pixel_gaussian_kernel(2.5))
    theirs = gaussian_smooth_rate(rate, 2.5, expo)
    r = pixel_gaussian_kernel(2.5).numel() // 2
    np.testing.assert_allclose(ours[..., r:-r, r:-r].numpy(), theirs[..., r:-r, r:-r].numpy(), rtol=1e-10)
    assert torch.all(ours[..., 20:23] == 0)
    flat = exposure_weighted_smoothing(torch.full_like(rate, 3e-4), expo, pixel_gaussian_kernel(2.5))
    live = expo > 0
    np.testing.assert_allclose(flat[live].numpy(), 3e-4, rtol=1e-12)  # edges and the gap included


def test_gate_weighs_net_and_smoothing_by_the_count_level():
    net = gated(gate_counts=2.0, gate_slope=1.5)
    assert net.gate_counts == pytest.approx(2.0) and net.gate_slope == pytest.approx(1.5)
    expo = torch.full((1, 1, 32, 32), 2e4)
    for counts in (0.05, 2.0, 80.0):
        rate = torch.full((1, 1, 32, 32), counts / 2e4)
        rate[..., 16, 16] *= 5  # a bright pixel: the net (raw rate) keeps it, the smoothing spreads it
        parts = net.parts(frame(rate, expo, net.transform))
        c = parts["smooth"][0, 0, 4, 4].item() * 2e4  # far from the bright pixel: the flat level
        expected = c**1.5 / (c**1.5 + 2.0**1.5)
        assert parts["gate"][0, 0, 4, 4].item() == pytest.approx(expected, rel=1e-4)
        mixed = parts["gate"] * parts["net"] + (1 - parts["gate"]) * parts["smooth"]
        torch.testing.assert_close(parts["mixed"], mixed)
    # faint: the output is (nearly) the smoothing; bright: (nearly) the net
    faint = net.parts(frame(torch.full((1, 1, 32, 32), 0.01 / 2e4), expo, net.transform))
    assert faint["gate"].max() < 0.01
    bright = net.parts(frame(torch.full((1, 1, 32, 32), 500 / 2e4), expo, net.transform))
    assert bright["gate"].min() > 0.99


def test_rot90_and_flip_equivariant_when_the_net_is():
    net = gated(gate_counts=1.0).double()
    g = torch.Generator().manual_seed(1)
    rate = torch.poisson(torch.full((2, 1, 40, 40), 1.5, dtype=torch.float64), generator=g) / 2e4
    expo = torch.full_like(rate, 2e4)
    expo[..., 30:, :5] = 0
    x = frame(rate, expo, net.transform)
    y = net(x)
    for k in (1, 2, 3):
        torch.testing.assert_close(net(torch.rot90(x, k, (-2, -1))), torch.rot90(y, k, (-2, -1)), atol=1e-12, rtol=0)
    torch.testing.assert_close(net(torch.flip(x, (-1,))), torch.flip(y, (-1,)), atol=1e-12, rtol=0)


def test_gate_learns_toward_the_smoothing_on_a_faint_flat_sky():
    """The net is the raw rate (Poisson noise only); on a flat sky of 0.3 counts per pixel the smoothing is the
    better estimate, so fitting the held-out counts' Poisson likelihood must move the crossover c0 up."""
    torch.manual_seed(0)
    net = gated(gate_counts=1.0, gate_slope=1.0)
    net.net.scale.requires_grad_(False)
    opt = torch.optim.Adam([net.log_gate_counts, net.log_gate_slope], lr=1e-2)
    expo = torch.full((4, 1, 48, 48), 2e4)
    truth = 0.3 / 2e4
    for _ in range(60):
        x = frame(torch.poisson(torch.full_like(expo, 0.3)) / 2e4, expo, net.transform)
        held = torch.poisson(torch.full_like(expo, 1.2))  # independent counts over 80 ks
        mu = net.transform.inverse(net(x)) * 8e4
        loss = (mu - held * torch.log(mu.clamp_min(1e-8))).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert net.gate_counts > 2.0, net.gate_counts
    out = net.transform.inverse(net(frame(torch.poisson(torch.full_like(expo, 0.3)) / 2e4, expo, net.transform)))
    raw_err = 0.3 / 2e4 / math.sqrt(0.3)  # the raw rate's per-pixel error
    assert (out - truth).pow(2).mean().sqrt() < 0.5 * raw_err


def test_rejects_a_net_that_changes_the_grid():
    net = gated(nn.Upsample(scale_factor=2))
    with pytest.raises(ValueError, match="one channel on the input grid"):
        net(torch.zeros(1, 2, 16, 16))


def test_init_net_from_fills_the_inner_net_and_leaves_the_gate(tmp_path):
    inner = nn.Conv2d(2, 1, 3, padding=1)
    donor = nn.Conv2d(2, 1, 3, padding=1)
    torch.save({"state_dict": {f"net.{k}": v for k, v in donor.state_dict().items()}}, tmp_path / "d.ckpt")
    module = nn.Module()
    module.net = gated(inner, gate_counts=3.0)
    trainer = type("T", (), {"ckpt_path": None})()
    InitNetFrom(str(tmp_path / "d.ckpt"), submodule="net").on_fit_start(trainer, module)
    torch.testing.assert_close(module.net.net.weight, donor.weight)
    assert module.net.gate_counts == pytest.approx(3.0)
    with pytest.raises(ValueError, match="do not match the configured SmoothingGatedNet"):
        InitNetFrom(str(tmp_path / "d.ckpt")).on_fit_start(trainer, module)


def test_gradients_stay_finite_where_the_output_is_zero():
    """Unexposed pixels and a zero net output give a zero rate; the sqrt stretch and its inverse in the loss
    must not turn that into a NaN gradient (the first fine-tunes went NaN in 70 steps)."""
    net = gated(gate_counts=1.0)
    net.net.scale.data.zero_()  # the net outputs 0 everywhere
    expo = torch.full((1, 1, 24, 24), 2e4)
    expo[..., :, :6] = 0
    x = frame(torch.poisson(torch.full_like(expo, 0.5)) / 2e4 * (expo > 0), expo, net.transform)
    mu = net.transform.inverse(net(x)) * 8e4
    (mu - 2.0 * torch.log(mu.clamp_min(1e-8))).mean().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


class SpreadRawRate(nn.Module):
    """An x2 'SR net' that spreads each input pixel's raw rate evenly over its 2 x 2 block."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        transform = StretchTransform(MAX_RATE, "sqrt", None, clip=False)
        rate = transform.inverse(x[:, :1]).repeat_interleave(2, -2).repeat_interleave(2, -1) / 4
        return transform(rate)


def test_sr_net_block_sums_mix_the_input_grid_estimates():
    """For x2 SR the 2 x 2 sums of the output are g x (the net's sums) + (1 - g) x (the input-grid smoothing)."""
    net = gated(SpreadRawRate(), gate_counts=1.0).double()
    g = torch.Generator().manual_seed(2)
    expo = torch.full((1, 1, 32, 32), 2e4, dtype=torch.float64)
    expo[..., 10:12, :] = 0
    rate = torch.poisson(torch.full_like(expo, 1.0), generator=g) / 2e4 * (expo > 0)
    x = frame(rate, expo, net.transform)
    out = net.transform.inverse(net(x))
    assert out.shape[-2:] == (64, 64)
    sums = out.reshape(1, 1, 32, 2, 32, 2).sum(dim=(3, 5))
    smooth = exposure_weighted_smoothing(rate, expo, pixel_gaussian_kernel(2.5).double())
    gate = torch.sigmoid(torch.log((smooth * expo).clamp_min(1e-6)))  # a = 1, c0 = 1 count
    live = expo > 0
    torch.testing.assert_close(sums[live], (gate * rate + (1 - gate) * smooth)[live], rtol=1e-6, atol=1e-12)


def test_gate_ceiling_caps_the_net_weight_and_is_absent_by_default():
    net = gated(gate_counts=1.0, gate_max=0.6)
    assert net.gate_max == pytest.approx(0.6)
    expo = torch.full((1, 1, 32, 32), 2e4)
    bright = net.parts(frame(torch.full((1, 1, 32, 32), 500 / 2e4), expo, net.transform))
    torch.testing.assert_close(bright["gate"], torch.full_like(bright["gate"], 0.6), rtol=2e-3, atol=0)
    plain = gated()
    assert plain.gate_max == 1.0 and "logit_gate_max" not in plain.state_dict()  # old checkpoints load unchanged
    with pytest.raises(ValueError, match="gate_max"):
        gated(gate_max=1.0)


def test_significance_term_trusts_a_significant_faint_source_and_not_a_noise_bump():
    """At 0.5 counts per pixel the count gate alone gives the net weight c / (c + c0) = 1/3 everywhere; with the
    significance term a pixel where the net sits 10 sigma above the smoothing leans on the net, and one where it
    equals the smoothing leans further on the smoothing, both by the formula of the module doc."""
    net = gated(SpreadRawRate(), gate_counts=1.0, significance_slope=2.0, significance_level=1.5).double()
    assert net.significance == pytest.approx((2.0, 1.5))
    expo = torch.full((1, 1, 33, 33), 2e4, dtype=torch.float64)
    rate = torch.full_like(expo, 0.5 / 2e4)
    rate[..., 16, 16] = 12.0 / 2e4  # a faint point source
    with torch.no_grad():
        parts = net.parts(frame(rate, expo, net.transform))
    gate = parts["gate"][..., ::2, ::2]  # the input-grid gate (spread evenly)
    c = parts["smooth"].reshape(1, 1, 33, 2, 33, 2).sum(dim=(3, 5)) * 2e4
    z = (rate * 2e4 - c).abs() / (1 + torch.sqrt(c + 0.75))
    expected = torch.sigmoid(torch.log(c) + 2.0 * (z - 1.5))
    torch.testing.assert_close(gate, expected, rtol=1e-6, atol=1e-9)
    assert gate[0, 0, 16, 16] > 0.99 and z[0, 0, 16, 16] > 3, (gate[0, 0, 16, 16], z[0, 0, 16, 16])
    assert gate[0, 0, 2, 2] < 0.1  # flat sky: net = smoothing, z = 0
    no_term = gated(SpreadRawRate(), gate_counts=1.0).double().parts(frame(rate, expo, net.transform))["gate"]
    assert no_term[0, 0, 4, 4].item() == pytest.approx(1 / 3, rel=1e-3)
    assert "log_significance_slope" not in gated().state_dict()  # off by default: old checkpoints load
    with pytest.raises(ValueError, match="significance_slope"):
        gated(significance_slope=0.0)


def test_significance_term_keeps_the_symmetries_and_finite_gradients():
    net = gated(gate_counts=1.0, significance_slope=1.0).double()
    g = torch.Generator().manual_seed(3)
    rate = torch.poisson(torch.full((2, 1, 40, 40), 0.8, dtype=torch.float64), generator=g) / 2e4
    expo = torch.full_like(rate, 2e4)
    expo[..., 30:, :5] = 0
    rate = rate * (expo > 0)
    x = frame(rate, expo, net.transform)
    y = net(x)
    for k in (1, 2, 3):
        torch.testing.assert_close(net(torch.rot90(x, k, (-2, -1))), torch.rot90(y, k, (-2, -1)), atol=1e-12, rtol=0)
    torch.testing.assert_close(net(torch.flip(x, (-2,))), torch.flip(y, (-2,)), atol=1e-12, rtol=0)
    net.net.scale.data.zero_()  # an all-zero net output, as in the NaN test above
    mu = net.transform.inverse(net(x)) * 8e4
    (mu - 2.0 * torch.log(mu.clamp_min(1e-8))).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_bright_gate_keeps_the_net_on_a_bright_smooth_region_that_the_significance_term_hands_to_the_smoothing():
    """A bright flat sky (200 counts per pixel, the net = the smoothing, z = 0): the significance term alone gives the
    net 6 % weight there; with a bright gate at c_b = 30 counts the net keeps sigmoid(2 ln(200/30)) of it,
    by the formula of the module doc, while a faint flat pixel stays with the smoothing."""
    kw = dict(gate_counts=1.0, significance_slope=2.0, significance_level=4.0)
    plain, bright = gated(**kw).double(), gated(bright_counts=30.0, bright_slope=2.0, **kw).double()
    assert plain.bright is None and bright.bright == pytest.approx((30.0, 2.0))
    expo = torch.full((1, 1, 24, 24), 2e4, dtype=torch.float64)
    for counts in (200.0, 0.5):
        x = frame(torch.full_like(expo, counts / 2e4), expo, plain.transform)
        with torch.no_grad():
            g_plain, g_bright = (
                plain.parts(x)["gate"][0, 0, 12, 12].item(),
                bright.parts(x)["gate"][0, 0, 12, 12].item(),
            )
        sig = 1 / (1 + math.exp(-(math.log(counts) - 2.0 * 4.0)))  # a = 1, c0 = 1, z = 0
        b = 1 / (1 + math.exp(-2.0 * math.log(counts / 30.0)))
        assert g_plain == pytest.approx(sig, rel=1e-4)
        assert g_bright == pytest.approx(1 - (1 - b) * (1 - sig), rel=1e-4)
        if counts == 200.0:
            assert g_plain < 0.07 and g_bright > 0.97
    assert g_bright < 0.01  # the last one: 0.5 counts
    with pytest.raises(ValueError, match="needs the significance term"):
        gated(bright_counts=30.0)


def test_sr_smoothing_part_is_split_smoothly_inside_each_block():
    """x2 on a faint ramp (the output is nearly all smoothing): each 2 x 2 block keeps the input pixel's smoothed
    rate, but the flux inside it follows the ramp instead of four equal values, so no 2 x 2 steps appear."""
    net = gated(SpreadRawRate(), gate_counts=1e4).double()  # the net's weight < 1e-4 at these counts
    expo = torch.full((1, 1, 32, 32), 2e4, dtype=torch.float64)
    ramp = (0.2 + 0.02 * torch.arange(32, dtype=torch.float64)).expand(1, 1, 32, 32) / 2e4  # counts/s, along x
    with torch.no_grad():
        parts = net.parts(frame(ramp, expo, net.transform))
    smooth_hr = parts["smooth"]
    sums = smooth_hr.reshape(1, 1, 32, 2, 32, 2).sum(dim=(3, 5))
    smooth_lr = exposure_weighted_smoothing(ramp, expo, pixel_gaussian_kernel(2.5).double())
    torch.testing.assert_close(sums, smooth_lr, rtol=1e-8, atol=0)  # (the input went through the sqrt stretch)
    inner = smooth_hr[0, 0, 16, 8:56]  # a row away from the edges, along the ramp
    steps = inner.diff()
    assert torch.all(steps > 0)  # rising inside the blocks too, not flat pairs
    assert steps.max() < 1.5 * steps.min()  # and evenly: no 2 x 2 steps
