"""SAXS absolute-energy input channel (lit_sr/domains/saxs/normalise.py) through batches, nets and blended
frame inference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lit_sr.data.normalise import PercentileNormaliser
from lit_sr.domains.saxs.data import make_batch
from lit_sr.domains.saxs.frames import clean_frame, run_normaliser
from lit_sr.domains.saxs.frames_eval import normalised_patches
from lit_sr.domains.saxs.nets import SAXSDecompositionNet
from lit_sr.domains.saxs.normalise import AbsoluteEnergyNormaliser, absolute_energy_channel
from lit_sr.nets.decomposition import DecompositionNet

E_PHOTON = 8.0  # keV


def rot(x: torch.Tensor, k: int = 1) -> torch.Tensor:
    return torch.rot90(x, k, dims=(-2, -1))


def test_channel_value_of_pixels_of_known_energy() -> None:
    e = torch.tensor([-5.0, 0.0, 8.0, 1000.0, 1.0e5, 1.0e6])  # keV
    a = absolute_energy_channel(e, E_PHOTON, 1.0e5)
    norm = math.log1p(1.0e5 / 8.0)
    expected = [0.0, 0.0, math.log(2.0) / norm, math.log1p(125.0) / norm, 1.0, math.log1p(1.25e5) / norm]
    assert a.tolist() == pytest.approx(expected, rel=1e-6)
    assert a[3] < 0.52  # the brightest background hit (1,000 keV) stays about half-way to the reference


def test_normaliser_adds_the_channel_and_keeps_the_percentile_channel_and_its_bounds() -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 1, 16, 16) * 200.0
    x[0, 0, 5, 5] = 5.0e4  # a bright spot: channel 0 saturates at 1 inside its patch, channel 1 does not
    for clip in (True, False):
        xn, (lo, hi) = AbsoluteEnergyNormaliser(clip=clip, photon_energy_keV=E_PHOTON)(x)
        ref, (lo_ref, hi_ref) = PercentileNormaliser(clip=clip)(x)
        assert xn.shape == (3, 2, 16, 16) and lo.shape == (3, 1)
        assert torch.equal(xn[:, :1], ref) and torch.equal(lo, lo_ref) and torch.equal(hi, hi_ref)
        assert xn[0, 1, 5, 5].item() == pytest.approx(math.log1p(5.0e4 / 8.0) / math.log1p(1.0e5 / 8.0), rel=1e-6)
    assert xn[0, 0, 5, 5] > 1.0 and xn[0, 1, 5, 5] < xn[0, 0, 5, 5]  # unclipped channel 0 is patch-relative
    with pytest.raises(ValueError, match=r"\[B, 1, P, P\]"):
        AbsoluteEnergyNormaliser()(x.expand(3, 2, 16, 16))


def test_training_batch_carries_the_absolute_energy_of_the_summed_pixel() -> None:
    rng = np.random.default_rng(1)
    s = rng.uniform(0, 50, (2, 16, 16)).astype(np.float32)
    n = np.zeros_like(s)
    n[1, 3, 4] = 992.0  # a hit on top of the signal
    batch = make_batch(s, n, AbsoluteEnergyNormaliser(photon_energy_keV=E_PHOTON, reference_keV=1.0e5))
    assert batch["input"].shape == (2, 2, 16, 16) and batch["target"].shape == (2, 1, 16, 16)
    e = float(s[1, 3, 4]) + 992.0
    assert batch["input"][1, 1, 3, 4].item() == pytest.approx(math.log1p(e / 8.0) / math.log1p(1.25e4), rel=1e-6)
    # the percentile channel and the targets are those of the 1-channel study batch
    ref = make_batch(s, n, PercentileNormaliser())
    assert torch.equal(batch["input"][:, :1], ref["input"]) and torch.equal(batch["target"], ref["target"])


@torch.no_grad()
@pytest.mark.parametrize("net_class", [DecompositionNet, SAXSDecompositionNet])
def test_two_channel_c4_net_is_rot90_equivariant_with_one_output_channel(net_class) -> None:
    torch.manual_seed(0)
    net = net_class(backend="c4", in_channels=2, out_channels=1, latent_channels=4, features=[2, 4]).eval()
    x = torch.rand(2, 2, 16, 16)
    x[:, 1] *= 1.5  # the absolute-energy channel is not clipped
    pre = net.head(net.backbone(x))
    net.head.conv.bias -= pre.median()  # about half of the noise > 0: the test is not vacuous
    out = net(x)
    assert out["signal"].shape == out["noise"].shape == (2, 1, 16, 16)
    assert 0.2 < (out["noise"] > 0).float().mean() < 0.8
    for k in (1, 2, 3):
        out_r = net(rot(x, k))
        for name in ("signal", "noise"):
            assert (out_r[name] - rot(out[name], k)).abs().max() < 1e-5, name
    assert torch.allclose(out["signal"], torch.relu(x[:, :1] - out["noise"]))
    # the backbone sees channel 1: changing only the absolute energy changes the decomposition
    y = x.clone()
    y[:, 1] += 0.5
    assert (net(y)["noise"] - out["noise"]).abs().max() > 1e-4


def test_out_channels_must_fit_the_input() -> None:
    with pytest.raises(ValueError, match="out_channels"):
        DecompositionNet(backend="plain", in_channels=1, out_channels=2, features=[4, 8])


class EnergyThresholdModel(torch.nn.Module):
    """Noise = the whole pixel where the absolute-energy channel is below ``a_cut``: a model that needs
    channel 1 to be the pixel's own keV, through the blended patches."""

    def __init__(self, a_cut: float) -> None:
        super().__init__()
        self.a_cut = a_cut

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        noise = torch.where(x[:, 1:] < self.a_cut, x[:, :1], torch.zeros_like(x[:, :1]))
        return {"signal": x[:, :1] - noise, "noise": noise}


