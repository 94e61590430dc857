"""Noise2Noise training on real XMM-Newton observations: a time slice in, the held-out counts as target.

Each ObsID of a real data folder (layout of :func:`lit_sr.domains.xmm.real.load_pairs`: ``20ks/`` time slices,
``full/`` whole observations) gives an input, the slice's count rate (counts / T_slice, exposure channel =
detector mask x T_slice), and an independent target, the held-out counts ``full - slice`` divided by their
exposure ``T - T_slice`` (counts/s per pixel, 0 outside the detector mask). The target is a Poisson image of
the same sky, independent of the input, so a loss whose minimiser is the mean (the Poisson likelihood of the
rate, ``PhysicalSpaceLoss(PixelLoss('poisson'))``) learns the rate of the sky without any simulation.

``leave_out``: one ObsID whose files are never opened for training or validation (the leave-one-out
evaluation of ``python -m lit_sr.domains.xmm.real --dn-loo``); it is the test split (one whole frame). Without
it every ObsID is trained on, and the test split is the validation crops (in-sample: nothing is held out).
Training items are random crops (``train_patch`` input pixels) of a random training ObsID (drawn in proportion
to its exposed pixels), with the 8 flips/rotations; validation items are fixed crops of the training ObsIDs
(a monitor of the fit, not a held-out score).

``thin``: fainter fields from the bright ones (training items only). With probability ``thin_prob`` both the
slice's and the held-out counts of a crop are binomially thinned with one keep-probability p (log-uniform in
``thin``): each event is kept independently with probability p, so the thinned images are again independent
Poisson images of a sky p times fainter (sources and background alike) with the same exposures. Input and
target stay a valid Noise2Noise pair, and the training fields then span the faint end (0.6 counts per pixel in
20 ks) that five bright training fields may not cover.

``task: sr`` (scale 2): the held-out counts exist only on the input grid, so the target is the held-out rate
spread evenly over the 2 x 2 finer pixels of each input pixel (rate / 4 each: the batch contract's target
grid, flux-conserving); a loss that sums the prediction and the target over 2 x 2 blocks
(``PhysicalSpaceLoss(pool=2)``) then compares the x2 prediction summed back to the input grid with the
held-out rate, and is blind to how the flux is spread inside an input pixel (the simulated x2 training the
net starts from decides that).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from lit_sr.data.base import LitSRDataModule
from lit_sr.data.rng import stream_rng
from lit_sr.data.transforms import StretchTransform
from lit_sr.domains.xmm.data import batch_contract_defaults, d4, model_input
from lit_sr.domains.xmm.real import RealPair, list_obsids, load_pairs

log = logging.getLogger("lit_sr")


def heldout_target_rate(pair: RealPair) -> np.ndarray:
    """The Noise2Noise target: held-out counts (full - slice) / (T - T_slice), counts/s per pixel, 0 where
    the detector mask is 0."""
    return np.where(pair.mask, pair.heldout_counts / pair.heldout_exposure_s, 0.0).astype(np.float32)


class HeldoutCropsDataset(Dataset):
    """Crops of (slice rate, held-out rate) pairs. Item: ``input`` [2, p, p] (transformed rate, exposure
    channel), ``target`` [1, p, p] (transformed held-out rate), ``index``, ``obsid_index``.

    Args:
        pairs: the observations to crop from.
        n_items: items per epoch.
        patch: crop size (input pixels); None = whole frames (one item per pair, ``n_items`` ignored).
        transform: count rate -> model space.
        exposure_norm_ks: exposure (ks) mapped to 1 in the exposure channel.
        random: random crops and flips/rotations (training); False: fixed crops drawn once from ``seed``.
        seed: base seed of the crop stream.
        min_exposed: a crop is redrawn (up to 20 times) while fewer than this fraction of its pixels is exposed.
        scale: target grid factor: each target pixel's rate is spread evenly over scale x scale finer pixels.
        thin: (p_min, p_max) of the binomial thinning (random items only; see the module doc); None: off.
        thin_prob: probability that an item is thinned.
    """

    def __init__(
        self,
        pairs: Sequence[RealPair],
        n_items: int,
        patch: int | None,
        transform: torch.nn.Module | None,
        exposure_norm_ks: float = 100.0,
        random: bool = True,
        seed: int = 0,
        min_exposed: float = 0.5,
        scale: int = 1,
        thin: Sequence[float] | None = None,
        thin_prob: float = 0.5,
    ) -> None:
        if not pairs:
            raise ValueError("HeldoutCropsDataset needs at least one observation")
        self.pairs = list(pairs)
        self.patch = int(patch) if patch else None
        for p in self.pairs:
            if self.patch and self.patch > min(p.slice_counts.shape):
                raise ValueError(
                    f"data.train_patch={self.patch} is larger than ObsID {p.obsid} ({p.slice_counts.shape} pixels)"
                )
        self.n_items = len(self.pairs) if self.patch is None else int(n_items)
        self.transform = transform
        self.exposure_norm_ks = float(exposure_norm_ks)
        self.random = bool(random)
        self.seed = int(seed)
        self.min_exposed = float(min_exposed)
        self.scale = int(scale)
        self.thin = None if thin is None else (float(thin[0]), float(thin[1]))
        if self.thin is not None and not 0 < self.thin[0] <= self.thin[1] <= 1:
            raise ValueError(f"data.thin={list(thin)}: expected 0 < p_min <= p_max <= 1")
        self.thin_prob = float(thin_prob)
        self.weights = np.array([p.mask.sum() for p in self.pairs], np.float64)
        self.weights /= self.weights.sum()
        self._rates = [
            (p.raw_rate.astype(np.float32), p.slice_exposure_map, heldout_target_rate(p)) for p in self.pairs
        ]
        self._rng: np.random.Generator | None = None
        self._fixed = None if self.random or self.patch is None else self._draw_all(np.random.default_rng(self.seed))

    def __len__(self) -> int:
        return self.n_items

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_rng": None}

    def _draw(self, rng: np.random.Generator) -> tuple[int, int, int, int, bool]:
        """(pair index, top, left, quarter turns, flip) of one crop."""
        j = int(rng.choice(len(self.pairs), p=self.weights))
        h, w = self.pairs[j].slice_counts.shape
        p = self.patch
        for _ in range(20):
            top, left = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
            if self.pairs[j].mask[top : top + p, left : left + p].mean() >= self.min_exposed:
                break
        k, flip = (int(rng.integers(0, 4)), bool(rng.integers(0, 2))) if self.random else (0, False)
        return j, top, left, k, flip

    def _draw_all(self, rng: np.random.Generator) -> list[tuple[int, int, int, int, bool]]:
        return [self._draw(rng) for _ in range(self.n_items)]

    def _thinned(
        self, pair: RealPair, win: tuple[slice, slice], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """(slice rate, held-out rate) of a crop after keeping each event of both images with one probability
        p, log-uniform in ``thin``: a sky p times fainter, same exposures, still independent Poisson images."""
        lo, hi = self.thin
        keep = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        m = pair.mask[win]
        s = rng.binomial(pair.slice_counts[win].astype(np.int64), keep)
        k = rng.binomial(pair.heldout_counts[win].astype(np.int64), keep)
        return (
            np.where(m, s / pair.slice_exposure_s, 0.0).astype(np.float32),
            np.where(m, k / pair.heldout_exposure_s, 0.0).astype(np.float32),
        )

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self.patch is None:
            j, top, left, k, flip = int(i), 0, 0, 0, False
        elif self._fixed is not None:
            j, top, left, k, flip = self._fixed[int(i)]
        else:
            if self._rng is None:
                self._rng = stream_rng(self.seed)
            j, top, left, k, flip = self._draw(self._rng)
        rate, expo, target = self._rates[j]
        h, w = rate.shape
        p_h, p_w = (self.patch, self.patch) if self.patch else (h, w)
        win = (slice(top, top + p_h), slice(left, left + p_w))
        crops = [rate[win], expo[win], target[win]]
        if self.random and self.thin is not None and self._rng is not None and self._rng.random() < self.thin_prob:
            crops[0], crops[2] = self._thinned(self.pairs[j], win, self._rng)
        maps = [torch.from_numpy(np.ascontiguousarray(m))[None] for m in crops]
        maps = [d4(m, k, flip) for m in maps]
        x = model_input(maps[0], maps[1], self.transform, self.exposure_norm_ks)
        target = maps[2]
        if self.scale > 1:  # the same counts spread evenly over the finer pixels (sums kept)
            s = self.scale
            target = target.repeat_interleave(s, -2).repeat_interleave(s, -1) / s**2
        y = self.transform(target) if self.transform is not None else target
        return {
            "input": x.contiguous(),
            "target": y.contiguous(),
            "index": torch.tensor(int(i)),
            "obsid_index": torch.tensor(j),
        }


class XMMHeldoutDataModule(LitSRDataModule):
    """Real XMM-Newton slice -> held-out pairs for Noise2Noise fine-tuning of the denoiser (scale 1) or of
    the x2 SR net (``task: sr``: target = the held-out rate spread over 2 x 2 finer pixels, see the module doc).

    Args (beyond the loader settings and the batch-contract declarations of ``LitSRDataModule``):
        data_root: folder with ``20ks/`` and ``full/`` FITS counts images (see the module doc).
        leave_out: ObsID never read for training or validation; the test split (None: train on all).
        train_patch: training crop size (input pixels).
        train_items: training crops per epoch.
        val_items: fixed validation crops of the training ObsIDs.
        seed: seed of the crop streams.
        thin, thin_prob: binomial thinning of training crops (fainter fields, see the module doc); None: off.
        exposure_norm_ks: exposure (ks) mapped to 1 in the exposure channel (as in the simulated data).
        max_rate, pixel_arcsec, psf_fwhm_arcsec, psf_beta, patch_size, task: as for :class:`~lit_sr.domains.xmm.data.XMMDataModule`
            (the transform, the pixel scale and the whole-frame patches of ``predict=fits``; task dn: scale 1,
            task sr: scale 2 with the held-out rate spread over the finer pixels; ``task_scales`` from the
            config must say the same).
    """

    def __init__(
        self,
        data_root: str,
        leave_out: str | None = None,
        slice_dir: str = "20ks",
        full_dir: str = "full",
        train_patch: int = 64,
        train_items: int = 1024,
        val_items: int = 32,
        seed: int = 0,
        exposure_norm_ks: float = 100.0,
        max_rate: float = 2e-3,
        pixel_arcsec: float = 4.0,
        psf_fwhm_arcsec: float = 6.0,
        psf_beta: float = 1.5,
        patch_size: int = 64,
        task: str = "dn",
        task_scales: dict[str, int] | None = None,
        thin: Sequence[float] | None = None,
        thin_prob: float = 0.5,
        **kwargs: Any,
    ) -> None:
        want_scale = {"dn": 1, "sr": 2}
        if task_scales is not None and dict(task_scales) != want_scale:
            raise ValueError(f"data.task_scales={dict(task_scales)}: the held-out pairs support {want_scale}")
        if task not in want_scale:
            raise ValueError(f"data.task={task!r}: expected 'dn' (scale 1) or 'sr' (scale 2)")
        kwargs.setdefault("scale", want_scale[task])
        if int(kwargs["scale"]) != want_scale[task]:
            raise ValueError(f"data.scale={kwargs['scale']}: task {task!r} needs scale {want_scale[task]}")
        batch_contract_defaults(kwargs, StretchTransform(max_rate, "sqrt", clip=False))
        super().__init__(**kwargs)
        self.data_root = Path(data_root)
        self.leave_out = str(leave_out) if leave_out not in (None, "") else None
        self.slice_dir, self.full_dir = slice_dir, full_dir
        self.train_patch = int(train_patch)
        self.train_items = int(train_items)
        self.val_items = int(val_items)
        self.seed = int(seed)
        self.exposure_norm_ks = float(exposure_norm_ks)
        self.max_rate = float(max_rate)
        self.pixel_arcsec = float(pixel_arcsec)
        self.psf_fwhm_arcsec, self.psf_beta = float(psf_fwhm_arcsec), float(psf_beta)
        self.patch_size = int(patch_size)
        self.task = task
        self.thin = None if thin is None else [float(v) for v in thin]
        self.thin_prob = float(thin_prob)
        if getattr(self.transform, "clip", False):
            log.warning(
                "data.transform clips count rates at %g counts/s: held-out targets above it are clipped too",
                getattr(self.transform, "max_value", float("nan")),
            )

    def training_obsids(self) -> list[str]:
        """The ObsIDs trained on (file names only are read)."""
        files = list_obsids(self.data_root, self.slice_dir, self.full_dir)
        if self.leave_out is not None and self.leave_out not in files:
            raise ValueError(f"data.leave_out={self.leave_out!r}: no such ObsID in {self.data_root} ({sorted(files)})")
        return [o for o in files if o != self.leave_out]

    def _pairs(self, obsids: Sequence[str]) -> list[RealPair]:
        return load_pairs(self.data_root, self.slice_dir, self.full_dir, only=list(obsids))

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and "train" not in self.splits:
            train = self._pairs(self.training_obsids())
            log.info(
                "Noise2Noise pairs for training: %s%s",
                ", ".join(p.obsid for p in train),
                f" (left out: {self.leave_out})" if self.leave_out else "",
            )
            common = dict(transform=self.transform, exposure_norm_ks=self.exposure_norm_ks, scale=self.scale)
            self.splits["train"] = HeldoutCropsDataset(
                train,
                self.train_items,
                self.train_patch,
                random=True,
                seed=self.seed,
                thin=self.thin,
                thin_prob=self.thin_prob,
                **common,
            )
            self.splits["val"] = HeldoutCropsDataset(
                train, self.val_items, self.train_patch, random=False, seed=self.seed + 1, **common
            )
        if stage in (None, "test", "predict") and "test" not in self.splits:
            common = dict(transform=self.transform, exposure_norm_ks=self.exposure_norm_ks, scale=self.scale)
            if self.leave_out is not None:
                self.splits["test"] = HeldoutCropsDataset(self._pairs([self.leave_out]), 1, None, **common)
            else:
                log.warning("data.leave_out is null: the test split is the training ObsIDs' crops (in-sample)")
                self.splits["test"] = HeldoutCropsDataset(
                    self._pairs(self.training_obsids()),
                    self.val_items,
                    self.train_patch,
                    random=False,
                    seed=self.seed + 1,
                    **common,
                )
