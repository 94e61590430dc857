"""Store the W&B run id in every checkpoint so that resuming continues the same W&B run."""

from __future__ import annotations

from typing import Any

import lightning as L

CHECKPOINT_KEY = "wandb_run_id"


class WandbRunIdCallback(L.Callback):
    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                checkpoint[CHECKPOINT_KEY] = logger.version
