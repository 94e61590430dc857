"""ProGAN building blocks, fade-in identities, projection conditioning, and the fixed PSF layer."""

from __future__ import annotations

import math

import galsim
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.signal import convolve2d

from lit_sr.data.validate import DataFileError
from lit_sr.nets.progan import (
    EqualizedConv2d,
    EqualizedLinear,
    MinibatchStdDev,
    PixelNorm,
    ProCritic,
    ProGenerator,
)
from lit_sr.nets.psf import FixedPSFConv, load_psf, moffat_psf

CHANNELS = (16, 16, 8, 8, 4)  # 4x4 .. 64x64
LATENT = 12


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_equalized_layers_unit_weights_and_he_scale() -> None:
    conv = EqualizedConv2d(128, 256, 3)
    lin = EqualizedLinear(512, 300)
    for layer, fan_in in ((conv, 128 * 9), (lin, 512)):
        w = layer.weight.detach()
        assert w.mean().abs() < 0.01 and w.std().item() == pytest.approx(1.0, abs=0.01)
        assert layer.scale == pytest.approx(math.sqrt(2.0 / fan_in), rel=1e-12)
        assert (layer.bias == 0).all()
    x = torch.randn(2, 128, 8, 8)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight * math.sqrt(2 / (128 * 9)), conv.bias, padding=1))
    v = torch.randn(3, 512)
    torch.testing.assert_close(lin(v), v @ (lin.weight * math.sqrt(2 / 512)).T)
    assert EqualizedConv2d(4, 1, 1, gain=1.0).scale == pytest.approx(0.5)
    # Unit-variance inputs keep roughly unit second moment through a linear layer with gain 1.
    lin1 = EqualizedLinear(512, 2000, gain=1.0)
    assert lin1(torch.randn(64, 512)).pow(2).mean().item() == pytest.approx(1.0, rel=0.05)


