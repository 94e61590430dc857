"""Generated vs real galaxies: morphology W1 ratios and a Frechet distance on our own classifier's features.

:class:`GalaxyGenerationEvaluator` follows the evaluator contract of the generative module
(:class:`lit_sr.models.progan.ProGANModule`): ``update(batch, images)`` with physical-unit (ADU)
``images["output"]`` (generated, PSF-convolved and noisy: what a telescope would record) and
``images["target"]`` (held-out real stamps of the val/test split), ``batch["label"]`` (real labels)
and ``batch["label_generated"]`` (conditional models). ``compute()`` returns floats:

* ``w1_ratio/<s>`` for s in flux (ADU), hlr (arcsec), e (HSM |g|), C (concentration), A (asymmetry):
  W1(generated, real_a) / W1(real_b, real_a), real_a and real_b two disjoint random halves of the
  real images, m = min(N_generated, N_real // 2) each (1.0 = as close as independent real data;
  as :func:`lit_sr.domains.galaxy.morphology.morphology_report`, same random draws); ``w1/<s>``, ``w1_real/<s>`` the two
  distances; ``w1_ratio/<s>/<class>`` per class (conditional models); ``w1_ratio/max`` the largest
  overall ratio; ``mean/<s>/fake|real``, ``hsm_failures/fake|real``;
* ``fd``: Frechet distance between Gaussian fits of the classifier features of generated and real_a
  stamps, ``fd_real`` the same for real_b vs real_a, ``fd_ratio`` = fd / fd_real (also per class).
  The classifier is our own (:class:`lit_sr.nets.classifier.CNNClassifier` trained on the real
  stamps, frozen; no downloaded Inception); features are its penultimate layer on model-space stamps.

All statistics are computed on PSF-convolved images (HSM fails on a quarter of the PSF-free bulges).
Per-image values are kept as torchmetrics ``cat`` states, so the numbers gather across DDP processes.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import torch
from scipy import linalg
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lit_sr.domains.galaxy.morphology import STATISTICS, _compare, morphology_statistics
from lit_sr.domains.galaxy.sim import LABEL_NAMES
from lit_sr.models.classifier import frozen
from lit_sr.metrics.evaluator import Evaluator


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2) of two feature sets [N, D].

    The matrix square root is taken of the symmetric PSD product S_a^1/2 S_b S_a^1/2 (eigen-
    decomposition, negative round-off eigenvalues clipped), so the result is real and >= 0.
    """
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"frechet_distance needs [N, D] arrays of one D, got {a.shape} and {b.shape}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        return float("nan")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    middle = root_a @ cov_b @ root_a
    eig = np.clip(linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.sqrt(eig).sum())
    return max(value, 0.0)


