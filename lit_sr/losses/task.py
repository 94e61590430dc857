"""Task-driven loss: a frozen classifier's cross-entropy on the super-resolved image (task-aware SR).

The science question of a domain is often a classification (lensing: which dark-matter substructure a lens
has). A generator can be asked to keep the information the question needs: the cross-entropy of a frozen
classifier (trained on HR) on SR,

* ``target="label"``: against the true class of the sample, ``-log p(y | SR)``;
* ``target="hr"``: against the classifier's own posterior on the HR image, ``-sum_k p(k | HR) log p(k | SR)``
  (no labels needed; its gradient vanishes when SR's posterior equals HR's).

The classifier must not be the network that later judges the model (the judge stays independent).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ClassifierTaskLoss(nn.Module):
    """Cross-entropy of a frozen classifier's logits on SR against the label or the HR posterior.

    The classifier returns logits [B, K] (softmax over K classes) or [B] (one logit of class 1 of two). It
    is put in eval mode and its parameters get ``requires_grad=False`` for good; gradients still flow to
    ``sr``.

    Args:
        classifier: the frozen classifier (its own input space: the caller converts).
        target: ``"label"`` (the true class) or ``"hr"`` (the classifier's posterior on HR).
    """

    def __init__(self, classifier: nn.Module, target: str = "label") -> None:
        super().__init__()
        if target not in ("label", "hr"):
            raise ValueError(f"ClassifierTaskLoss target must be 'label' or 'hr', got {target!r}")
        self.target = target
        self.classifier = classifier.eval()
        for p in self.classifier.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "ClassifierTaskLoss":
        super().train(mode)
        self.classifier.eval()  # batch-norm statistics stay the trained ones
        return self

    @staticmethod
    def _log_probs(logits: torch.Tensor) -> torch.Tensor:
        """[B, K] log-posteriors (one logit -> the two classes' log-sigmoids)."""
        if logits.dim() == 1:
            logits = torch.stack([torch.zeros_like(logits), logits], 1)
        return F.log_softmax(logits.float(), 1)

    def forward(
        self,
        sr: torch.Tensor,
        labels: torch.Tensor | None = None,
        hr: torch.Tensor | None = None,
        target: str | None = None,
    ) -> torch.Tensor:
        """Mean cross-entropy (nats per sample) of the classifier on ``sr``; ``target`` overrides the one set at
        construction for this call."""
        target = self.target if target is None else target
        log_p = self._log_probs(self.classifier(sr))
        if target == "label":
            if labels is None:
                raise ValueError("ClassifierTaskLoss(target='label') needs the batch's 'label' (class per sample)")
            return F.nll_loss(log_p, labels.long().view(-1))
        if hr is None:
            raise ValueError("ClassifierTaskLoss(target='hr') needs the HR images")
        with torch.no_grad():
            p_hr = self._log_probs(self.classifier(hr)).exp()
        return -(p_hr * log_p).sum(1).mean()