def test_pixel_norm_unit_mean_square() -> None:
    x = 5.0 * torch.randn(3, 7, 5, 5) + 2.0
    y = PixelNorm()(x)
    torch.testing.assert_close(y.pow(2).mean(dim=1), torch.ones(3, 5, 5), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch, group, eff_group", [(8, 4, 4), (6, 4, 3), (5, 4, 1)])
def test_minibatch_stddev_matches_numpy(batch, group, eff_group) -> None:
    x = torch.randn(batch, 3, 4, 4, dtype=torch.float64)
    layer = MinibatchStdDev(group)
    y = layer(x)
    assert layer.group_size_for(batch) == eff_group
    assert y.shape == (batch, 4, 4, 4)
    torch.testing.assert_close(y[:, :3], x)
    xn = x.numpy()
    m = batch // eff_group
    for i in range(batch):
        members = [j for j in range(batch) if j % m == i % m]  # Karras layout: group = index mod (N / G)
        assert len(members) == eff_group
        expected = np.sqrt(xn[members].var(axis=0) + 1e-8).mean()
        np.testing.assert_allclose(y[i, 3].numpy(), expected, rtol=1e-10)


def test_generator_shapes_and_fade_in() -> None:
    gen = ProGenerator(LATENT, CHANNELS, out_channels=2)
    z = torch.randn(4, LATENT)
    for d in range(5):
        out = gen(z, depth=d, alpha=0.5)
        assert out.shape == (4, 2, 4 * 2**d, 4 * 2**d)
    assert gen(z).shape == (4, 2, 64, 64) and gen.max_resolution == 64
    for d in range(1, 5):
        hs = gen.features(z, None, d)
        pure_new = gen.to_rgb[d](hs[d])
        torch.testing.assert_close(gen(z, depth=d, alpha=1.0), pure_new, rtol=0, atol=0)
        previous = gen(z, depth=d - 1, alpha=1.0)
        upsampled = F.interpolate(previous, scale_factor=2, mode="nearest")
        torch.testing.assert_close(gen(z, depth=d, alpha=0.0), upsampled, rtol=0, atol=0)
        mid = gen(z, depth=d, alpha=0.25)
        torch.testing.assert_close(mid, 0.75 * upsampled + 0.25 * pure_new)
    # Dict form of the channel list builds the same architecture.
    assert ProGenerator(LATENT, {4: 16, 8: 16, 16: 8}).max_depth == 2


def test_generator_argument_errors() -> None:
    gen = ProGenerator(LATENT, CHANNELS)
    z = torch.randn(2, LATENT)
    with pytest.raises(ValueError, match="unconditional"):
        gen(z, labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="depth"):
        gen(z, depth=5)
    with pytest.raises(ValueError, match="alpha"):
        gen(z, depth=1, alpha=1.5)
    with pytest.raises(ValueError, match="z must"):
        gen(torch.randn(2, LATENT + 1))
    cond = ProGenerator(LATENT, CHANNELS, num_classes=3, embed_dim=4)
    with pytest.raises(ValueError, match="conditional"):
        cond(z)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        cond(z, labels=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="4, 8, 16"):
        ProGenerator(LATENT, {4: 8, 16: 8})


def test_conditional_generator_depends_on_label() -> None:
    gen = ProGenerator(LATENT, CHANNELS, num_classes=3, embed_dim=4)
    z = torch.randn(1, LATENT).expand(3, LATENT)
    out = gen(z, labels=torch.tensor([0, 1, 2]), depth=2)
    assert (out[0] - out[1]).abs().max() > 1e-3 and (out[1] - out[2]).abs().max() > 1e-3
    same = gen(z, labels=torch.tensor([1, 1, 1]), depth=2)
    torch.testing.assert_close(same[0], same[2])


def test_critic_shapes_and_fade_in() -> None:
    critic = ProCritic(CHANNELS, in_channels=2, mbstd_group=4)
    for d in range(5):
        x = torch.randn(8, 2, 4 * 2**d, 4 * 2**d)
        assert critic(x, depth=d, alpha=0.3).shape == (8,)
        assert critic(x).shape == (8,)  # depth inferred from the size
    for d in range(1, 5):
        x = torch.randn(8, 2, 4 * 2**d, 4 * 2**d)
        downsampled = critic(F.avg_pool2d(x, 2), depth=d - 1, alpha=1.0)
        torch.testing.assert_close(critic(x, depth=d, alpha=0.0), downsampled, rtol=0, atol=0)
        h = critic._block(critic._from_rgb(x, d), d)
        for k in range(d - 1, 0, -1):
            h = critic._block(h, k)
        pure_new = critic.out(critic.phi(h)).squeeze(-1)
        torch.testing.assert_close(critic(x, depth=d, alpha=1.0), pure_new, rtol=0, atol=0)
    with pytest.raises(ValueError, match="16x16"):
        critic(torch.randn(2, 2, 32, 32), depth=2)
    with pytest.raises(ValueError, match="unconditional"):
        critic(torch.randn(2, 2, 8, 8), condition=torch.tensor([0, 1]))


def test_critic_projection_conditioning_and_gradient_penalty() -> None:
    critic = ProCritic(CHANNELS, num_classes=3, mbstd_group=2)
    x = torch.randn(4, 1, 16, 16)
    s0 = critic(x, condition=torch.zeros(4, dtype=torch.long))
    s1 = critic(x, condition=torch.ones(4, dtype=torch.long))
    assert (s0 - s1).abs().min() > 1e-4
    # Difference is exactly the projection term <embed(1) - embed(0), phi(x)>.
    feats = critic.phi(critic._block(critic._block(critic._from_rgb(x, 2), 2), 1))
    torch.testing.assert_close(s1 - s0, feats @ (critic.embed.weight[1] - critic.embed.weight[0]))
    s1.sum().backward()
    grad = critic.embed.weight.grad
    assert grad[1].abs().sum() > 0 and grad[0].abs().sum() == 0 and grad[2].abs().sum() == 0
    with pytest.raises(ValueError, match="conditional"):
        critic(x)
    # WGAN-GP needs double backward through the critic.
    xh = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(critic(xh, condition=torch.tensor([0, 1, 2, 0])).sum(), xh, create_graph=True)
    penalty = (g.flatten(1).norm(dim=1) - 1).pow(2).mean()
    penalty.backward()
    assert critic.from_rgb[2].weight.grad is not None and torch.isfinite(critic.from_rgb[2].weight.grad).all()


# ----------------------------------------------------------------------------------------------
# Fixed PSF layer
# ----------------------------------------------------------------------------------------------


def _asymmetric_psf(k: int = 5) -> torch.Tensor:
    psf = torch.rand(k, k, dtype=torch.float64) + torch.linspace(0, 2, k)[None, :]
    return psf / psf.sum()


def test_psf_conv_is_true_convolution_and_conserves_flux() -> None:
    psf = _asymmetric_psf()
    layer = FixedPSFConv(psf)
    x = torch.zeros(2, 3, 24, 24, dtype=torch.float64)
    x[:, :, 8:16, 8:16] = torch.rand(2, 3, 8, 8, dtype=torch.float64)  # away from the edges
    y = layer(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y.sum(dim=(2, 3)), x.sum(dim=(2, 3)), rtol=1e-6, atol=0)
    ref = convolve2d(x[1, 2].numpy(), layer.psf.double().numpy(), mode="same")
    np.testing.assert_allclose(y[1, 2].numpy(), ref, rtol=1e-5, atol=1e-7)
    # A delta function returns the PSF (not its mirror image), centred on the delta.
    delta = torch.zeros(1, 1, 15, 15)
    delta[0, 0, 7, 7] = 1.0
    torch.testing.assert_close(layer(delta)[0, 0, 5:10, 5:10], layer.psf, rtol=0, atol=1e-7)


def test_psf_per_sample_equals_loop_and_gradients() -> None:
    psfs = torch.stack([_asymmetric_psf().float() for _ in range(3)])
    layer = FixedPSFConv(None)
    x = torch.randn(3, 2, 16, 16, requires_grad=True)
    y = layer(x, psf=psfs)
    for i in range(3):
        torch.testing.assert_close(y[i : i + 1], FixedPSFConv(psfs[i])(x[i : i + 1]))
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    fixed = FixedPSFConv(psfs[0])
    assert not list(fixed.parameters()) and "psf" in dict(fixed.named_buffers())
    assert not fixed.psf.requires_grad
    fixed(x).sum().backward()
    assert fixed.psf.grad is None


def test_psf_validation_errors() -> None:
    good = moffat_psf(3.0, 3.5, 7)
    with pytest.raises(ValueError, match="sum to 1"):
        FixedPSFConv(good * 1.01)
    with pytest.raises(ValueError, match="odd"):
        FixedPSFConv(torch.full((4, 4), 1 / 16))
    with pytest.raises(ValueError, match="negative"):
        bad = good.clone()
        bad[0, 0] -= 0.01
        bad[3, 3] += 0.01
        FixedPSFConv(bad)
    with pytest.raises(ValueError, match="non-finite"):
        bad = good.clone()
        bad[1, 1] = float("nan")
        FixedPSFConv(bad)
    with pytest.raises(ValueError, match="larger than the image"):
        FixedPSFConv(good)(torch.zeros(1, 1, 5, 5))
    with pytest.raises(ValueError, match="no stored PSF"):
        FixedPSFConv(None)(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"\[2, K, K\]"):
        FixedPSFConv(None)(torch.zeros(2, 1, 8, 8), psf=good[None])
    FixedPSFConv(good * (1 + 5e-4))  # inside the 1e-3 sum tolerance
    with pytest.raises(ValueError, match="sum to 1"):
        FixedPSFConv(good * (1 + 2e-3))


def test_moffat_psf_matches_galsim() -> None:
    fwhm_pix, beta, size = 3.0, 3.5, 25
    moffat = galsim.Moffat(beta=beta, fwhm=fwhm_pix)
    ref = moffat.drawImage(nx=size, ny=size, scale=1.0, method="no_pixel", dtype=np.float64).array
    ours = moffat_psf(fwhm_pix, beta, size, dtype=torch.float64).numpy()
    np.testing.assert_allclose(ours, ref / ref.sum(), rtol=0, atol=1e-7)
    assert ours.sum() == pytest.approx(1.0, abs=1e-12)
    # Half maximum at r = FWHM / 2 (unnormalised profile: ratio of the centre to r = 1.5 pixels).
    a = fwhm_pix / (2 * math.sqrt(2 ** (1 / beta) - 1))
    assert (1 + (fwhm_pix / 2 / a) ** 2) ** (-beta) == pytest.approx(0.5, rel=1e-12)
    ref_pix = moffat.drawImage(nx=size, ny=size, scale=1.0, method="auto", dtype=np.float64).array
    pix = moffat_psf(fwhm_pix, beta, size, oversample=8, dtype=torch.float64).numpy()
    assert np.abs(pix - ref_pix / ref_pix.sum()).max() < 2e-3 * ref_pix.max() / ref_pix.sum()


def test_load_psf_npy_and_fits(tmp_path) -> None:
    from astropy.io import fits

    kernel = 3.0 * moffat_psf(2.5, 3.0, 11, dtype=torch.float64).numpy()  # unnormalised on disk
    np.save(tmp_path / "psf.npy", kernel)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(kernel, name="PSF")]).writeto(tmp_path / "psf.fits")
    for name in ("psf.npy", "psf.fits"):
        loaded = load_psf(tmp_path / name)
        assert loaded.dtype == torch.float32 and loaded.shape == (11, 11)
        np.testing.assert_allclose(loaded.numpy(), kernel / kernel.sum(), rtol=1e-6)
        with pytest.raises(DataFileError, match=rf"{name}.*sum to 1"):
            load_psf(tmp_path / name, normalise=False)
    np.save(tmp_path / "even.npy", np.full((4, 4), 1 / 16))
    with pytest.raises(DataFileError, match=r"even.npy \[array\].*odd"):
        load_psf(tmp_path / "even.npy")
    np.save(tmp_path / "cube.npy", np.ones((2, 3, 3)))
    with pytest.raises(DataFileError, match=r"cube.npy.*2-D"):
        load_psf(tmp_path / "cube.npy")
    fits.PrimaryHDU().writeto(tmp_path / "empty.fits")
    with pytest.raises(DataFileError, match=r"empty.fits.*no HDU"):
        load_psf(tmp_path / "empty.fits")
    with pytest.raises(DataFileError, match="not found"):
        load_psf(tmp_path / "missing.npy")
    (tmp_path / "psf.txt").write_text("1")
    with pytest.raises(DataFileError, match="unsupported"):
        load_psf(tmp_path / "psf.txt")
