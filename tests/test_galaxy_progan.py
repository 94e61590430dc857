"""Galaxy ProGAN: data validation, flux transform, PSF layer before the critic, conditioning, exact
mid-phase resume, sampling files (flux units, labels, seeds, PSF override), evaluator numerics."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import lightning as L
import numpy as np
import pytest
import torch
from scipy.signal import convolve2d

from lit_sr.data.validate import DataFileError
from lit_sr.domains.galaxy.data import AsinhFluxTransform, GalaxyDataModule
from lit_sr.domains.galaxy.metrics import GalaxyGenerationEvaluator
from lit_sr.domains.galaxy.morphology import morphology_report
from lit_sr.domains.galaxy.observation import PSFObservation
from lit_sr.inference.samples import SamplesH5Writer, SamplingDataModule, resolve_psf
from lit_sr.metrics.stats import frechet_distance
from lit_sr.models.progan import (
    ProGANModule,
    ProgressiveSchedule,
    soft_clamp,
)
from lit_sr.nets.progan import ProCritic, ProGenerator
from lit_sr.nets.psf import FFTPSFConv, FixedPSFConv, moffat_psf

STAMP, PSF = 16, 7
CHANNELS = (8, 8, 8)  # 4x4, 8x8, 16x16
CLASSES = ["disk", "bulge", "irregular"]
SCHEDULE = {"fade_images": [0, 64, 32], "stable_images": [32, 16, 64], "batch_size": [16, 16, 8]}


def tiny_datamodule(data_dir: Path, **kwargs) -> GalaxyDataModule:
    args = dict(
        data_dir=str(data_dir),
        n_galaxies=96,
        stamp_size=STAMP,
        psf_size=PSF,
        batch_size=16,
        eval_batch_size=32,
        split=(0.5, 0.25, 0.25),
        augment=False,
    )
    args.update(kwargs)
    return GalaxyDataModule(**args)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("galaxy_tiny")
    tiny_datamodule(d).prepare_data()  # 96 galsim galaxies on 16x16 stamps, a few seconds
    return d


def make_module(conditional: bool = True, noise: bool = True, psf=None, **kwargs) -> ProGANModule:
    torch.manual_seed(0)
    observation = PSFObservation(
        psf_size=PSF, psf=psf, noise_background=400.0 if noise else None, noise_gain=4.0 if noise else None
    )
    args = dict(
        net=lambda num_classes: ProGenerator(16, CHANNELS, 1, num_classes),
        critic=lambda num_classes: ProCritic(CHANNELS, 1, num_classes, mbstd_group=4),
        conditional=conditional,
        class_names=CLASSES,
        schedule=SCHEDULE,
        transform=AsinhFluxTransform(),
        units="ADU",
        observation=observation,
        ema_decay=0.9,
        grid_columns=0,
    )
    args.update(kwargs)
    return ProGANModule(**args)


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # Trainer's default_root_dir (logged sample grids) is the working directory


def trainer(max_steps: int, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        **kwargs,
    )


# ------------------------------------------------------------------------------------------ data
def test_asinh_transform_round_trip_and_linear_core() -> None:
    t = AsinhFluxTransform(10.0, 2.0)
    x = torch.tensor([-200.0, -10.0, -1e-3, 0.0, 1e-3, 5.0, 300.0, 1e4, 2e5], dtype=torch.float64)
    torch.testing.assert_close(t.inverse(t(x)), x, rtol=1e-10, atol=1e-9)
    assert t(torch.tensor(1e4, dtype=torch.float64)).item() == pytest.approx(math.asinh(1e3) / 2, rel=1e-12)
    torch.testing.assert_close(t(-x), -t(x))  # odd: sky noise keeps its symmetric distribution
    # linear for |x| << softening: y = x / (softening * divisor)
    assert t(torch.tensor(1e-3, dtype=torch.float64)).item() == pytest.approx(1e-3 / 20.0, rel=1e-8)


def test_default_file_layout_psf_and_batches(data_dir) -> None:
    dm = tiny_datamodule(data_dir)
    dm.setup("fit")
    with h5py.File(dm.path) as h5:
        img, free, psf = h5["image"][:8], h5["image_psf_free"][:8], h5["psf"][:8]
        assert img.shape == free.shape == (8, STAMP, STAMP) and psf.shape == (8, PSF, PSF)
        np.testing.assert_allclose(psf.sum(axis=(1, 2)), 1.0, atol=1e-5)
        assert set(h5["label"][()]) == {0, 1, 2}
    batch = dm.splits["train"].__getitems__(list(range(5)))
    rows = batch["index"].numpy()
    with h5py.File(dm.path) as h5:
        raw = h5["image"][np.sort(rows)]
    torch.testing.assert_close(
        dm.transform.inverse(batch["image"][:, 0].double()), torch.from_numpy(raw).double(), rtol=1e-5, atol=1e-3
    )
    assert batch["image"].shape == (5, 1, STAMP, STAMP) and batch["psf"].shape == (5, PSF, PSF)
    torch.testing.assert_close(dm.psf_kernel(), torch.from_numpy(psf[0]).float(), rtol=1e-5, atol=1e-7)


def test_d4_augmentation_moves_image_and_psf_together(data_dir) -> None:
    dm = tiny_datamodule(data_dir, augment=True)
    dm.setup("fit")
    ds = dm.splits["train"]
    raw = ds.read(ds.indices[:16])
    batch = ds.builder(raw, ds.indices[:16], np.random.default_rng(3))
    # each augmented stamp is one of the 8 symmetries of its original, with flux conserved
    for j in range(16):
        orig = raw["image"][j]
        got = dm.transform.inverse(batch["image"][j, 0].double()).numpy()
        cands = [np.rot90(o, k) for o in (orig, orig.T) for k in range(4)]
        assert min(np.abs(c - got).max() for c in cands) < 1e-2
        assert got.sum() == pytest.approx(orig.sum(), rel=1e-4, abs=1e-2)


def _write(path: Path, image: np.ndarray, psf: np.ndarray, label: np.ndarray) -> Path:
    with h5py.File(path, "w") as h5:
        h5["image"], h5["psf"], h5["label"] = image, psf, label
    return path


@pytest.mark.parametrize(
    "case, field, expected",
    [
        ("rect", "image", "square stamps whose side is a power of two"),
        ("not_pow2", "image", "power of two"),
        ("label", "label", "expected values 0 (disk), 1 (bulge) or 2 (irregular)"),
        ("psf_sum", "psf", "sum to 1"),
        ("psf_big", "psf", "larger than the"),
        ("psf_even", "psf", "odd side"),
    ],
)
def test_bad_training_files_name_file_and_field(tmp_path, case, field, expected) -> None:
    n = 6
    image = np.zeros((n, 16, 16), np.float32)
    kernel = np.zeros((5, 5), np.float32)
    kernel[2, 2] = 1.0
    psf = np.repeat(kernel[None], n, axis=0)
    label = np.arange(n) % 3
    if case == "rect":
        image = np.zeros((n, 16, 8), np.float32)
    elif case == "not_pow2":
        image = np.zeros((n, 12, 12), np.float32)
    elif case == "label":
        label = label.copy()
        label[4] = 3
    elif case == "psf_sum":
        psf = psf * 1.2
    elif case == "psf_big":
        psf = np.zeros((n, 17, 17), np.float32)
        psf[:, 8, 8] = 1.0
    elif case == "psf_even":
        psf = np.full((n, 4, 4), 1 / 16, np.float32)
    path = _write(tmp_path / f"{case}.h5", image, psf, label)
    dm = GalaxyDataModule(data_dir=str(tmp_path), file=str(path), stamp_size=16, psf_size=5)
    dm.prepare_data()
    with pytest.raises(DataFileError) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert str(path) in msg and f"[{field}]" in msg and expected in msg, msg


# ------------------------------------------------------------------------------------------ schedule
def test_schedule_phases_and_linear_alpha() -> None:
    s = ProgressiveSchedule(**SCHEDULE)
    assert s.total_images == 32 + 64 + 16 + 32 + 64
    assert s.state(0) == (0, 1.0) and s.state(31) == (0, 1.0)
    assert s.state(32) == (1, 0.0)  # a new block starts invisible: the nets equal the previous depth
    assert s.state(32 + 16) == (1, 0.25) and s.state(32 + 63) == (1, 63 / 64)
    assert s.state(96) == (1, 1.0) and s.state(112) == (2, 0.0) and s.state(112 + 8) == (2, 0.25)
    assert s.state(10_000) == (2, 1.0)
    with pytest.raises(ValueError, match="fade_images\\[0\\] must be 0"):
        ProgressiveSchedule([8, 0], [8, 8], [4, 4])


def test_resume_mid_phase_reproduces_phase_and_alpha_exactly(data_dir, tmp_path) -> None:
    torch.set_num_threads(1)
    straight = make_module()
    trainer(9).fit(straight, datamodule=tiny_datamodule(data_dir))
    first = make_module()
    t1 = trainer(4)
    t1.fit(first, datamodule=tiny_datamodule(data_dir))
    # 2 steps of phase 0 (32 images) + 2 steps into the 64-image fade of phase 1: alpha 0.5
    assert int(first.images_seen) == 64 and first.phase_state == (1, 0.5)
    ckpt = tmp_path / "mid.ckpt"
    t1.save_checkpoint(ckpt)
    stored = torch.load(ckpt, weights_only=True)["progan"]
    assert stored["images_seen"] == 64 and stored["phase"] == 1 and stored["alpha"] == 0.5 and stored["resolution"] == 8
    resumed = make_module()
    trainer(9).fit(resumed, datamodule=tiny_datamodule(data_dir), ckpt_path=str(ckpt))
    # 7 steps of 16 (phase 0, fade and stable of phase 1) + 2 steps of 8 into the 32-image fade of phase 2
    assert int(resumed.images_seen) == int(straight.images_seen) == 7 * 16 + 2 * 8
    assert resumed.phase_state == straight.phase_state == (2, 0.5)


# ------------------------------------------------------------------------------------------ PSF layer
def test_fft_psf_layer_equals_direct_convolution_and_scipy() -> None:
    torch.manual_seed(1)
    x = torch.randn(3, 2, 16, 16, dtype=torch.float64)
    kernel = torch.rand(7, 7, dtype=torch.float64)
    kernel = kernel / kernel.sum()  # asymmetric: checks the flip (convolution, not correlation)
    fft, direct = FFTPSFConv(kernel), FixedPSFConv(kernel)
    torch.testing.assert_close(fft(x), direct(x.float()).double(), rtol=1e-5, atol=1e-5)
    ref = convolve2d(x[1, 1].numpy(), kernel.numpy(), mode="same")
    np.testing.assert_allclose(fft(x)[1, 1].numpy(), ref, atol=1e-6)  # kernel stored as float32
    per = torch.stack([kernel, kernel.flip(0), kernel.T])
    out = fft(x, psf=per)
    for i in range(3):
        np.testing.assert_allclose(
            out[i, 0].numpy(), convolve2d(x[i, 0].numpy(), per[i].numpy(), mode="same"), atol=1e-12
        )  # per-sample kernels keep the input's float64


def test_critic_sees_psf_convolved_generator_output(data_dir) -> None:
    """The fake the critic judges is T(pool(PSF * T^-1(G(z)))) with the training set's PSF, recomputed with scipy."""
    dm = tiny_datamodule(data_dir)
    model = make_module(noise=False)
    trainer(0).fit(model, datamodule=dm)  # setup: the PSF layer takes the training set's PSF
    psf = dm.psf_kernel().double().numpy()
    torch.testing.assert_close(model.observation.psf_layer.psf, torch.from_numpy(psf).float())
    model.images_seen.fill_(32 + 64 + 16 + 32)  # phase 2 (16x16), alpha 1
    batch = next(iter(dm.train_dataloader()))
    seen = []
    hook = model.critic.register_forward_hook(lambda mod, args, kwargs_out: seen.append(args[0].detach()))
    torch.manual_seed(5)
    model.critic_loss(batch)
    hook.remove()
    torch.manual_seed(5)
    z = torch.randn(batch["image"].shape[0], model.latent_dim)
    with torch.no_grad():
        y = soft_clamp(model.net(z, batch["label"], depth=2, alpha=1.0), *model.model_range, model.range_sharpness)
        free = model.transform.inverse(y).double()
    expected = np.stack([convolve2d(f[0].numpy(), psf, mode="same") for f in free])
    fake_seen = model.transform.inverse(seen[1][:, 0].double()).numpy()  # critic(real), then critic(fake)
    np.testing.assert_allclose(fake_seen, expected, rtol=1e-4, atol=1e-3 * np.abs(expected).max())
    real_seen = model.transform.inverse(seen[0][:, 0].double())
    torch.testing.assert_close(real_seen, model.transform.inverse(batch["image"][:, 0].double()), rtol=1e-5, atol=1e-3)


