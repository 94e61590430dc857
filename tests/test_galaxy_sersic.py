"""The physics-informed galaxy generator (lit_sr/domains/galaxy/sersic.py): its differentiable bulge + disk
renderer against galsim (through the simulator's own pixel integration) and analytic flux, half-light radius and
axis ratio; the generator's shapes per depth and gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special

from lit_sr.domains.galaxy.data import AsinhFluxTransform
from lit_sr.domains.galaxy.morphology import half_light_radius
from lit_sr.domains.galaxy.sersic import PARAMETER_NAMES, SersicProGenerator, render_bulge_disk, sersic_b

S, SCALE = 64, 0.2


def params(**kw) -> dict[str, torch.Tensor]:
    base = dict(
        flux_adu=2.0e4, disk_hlr_arcsec=0.8, bulge_fraction=0.0, sersic_n=4.0, bulge_to_disk_hlr=0.5,
        g1=0.0, g2=0.0, dx_pix=0.0, dy_pix=0.0,
    )  # fmt: skip
    base.update(kw)
    return {k: torch.tensor([float(base[k])], dtype=torch.float64) for k in PARAMETER_NAMES}


def test_sersic_b_gives_the_half_light_radius():
    n = torch.tensor([1.0, 1.5, 2.5, 4.0], dtype=torch.float64)
    # the enclosed light fraction at r_e is P(2n, b_n) = 1/2
    exact = special.gammaincinv(2 * n.numpy(), 0.5)
    assert np.allclose(sersic_b(n).numpy(), exact, rtol=3e-5)
    assert abs(float(sersic_b(torch.tensor(1.0))) - 1.678347) < 1e-4  # the exponential's, a textbook value


@pytest.mark.parametrize(
    "case",
    [
        dict(flux=2e4, bt=0.0, n=1.0, rd=0.9, rho=0.5, q=0.3, beta=30.0, dx=0.2, dy=-0.3),
        dict(flux=5e4, bt=0.8, n=4.0, rd=0.8, rho=0.3, q=0.7, beta=100.0, dx=-0.4, dy=0.1),
        dict(flux=1e4, bt=0.5, n=2.5, rd=1.5, rho=0.2, q=0.5, beta=170.0, dx=0.0, dy=0.45),
    ],
)
def test_render_matches_galsim_through_the_simulators_pixel_integration(case):
    galsim = pytest.importorskip("galsim")
    from lit_sr.domains.galaxy.sim import _pixel_integrated

    shear = galsim.Shear(q=case["q"], beta=case["beta"] * galsim.degrees)
    prof = galsim.Exponential(half_light_radius=case["rd"], flux=case["flux"] * (1 - case["bt"]))
    if case["bt"] > 0:
        prof += galsim.Sersic(case["n"], half_light_radius=case["rd"] * case["rho"], flux=case["flux"] * case["bt"])
    prof = prof.shear(shear).shift(case["dx"] * SCALE, case["dy"] * SCALE)
    ref = _pixel_integrated(prof, S, SCALE, 4)  # as sim.render_galaxy builds image_psf_free
    core = slice(S // 2 - 3, S // 2 + 3)
    ref[core, core] = _pixel_integrated(prof, 6, SCALE, 32)
    p = params(
        flux_adu=case["flux"], disk_hlr_arcsec=case["rd"], bulge_fraction=case["bt"], sersic_n=case["n"],
        bulge_to_disk_hlr=case["rho"], g1=shear.g1, g2=shear.g2, dx_pix=case["dx"], dy_pix=case["dy"],
    )  # fmt: skip
    img = render_bulge_disk(p, S, SCALE)[0, 0].numpy()
    assert abs(img.sum() / ref.sum() - 1) < 1e-4
    assert np.abs(img - ref).max() < 1e-3 * ref.max()


def test_flux_against_the_analytic_enclosed_light():
    # round n = 4 bulge, hlr 1": light beyond the stamp is not drawn; the square stamp holds more than its
    # inscribed circle (R = 32 px) and less than its circumscribed one, P(2n, b (R / r_e)^(1/n))
    flux, n, re_pix = 3.0e4, 4.0, 5.0
    img = render_bulge_disk(
        params(flux_adu=flux, bulge_fraction=1.0, sersic_n=n, disk_hlr_arcsec=2 * re_pix * SCALE), S, SCALE
    )
    b = float(sersic_b(torch.tensor(n)))
    inner = special.gammainc(2 * n, b * (32.0 / re_pix) ** (1 / n))
    outer = special.gammainc(2 * n, b * (32.0 * math.sqrt(2) / re_pix) ** (1 / n))
    total = float(img.sum()) / flux
    assert inner < total < outer
    assert outer - inner < 0.04  # the bracket is tight: a wrong normalisation (e.g. a missing 1/n) falls outside
    # a compact exponential disk lies entirely on the stamp
    disk = render_bulge_disk(params(flux_adu=flux, disk_hlr_arcsec=0.5), S, SCALE)
    assert abs(float(disk.sum()) / flux - 1) < 1e-3  # midpoint-rule error of the pixel integration: 3e-4


@pytest.mark.parametrize("n, re_arcsec", [(1.0, 0.6), (2.5, 0.8), (4.0, 1.0)])
def test_half_light_radius_of_round_profiles(n, re_arcsec):
    img = render_bulge_disk(params(bulge_fraction=1.0, sersic_n=n, disk_hlr_arcsec=re_arcsec / 0.5), S, SCALE)[0, 0]
    img = img.numpy()
    b = float(sersic_b(torch.tensor(n)))
    on_stamp = special.gammainc(2 * n, b * (32.0 / (re_arcsec / SCALE)) ** (1 / n))  # light within R = 32 px
    # the radius enclosing half of the light within 32 px, exactly: P(2n, b (r / r_e)^(1/n)) = on_stamp / 2
    expected = re_arcsec * (special.gammaincinv(2 * n, on_stamp / 2) / b) ** n
    measured = half_light_radius(img[None], SCALE, centres=np.array([[S / 2 - 0.5, S / 2 - 0.5]]))[0]
    assert measured == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("q, beta_deg", [(0.3, 30.0), (0.6, 120.0), (0.85, 75.0)])
def test_axis_ratio_and_position_angle_from_second_moments(q, beta_deg):
    # an elliptical profile's (unweighted) second moments have eigenvalue ratio q^2 and the major axis at beta
    # (galsim: counter-clockwise from +x = columns, y = rows); pixel integration adds 1/12 px^2 to each variance
    g = (1 - q) / (1 + q)
    g1, g2 = g * math.cos(2 * math.radians(beta_deg)), g * math.sin(2 * math.radians(beta_deg))
    img = render_bulge_disk(params(disk_hlr_arcsec=0.6, g1=g1, g2=g2), S, SCALE)[0, 0].numpy()
    y, x = np.mgrid[:S, :S] - (S / 2 - 0.5)
    w = img / img.sum()
    cov = np.array([[(w * x * x).sum(), (w * x * y).sum()], [(w * x * y).sum(), (w * y * y).sum()]])
    evals, evecs = np.linalg.eigh(cov - np.eye(2) / 12.0)
    assert math.sqrt(evals[0] / evals[1]) == pytest.approx(q, rel=0.01)
    major = evecs[:, 1]
    angle = math.degrees(math.atan2(major[1], major[0])) % 180.0
    assert min(abs(angle - beta_deg), 180 - abs(angle - beta_deg)) < 0.5


def tiny_generator(**kw) -> SersicProGenerator:
    torch.manual_seed(0)
    args = dict(transform=AsinhFluxTransform(), latent_dim=8, channels_per_resolution=[8, 8, 8, 4], num_classes=3)
    args.update(kw)
    return SersicProGenerator(**args)  # 4x4 .. 32x32


def test_generator_shapes_per_depth_and_the_render_is_its_output_without_residual():
    gen = tiny_generator(pixel_scale_arcsec=0.4)
    z, labels = torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1])
    for depth in range(4):
        y = gen(z, labels, depth=depth, alpha=0.5 if depth else 1.0)
        assert y.shape == (5, 1, 4 * 2**depth, 4 * 2**depth)
    # residual_scale starts at 0: the output is the transformed render, whose flux is the parameters' flux
    with torch.no_grad():
        p = gen.structural_parameters(z, labels)
        flux = gen.transform.inverse(gen(z, labels, depth=3)).sum(dim=(1, 2, 3))
        # the drawn profile lies on the 12.8" stamp except for its far wings
        assert torch.all(flux <= p["flux_adu"] * 1.001) and torch.all(flux > 0.8 * p["flux_adu"])
        # a coarser phase is the pixel-integrated (block-averaged) finer one, up to the sub-pixel integration
        fine = gen.render(p, 3)
        coarse = gen.render(p, 1)
        pooled = torch.nn.functional.avg_pool2d(fine, 4)
        assert torch.allclose(coarse, pooled, rtol=0.02, atol=1e-3 * float(fine.max()))
        g = torch.hypot(p["g1"], p["g2"])
        assert torch.all(g < gen.max_shear)


def test_gradients_reach_the_parameter_mlp_and_the_residual():
    gen = tiny_generator(residual_init=0.1)
    z, labels = torch.randn(4, 8), torch.tensor([0, 1, 2, 1])
    gen(z, labels, depth=2, alpha=0.3).square().mean().backward()
    for name, mod in (("param_mlp", gen.param_mlp), ("residual to_rgb", gen.to_rgb[2]), ("embed", gen.embed)):
        grads = [p.grad for p in mod.parameters()]
        assert all(gr is not None for gr in grads) and sum(float(gr.abs().sum()) for gr in grads) > 0, name
    assert gen.residual_scale.grad is not None and float(gen.residual_scale.grad.abs()) > 0


def test_bad_ranges_are_refused():
    with pytest.raises(ValueError, match="disk_hlr_range_arcsec"):
        tiny_generator(disk_hlr_range_arcsec=[1.0, 0.5])
    with pytest.raises(ValueError, match="max_shear"):
        tiny_generator(max_shear=1.0)


def test_shape_report_recovers_the_rendered_ellipticity():
    pytest.importorskip("galsim")
    from reports.galaxy.shapes import ellipticities

    # adaptive moments of a profile with elliptical isophotes measure the isophotes' |g| = (1 - q) / (1 + q)
    qs = [0.3, 0.6, 0.9]
    imgs = []
    for q, beta in zip(qs, [10.0, 70.0, 140.0]):
        g = (1 - q) / (1 + q)
        b = math.radians(beta)
        p = params(disk_hlr_arcsec=0.8, g1=g * math.cos(2 * b), g2=g * math.sin(2 * b), dx_pix=0.3)
        imgs.append(render_bulge_disk(p, S, SCALE)[0, 0].numpy())
    g, failed = ellipticities(np.stack(imgs))
    assert not failed.any()
    assert np.allclose(g, [(1 - q) / (1 + q) for q in qs], atol=0.01)


def test_latent_prior_draws_isotropic_angles_and_jittered_centres():
    gen = tiny_generator(latent_prior=True, max_offset_pixels=0.5, latent_dim=12)
    n = 4000
    z, labels = torch.randn(n, 12), torch.randint(0, 3, (n,))
    with torch.no_grad():
        p = gen.structural_parameters(z, labels)
    g = torch.hypot(p["g1"], p["g2"])
    beta = torch.rad2deg(0.5 * torch.atan2(p["g2"], p["g1"])) % 180.0
    # position angle uniform on [0, 180): each 30-degree bin holds 1/6 +- 4 sigma of binomial noise
    counts = torch.histc(beta, bins=6, min=0.0, max=180.0) / n
    assert torch.all((counts - 1 / 6).abs() < 4 * math.sqrt(1 / 6 * 5 / 6 / n))
    assert torch.all(g < gen.max_shear)
    for key in ("dx_pix", "dy_pix"):
        assert p[key].abs().max() <= 0.5 and p[key].abs().max() > 0.49 and abs(float(p[key].mean())) < 0.02
    # the per-class spreads are parameters that the loss reaches
    gen(z[:16], labels[:16], depth=3).square().mean().backward()
    assert gen.log_spread.grad is not None and float(gen.log_spread.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="latent_dim >= 9"):
        tiny_generator(latent_prior=True, latent_dim=4)


def test_residual_gate_keeps_the_sky_free_of_residual():
    gen = tiny_generator(residual_init=1.0, residual_gate=True)
    z, labels = torch.randn(3, 8), torch.tensor([0, 1, 2])
    with torch.no_grad():
        smooth = gen.transform(gen.render(gen.structural_parameters(z, labels), 3))
        out = gen(z, labels, depth=3)
    sky = smooth < 1e-3  # < 0.02 ADU of rendered light
    assert sky.any() and (out - smooth)[sky].abs().max() < 3e-3
    assert (out - smooth)[~sky].abs().max() > 1e-2  # on the galaxy the residual acts


def test_progan_module_with_the_sersic_generator_resumes_mid_phase(tmp_path, tmp_path_factory, monkeypatch):
    from test_galaxy_progan import CHANNELS, make_module, tiny_datamodule, trainer

    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    data_dir = tmp_path_factory.mktemp("galaxy_tiny_sersic")
    tiny_datamodule(data_dir).prepare_data()

    def module():
        net = lambda num_classes: SersicProGenerator(  # noqa: E731
            AsinhFluxTransform(), 16, CHANNELS, 1, num_classes, pixel_scale_arcsec=0.8, latent_prior=True,
            residual_gate=True, core_pixels=4, core_oversample=8,
        )  # fmt: skip
        return make_module(net=net)

    first = module()
    t1 = trainer(4)
    t1.fit(first, datamodule=tiny_datamodule(data_dir))
    assert first.phase_state == (1, 0.5)
    ckpt = tmp_path / "mid.ckpt"
    t1.save_checkpoint(ckpt)
    resumed = module()
    resumed.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
    z, labels = torch.randn(4, 16), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():  # the parameter MLP, spreads and residual scale come back exactly
        assert torch.equal(first.net(z, labels, 1, 0.5), resumed.net(z, labels, 1, 0.5))
        assert torch.equal(first.eval_net.log_spread, resumed.eval_net.log_spread)
    resumed = module()
    trainer(9).fit(resumed, datamodule=tiny_datamodule(data_dir), ckpt_path=str(ckpt))
    assert int(resumed.images_seen) == 7 * 16 + 2 * 8 and resumed.phase_state == (2, 0.5)
    samples = resumed.sample_eval(labels, 4, None, torch.Generator().manual_seed(0), 2, 1.0)
    assert samples["observed"].shape == (4, 1, 16, 16) and torch.isfinite(samples["observed"]).all()
