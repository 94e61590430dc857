"""Proxy ablation of the impact-point term: a small energy-conserving generator, pixel pre-training only
(L1 in log1p(E/0.1) space + the recipe's HR barycentre/width terms, + impact_weight x |b(SR) - impact|^2),
STEPS batches of 32 from the train split; SR log-barycentre resolution (w0 = 4.7) on the first 2000 test events."""

import os
import sys
import time

import torch

from lit_sr.data.transforms import IntensityTransform
from lit_sr.domains.calo.data import CaloDataModule
from lit_sr.domains.calo.losses import ShowerLoss
from lit_sr.domains.calo.metrics import barycentre, resolution_summary, shower_width
from lit_sr.domains.calo.nets import calo_generator
from lit_sr.metrics.stats import wasserstein_1d

impact_weight, seed, steps, nf = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
width_weight = float(sys.argv[5]) if len(sys.argv) > 5 else 1.0
ema_decay = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0  # 0: no EMA of the generator
cosine = len(sys.argv) > 7 and sys.argv[7] == "cosine"  # lr cosine decay to 0 over STEPS
torch.manual_seed(seed)
tr = IntensityTransform(0.1, log=True)
dm = CaloDataModule(data_dir=os.environ.get("CALO_DATA_DIR", "data"), transform=tr, batch_size=32, augment_seed=seed)
dm.prepare_data()
dm.setup("fit")
net = calo_generator(
    num_features=nf, num_blocks=1, growth_channels=nf, input_skip=True, energy_conservation="softmax", transform=tr
)
loss_fn = ShowerLoss(transform=tr, barycentre_weight=1.0, width_weight=width_weight)
opt = torch.optim.Adam(net.parameters(), lr=5e-4, betas=(0.0, 0.9))
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
ema = (
    torch.optim.swa_utils.AveragedModel(net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema_decay))
    if ema_decay
    else None
)
t0 = time.time()
for i, b in enumerate(dm.train_dataloader()):
    if i >= steps:
        break
    sr = net(b["input"])
    loss = loss_fn(sr, b["target"])
    if impact_weight:
        loss = loss + impact_weight * (barycentre(tr.inverse(sr).clamp_min(0)) - b["impact_cm"]).pow(2).sum(1).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if sched is not None:
        sched.step()
    if ema is not None:
        ema.update_parameters(net)
if ema is not None:
    net = ema.module
net.eval()
res, wsr, whr = [], [], []
with torch.no_grad():
    for j, b in enumerate(dm.dataloader("test", False, 500)):
        if j >= 4:
            break
        sr, hr = tr.inverse(net(b["input"])), tr.inverse(b["target"])
        res.append(barycentre(sr) - b["impact_cm"])
        wsr.append(shower_width(sr))
        whr.append(shower_width(hr))
r = resolution_summary(torch.cat(res))
print(
    f"impact_weight={impact_weight} width_weight={width_weight} ema={ema_decay} cosine={cosine} seed={seed} steps={steps} nf={nf}: SR res {float(r['std']):.4f} cm, bias ({float(r['mean_x']):+.4f}, {float(r['mean_y']):+.4f}), width W1 {wasserstein_1d(torch.cat(wsr), torch.cat(whr)):.4f} cm, {time.time() - t0:.0f} s",
    flush=True,
)