def test_blended_frame_inference_sees_each_pixels_keV() -> None:
    rng = np.random.default_rng(0)
    frame = rng.uniform(0.0, 900.0, (48, 64)).astype(np.float32)
    frame[::4, ::4] = 0.0  # empty pixels: every patch's 1st percentile, the keV of the normalised 0, is 0
    frame[10, 21] = 2.0e4
    frame[30:32, 41:43] = 3.0e5
    cut_keV = 1.0e3
    a_cut = float(absolute_energy_channel(torch.tensor(cut_keV), E_PHOTON, 1.0e5))
    norm = AbsoluteEnergyNormaliser(clip=False, photon_energy_keV=E_PHOTON)
    out = clean_frame(EnergyThresholdModel(a_cut), frame, 16, clip=False, normaliser=norm)
    bright = frame > cut_keV
    assert np.allclose(out["signal"], np.where(bright, frame, 0.0), rtol=1e-4, atol=1e-2)
    assert np.allclose(out["noise"], np.where(bright, 0.0, frame), rtol=1e-4, atol=1e-2)


def test_run_normaliser_follows_the_config_and_patches_for_the_equivariance_check() -> None:
    from omegaconf import OmegaConf

    old = OmegaConf.create({"data": {"patch_size": 32}})
    assert repr(run_normaliser(old, clip=False)) == repr(PercentileNormaliser(1.0, 99.95, clip=False))
    cfg = OmegaConf.create(
        {
            "data": {
                "normaliser": {
                    "_target_": "lit_sr.domains.saxs.normalise.AbsoluteEnergyNormaliser",
                    "photon_energy_keV": 8.0,
                    "reference_keV": 2.0e5,
                    "clip": True,
                }
            }
        }
    )
    norm = run_normaliser(cfg, clip=False)
    assert isinstance(norm, AbsoluteEnergyNormaliser) and not norm.clip and norm.reference_keV == 2.0e5
    frames = np.random.default_rng(0).uniform(0, 100, (2, 40, 40)).astype(np.float32)
    frames[0, 0, 0] = 1.0e6
    patches = normalised_patches(frames, 16, n=3, normaliser=run_normaliser(cfg, clip=True))
    assert patches.shape == (3, 2, 16, 16) and float(patches[:, 0].max()) <= 1.0