class _Samples(Metric):
    """Per-image states: stamps (ADU), labels (-1 = none) and classifier features, for real and generated."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("real", "fake", "label_real", "label_fake", "feat_real", "feat_fake"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, real: torch.Tensor, fake: torch.Tensor, label_real: torch.Tensor, label_fake: torch.Tensor,
               feat_real: torch.Tensor, feat_fake: torch.Tensor) -> None:
        self.real.append(real)
        self.fake.append(fake)
        self.label_real.append(label_real)
        self.label_fake.append(label_fake)
        self.feat_real.append(feat_real)
        self.feat_fake.append(feat_fake)

    def compute(self) -> dict[str, np.ndarray]:
        return {name: dim_zero_cat(getattr(self, name)).cpu().numpy() for name in
                ("real", "fake", "label_real", "label_fake", "feat_real", "feat_fake")}


class GalaxyGenerationEvaluator(Evaluator):
    """Morphology W1 ratios and Frechet distances of generated vs real stamps (see the module docstring).

    Args:
        classifier: frozen classifier with ``features(x)`` (``load_frozen_classifier``); None = no FD.
        transform: ADU -> the classifier's input space (the data transform it was trained in).
        class_names: label names (keys of the per-class metrics).
        pixel_scale_arcsec: arcsec per pixel (half-light radii in arcsec).
        seed: seed of the random real halves.
        figure_images: stamps per class kept for the figure.
    """

    def __init__(self, classifier: nn.Module | None = None, transform: nn.Module | None = None,
                 class_names: Sequence[str] = LABEL_NAMES, pixel_scale_arcsec: float = 0.2, seed: int = 0,
                 figure_images: int = 6) -> None:
        super().__init__()
        self.classifier, _ = frozen(classifier)
        self.transform = transform
        self.class_names = [str(c) for c in class_names]
        self.pixel_scale = float(pixel_scale_arcsec)
        self.seed = int(seed)
        self.figure_images = int(figure_images)
        self.samples = _Samples()
        self._examples: dict[str, dict[int, list[np.ndarray]]] = {}
        self._cache: dict[str, Any] | None = None

    def train(self, mode: bool = True) -> "GalaxyGenerationEvaluator":
        super().train(mode)
        if self.classifier is not None:
            self.classifier.eval()
        return self

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            return torch.zeros(x.shape[0], 0, device=x.device)
        x = self.transform(x) if self.transform is not None else x
        return self.classifier.features(x.float()).float()

    @torch.no_grad()
    def update(self, batch: dict[str, torch.Tensor], images: dict[str, torch.Tensor]) -> None:
        real, fake = images["target"].float(), images["output"].float()
        n_real, n_fake = real.shape[0], fake.shape[0]
        label_real = batch["label"].long() if "label" in batch else torch.full((n_real,), -1, device=real.device)
        label_fake = batch["label_generated"].long() if "label_generated" in batch else torch.full(
            (n_fake,), -1, device=fake.device)
        self.samples.update(real[:, 0], fake[:, 0], label_real, label_fake, self._features(real), self._features(fake))
        for key in ("target", "target_psf_free", "output", "output_psf_free", "output_convolved"):
            if key not in images:
                continue
            labels = label_real if key.startswith("target") else label_fake
            store = self._examples.setdefault(key, {})
            for img, lab in zip(images[key][:, 0], labels.tolist()):
                if len(store.setdefault(int(lab), [])) < self.figure_images:
                    store[int(lab)].append(img.float().cpu().numpy())

    def _gathered(self) -> dict[str, np.ndarray]:
        if self.samples._update_count == 0:
            return {}
        with self.samples.sync_context(should_sync=True, should_unsync=True):
            return self.samples.compute()

    def _name(self, c: int) -> str:
        return self.class_names[c] if 0 <= c < len(self.class_names) else f"class{c}"

    def compute(self) -> dict[str, float]:
        data = self._gathered()
        if not data or data["real"].shape[0] < 4 or data["fake"].shape[0] < 2:
            return {}
        conditional = bool((data["label_fake"] >= 0).all()) and bool((data["label_real"] >= 0).all())
        fake_stats, fake_fail = morphology_statistics(data["fake"], self.pixel_scale)
        real_stats, real_fail = morphology_statistics(data["real"], self.pixel_scale)
        report = self._report(fake_stats, real_stats, fake_fail, real_fail,
                              data["label_fake"] if conditional else None, data["label_real"] if conditional else None)
        out: dict[str, float] = {}
        for key, value in report.items():
            out[re.sub(r"/class(\d+)", lambda m: f"/{self._name(int(m.group(1)))}", key)] = float(value)
        ratios = [out[f"w1_ratio/{s}"] for s in STATISTICS if np.isfinite(out.get(f"w1_ratio/{s}", np.nan))]
        out["w1_ratio/max"] = max(ratios) if ratios else float("nan")
        if data["feat_real"].shape[1]:
            rng = np.random.default_rng(self.seed + 1)
            out.update(self._fd(data["feat_fake"], data["feat_real"], np.arange(len(data["feat_fake"])),
                                np.arange(len(data["feat_real"])), rng, ""))
            if conditional:
                for c in np.union1d(data["label_fake"], data["label_real"]):
                    out.update(self._fd(data["feat_fake"], data["feat_real"], np.flatnonzero(data["label_fake"] == c),
                                        np.flatnonzero(data["label_real"] == c), rng, f"/{self._name(int(c))}"))
        self._cache = {"data": data, "report": out, "fake_stats": fake_stats, "real_stats": real_stats}
        return out

    def _report(self, fake: dict[str, np.ndarray], real: dict[str, np.ndarray], fake_fail: int, real_fail: int,
                labels_fake: np.ndarray | None, labels_real: np.ndarray | None) -> dict[str, float]:
        """``morphology_report`` from statistics already computed (the figures reuse them)."""
        out: dict[str, float] = {"hsm_failures/fake": float(fake_fail), "hsm_failures/real": float(real_fail)}
        for s in STATISTICS:
            for name, stats in (("fake", fake), ("real", real)):
                v = stats[s]
                out[f"mean/{s}/{name}"] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
        rng = np.random.default_rng(self.seed)
        _compare(fake, real, np.arange(fake["flux"].size), np.arange(real["flux"].size), rng, "", out)
        if labels_fake is not None:
            for c in np.union1d(labels_fake, labels_real):
                _compare(fake, real, np.flatnonzero(labels_fake == c), np.flatnonzero(labels_real == c), rng,
                         f"/class{int(c)}", out)
        return out

    @staticmethod
    def _fd(feat_fake: np.ndarray, feat_real: np.ndarray, fake_idx: np.ndarray, real_idx: np.ndarray,
            rng: np.random.Generator, suffix: str) -> dict[str, float]:
        m = min(fake_idx.size, real_idx.size // 2)
        if m < 2:
            return {f"fd{suffix}": float("nan"), f"fd_real{suffix}": float("nan"), f"fd_ratio{suffix}": float("nan")}
        f = rng.choice(fake_idx, m, replace=False)
        perm = rng.permutation(real_idx)
        a, b = feat_real[perm[:m]], feat_real[perm[m:2 * m]]
        fd, fd_real = frechet_distance(feat_fake[f], a), frechet_distance(b, a)
        return {f"fd{suffix}": fd, f"fd_real{suffix}": fd_real,
                f"fd_ratio{suffix}": fd / fd_real if fd_real > 0 else float("nan")}

    def reset(self) -> None:
        self.samples.reset()
        self._examples = {}
        self._cache = None

    def figures(self) -> dict[str, Any]:
        """Matplotlib figures: distributions of the five statistics (generated vs real) and example stamps."""
        from lit_sr.domains.galaxy import figures as gal_figures

        if self._cache is None:
            self.compute()
        if self._cache is None:
            return {}
        figs = {"morphology": gal_figures.statistic_histograms(self._cache["real_stats"], self._cache["fake_stats"])}
        if self._examples.get("target") and self._examples.get("output"):
            figs["examples"] = gal_figures.example_grid(self._examples, self.class_names)
        return figs
