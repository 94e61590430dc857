"""Generated vs real galaxies: morphology W1 ratios and a Frechet-distance ratio on our own classifier's features.

:class:`GalaxyGenerationEvaluator` (an :class:`lit_sr.metrics.evaluator.Evaluator`) follows the evaluator
contract of the generative module (:class:`lit_sr.models.progan.ProGANModule`): ``update(batch, images)``
with physical-unit (ADU) ``images["output"]`` (generated, PSF-convolved and noisy: what a telescope would
record) and ``images["target"]`` (held-out real stamps of the val/test split), ``batch["label"]`` (real
labels) and ``batch["label_generated"]`` (conditional models). Every distance is reported as a **ratio**
to the same distance between two independent real samples of the same size: real_a and real_b are two
disjoint random halves of the real images, m = min(N_generated, N_real // 2) each, drawn ``n_splits``
times (default 10); numerator and denominator are means over the splits, and the denominator's spread
(sample std over the splits) is reported. ``compute()`` returns floats:

* ``w1_ratio/<s>`` (a ratio) for s in flux (ADU), hlr (arcsec), e (HSM |g|), C (concentration),
  A (asymmetry): mean W1(generated, real_a) / mean W1(real_b, real_a) (1.0 = as close as independent
  real data); ``w1/<s>`` the numerator, ``w1_real/<s>`` the denominator (in the statistic's units),
  ``w1_real_std/<s>`` its spread over the splits; the same per class with a ``/<class>`` suffix
  (conditional models); ``w1_ratio/max`` the largest overall ratio; ``mean/<s>/fake|real``,
  ``hsm_failures/fake|real``, ``n_pairs`` (m), ``n_splits``;
* ``fd_ratio`` (a ratio) = mean FD(generated, real_a) / mean FD(real_b, real_a), the Frechet distance
  between Gaussian fits of the classifier features, on the same splits; ``fd`` the numerator,
  ``fd_real`` the denominator, ``fd_real_std`` its spread (also per class). The classifier is our own
  (:class:`lit_sr.nets.classifier.CNNClassifier` trained on the real stamps), registered as the frozen
  judge ``classifier`` (no downloaded Inception; the GAN's critic never sees it); features are its
  penultimate layer on model-space stamps.

All statistics are computed on PSF-convolved images (HSM fails on a quarter of the PSF-free bulges).
Per-image values are kept as torchmetrics ``cat`` states, so the numbers gather across DDP processes.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lit_sr.domains.galaxy.morphology import (
    N_SPLITS,
    STATISTICS,
    compare_statistics,
    morphology_statistics,
    ratio_over_splits,
)
from lit_sr.domains.galaxy.sim import LABEL_NAMES
from lit_sr.metrics.evaluator import Evaluator
from lit_sr.metrics.stats import frechet_distance

JUDGE = "classifier"


class _Samples(Metric):
    """Per-image states: stamps (ADU), labels (-1 = none) and classifier features, for real and generated."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("real", "fake", "label_real", "label_fake", "feat_real", "feat_fake"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        real: torch.Tensor,
        fake: torch.Tensor,
        label_real: torch.Tensor,
        label_fake: torch.Tensor,
        feat_real: torch.Tensor,
        feat_fake: torch.Tensor,
    ) -> None:
        self.real.append(real)
        self.fake.append(fake)
        self.label_real.append(label_real)
        self.label_fake.append(label_fake)
        self.feat_real.append(feat_real)
        self.feat_fake.append(feat_fake)

    def compute(self) -> dict[str, np.ndarray]:
        return {
            name: dim_zero_cat(getattr(self, name)).cpu().numpy()
            for name in ("real", "fake", "label_real", "label_fake", "feat_real", "feat_fake")
        }


