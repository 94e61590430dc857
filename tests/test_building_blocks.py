"""RRDBNet, EMA, pixel losses, baselines and atomic writes."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from lit_sr.losses.pixel import PixelLoss
from lit_sr.metrics.image import image_quality, upsample_baseline
from lit_sr.models.ema import EMA
from lit_sr.nets.rrdb import RRDBNet
from lit_sr.utils.atomic import atomic_path
from lit_sr.utils.checkpoint_io import AtomicCheckpointIO


@pytest.mark.parametrize("scale", [1, 2, 4])
@pytest.mark.parametrize("upsample", ["nearest", "pixelshuffle"])
def test_rrdbnet_scales_and_channels(scale, upsample):
    net = RRDBNet(
        in_channels=2,
        out_channels=3,
        num_features=8,
        num_blocks=1,
        growth_channels=4,
        scale=scale,
        upsample=upsample,
        output_activation="relu",
    )
    out = net(torch.randn(2, 2, 6, 5))
    assert out.shape == (2, 3, 6 * scale, 5 * scale)
    assert (out >= 0).all()


def test_rrdb_blocks_start_near_their_residual_form():
    # The 0.1-scaled init keeps each dense block near identity, so an RRDB starts at about
    # x + 0.2 * x (ESRGAN's residual scaling): what lets 23-block generators train stably.
    from lit_sr.nets.rrdb import RRDB, ResidualDenseBlock

    x = torch.randn(1, 16, 8, 8)
    rdb = ResidualDenseBlock(16, 8)
    assert (rdb(x) - x).norm() / x.norm() < 0.05
    rrdb = RRDB(16, 8)
    assert (rrdb(x) - 1.2 * x).norm() / x.norm() < 0.05


def test_rrdbnet_rejects_unsupported_scale_and_mode():
    with pytest.raises(ValueError, match="scale must be"):
        RRDBNet(scale=3)
    with pytest.raises(ValueError, match="upsampling mode"):
        RRDBNet(scale=2, upsample="bilinear")


def test_calo_generator_matches_the_study():
    from lit_sr.domains.calo.nets import calo_generator

    g = calo_generator()
    convs = [m for m in g.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.out_channels == 32 and c.kernel_size == (3, 3) for c in convs[:-1])
    assert len(g.trunk) == 5 and len(g.upsampling) == 2
    assert isinstance(g.output_activation, torch.nn.ReLU)


def test_ema_tracks_weights_with_its_decay():
    net = torch.nn.Linear(2, 1)
    ema = EMA(net, decay=0.9)
    with torch.no_grad():
        net.weight.add_(1.0)
    old = ema.shadow.weight.clone()
    ema.update(net)
    torch.testing.assert_close(ema.shadow.weight, 0.9 * old + 0.1 * net.weight)
    assert not ema.shadow.weight.requires_grad


def test_pixel_losses_against_reference_formulas():
    pred, target = torch.rand(4, 1, 5, 5) + 0.1, torch.poisson(torch.rand(4, 1, 5, 5) * 3)
    assert PixelLoss("l1")(pred, target) == pytest.approx(float((pred - target).abs().mean()))
    assert PixelLoss("mse")(pred, target) == pytest.approx(float(((pred - target) ** 2).mean()))
    nll = (pred - target * torch.log(pred + 1e-8)).mean()
    assert PixelLoss("poisson")(pred, target) == pytest.approx(float(nll), rel=1e-6)
    with pytest.raises(ValueError, match="unknown pixel loss"):
        PixelLoss("huber")


def test_flux_conserving_baseline_keeps_energy():
    lr = torch.rand(3, 1, 6, 6)
    up = upsample_baseline(lr, 4, "nearest", flux_conserving=True)
    torch.testing.assert_close(F.avg_pool2d(up, 4) * 16, lr)
    assert (upsample_baseline(lr, 4, "bicubic") >= 0).all()


def test_psnr_uses_the_fixed_data_range():
    metrics = image_quality(data_range=2.0)
    target = torch.zeros(2, 1, 16, 16)
    pred = target + 0.2  # MSE 0.04 -> PSNR = 10 log10(2^2 / 0.04) = 20 dB, whatever the image content
    out = metrics(pred, target)
    assert float(out["psnr"]) == pytest.approx(20.0, abs=1e-4)


def test_atomic_path_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    with pytest.raises(FileExistsError):
        with atomic_path(target, overwrite=False):
            pass


def test_atomic_path_gives_the_umask_permissions_of_a_plain_open(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "a.h5") as tmp:
            tmp.write_bytes(b"x")
        (tmp_path / "b.h5").write_bytes(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.h5").stat().st_mode & 0o777 == (tmp_path / "b.h5").stat().st_mode & 0o777 == 0o640


def test_atomic_checkpoint_io_never_truncates(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)

    def broken_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(2)}}, path)
    monkeypatch.undo()
    torch.testing.assert_close(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(2))


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_rrdbnet_input_skip_starts_as_the_flux_conserving_upsampling(scale):
    """With input_skip the net starts as the block-sum-preserving upsampling of its image channels
    (scale 1: the identity, a residual denoiser), whatever auxiliary channels follow."""
    net = RRDBNet(
        in_channels=2,
        out_channels=1,
        num_features=8,
        num_blocks=1,
        growth_channels=4,
        scale=scale,
        input_skip=True,
        output_range=(0.0, 1.0),
    )
    x = torch.rand(3, 2, 5, 5)
    out = net(x)
    expected = x[:, :1].repeat_interleave(scale, -1).repeat_interleave(scale, -2) / scale**2
    torch.testing.assert_close(out, expected)
    pooled = F.avg_pool2d(out, scale) * scale**2  # block sums
    torch.testing.assert_close(pooled, x[:, :1])
    with pytest.raises(ValueError, match="in_channels >= out_channels"):
        RRDBNet(in_channels=1, out_channels=2, input_skip=True)


def test_rrdbnet_output_range_clamps():
    net = RRDBNet(num_features=8, num_blocks=1, growth_channels=4, scale=1, input_skip=True, output_range=(0.0, 1.0))
    out = net(torch.tensor([[[[-3.0, 0.5], [2.0, 1.0]]]]))
    assert out.min() >= 0.0 and out.max() <= 1.0 and out[0, 0, 0, 1] == 0.5


@pytest.mark.parametrize("stretch", ["linear", "sqrt", "asinh", "log"])
def test_stretch_transform_matches_the_paper_formulas_and_inverts(stretch):
    import numpy as np

    from lit_sr.data.transforms import StretchTransform

    t = StretchTransform(max_value=2.0, stretch=stretch)
    x = torch.linspace(0.0, 2.0, 201, dtype=torch.float64)
    u = x.numpy() / 2.0
    reference = {
        "linear": u,
        "sqrt": np.sqrt(u),
        "asinh": np.arcsinh(u / 0.02) / np.arcsinh(1 / 0.02),
        "log": np.log(1000 * u + 1) / np.log(1001),
    }[stretch]
    np.testing.assert_allclose(t(x).numpy(), reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(t.inverse(t(x)), x, rtol=1e-9, atol=1e-12)
    # clipped above max_value and below 0: outside the invertible range by design
    assert t(torch.tensor([5.0, -1.0])).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="stretch must be"):
        StretchTransform(1.0, "gamma")


@pytest.mark.slow
def test_gpu_fast_path_options_compile_and_channels_last_on_cpu(tmp_path):
    """model.compile compiles the net in place (same state-dict keys, same outputs); model.channels_last
    puts weights and batches in NHWC. Both train a few steps on CPU. The compile options pass through to
    torch.compile; backend aot_eager (graph capture + AOT autograd, no C++ code generation) keeps this a
    seconds-long test: inductor's cold compile of the same net took ~5 min on the loaded 2-core machine."""
    import lightning as L
    from torch.utils.data import DataLoader

    from lit_sr.models.supervised import SupervisedSRModule

    torch.manual_seed(0)
    data = [{"input": torch.rand(1, 6, 6), "target": torch.rand(1, 12, 12)} for _ in range(8)]
    ref = RRDBNet(num_features=8, num_blocks=1, growth_channels=4, scale=2)
    module = SupervisedSRModule(
        RRDBNet(num_features=8, num_blocks=1, growth_channels=4, scale=2),
        scale=2,
        data_range=1.0,
        compile={"backend": "aot_eager"},
        channels_last=True,
    )
    module.net.load_state_dict(ref.state_dict())
    keys = list(module.state_dict())
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DataLoader(data, batch_size=4))
    assert module.net._compiled_call_impl is not None and list(module.state_dict()) == keys
    conv = module.net.conv_first.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(2, 1, 6, 6)
    ref.load_state_dict(module.net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(module.net(x), ref(x), rtol=1e-4, atol=1e-5)
