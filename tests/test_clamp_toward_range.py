"""clamp_toward_range: a plain clamp forward; gradients flow only where descent moves an output back into range,
so an output that starts below the range (the dead start of a clamped net) is pulled back in."""

import torch

from lit_sr.nets.layers import clamp_toward_range
from lit_sr.nets.rrdb import RRDBNet


def test_forward_is_the_clamp_and_the_gradient_only_points_back_into_the_range():
    x = torch.tensor([-1.0, -1.0, 0.5, 2.0, 2.0], requires_grad=True)
    y = clamp_toward_range(x, 0.0, 1.0)
    assert torch.equal(y, x.detach().clamp(0.0, 1.0))
    grad = torch.tensor([-1.0, 1.0, 3.0, 1.0, -1.0])  # descent moves x by -grad
    y.backward(grad)
    # below: only the negative gradient (up) passes; inside: all; above: only the positive one (down)
    assert torch.equal(x.grad, torch.tensor([-1.0, 0.0, 3.0, 1.0, 0.0]))


def test_an_output_that_starts_below_the_range_learns_where_a_plain_clamp_stays_dead():
    def fit(clamp) -> float:
        b = torch.tensor(-1.0, requires_grad=True)  # the output starts below 0
        opt = torch.optim.SGD([b], lr=0.1)
        for _ in range(200):
            loss = (clamp(b) - 0.5) ** 2
            opt.zero_grad()
            loss.backward()
            opt.step()
        return float(b)

    assert fit(lambda b: b.clamp(0.0, 1.0)) == -1.0  # no gradient: stuck
    assert abs(fit(lambda b: clamp_toward_range(b, 0.0, 1.0)) - 0.5) < 1e-4  # converges to the target


def test_rrdb_with_every_output_below_the_range_gets_gradients():
    torch.manual_seed(0)
    net = RRDBNet(
        in_channels=1,
        out_channels=1,
        scale=2,
        num_features=8,
        num_blocks=1,
        growth_channels=4,
        output_range=(0.0, None),
    )
    with torch.no_grad():
        net.conv_last.bias.fill_(-10.0)  # every output below 0: a plain clamp would give zero gradients
    out = net(torch.rand(2, 1, 8, 8))
    assert torch.all(out == 0)
    ((out - 0.3) ** 2).mean().backward()
    assert net.conv_last.bias.grad is not None and float(net.conv_last.bias.grad) < 0  # pulled back up
