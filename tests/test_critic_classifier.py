"""Critic, classifier net, generator factory, classifier LightningModule and its frozen loader."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lit_sr.domains.calo.nets import calo_generator
from lit_sr.models.classifier import ClassifierModule, load_frozen_classifier
from lit_sr.nets.classifier import CNNClassifier
from lit_sr.nets.critic import Critic
from lit_sr.nets.rrdb import RRDBNet


def test_calo_generator_is_the_study_rrdbnet():
    g = calo_generator()
    ref = RRDBNet(1, 1, 32, 5, 32, "swish", 4, "nearest", "relu")
    assert isinstance(g, RRDBNet)
    assert [tuple(p.shape) for p in g.parameters()] == [tuple(p.shape) for p in ref.parameters()]
    assert len(g.trunk) == 5 and len(g.upsampling) == 2
    assert isinstance(g.output_activation, torch.nn.ReLU)
    assert isinstance(g.upsampling[0].body[0], torch.nn.Upsample)
    out = g(torch.rand(2, 1, 6, 6))
    assert out.shape == (2, 1, 24, 24) and (out >= 0).all()
    small = calo_generator(num_features=8, num_blocks=1)
    assert small(torch.rand(1, 1, 6, 6)).shape == (1, 1, 24, 24)


@pytest.mark.parametrize("size", [24, 64, 128])
def test_critic_sizes_and_structure(size):
    c = Critic(input_size=size)
    convs = [m for m in c.modules() if isinstance(m, torch.nn.Conv2d)]
    dense = [m for m in c.modules() if isinstance(m, torch.nn.Linear)]
    assert len(convs) == 6 and len(dense) == 2
    assert not any(isinstance(m, (torch.nn.Sigmoid, torch.nn.BatchNorm2d)) for m in c.modules())
    assert c(torch.rand(3, 1, size, size)).shape == (3,)


def test_critic_adaptive_and_per_sample_normalisation():
    c = Critic(input_size=None, channels=(8,) * 6)
    x = torch.rand(4, 1, 40, 40)
    assert c(x).shape == (4,)
    c.eval()
    # no batch statistics: one sample's score does not depend on the others
    assert torch.allclose(c(x)[:1], c(x[:1]), atol=1e-6)
    with pytest.raises(ValueError):
        Critic(channels=(8, 8), strides=(1,))


def test_conditional_critic_uses_its_condition():
    """The LR condition is upsampled to the HR grid and joined as channels: scores depend on it."""
    c = Critic(channels=(8,) * 6, hidden=16, input_size=24, condition_channels=1, condition_flux_conserving=True)
    x = torch.rand(3, 1, 24, 24)
    lr = torch.rand(3, 1, 6, 6, requires_grad=True)
    s = c(x, condition=lr)
    assert s.shape == (3,) and not torch.allclose(s, c(x, condition=lr.detach() * 2))
    s.sum().backward()
    assert lr.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="conditional"):
        c(x)
    with pytest.raises(ValueError, match="unconditional"):
        Critic(input_size=24)(x, condition=lr)


def test_classifier_shapes():
    net = CNNClassifier()
    x = torch.rand(5, 1, 24, 24)
    assert net.features(x).shape == (5, 128)
    assert net(x).shape == (5,)
    assert net(torch.rand(2, 1, 64, 64)).shape == (2,)
    assert CNNClassifier(num_classes=3)(x).shape == (5, 3)


def _batches(n=64, seed=0):
    """Photons: one hot crystal; pions: two separated deposits (trivially separable)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 24, 24)
    y = torch.arange(n) % 2
    for i in range(n):
        r, c = torch.randint(6, 18, (2,), generator=g).tolist()
        x[i, 0, r, c] = 1.0
        if y[i]:
            x[i, 0, r, c] = 0.5
            x[i, 0, r - 5, c + 5] = 0.5
    return x, y


def _loader(n, seed):
    x, y = _batches(n, seed)
    ds = [{"target": x[i], "input": x[i, :, ::4, ::4], "label": y[i]} for i in range(n)]
    return DataLoader(ds, batch_size=16)