def test_soft_clamp_is_identity_inside_and_keeps_gradients_outside() -> None:
    y = torch.tensor([-5.0, -2.5, 0.0, 1.0, 3.0, 6.5, 8.0], dtype=torch.float64, requires_grad=True)
    out = soft_clamp(y, -2.0, 6.0, 5.0)
    assert out[2].item() == pytest.approx(0.0, abs=1e-4) and out[3].item() == pytest.approx(1.0, abs=1e-4)
    assert -2.0 < out.min().item() and out.max().item() < 6.0
    out.sum().backward()
    assert (y.grad > 0).all()  # a hard clamp would give 0 at -5, -2.5, 6.5 and 8: those pixels could never recover
    assert y.grad[1].item() == pytest.approx(torch.sigmoid(torch.tensor(-2.5)).item(), rel=1e-5)


def test_low_phase_fake_is_pooled_psf_image_and_noise_has_the_ccd_variance() -> None:
    model = make_module(psf=moffat_psf(2.0, 3.5, PSF))
    y = torch.full((2, 1, 4, 4), 0.3)  # a flat 4x4 generator output (phase 0)
    out = model.observe(y, eps=torch.zeros(2, 1, STAMP, STAMP))
    level = float(model.transform.inverse(soft_clamp(torch.tensor(0.3), *model.model_range, model.range_sharpness)))
    torch.testing.assert_close(
        out["psf_free"], torch.full((2, 1, STAMP, STAMP), level)
    )  # nearest: same surface brightness
    assert out["convolved"][0, 0, 8, 8].item() == pytest.approx(level, rel=1e-5)  # interior: PSF sums to 1
    torch.testing.assert_close(out["observed"], out["convolved"])  # eps = 0: no noise
    x = torch.full((1, 1, 200, 200), 100.0)
    noisy = model.observation.noise(x)
    assert (noisy - x).var().item() == pytest.approx((400.0 + 100.0) / 4.0, rel=0.05)  # (sky + signal) / gain