class GalaxyGenerationEvaluator(Evaluator):
    """Morphology W1 ratios and Frechet-distance ratios of generated vs real stamps (see the module docstring).

    Args:
        classifier: frozen classifier with ``features(x)`` (``load_frozen_classifier``), the judge of
            the Frechet distance; None = no FD.
        transform: ADU -> the classifier's input space (the data transform it was trained in).
        class_names: label names (keys of the per-class metrics).
        pixel_scale_arcsec: arcsec per pixel (half-light radii in arcsec).
        seed: seed of the random real/real splits.
        n_splits: random real/real splits the ratios are averaged over (at least 2).
        figure_images: stamps per class kept for the figure.
    """

    def __init__(
        self,
        classifier: nn.Module | None = None,
        transform: nn.Module | None = None,
        class_names: Sequence[str] = LABEL_NAMES,
        pixel_scale_arcsec: float = 0.2,
        seed: int = 0,
        n_splits: int = N_SPLITS,
        figure_images: int = 6,
    ) -> None:
        super().__init__()
        if int(n_splits) < 2:
            raise ValueError(f"GalaxyGenerationEvaluator: n_splits must be >= 2, got {n_splits}")
        self.transform = transform  # a submodule, so it follows the evaluator across devices
        self.add_judge(JUDGE, classifier, transform)
        self.class_names = [str(c) for c in class_names]
        self.pixel_scale = float(pixel_scale_arcsec)
        self.seed = int(seed)
        self.n_splits = int(n_splits)
        self.figure_images = int(figure_images)
        self.samples = _Samples()
        self._examples: dict[str, dict[int, list[np.ndarray]]] = {}

    @torch.no_grad()
    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if not self.has_judge(JUDGE):
            return torch.zeros(x.shape[0], 0, device=x.device)
        return self.judge_features(JUDGE, x.float()).float()

    @torch.no_grad()
    def update(self, batch: dict[str, torch.Tensor], images: dict[str, torch.Tensor]) -> None:
        real, fake = images["target"].float(), images["output"].float()
        n_real, n_fake = real.shape[0], fake.shape[0]
        label_real = batch["label"].long() if "label" in batch else torch.full((n_real,), -1, device=real.device)
        label_fake = (
            batch["label_generated"].long()
            if "label_generated" in batch
            else torch.full((n_fake,), -1, device=fake.device)
        )
        self.samples.update(real[:, 0], fake[:, 0], label_real, label_fake, self._features(real), self._features(fake))
        for key in ("target", "target_psf_free", "output", "output_psf_free", "output_convolved"):
            if key not in images:
                continue
            labels = label_real if key.startswith("target") else label_fake
            store = self._examples.setdefault(key, {})
            for img, lab in zip(images[key][:, 0], labels.tolist()):
                if len(store.setdefault(int(lab), [])) < self.figure_images:
                    store[int(lab)].append(img.float().cpu().numpy())

    def _name(self, c: int) -> str:
        return self.class_names[c] if 0 <= c < len(self.class_names) else f"class{c}"

    def compute(self) -> dict[str, float]:
        if self.samples._update_count == 0:
            return {}
        data = self.synced(self.samples, self.samples.compute)
        if data["real"].shape[0] < 4 or data["fake"].shape[0] < 2:
            return {}
        conditional = bool((data["label_fake"] >= 0).all()) and bool((data["label_real"] >= 0).all())
        fake_stats, fake_fail = morphology_statistics(data["fake"], self.pixel_scale)
        real_stats, real_fail = morphology_statistics(data["real"], self.pixel_scale)
        report, splits = compare_statistics(
            fake_stats,
            real_stats,
            fake_fail,
            real_fail,
            data["label_fake"] if conditional else None,
            data["label_real"] if conditional else None,
            self.seed,
            self.n_splits,
        )
        if data["feat_real"].shape[1]:
            for suffix, sp in splits.items():
                r = ratio_over_splits(frechet_distance, data["feat_fake"], data["feat_real"], sp)
                report.update(
                    {
                        f"fd{suffix}": r["model"],
                        f"fd_real{suffix}": r["real"],
                        f"fd_real_std{suffix}": r["real_std"],
                        f"fd_ratio{suffix}": r["ratio"],
                    }
                )
        out: dict[str, float] = {}
        for key, value in report.items():
            out[re.sub(r"/class(\d+)", lambda m: f"/{self._name(int(m.group(1)))}", key)] = float(value)
        ratios = [out[f"w1_ratio/{s}"] for s in STATISTICS if np.isfinite(out.get(f"w1_ratio/{s}", np.nan))]
        out["w1_ratio/max"] = max(ratios) if ratios else float("nan")
        self._cache = {"data": data, "report": out, "fake_stats": fake_stats, "real_stats": real_stats}
        return out

    def reset(self) -> None:
        super().reset()  # the metric states and the figures' cache
        self._examples = {}

    def figures(self) -> dict[str, Any]:
        """Matplotlib figures: distributions of the five statistics (generated vs real) and example stamps."""
        from lit_sr.domains.galaxy import plots

        if self._cache is None:
            self.compute()
        if self._cache is None:
            return {}
        figs = {"morphology": plots.statistic_histograms(self._cache["real_stats"], self._cache["fake_stats"])}
        if self._examples.get("target") and self._examples.get("output"):
            figs["examples"] = plots.example_grid(self._examples, self.class_names)
        return figs
