"""The ML baseline for the SR impact-point result: a network that regresses the impact point directly from
the native 6x6 LR image (no SR image in between), trained on the train split with the SR recipe's budget
(1150 batches of 32, D4-augmented like the generator's batches) and scored on the whole test split.

    PYTHONPATH=. python reports/calo/lr_regressor.py cnn SEED     # the judge's CNN (24/48 channels), 2 outputs
    PYTHONPATH=. python reports/calo/lr_regressor.py mlp SEED     # an MLP on the 36 crystal energy fractions

Inputs: ``cnn`` sees log1p(E/0.1 GeV) like the generator; ``mlp`` sees E_i / sum E. Loss: mean |pred - impact|^2
(cm^2), Adam 1e-3 with cosine decay to 0, no selection on the test split."""

import os
import sys
import time

import torch
from torch import nn

from lit_sr.data.transforms import IntensityTransform
from lit_sr.domains.calo.data import CaloDataModule
from lit_sr.domains.calo.metrics import resolution_summary
from lit_sr.nets.classifier import CNNClassifier

kind, seed = sys.argv[1], int(sys.argv[2])
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 1150
torch.manual_seed(seed)
tr = IntensityTransform(0.1, log=True)
dm = CaloDataModule(data_dir=os.environ.get("CALO_DATA_DIR", "data"), transform=tr, batch_size=32, augment_seed=seed)
dm.prepare_data()
dm.setup("fit")
if kind == "cnn":
    net = CNNClassifier(channels=(24, 48), feature_dim=64, activation="relu", pooled_size=2, num_classes=2)
else:
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, 2))


def features(lr_model_space: torch.Tensor) -> torch.Tensor:
    if kind == "cnn":
        return lr_model_space
    e = tr.inverse(lr_model_space).clamp_min(0)
    return e / e.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-9)


opt = torch.optim.Adam(net.parameters(), lr=1e-3)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
t0, step = time.time(), 0
while step < steps:
    for b in dm.train_dataloader():
        if step >= steps:
            break
        loss = (net(features(b["input"])) - b["impact_cm"]).pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
net.eval()
res = []
with torch.no_grad():
    for b in dm.dataloader("test", False, 1000):
        res.append(net(features(b["input"])) - b["impact_cm"])
r = resolution_summary(torch.cat(res))
print(
    f"LR {kind} regressor, seed {seed}, {steps} batches of 32: test resolution std {float(r['std']):.4f} cm, "
    f"q68 {float(r['q68']):.4f} cm, bias ({float(r['mean_x']):+.4f}, {float(r['mean_y']):+.4f}) cm, "
    f"{int(r['n'])} events, {time.time() - t0:.0f} s",
    flush=True,
)