def test_checkpoint_of_the_older_layout_loads_its_psf(tmp_path) -> None:
    """A checkpoint from before the observation model left ProGANModule (PSF buffer at ``psf_layer.psf``)
    predicts with its trained PSF."""
    from lit_sr.inference.frames import load_module_weights

    psf = moffat_psf(2.5, 3.0, PSF)
    state = make_module(psf=psf).state_dict()
    state["psf_layer.psf"] = state.pop("observation.psf_layer.psf")
    torch.save({"state_dict": state}, tmp_path / "old.ckpt")
    fresh = make_module()
    load_module_weights(fresh, tmp_path / "old.ckpt")
    torch.testing.assert_close(fresh.observation.psf_layer.psf, psf.float())


# ------------------------------------------------------------------------------------------ conditioning
def test_conditional_and_unconditional_models(data_dir) -> None:
    cond, uncond = make_module(True), make_module(False)
    assert cond.net.num_classes == cond.critic.num_classes == 3 and cond.net.embed is not None
    assert uncond.net.num_classes == uncond.critic.num_classes == 0 and uncond.net.embed is None
    z = torch.randn(4, 16)
    with torch.no_grad():
        a = cond.net(z, torch.zeros(4, dtype=torch.long))
        b = cond.net(z, torch.ones(4, dtype=torch.long))
    assert (a - b).abs().max() > 1e-3  # the label changes the galaxy drawn from the same latent
    assert cond.critic_condition({"label": torch.tensor([0, 2])}).tolist() == [0, 2]
    assert uncond.critic_condition({"label": torch.tensor([0, 2])}) is None
    for model in (cond, uncond):
        trainer(2).fit(model, datamodule=tiny_datamodule(data_dir))
        assert int(model.images_seen) == 32 and all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(ValueError, match="num_classes=3 but model.conditional asks for 0"):
        ProGANModule(
            net=ProGenerator(16, CHANNELS, 1, 3), critic=ProCritic(CHANNELS, 1, 0), conditional=False, schedule=SCHEDULE
        )


