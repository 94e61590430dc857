"""Checkpoint writer that never leaves a truncated file behind (temp file + fsync + rename)."""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lit_sr.utils.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes ``<name>.partial`` beside the target and renames it over the target when complete.

    A run killed while saving leaves the previous ``last.ckpt`` intact instead of a corrupt one.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
