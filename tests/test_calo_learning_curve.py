"""The learning-curve command on tiny N: it runs, writes its table and plot, and its classifiers see only
the train split; and the impact-point term of the calorimeter GAN module."""

import pytest
import torch

from lit_sr.domains.calo import learning_curve as lc
from lit_sr.domains.calo.data import CaloDataModule
from lit_sr.domains.calo.nets import calo_generator


def test_learning_curve_tiny_trains_on_the_train_split_only(calo_data_dir, tmp_path):
    dm = CaloDataModule(data_dir=str(calo_data_dir), n_per_class=300, augment=False, eval_batch_size=64)
    dm.prepare_data()
    dm.setup("fit")
    gen = calo_generator(num_features=8, num_blocks=1, growth_channels=8, input_skip=True).eval()
    train = lc.split_events(dm, "train", gen)
    test = lc.split_events(dm, "test", gen)
    rows = lc.learning_curves(train, test, dm.transform, n_list=(20, 40), seeds=(0, 1), steps=5, log=lambda *_: None)
    assert {(r["n"], r["method"]) for r in rows} == {(n, m) for n in (20, 40) for m in ("lr", "sr", "hr", "lr_shape")}
    train_rows = set(dm.splits["train"].indices.tolist())
    test_rows = set(dm.splits["test"].indices.tolist())
    assert set(test["index"].tolist()) == test_rows
    for r in rows:
        seen = set(r["train_index"].tolist())
        assert len(seen) == 2 * r["n"] and seen <= train_rows and not seen & test_rows
        assert 0.0 <= r["auc"] <= 1.0 and r["rejection"] >= 1.0
    # another seed draws other events; N photons and N pions each
    first = [r for r in rows if r["n"] == 20 and r["method"] == "lr"]
    assert set(first[0]["train_index"].tolist()) != set(first[1]["train_index"].tolist())
    text = lc.table(rows)
    assert text.count("\n| 20 |") == 1 and "CNN on SR" in text and "± " in text
    with pytest.raises(ValueError, match="per class but the train split has"):
        lc.pick(train["label"], 10_000, 0)


def test_learning_curve_command_writes_table_and_plot(calo_data_dir, tmp_path, monkeypatch):
    """``main`` on a (stand-in) finished run: the data module and generator come from load_run."""
    dm = CaloDataModule(data_dir=str(calo_data_dir), n_per_class=300, augment=True, eval_batch_size=64)
    gen = calo_generator(num_features=8, num_blocks=1, growth_channels=8, input_skip=True)

    class Run:
        eval_net = gen.eval()

    monkeypatch.setattr("lit_sr.inference.run_folder.load_run", lambda run: (Run(), dm))
    lc.main(
        ["--run", str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--n", "16", "--seeds", "0", "--steps", "3"]
    )
    assert dm.augment is False  # the curves are made without training-time augmentation
    assert (tmp_path / "out" / "calo_learning_curve.png").stat().st_size > 0
    assert "| 16 |" in (tmp_path / "out" / "calo_learning_curve.md").read_text()


def test_impact_term_pulls_the_barycentre_to_the_truth_and_is_zero_there():
    """CaloGANSRModule.impact_loss: 0 when the SR barycentre is the true impact; its gradient moves the
    SR energy towards the impact point; without impact_cm (a user's file) no term."""
    from lit_sr.data.transforms import IntensityTransform
    from lit_sr.domains.calo.metrics import barycentre, pixel_centres
    from lit_sr.domains.calo.model import CaloGANSRModule
    from lit_sr.nets.critic import Critic

    tr = IntensityTransform(20.0)
    m = CaloGANSRModule(
        net=calo_generator(num_features=8, num_blocks=1, growth_channels=8),
        critic=Critic(channels=(8,) * 6, hidden=16, input_size=24),
        scale=4,
        transform=tr,
        physical_range=(0.0, 20.0),
        impact_weight=1.0,
    )
    c = pixel_centres(24)
    sr_gev = torch.zeros(1, 1, 24, 24)
    sr_gev[0, 0, 10, 10] = sr_gev[0, 0, 10, 12] = 5.0
    at = barycentre(sr_gev)
    assert m.impact_loss({"impact_cm": at}, tr(sr_gev)).item() == pytest.approx(0.0, abs=1e-10)
    truth = torch.tensor([[float(c[12]), float(c[10])]])  # the right-hand deposit
    sr = tr(sr_gev).requires_grad_(True)
    loss = m.impact_loss({"impact_cm": truth}, sr)
    assert loss.item() == pytest.approx(float((at - truth).pow(2).sum()), rel=1e-5)
    loss.backward()
    # lowering the loss = moving energy from the left deposit to the right one
    assert sr.grad[0, 0, 10, 12] < 0 < sr.grad[0, 0, 10, 10]
    assert m.impact_loss({}, sr) is None
    # in the adversarial phase the term is part of the pixel loss: weight impact_weight x pixel_weight
    m.w_pix = 1e-3
    terms = m.generator_terms({"target": tr(sr_gev), "impact_cm": truth}, tr(sr_gev))
    assert terms["impact"][0] == pytest.approx(1e-3)
    m.w_pix = 0.0
    assert "impact" not in m.generator_terms({"target": tr(sr_gev), "impact_cm": truth}, tr(sr_gev))


def test_n_above_the_train_split_becomes_the_smaller_class_count():
    from lit_sr.domains.calo.learning_curve import cap_to_split

    labels = torch.tensor([0] * 7 + [1] * 9)
    assert cap_to_split([2, 4, 8, 16], labels) == [2, 4, 7]
    assert cap_to_split([2, 4], labels) == [2, 4]