# ------------------------------------------------------------------------------------------ sampling
def test_unconditional_model_refuses_predict_label() -> None:
    with pytest.raises(ValueError, match=r"predict.label=1: the model is unconditional \(model.conditional=false\)"):
        SamplingDataModule(num_samples=4, label=1, conditional=False)
    with pytest.raises(ValueError, match=r"predict.label=3 is outside the class list: expected 0..2"):
        SamplingDataModule(num_samples=4, label=3, conditional=True, class_names=CLASSES)
    assert SamplingDataModule(4, label="bulge", class_names=CLASSES).label == 1
    model = make_module(False)
    with pytest.raises(ValueError, match="unconditional"):
        model.predict_samples(
            {
                "index": torch.arange(2),
                "seed": torch.zeros(2, dtype=torch.long),
                "label": torch.ones(2, dtype=torch.long),
            }
        )


def test_predict_psf_override_is_checked(tmp_path) -> None:
    bad = tmp_path / "psf.npy"
    np.save(bad, np.full((5, 5), 0.05))
    with pytest.raises(DataFileError, match=r"psf.npy \[array\].*sum to 1"):
        resolve_psf(str(bad), 16)
    with pytest.raises(ValueError, match=r"predict.psf \(31x31\) is larger than the image \(16x16\)"):
        resolve_psf({"fwhm_pix": 3.0, "beta": 3.5, "size": 31}, 16)
    k = resolve_psf({"fwhm_arcsec": 0.8, "pixel_scale_arcsec": 0.2, "beta": 2.5, "size": 9}, 16)
    torch.testing.assert_close(k, moffat_psf(4.0, 2.5, 9))
    # what the spec leaves out comes from the training data's PSF parameters, never from a built-in default
    data = {"beta": 2.5, "size": 9, "pixel_scale_arcsec": 0.2}
    torch.testing.assert_close(resolve_psf({"fwhm_arcsec": 0.8}, 16, defaults=data), k)
    with pytest.raises(ValueError, match="predict.psf: a Moffat PSF needs beta"):
        resolve_psf({"fwhm_pix": 3.0, "size": 9}, 16)


