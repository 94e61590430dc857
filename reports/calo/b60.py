"""LR baselines vs HR at 60 GeV (data=calo_60gev simulated the same way), 1500 + 1500 events, split 50/25/25."""

import json
import os

import torch

from lit_sr.data.transforms import IntensityTransform
from lit_sr.domains.calo.data import CaloDataModule
from lit_sr.domains.calo.evaluator import CaloPhysicsEvaluator

tr = IntensityTransform(0.1, log=True)
dm = CaloDataModule(
    data_dir=os.environ.get("CALO_DATA_DIR", "data"),
    n_per_class=1500,
    energy_gev=60.0,
    augment=False,
    transform=tr,
    split=(0.5, 0.25, 0.25),
    eval_batch_size=500,
)
dm.prepare_data()
dm.setup("fit")
ev = CaloPhysicsEvaluator(baselines=("lr_native", "lr_fit", "lr_shape"))
im = lambda b: {"input": tr.inverse(b["input"]), "target": tr.inverse(b["target"])}
ev.prepare((b, im(b)) for b in dm.dataloader("val", False))
with torch.no_grad():
    for b in dm.dataloader("test", False):
        ev.update(b, im(b))
out, _ = ev.results()
print(
    json.dumps({k: v for k, v in out.items() if not k.endswith(("_x", "_y")) or "bias" in k}, indent=0, sort_keys=True)
)
