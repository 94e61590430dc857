"""Random streams for data augmentation that differ per DDP rank and per DataLoader worker.

Lightning seeds every rank with the same global seed, so a dataset drawing from the global RNG in
the main process (num_workers=0) would augment identically on every rank. These helpers mix the
base seed with the global rank and the worker id so each stream is distinct yet reproducible.
"""

from __future__ import annotations

import os

import numpy as np
import torch


def global_rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def stream_rng(base_seed: int, *extra: int) -> np.random.Generator:
    """Generator for the calling (rank, worker): seeded by (base_seed, rank, worker id, *extra)."""
    info = torch.utils.data.get_worker_info()
    worker = info.id if info is not None else -1
    return np.random.default_rng([int(base_seed) & 0xFFFFFFFF, global_rank(), worker + 1, *[int(e) for e in extra]])