def _sample(model: ProGANModule, out_dir: Path, name: str, **dm_kwargs) -> Path:
    dm = SamplingDataModule(class_names=CLASSES, conditional=model.conditional, image_size=STAMP, **dm_kwargs)
    writer = SamplesH5Writer(output=name, output_dir=str(out_dir), fits=True, attrs={"seed": dm.seed})
    L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[writer]
    ).predict(model, datamodule=dm, return_predictions=False)
    return out_dir / name


def test_sampling_writes_psf_free_and_convolved_in_flux_units(tmp_path) -> None:
    from astropy.io import fits

    psf = moffat_psf(2.5, 3.0, PSF)
    model = make_module(psf=psf)
    model.images_seen.fill_(10_000)  # schedule done: 16x16 samples
    path = _sample(model, tmp_path, "a.h5", num_samples=7, seed=3, batch_size=3)
    with h5py.File(path) as h5:
        assert h5["psf_free"].shape == h5["convolved"].shape == h5["observed"].shape == (7, 1, STAMP, STAMP)
        assert h5["label"][()].tolist() == [0, 1, 2, 0, 1, 2, 0] and h5["index"][()].tolist() == list(range(7))
        assert (h5["seed"][()] == 3).all() and h5.attrs["seed"] == 3 and h5["convolved"].attrs["units"] == "ADU"
        free, conv, obs = h5["psf_free"][()], h5["convolved"][()], h5["observed"][()]
        np.testing.assert_allclose(h5.attrs["training_psf"], psf.numpy())
    # flux units: the generator output through the inverse transform, convolved with the training PSF
    for j in range(7):
        np.testing.assert_allclose(
            conv[j, 0], convolve2d(free[j, 0], psf.numpy(), mode="same"), rtol=1e-4, atol=1e-4 * np.abs(conv[j]).max()
        )
    resid = (obs - conv) / np.sqrt((400.0 + np.clip(conv, 0, None)) / 4.0)  # noise of the training set's model
    assert abs(resid.std() - 1.0) < 0.05
    # sample i depends on (seed, i) only, not on the batch size; another PSF changes only the convolution
    other = _sample(
        model, tmp_path, "b.h5", num_samples=7, seed=3, batch_size=7, psf={"fwhm_pix": 4.0, "beta": 2.5, "size": 9}
    )
    with h5py.File(other) as h5:
        # the same galaxies up to float32 round-off (convolution algorithms depend on the batch size)
        np.testing.assert_allclose(h5["psf_free"][()], free, rtol=2e-3, atol=1e-2)
        wide = moffat_psf(4.0, 2.5, 9).numpy()
        np.testing.assert_allclose(
            h5["convolved"][3, 0],
            convolve2d(free[3, 0], wide, mode="same"),
            rtol=1e-4,
            atol=1e-4 * np.abs(free[3]).max(),
        )
    one_class = _sample(model, tmp_path, "c.h5", num_samples=4, seed=3, label=1)
    with h5py.File(one_class) as h5:
        assert h5["label"][()].tolist() == [1, 1, 1, 1]
    with fits.open(path.with_suffix(".fits")) as hdul:
        assert hdul["CONVOLVED"].data.shape == (7, STAMP, STAMP) and hdul["CONVOLVED"].header["BUNIT"] == "ADU"
        np.testing.assert_allclose(hdul["PSF_FREE"].data, free[:, 0])
        assert hdul["SAMPLES"].data["label"].tolist() == [0, 1, 2, 0, 1, 2, 0]


