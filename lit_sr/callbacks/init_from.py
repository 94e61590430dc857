"""Start a fresh fit from the network weights of another run's checkpoint (fine-tuning)."""

from __future__ import annotations

import logging

import lightning as L
import torch

log = logging.getLogger("lit_sr")


class InitNetFrom(L.Callback):
    """At the start of a fresh fit, load ``pl_module.net`` (and its EMA copy, if any) from the ``net.*`` weights
    of a trained checkpoint (``ckpt_path``; None: the net keeps its initialisation). A resumed run
    (``trainer.ckpt_path`` set) keeps its own weights. Weights whose names or shapes differ from the configured
    net raise one error naming the file and the first differences. ``submodule``: load into that part of the
    net instead (e.g. ``net`` for a wrapper such as :class:`lit_sr.nets.smoothing_gate.SmoothingGatedNet`, whose
    own parameters keep their initialisation)."""

    def __init__(self, ckpt_path: str | None, submodule: str | None = None) -> None:
        self.ckpt_path = str(ckpt_path) if ckpt_path else None
        self.submodule = submodule or ""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.ckpt_path or trainer.ckpt_path:
            if not self.ckpt_path:
                log.info("InitNetFrom: no checkpoint given, the net starts from its initialisation")
            return
        ckpt = torch.load(self.ckpt_path, map_location="cpu", weights_only=False)
        sd = {k[len("net.") :]: v for k, v in ckpt.get("state_dict", {}).items() if k.startswith("net.")}
        got = {k: tuple(v.shape) for k, v in sd.items()}
        target = pl_module.net.get_submodule(self.submodule)
        want = {k: tuple(v.shape) for k, v in target.state_dict().items()}
        if got != want:
            diff = sorted(set(got.items()) ^ set(want.items()))[:4]
            raise ValueError(
                f"{self.ckpt_path}: its 'net.*' weights do not match the configured {type(target).__name__} "
                f"(first differences, name and shape: {diff}); fine-tune a checkpoint of the same net"
            )
        target.load_state_dict(sd)
        ema = getattr(pl_module, "ema", None)
        if ema is not None and hasattr(ema, "shadow"):
            ema.shadow.get_submodule(self.submodule).load_state_dict(sd)
        log.info("InitNetFrom: net weights loaded from %s", self.ckpt_path)
