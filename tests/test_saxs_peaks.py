"""SAXS peaks above a patch's percentile range survive whole-frame inference.

Patches are normalised to their 1st/99.95th percentiles; with clipping a pixel brighter than the
patch's 99.95th percentile came back capped. The experiments' frame predictor normalises without
clipping and :class:`SAXSDecompositionNet` clips only what its backbone sees, so:
* a model that returns its input as the signal gives back every frame (peaks included) to float32
  round-off, at any patch size, through the experiments' configured frame predictor;
* the net's outputs on clipped (training) patches are the study's, bit for bit; its excess rules
  follow their analytic values; it stays C4-equivariant on unclipped patches;
* a trained saxs_equnet keeps a compact spot 100 x the frame's 99.9th percentile through
  ``mode=predict predict=frames predict.patch_size=128`` (and the old clipped inference did not).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import TINY, compose_config
from hydra.utils import instantiate

from lit_sr.cli import run
from lit_sr.data.normalise import PercentileNormaliser
from lit_sr.domains.saxs.data import SAXSDataModule
from lit_sr.domains.saxs.nets import SAXSDecompositionNet
from lit_sr.domains.saxs.sim import SAXSSimConfig, make_geometry, simulate_background, simulate_xray_frame
from lit_sr.inference.frames import FramePredictor
from lit_sr.nets.decomposition import DecompositionNet

SPOT = (slice(60, 62), slice(400, 402))  # 2 x 2 px, far from the beam (centre at columns 77-154)


def _frame(seed: int = 0, shape=(256, 512)) -> np.ndarray:
    """One simulated full shot (keV): SAXS signal + bremsstrahlung."""
    cfg = SAXSSimConfig(height=shape[0], width=shape[1])
    rng = np.random.default_rng(seed)
    geom = make_geometry(cfg, rng)
    return (simulate_xray_frame(cfg, geom, rng) + simulate_background(cfg, rng)).astype(np.float32)


def _with_spot(frame: np.ndarray, factor: float = 100.0) -> tuple[np.ndarray, float]:
    """The frame with a 2 x 2 spot at ``factor`` x its 99.9th percentile (keV); returns (frame, spot value)."""
    value = float(factor * np.percentile(frame, 99.9))
    out = frame.copy()
    out[SPOT] = value
    return out, value


def _identity(x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"signal": x, "noise": torch.zeros_like(x)}


@pytest.mark.parametrize("experiment", ["saxs_equnet", "saxs_unet"])
@pytest.mark.parametrize("patch_size", [32, 128])
def test_identity_model_gives_back_every_frame_exactly(experiment, patch_size, tmp_path):
    cfg = compose_config([f"experiment={experiment}", f"predict.patch_size={patch_size}"], tmp_path)
    predictor = instantiate(cfg.predict.frame_predictor, _convert_="all")
    assert isinstance(predictor, FramePredictor) and predictor.patch_size == patch_size
    frame, value = _with_spot(_frame())
    frame[100:103, 300:303] = 1000.0  # a 3 x 3 spot of 1000 keV
    frame[200, 450] = value  # and a single bright pixel
    x = torch.from_numpy(frame)[None]
    signal = predictor(_identity, x)["signal"][0].numpy()
    np.testing.assert_allclose(signal, frame, rtol=2e-6, atol=1e-3)
    assert signal[SPOT].min() == pytest.approx(value, rel=1e-6)
    assert signal[200, 450] == pytest.approx(value, rel=1e-6)
    # the clipped normalisation of training, used at inference before, caps what is brighter than
    # the patch's 99.95th percentile (at 128 px the 2 x 2 spot, at 32 px at least the single pixel)
    old = FramePredictor(patch_size, normaliser=PercentileNormaliser(clip=True))(_identity, x)["signal"][0].numpy()
    assert old[200, 450] < 0.6 * value
    if patch_size == 128:
        assert old[SPOT].max() < 0.5 * value


def _tiny_net(excess: str, backend: str = "c4") -> tuple[SAXSDecompositionNet, DecompositionNet]:
    torch.manual_seed(0)
    features = [2, 4, 4, 4] if backend == "c4" else [4, 8, 8, 8]
    kw = dict(backend=backend, latent_channels=4, features=features, noise_activation="relu_st")
    new, old = SAXSDecompositionNet(excess=excess, max_noise=2.0, **kw), DecompositionNet(**kw)
    old.load_state_dict(new.state_dict())  # same parameters: old checkpoints load
    return new.eval(), old.eval()


@pytest.mark.parametrize("excess", ["signal", "ratio"])
def test_outputs_on_clipped_patches_are_the_studys(excess):
    new, old = _tiny_net(excess)
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        a, b = new(x), old(x)
    assert torch.equal(a["signal"], b["signal"]) and torch.equal(a["noise"], b["noise"])


class _PassThrough(torch.nn.Module):
    """Backbone whose latent is the input itself (1 channel), to give the head analytic outputs."""

    latent_channels = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _analytic_net(excess: str, noise_gain: float, max_noise: float | None = None) -> SAXSDecompositionNet:
    """Head = noise_gain * (clipped input) at each pixel: n = ReLU(g * clip(x, 0, 1))."""
    net = SAXSDecompositionNet(backbone=_PassThrough(), excess=excess, max_noise=max_noise)
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.weight[0, 0, 1, 1] = noise_gain
        net.head.bias.zero_()
    return net.eval()


def test_excess_rules_analytic():
    x = torch.tensor([[[[0.5, 1.0, 3.0, 50.0], [-0.2, 0.0, 2.0, 0.25]]]])
    with torch.no_grad():
        keep = _analytic_net("signal", 0.0)(x)  # no noise: the signal is the input (negatives to 0)
        torch.testing.assert_close(keep["signal"], x.clamp_min(0.0))
        hit = _analytic_net("signal", 1.0)(x)  # everything noise: at most the clipped value
        torch.testing.assert_close(hit["noise"], x.clamp(0.0, 1.0))
        torch.testing.assert_close(hit["signal"], (x - 1.0).clamp_min(0.0))
        ratio = _analytic_net("ratio", 1.0)(x)  # fraction 1 of the unclipped pixel is noise
        torch.testing.assert_close(ratio["noise"], torch.where(x > 1, x, x.clamp(0.0, 1.0)))
        torch.testing.assert_close(ratio["signal"], torch.zeros_like(x))
        half = _analytic_net("ratio", 0.5)(x)  # half of every pixel, bright ones included
        torch.testing.assert_close(half["signal"] + half["noise"], x.clamp_min(0.0))
        torch.testing.assert_close(half["signal"], 0.5 * x.clamp_min(0.0))
        capped = _analytic_net("ratio", 1.0, max_noise=10.0)(x)  # background at most 10x the range
        torch.testing.assert_close(capped["noise"], torch.where(x > 1, x.clamp(max=10.0), x.clamp(0.0, 1.0)))
        torch.testing.assert_close(capped["signal"], (x - 10.0).clamp_min(0.0))


@pytest.mark.parametrize("excess", ["signal", "ratio"])
def test_c4_equivariant_on_unclipped_patches(excess):
    net, _ = _tiny_net(excess)
    x = torch.rand(2, 1, 32, 32) * 3.0 - 0.2  # values below 0 and above 1
    with torch.no_grad():
        out, rot = net(x), net(torch.rot90(x, 1, (-2, -1)))
    for key in ("signal", "noise"):
        torch.testing.assert_close(rot[key], torch.rot90(out[key], 1, (-2, -1)), atol=1e-5, rtol=1e-5)
    assert (out["signal"] > 1.0).any()  # the unclipped range reaches the outputs


def test_bad_excess_rule():
    with pytest.raises(ValueError, match="excess must be one of signal, ratio"):
        SAXSDecompositionNet(backend="plain", features=[4, 8, 8, 8], excess="clip")
    with pytest.raises(ValueError, match="max_noise must be >="):
        SAXSDecompositionNet(backend="plain", features=[4, 8, 8, 8], max_noise=0.5)


# ----------------------------------------------------------------------------- trained net, CLI
DATA = dict(
    frame_shape=[64, 128],
    n_xray_frames=3,
    n_full_frames=3,
    n_eval_frames=2,
    patch_size=32,
    n_train_signal_patches=32,
    n_noise_patches=16,
    n_val_patches=8,
    n_test_patches=8,
    signal_threshold=2000.0,
    mask_dilation=2,
    max_masked_fraction=0.2,
    batch_size=8,
)


def _overrides(data_dir: Path) -> list[str]:
    out = [
        "experiment=saxs_equnet",
        *TINY,
        f"paths.data_dir={data_dir}",
        "model.net.features=[2,4,4,4]",
        "trainer.max_epochs=3",
        "model.warmup_epochs=2",
        "model.optimizer.lr=1e-3",
        "+trainer.limit_val_batches=1",
    ]
    for k, v in DATA.items():
        out.append(f"data.{k}=[{','.join(map(str, v))}]" if isinstance(v, list) else f"data.{k}={v}")
    return out


def test_trained_equnet_keeps_a_bright_spot_through_predict(tmp_path):
    data_dir = tmp_path / "data"
    SAXSDataModule(
        data_dir=str(data_dir / "saxs"), **{k: tuple(v) if isinstance(v, list) else v for k, v in DATA.items()}
    ).prepare_data()
    run(compose_config(_overrides(data_dir), tmp_path / "train"))
    ckpt = sorted((tmp_path / "train" / "run" / "checkpoints").glob("epoch*.ckpt"))[-1]
    frame, value = _with_spot(_frame(seed=5))
    frames = tmp_path / "spot.h5"
    with h5py.File(frames, "w") as h5:
        h5.create_dataset("data", data=frame[None])
    kept = {}
    for name, extra in (
        ("new", []),
        (
            "old",
            [
                "predict.frame_predictor.normaliser.clip=true",
                "model.net._target_=lit_sr.nets.decomposition.DecompositionNet",
                "~model.net.excess",
                "~model.net.max_noise",
            ],
        ),
    ):
        out_dir = tmp_path / f"predict_{name}"
        run(
            compose_config(
                [
                    *_overrides(data_dir),
                    "mode=predict",
                    f"ckpt_path={ckpt}",
                    "predict=frames",
                    "predict.patch_size=128",
                    f"predict.input={frames}",
                    *extra,
                ],
                tmp_path,
                out_dir,
            )
        )
        with h5py.File(out_dir / "spot_cleaned.h5", "r") as h5:
            signal, background = h5["data_signal"][0], h5["data_background"][0]
        kept[name] = float(signal[SPOT].sum() / frame[SPOT].sum())
        assert np.isfinite(signal).all() and np.isfinite(background).all()
    assert kept["new"] >= 0.5, kept
    assert kept["old"] < 0.1, kept  # clipped inference returned a few per cent of the spot
