"""A denoiser (or SR net) whose output is gated with an exposure-corrected Gaussian smoothing of its own input.

On real X-ray fields the fine-tuned RRDB denoiser wins on bright pixels and loses to plain smoothing on the faint
background (docs/xmm.md): with < 1 count per pixel a smooth local mean is what the data support. Rather than
choosing one of the two per field, :class:`SmoothingGatedNet` mixes them per pixel by the local count level:

    s = S(rate x exposure) / S(exposure)                  (Gaussian S of width ``sigma_px``: the classical smoothing)
    c = s x exposure                                      (expected counts per pixel in the input)
    g = c^a / (c^a + c0^a) = sigmoid(a (ln c - ln c0))    (the shrinkage weight of a count estimate towards a prior;
                                                          optionally times a learnt ceiling g_max < 1)
    out = g x net(x) + (1 - g) x s                        (in physical units, then back to model space)

Optionally the gate also sees how significant the net's departure from the smoothing is (``significance_slope``):

    z = |C_net - c| / (1 + sqrt(c + 0.75))                (C_net: the net's counts in the input pixel; the
                                                          denominator is Gehrels' 1-sigma upper error of c counts)
    g = sigmoid(a (ln c - ln c0) + b (z - z0))            (b and z0 learnt)

so a faint pixel where the net departs from the local mean by less than the Poisson noise leans on the smoothing,
and a faint point source the net sees well above it leans on the net (the idea of adaptive X-ray smoothing such as
ASMOOTH, Ebeling et al. 2006: smooth until the signal is significant).

That term alone also cuts the net's weight in a bright smooth region such as a cluster core, where the net's
departure from the over-smoothed local mean is small per input-pixel error but matters to a deeper exposure (it lost
a cluster field, docs/xmm.md). ``bright_counts`` adds a count level above which the net is trusted whatever z is
(a soft OR):

    g = 1 - (1 - sigmoid(a_b (ln c - ln c_b))) (1 - sigmoid(a (ln c - ln c0) + b (z - z0)))    (a_b, c_b learnt)

For an x s SR net the smoothing and the gate are made on the input grid; the gate is spread evenly over each s x s
block and the smoothing by its own bilinear interpolation, rescaled so each block keeps the input pixel's smoothed
rate (spread evenly, a faint region where the smoothing dominates came out in visible s x s blocks). The block sums,
all that held-out counts on the input grid can score, are the same either way.
``a`` and ``c0`` are learnt with the net. ``a`` = 1 is the weight a Gamma prior of strength ``c0`` counts gives the
pixel's own data; it starts there with ``c0`` = 1 count (the level where the Poisson error equals the signal).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lit_sr.utils.blocks import block_spread, block_sum


def pixel_gaussian_kernel(sigma_px: float, truncate: float = 4.0) -> torch.Tensor:
    """1-D Gaussian integrated over unit pixels, radius ceil(truncate x sigma), normalised to sum 1 (float64)."""
    if not (sigma_px > 0 and math.isfinite(sigma_px)):
        raise ValueError(f"sigma_px={sigma_px} must be finite and > 0 (pixels)")
    radius = int(math.ceil(truncate * sigma_px))
    d = torch.arange(-radius, radius + 1, dtype=torch.float64)
    cdf = lambda t: 0.5 * (1.0 + torch.erf(t / (sigma_px * math.sqrt(2.0))))  # noqa: E731
    k = cdf(d + 0.5) - cdf(d - 0.5)
    return k / k.sum()


def exposure_weighted_smoothing(
    rate: torch.Tensor, exposure: torch.Tensor, kernel: torch.Tensor, min_fraction: float = 1e-6
) -> torch.Tensor:
    """``S(rate x exposure) / S(exposure)`` over [B, 1, H, W] with the separable ``kernel`` (zero outside the
    image, so edges and unexposed pixels do not dilute the mean); 0 where the exposure is 0."""
    k = kernel.to(rate)
    r = k.numel() // 2
    live = exposure > 0
    e = torch.where(live, exposure, torch.zeros_like(exposure))

    def smooth(x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(F.pad(x, (r, r, 0, 0)), k.view(1, 1, 1, -1))
        return F.conv2d(F.pad(x, (0, 0, r, r)), k.view(1, 1, -1, 1))

    num, den = smooth(rate * e), smooth(e)
    scale = e.amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(rate.dtype).tiny)
    ok = live & (den > min_fraction * scale)
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


class SmoothingGatedNet(nn.Module):
    """``net``'s output mixed per pixel with a Gaussian smoothing of the input by the local count level (module doc).

    Args:
        net: the denoiser (same output grid as its input, one image channel) or an x s SR net.
        transform: count rate <-> model space (``forward`` / ``inverse``, e.g. the data's ``StretchTransform``
            without an upper clip): the mix is made on count rates.
        sigma_px: width of the smoothing (input pixels), e.g. the value tuned on the simulated validation split.
        exposure_norm_ks: exposure (ks) that the exposure channel maps to 1.
        image_channel / exposure_channel: channels of the input holding transform(rate) and exposure / norm.
        gate_counts: initial c0 (counts per pixel where net and smoothing weigh equally).
        gate_slope: initial a.
        gate_max: None: the net's weight tends to 1 on bright pixels. A value in (0, 1): a learnt ceiling g_max
            starting there, g = g_max c^a / (c^a + c0^a), for a net that should not be trusted alone anywhere.
        significance_slope: None: the gate sees the count level only. A value > 0: the initial b of the
            significance term (module doc), with ``significance_level`` the initial z0.
        bright_counts / bright_slope: None: no bright gate. Else the initial c_b (counts per input pixel) and a_b
            of the bright gate (module doc; needs the significance term).
        param_gain: the gate parameters are stored divided by this, so an optimiser step moves them
            ``param_gain`` times further than a conv weight (they would barely move in a short fine-tune otherwise).
    """

    def __init__(
        self,
        net: nn.Module,
        transform: nn.Module,
        sigma_px: float,
        exposure_norm_ks: float,
        image_channel: int = 0,
        exposure_channel: int = 1,
        gate_counts: float = 1.0,
        gate_slope: float = 1.0,
        gate_max: float | None = None,
        significance_slope: float | None = None,
        significance_level: float = 1.0,
        bright_counts: float | None = None,
        bright_slope: float = 2.0,
        param_gain: float = 10.0,
    ) -> None:
        super().__init__()
        if gate_counts <= 0 or gate_slope <= 0:
            raise ValueError(f"gate_counts={gate_counts} and gate_slope={gate_slope} must be > 0")
        if gate_max is not None and not 0 < gate_max < 1:
            raise ValueError(f"gate_max={gate_max} must be in (0, 1), or None for no ceiling")
        if significance_slope is not None and not significance_slope > 0:
            raise ValueError(f"significance_slope={significance_slope} must be > 0, or None for no significance term")
        if bright_counts is not None and (significance_slope is None or not bright_counts > 0 or not bright_slope > 0):
            raise ValueError(
                f"bright_counts={bright_counts}, bright_slope={bright_slope}: both must be > 0, and the bright gate "
                "needs the significance term (significance_slope)"
            )
        self.net = net
        self.transform = transform
        self.sigma_px = float(sigma_px)
        self.exposure_s_per_unit = 1e3 * float(exposure_norm_ks)
        self.image_channel = int(image_channel)
        self.exposure_channel = int(exposure_channel)
        self.param_gain = float(param_gain)
        self.register_buffer("kernel", pixel_gaussian_kernel(self.sigma_px).float(), persistent=False)
        self.log_gate_counts = nn.Parameter(torch.tensor(math.log(gate_counts) / self.param_gain))
        self.log_gate_slope = nn.Parameter(torch.tensor(math.log(gate_slope) / self.param_gain))
        if gate_max is not None:
            self.logit_gate_max = nn.Parameter(torch.tensor(math.log(gate_max / (1 - gate_max)) / self.param_gain))
        if significance_slope is not None:
            self.log_significance_slope = nn.Parameter(torch.tensor(math.log(significance_slope) / self.param_gain))
            self.significance_level_param = nn.Parameter(torch.tensor(float(significance_level) / self.param_gain))
        if bright_counts is not None:
            self.log_bright_counts = nn.Parameter(torch.tensor(math.log(bright_counts) / self.param_gain))
            self.log_bright_slope = nn.Parameter(torch.tensor(math.log(bright_slope) / self.param_gain))

    @property
    def gate_counts(self) -> float:
        return float(torch.exp(self.param_gain * self.log_gate_counts.detach()))

    @property
    def gate_slope(self) -> float:
        return float(torch.exp(self.param_gain * self.log_gate_slope.detach()))

    @property
    def gate_max(self) -> float:
        if not hasattr(self, "logit_gate_max"):
            return 1.0
        return float(torch.sigmoid(self.param_gain * self.logit_gate_max.detach()))

    @property
    def significance(self) -> tuple[float, float] | None:
        """(b, z0) of the significance term, or None without it."""
        if not hasattr(self, "log_significance_slope"):
            return None
        b = float(torch.exp(self.param_gain * self.log_significance_slope.detach()))
        return b, float(self.param_gain * self.significance_level_param.detach())

    @property
    def bright(self) -> tuple[float, float] | None:
        """(c_b counts, a_b) of the bright gate, or None without it."""
        if not hasattr(self, "log_bright_counts"):
            return None
        return (
            float(torch.exp(self.param_gain * self.log_bright_counts.detach())),
            float(torch.exp(self.param_gain * self.log_bright_slope.detach())),
        )

    def parts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The net's rate, the smoothed rate, the gate (weight of the net) and the mixed rate, [B, 1, sH, sW] on
        the net's output grid (s = 1 for a denoiser; for x s SR the input-grid gate is spread evenly over each
        s x s block and the smoothed rate as its bilinear interpolation, so a block sums to the input pixel's
        smoothed rate)."""
        rate = self.transform.inverse(x[:, self.image_channel : self.image_channel + 1])
        exposure_s = x[:, self.exposure_channel : self.exposure_channel + 1] * self.exposure_s_per_unit
        net_out = self.net(x)
        s = net_out.shape[-1] // x.shape[-1]
        if net_out.shape[1] != 1 or s < 1 or net_out.shape[-2:] != (s * x.shape[-2], s * x.shape[-1]):
            raise ValueError(
                f"SmoothingGatedNet: the net's output {tuple(net_out.shape)} must be one channel on the input grid "
                f"{tuple(x.shape[-2:])} or an integer multiple of it"
            )
        net_rate = self.transform.inverse(net_out)
        smooth = exposure_weighted_smoothing(rate, exposure_s, self.kernel)
        counts = (smooth * exposure_s).clamp_min(1e-6)
        slope = torch.exp(self.param_gain * self.log_gate_slope)
        logit = slope * (torch.log(counts) - self.param_gain * self.log_gate_counts)
        if hasattr(self, "log_significance_slope"):
            # the net's counts per input pixel (an x s block summed), against the smoothing's Poisson error
            net_counts = block_sum(net_rate, s) * exposure_s
            z = (net_counts - counts).abs() / (1.0 + torch.sqrt(counts + 0.75))
            b = torch.exp(self.param_gain * self.log_significance_slope)
            logit = logit + b * (z - self.param_gain * self.significance_level_param)
        gate = torch.sigmoid(logit)
        if hasattr(self, "log_bright_counts"):
            a_b = torch.exp(self.param_gain * self.log_bright_slope)
            bright = torch.sigmoid(a_b * (torch.log(counts) - self.param_gain * self.log_bright_counts))
            gate = 1.0 - (1.0 - bright) * (1.0 - gate)  # bright, or above the count gate and significant
        if hasattr(self, "logit_gate_max"):
            gate = gate * torch.sigmoid(self.param_gain * self.logit_gate_max)
        live = exposure_s > 0
        if s > 1:
            # the smoothing's flux per input pixel, split inside the block as its bilinear interpolation is
            up = F.interpolate(smooth, scale_factor=s, mode="bilinear", align_corners=False)
            tiny = torch.finfo(up.dtype).tiny  # an all-zero block is split evenly
            share = (up + tiny) / (block_spread(block_sum(up, s), s) + s**2 * tiny)
            smooth, gate, live = block_spread(smooth, s) * share, block_spread(gate, s), block_spread(live, s)
        mixed = gate * net_rate + (1.0 - gate) * smooth
        return {"net": net_rate, "smooth": smooth, "gate": gate, "mixed": torch.where(live, mixed, net_rate)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # floor at the smallest normal number: a stretch such as sqrt has an infinite slope at 0, and its
        # inverse in the loss a zero one, whose product is a NaN gradient
        mixed = self.parts(x)["mixed"]
        return self.transform(mixed.clamp_min(torch.finfo(mixed.dtype).tiny))
