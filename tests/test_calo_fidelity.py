"""Calorimeter fidelity pieces: the block-softmax energy-conserving generator, and the results tables (docs/calo.md).

Physics asserted: every SR block sums to its LR crystal (GeV, through the log transform), the
generator starts as the flux-conserving nearest-neighbour upsampling, every pixel keeps a gradient
(the rescaling wrapper on a ReLU output can die), D4 symmetry of the wrapper itself; the results
table's mean ± std and the LR -> HR gap fraction against numpy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lit_sr.data.transforms import IntensityTransform
from lit_sr.domains.calo.metrics import sum_pool
from lit_sr.domains.calo.nets import BlockSoftmaxGenerator, EnergyConservingGenerator, calo_generator
from lit_sr.domains.calo.results import gap_closed, results_table
from lit_sr.metrics.stats import mean_std

TINY = dict(num_features=8, num_blocks=1, growth_channels=8)
LOG = IntensityTransform(0.1, log=True)  # the CPU recipe's model space, log1p(E / 0.1 GeV)


def _lr(n: int = 4, seed: int = 0) -> torch.Tensor:
    """LR crystal energies (GeV): a shower-like 6 x 6 image with zero-suppressed crystals."""
    g = torch.Generator().manual_seed(seed)
    e = torch.rand(n, 1, 6, 6, generator=g) ** 4 * 15.0
    return torch.where(e > 0.08, e, torch.zeros_like(e))


def _trained_once(net: torch.nn.Module) -> None:
    """One Adam step on random targets so the output is no longer the starting point."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = LOG(_lr(seed=1))
    loss = (net(x) - torch.rand(4, 1, 24, 24)).abs().mean()
    loss.backward()
    opt.step()


@pytest.mark.parametrize("transform", [None, LOG, IntensityTransform(20.0)])
def test_softmax_generator_keeps_every_crystal_energy(transform):
    torch.manual_seed(0)
    net = calo_generator(energy_conservation="softmax", transform=transform, input_skip=True, **TINY)
    assert isinstance(net, BlockSoftmaxGenerator) and net.net.output_activation.__class__.__name__ == "Identity"
    _trained_once(net)
    lr = _lr()
    x = lr if transform is None else transform(lr)
    with torch.no_grad():
        sr = net(x)
    sr_gev = sr if transform is None else transform.inverse(sr)
    torch.testing.assert_close(sum_pool(sr_gev, 4), lr, atol=2e-5, rtol=2e-5)
    assert sr_gev.min() >= 0.0
    # zero-suppressed crystals give zero blocks
    zero = F.interpolate((lr == 0).float(), scale_factor=4) > 0
    assert sr_gev[zero].abs().max() < 1e-6


def test_softmax_generator_starts_as_nearest_upsampling():
    torch.manual_seed(0)
    net = calo_generator(energy_conservation="softmax", transform=LOG, input_skip=True, **TINY)
    lr = _lr()
    with torch.no_grad():
        sr = LOG.inverse(net(LOG(lr)))
    torch.testing.assert_close(sr, F.interpolate(lr, scale_factor=4, mode="nearest") / 16, atol=1e-5, rtol=1e-5)


def test_softmax_generator_gradient_reaches_every_pixel_where_rescaling_dies():
    """A ReLU output driven below 0 leaves the rescaling wrapper without any gradient; the logits of
    the softmax wrapper always have one."""
    torch.manual_seed(0)
    lr = LOG(_lr())
    target = torch.rand(4, 1, 24, 24)
    rescale = calo_generator(energy_conservation=True, transform=LOG, input_skip=True, **TINY)
    assert isinstance(rescale, EnergyConservingGenerator)
    with torch.no_grad():  # a dead output: every pre-activation < 0
        rescale.net.conv_last.bias.fill_(-100.0)
    (rescale(lr) - target).abs().mean().backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in rescale.net.parameters())
    soft = calo_generator(energy_conservation="softmax", transform=LOG, input_skip=True, **TINY)
    with torch.no_grad():
        soft.net.conv_last.bias.fill_(-100.0)  # a constant shift of the logits changes nothing
    (soft(lr) - target).abs().mean().backward()
    assert soft.net.conv_last.weight.grad.abs().max() > 0


def test_softmax_wrapper_commutes_with_the_square_symmetries():
    """The wrapper is pointwise per block: for a D4-equivariant inner net (here the plain upsampling
    of a pointwise function, not constant within a block) the whole generator is D4-equivariant."""

    class Pointwise(torch.nn.Module):
        def forward(self, x):
            return F.interpolate(torch.sin(3 * x), scale_factor=4, mode="bilinear", align_corners=False)

    net = BlockSoftmaxGenerator(Pointwise(), 4, LOG)
    x = LOG(_lr())
    with torch.no_grad():
        sr = LOG.inverse(net(x))
        assert (sr - F.interpolate(LOG.inverse(x), scale_factor=4) / 16).abs().max() > 0.1  # not uniform
        for op in (lambda t: t.flip(-1), lambda t: t.transpose(-1, -2), lambda t: torch.rot90(t, 1, (-2, -1))):
            torch.testing.assert_close(net(op(x)), op(net(x)))


def test_energy_conservation_option_is_checked():
    with pytest.raises(ValueError, match="energy_conservation must be"):
        calo_generator(energy_conservation="exact", **TINY)


