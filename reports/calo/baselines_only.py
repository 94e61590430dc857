"""Baseline rows (LR analyses, HR) of the calo evaluator on the default test split, no GAN needed."""

import json
import os
import sys

import torch

from lit_sr.domains.calo.data import CaloDataModule
from lit_sr.domains.calo.evaluator import CaloPhysicsEvaluator
from lit_sr.models.classifier import load_frozen_classifier
from lit_sr.models.regressor import load_frozen_regressor
from lit_sr.nets.classifier import CNNClassifier

energy = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
judges = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
from lit_sr.data.transforms import IntensityTransform

dm = CaloDataModule(
    data_dir=os.environ.get("CALO_DATA_DIR", "data"),
    energy_gev=energy,
    augment=False,
    transform=IntensityTransform(0.1, log=True),
    eval_batch_size=500,
)
dm.prepare_data()
dm.setup("fit")
net = lambda: CNNClassifier(channels=(24, 48), feature_dim=64, activation="relu", pooled_size=2)
kw = {}
if judges:
    kw = dict(
        judge=load_frozen_classifier(judges["hr"], net(), ["photon", "pion"], 24),
        lr_classifier=load_frozen_classifier(judges["lr_cnn"], net(), ["photon", "pion"], 6),
    )
    if judges.get("lr_regressor"):  # the LR impact-point regressor (judges.nets.lr_regressor), two outputs in cm
        reg = CNNClassifier(channels=(24, 48), feature_dim=64, activation="relu", pooled_size=2, num_classes=2)
        kw["lr_regressor"] = load_frozen_regressor(judges["lr_regressor"], reg, "impact_cm", 2, 6)
ev = CaloPhysicsEvaluator(**kw)
tr = dm.transform


def images(b):
    return {"input": tr.inverse(b["input"]), "target": tr.inverse(b["target"])}


ev.prepare((b, images(b)) for b in dm.dataloader("val", False))
with torch.no_grad():
    for b in dm.dataloader("test", False):
        ev.update(b, images(b))
out, _ = ev.results()
print(json.dumps(out, indent=0, sort_keys=True))