# ------------------------------------------------------------------------------------------ evaluator
def test_frechet_distance_matches_scipy_sqrtm_and_is_zero_for_equal_sets() -> None:
    from scipy import linalg

    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(1.0, 2.0, size=(250, 6))
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * linalg.sqrtm(ca @ cb).real)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(a + 3.0, b + 3.0) == pytest.approx(ref, rel=1e-6)  # translation invariant


def test_evaluator_ratios_near_one_for_real_data_and_large_for_wrong_flux(data_dir) -> None:
    with h5py.File(tiny_datamodule(data_dir).path) as h5:
        img, lab = torch.from_numpy(h5["image"][()])[:, None], torch.from_numpy(h5["label"][()])
    ev = GalaxyGenerationEvaluator(classifier=None, pixel_scale_arcsec=0.2, class_names=CLASSES)
    half = 48
    # "generated" = other real galaxies of the same classes
    ev.update({"label": lab[:half], "label_generated": lab[half:]}, {"target": img[:half], "output": img[half:]})
    same = ev.compute()
    ev.reset()
    ev.update({"label": lab[:half], "label_generated": lab[half:]}, {"target": img[:half], "output": 3.0 * img[half:]})
    brighter = ev.compute()
    assert same["n_pairs"] == 24 and same["n_pairs/bulge"] == 8
    assert same["w1_ratio/flux"] < 3.0 and brighter["w1_ratio/flux"] > 5.0 * same["w1_ratio/flux"]
    # a flux scaling leaves the shape statistics alone
    assert brighter["w1_ratio/hlr"] == pytest.approx(same["w1_ratio/hlr"], rel=1e-6)
    assert "w1_ratio/flux/irregular" in same and math.isfinite(same["w1_ratio/max"])
    # the evaluator reuses its statistics for the figures; its numbers are morphology_report's
    ref = morphology_report(img[half:, 0].numpy(), img[:half, 0].numpy(), 0.2, lab[half:].numpy(), lab[:half].numpy())
    for key, value in ref.items():
        name = key.replace("/class0", "/disk").replace("/class1", "/bulge").replace("/class2", "/irregular")
        assert same[name] == pytest.approx(value, rel=1e-12, nan_ok=True), key


def test_experiment_config_trains_through_all_phases_and_saves_the_final_state(data_dir, tmp_path) -> None:
    """python run.py experiment=galaxy_progan on tiny settings: the schedule ends training mid-epoch and
    last.ckpt holds the final progress (not the state of the last validation)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import TINY, compose_config

    from lit_sr.cli import run

    out = tmp_path / "run"
    cfg = compose_config(
        [
            "experiment=galaxy_progan",
            *TINY,
            f"paths.data_dir={data_dir}",
            "data.n_galaxies=96",
            f"data.stamp_size={STAMP}",
            f"data.psf_size={PSF}",
            "data.batch_size=16",
            "data.split=[0.5,0.25,0.25]",
            "model.net.channels_per_resolution=[8,8,8]",
            "model.schedule.fade_images=[0,16,16]",
            "model.schedule.stable_images=[16,16,16]",
            "model.schedule.batch_size=[16,16,8]",
            "setup_hook=null",
            "model.evaluator=null",
            "test_after_training=false",
            "trainer.check_val_every_n_epoch=1000",
            "model.grid_columns=0",
            "callbacks.image_panels=null",
        ],
        tmp_path,
        out,
    )
    run(cfg)
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    # 1 step of 16 (4x4), 2 of 16 (8x8 fade + stable), 4 of 8 (16x16): 7 steps, 80 images, in epoch 3 of 3 batches
    assert ckpt["global_step"] == 7 and ckpt["epoch"] == 2
    assert ckpt["progan"] == {
        "images_seen": 80,
        "phase": 2,
        "alpha": 1.0,
        "resolution": 16,
        "schedule": {"fade_images": [0, 16, 16], "stable_images": [16, 16, 16], "batch_size": [16, 16, 8]},
    }
    assert int(ckpt["state_dict"]["images_seen"]) == 80