def _net():
    return CNNClassifier(channels=(8,), feature_dim=16)


def _fit(tmp_path, epochs=15, **kw):
    torch.manual_seed(0)
    m = ClassifierModule(
        _net(), class_names=["photon", "pion"], image_size=24, optimizer=lambda p: torch.optim.Adam(p, lr=1e-2), **kw
    )
    t = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    t.fit(m, _loader(64, 0), _loader(32, 1))
    ckpt = tmp_path / "clf.ckpt"
    t.save_checkpoint(ckpt)
    return m, t, ckpt


def test_classifier_module_trains_and_loads_frozen(tmp_path):
    from lit_sr.data.transforms import IntensityTransform

    m, t, ckpt = _fit(tmp_path, transform=IntensityTransform(20.0))
    assert "val/auc" in t.callback_metrics and "val/acc" in t.callback_metrics
    assert t.callback_metrics["val/auc"] > 0.8
    net = load_frozen_classifier(str(ckpt), _net())
    assert not net.training and all(not p.requires_grad for p in net.parameters())
    x, _ = _batches(8, 2)
    assert torch.allclose(net(x), m.net.eval()(x), atol=1e-6)
    assert net.image_size == 24 and net.input_transform.scale == 20.0 and net.class_names == ["photon", "pion"]
    assert load_frozen_classifier(str(ckpt), _net(), class_names=["photon", "pion"], image_size=24) is not None


def test_multiclass_classifier_learns_three_classes(tmp_path):
    """Three classes: one spot, two spots, a line; softmax cross-entropy and macro one-vs-rest AUC."""
    g = torch.Generator().manual_seed(0)

    def loader(n):
        x = torch.zeros(n, 1, 16, 16)
        y = torch.arange(n) % 3
        for i in range(n):
            r, c = torch.randint(4, 12, (2,), generator=g).tolist()
            if y[i] == 0:
                x[i, 0, r, c] = 1.0
            elif y[i] == 1:
                x[i, 0, r, c] = x[i, 0, r - 3, c + 3] = 1.0
            else:
                x[i, 0, r, c - 3 : c + 3] = 1.0
        return DataLoader([{"target": x[i], "label": y[i]} for i in range(n)], batch_size=16)

    torch.manual_seed(0)
    m = ClassifierModule(
        CNNClassifier(channels=(8,), feature_dim=16, num_classes=3),
        class_names=["a", "b", "c"],
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-2),
    )
    t = L.Trainer(
        max_epochs=15,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    t.fit(m, loader(96), loader(48))
    assert t.callback_metrics["val/auc"] > 0.9 and t.callback_metrics["val/acc"] > 0.6


def test_load_frozen_classifier_errors(tmp_path):
    _, _, ckpt = _fit(tmp_path, epochs=1)
    with pytest.raises(ValueError, match=r"class_names=\['photon', 'pion'\].*expected class_names=\['no_sub'"):
        load_frozen_classifier(str(ckpt), _net(), class_names=["no_sub", "cdm", "vortex"])
    with pytest.raises(ValueError, match="image_size=24.*expected image_size=64"):
        load_frozen_classifier(str(ckpt), _net(), image_size=64)
    # wrong architecture: the configured net is wider than the checkpoint's
    with pytest.raises(ValueError, match=str(ckpt).replace(".", r"\.") + ".*state dict"):
        load_frozen_classifier(str(ckpt), CNNClassifier(channels=(16,), feature_dim=16))
    # a checkpoint of another module (no classifier hparams)
    other = tmp_path / "gan.ckpt"
    torch.save({"state_dict": {"net.conv_first.weight": torch.zeros(1)}, "hyper_parameters": {"scale": 4}}, other)
    with pytest.raises(ValueError, match="gan.ckpt.*ClassifierModule checkpoint"):
        load_frozen_classifier(str(other), _net())
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.ckpt.*cannot read"):
        load_frozen_classifier(str(garbage), _net())
    with pytest.raises(ValueError, match="not found"):
        load_frozen_classifier(str(tmp_path / "missing.ckpt"), _net())