def _metrics(
    lr: float, sr: float, hr: float, rej: float, hr_rej: float = 400.0, hr_limit: float = 1.0
) -> dict[str, float]:
    m = {f"barycentre_res_cm/{s}": v for s, v in (("lr_native", lr), ("sr", sr), ("hr", hr))}
    m.update(
        {
            "pion_rejection/sr": rej,
            "pion_rejection_lower_limit/sr": 0.0,
            "pion_rejection/hr": hr_rej,
            "pion_rejection_lower_limit/hr": hr_limit,
            "psnr": 27.0 + rej / 10,
            "nearest_psnr": 25.0,
            "bicubic_psnr": 24.5,
            "barycentre_res_cm/lr_fit": 0.12,
        }
    )
    return m


def test_gap_and_results_table_against_numpy():
    runs = [_metrics(0.14, 0.20, 0.05, 6.0), _metrics(0.14, 0.16, 0.05, 9.0), _metrics(0.14, 0.12, 0.05, 12.0)]
    assert gap_closed(runs[0]) == pytest.approx((0.14 - 0.20) / (0.14 - 0.05))  # negative: SR worse than LR
    m, s = mean_std([6.0, 9.0, 12.0])
    assert m == pytest.approx(9.0) and s == pytest.approx(np.std([6.0, 9.0, 12.0], ddof=1))
    table = results_table(runs)
    # HR let no pion pass in any run: a lower limit, printed "> N" (the smallest N); SR is measured
    assert "| π⁰ rejection at 90 % photon efficiency | – | – | **9.0 ± 3.0** | > 400 |" in table
    res = np.array([0.20, 0.16, 0.12])
    # the best non-truth entry is bold: the LR pixel fit (0.12) beats SR's mean (0.16) and the LR barycentre
    assert f"| {res.mean():.4f} ± {res.std(ddof=1):.4f} |" in table and "| **0.1200 ± 0.0000** |" in table
    gaps = 100 * (0.14 - res) / 0.09
    assert f"{gaps.mean():.1f} ± {gaps.std(ddof=1):.1f} %" in table
    assert "3 runs: mean ± standard deviation over seeds" in table
    mixed = results_table([_metrics(0.14, 0.12, 0.05, 6.0, 300.0, 0.0), _metrics(0.14, 0.12, 0.05, 6.0, 400.0, 1.0)])
    assert "≥ 350.0 ± 70.7" in mixed  # one run measured, one lower limit: the mean is a lower limit too
    # the LR regressor is a column of the impact-point table: the bold entry moves to it when it is best, and
    # the gap and w0 rows keep their columns (SR, LR barycentre)
    reg = results_table([{**r, "barycentre_res_cm/lr_regressor": v} for r, v in zip(runs, (0.062, 0.064, 0.063))])
    head, res_row = reg.splitlines()[0], reg.splitlines()[2]
    cols = [c.strip() for c in head.strip("|").split("|")]
    assert cols[3] == "LR CNN regressor (trained on LR)" and cols[4].startswith("SR")
    cells = [c.strip() for c in res_row.strip("|").split("|")]
    assert cells[3] == "**0.0630 ± 0.0010**" and cells[2] == "0.1200 ± 0.0000"
    gap_row = next(r for r in reg.splitlines() if r.startswith("| LR-barycentre → HR gap"))
    assert [c.strip() for c in gap_row.strip("|").split("|")][4] == f"{gaps.mean():.1f} ± {gaps.std(ddof=1):.1f} %"


def test_shower_loss_terms_are_the_physical_distances_in_cm():
    """A single-crystal deposit has its barycentre at the crystal centre and width 0: moving it by 3
    crystals along x costs exactly 3 x 0.55 cm; a two-crystal deposit has width 0.275 cm."""
    from lit_sr.domains.calo.losses import ShowerLoss

    pitch = 13.2 / 24
    hr = torch.zeros(1, 1, 24, 24)
    hr[0, 0, 10, 10] = 5.0
    sr = torch.zeros(1, 1, 24, 24)
    sr[0, 0, 10, 13] = 5.0
    loss = ShowerLoss(transform=None, barycentre_weight=1.0, width_weight=1.0)
    terms = loss.shower_terms(sr, hr)
    assert terms["barycentre_cm"].item() == pytest.approx(3 * pitch, rel=1e-6)
    assert terms["width_cm"].item() == pytest.approx(0.0, abs=1e-6)
    two = torch.zeros(1, 1, 24, 24)
    two[0, 0, 10, 10] = two[0, 0, 10, 11] = 2.5  # width = half the pitch
    assert loss.shower_terms(two, hr)["width_cm"].item() == pytest.approx(pitch / 2, rel=1e-6)
    # pixel (L1) + distances, and nothing when SR == HR
    assert loss(sr, hr).item() == pytest.approx((sr - hr).abs().mean().item() + 3 * pitch, rel=1e-6)
    assert loss(hr, hr).item() == pytest.approx(0.0, abs=1e-7)
    # the same in the recipe's log model space: the terms are computed in GeV through the transform
    log_loss = ShowerLoss(transform=LOG, barycentre_weight=1.0)
    assert log_loss.shower_terms(LOG(sr), LOG(hr))["barycentre_cm"].item() == pytest.approx(3 * pitch, rel=1e-5)


def test_shower_loss_refuses_negative_weights_and_features_without_a_net():
    from lit_sr.domains.calo.losses import ShowerLoss

    with pytest.raises(ValueError, match="weights must be >= 0"):
        ShowerLoss(barycentre_weight=-1.0)
    with pytest.raises(ValueError, match="needs a feature_net"):
        ShowerLoss(feature_weight=1.0)
