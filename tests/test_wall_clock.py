"""WallClock: every validation pass logs the wall seconds since fit start, increasing, none during the sanity check."""

import time

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader

from lit_sr.callbacks.wall_clock import WallClock


class _Slow(L.LightningModule):
    """A linear fit whose steps sleep 20 ms, so elapsed time has a known lower bound."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        time.sleep(0.02)
        return self.lin(batch).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.lin(batch).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_fit_seconds_logged_at_each_validation_grow_with_the_steps(tmp_path):
    data = DataLoader(torch.randn(40, 2), batch_size=4)  # 10 steps per epoch
    trainer = L.Trainer(
        max_epochs=3,
        callbacks=[WallClock()],
        logger=CSVLogger(tmp_path, name="", version=""),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=1,
    )
    trainer.fit(_Slow(), data, DataLoader(torch.randn(8, 2), batch_size=4))
    rows = [line.split(",") for line in (tmp_path / "metrics.csv").read_text().splitlines()]
    col = rows[0].index("time/fit_seconds")
    seconds = [float(r[col]) for r in rows[1:] if r[col]]
    assert len(seconds) == 3  # one per validation, none for the sanity check
    # epoch k has slept 10 * 20 ms at least k times over
    assert all(s >= 0.2 * (k + 1) for k, s in enumerate(seconds)) and seconds == sorted(seconds)


def test_quality_vs_time_reads_the_curve_from_metrics_csv(tmp_path):
    from reports.quality_vs_time import curve, main

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text(
        "epoch,step,train/loss,time/fit_seconds,val/psnr\n0,9,0.5,,\n0,9,,12.5,30.1\n1,19,,25.0,31.7\n1,19,0.4,,\n"
    )
    assert curve(run, "val/psnr") == [(12.5, 9, 30.1), (25.0, 19, 31.7)]
    main(["--run", f"A={run}", "--metric", "val/psnr", "--out", str(tmp_path / "fig")])
    assert (tmp_path / "fig.png").stat().st_size > 0 and "| A | 19 | 25 | 31.7 |" in (tmp_path / "fig.md").read_text()
