"""The package's shape: import layers (generic code never imports a domain), swappable net configs,
data sizes interpolated from the data config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TINY, compose_config
from hydra.utils import instantiate


def _contracts() -> list[dict]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_import_contracts_hold():
    """lint-imports: entry -> domains -> models -> inference/callbacks -> data/nets/losses/metrics -> utils,
    no domain imports another, lit_sr does not import reports; every contract of pyproject.toml is kept."""
    exe = Path(sys.executable).with_name("lint-imports")
    res = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    n = len(_contracts())
    assert n >= 3 and f"Contracts: {n} kept, 0 broken." in res.stdout, res.stdout


def test_independence_contract_lists_every_domain_folder():
    """A new folder under lit_sr/domains/ must join the independence contract, or it could import others
    (a folder without __init__.py is an importable namespace package: it counts too); no stale entries."""
    listed = {m for c in _contracts() if c["type"] == "independence" for m in c["modules"]}
    domains = ROOT / "lit_sr" / "domains"
    folders = {
        f"lit_sr.domains.{p.name}"
        for p in domains.iterdir()
        if p.is_dir() and p.name.isidentifier() and any(p.rglob("*.py"))
    }
    assert len(folders) >= 5 and folders <= listed, (
        f"add {sorted(folders - listed)} to the independence contract in pyproject.toml"
    )
    assert listed <= folders, f"{sorted(listed - folders)}: in the independence contract but no folder"


def test_library_never_imports_the_reports_layer():
    """reports/ sits above lit_sr: a forbidden contract covers every top-level package beside lit_sr, and no
    string lint-imports cannot follow (importlib, a config _target_) names a reports module."""
    import re

    tops = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"lit_sr"}
    assert "reports" in tops
    forbidden = {
        m
        for c in _contracts()
        if c["type"] == "forbidden" and "lit_sr" in c["source_modules"]
        for m in c["forbidden_modules"]
    }
    assert tops <= forbidden, f"add {sorted(tops - forbidden)} to the forbidden contract of lit_sr in pyproject.toml"
    names = re.compile(r"(^\s*(from|import)\s+reports\b)|([\"']reports\.\w)|(_target_:\s*reports\.)", re.M)
    offenders = [
        str(p.relative_to(ROOT))
        for p in [*(ROOT / "lit_sr").rglob("*.py"), *(ROOT / "conf").rglob("*.yaml")]
        if names.search(p.read_text())
    ]
    assert not offenders, f"{offenders} name a reports module; the library and its configs must not"


def test_every_domain_lives_in_one_folder():
    generic = ["nets", "losses", "metrics", "models", "data", "inference", "callbacks", "utils"]
    for name in generic:
        for path in (ROOT / "lit_sr" / name).glob("*.py"):
            text = path.read_text()
            # also catches imports lint-imports cannot see (importlib strings, _target_ paths)
            assert "lit_sr.domains" not in text, f"{path} names a domain module"


def test_calo_srgan_generator_swaps_with_model_net(tmp_path):
    """model/net=rrdb replaces the calorimeter generator with ESRGAN's RRDBNet, no stale keys."""
    from lit_sr.nets.rrdb import RRDBNet

    cfg = compose_config(
        ["experiment=calo_srgan", *TINY, "model/net=rrdb", "model.net.num_features=8", "model.net.growth_channels=8"],
        tmp_path,
    )
    assert cfg.model.net._target_ == "lit_sr.nets.rrdb.RRDBNet"
    net = instantiate(cfg.model.net)
    assert type(net) is RRDBNet and len(net.trunk) == 2 and net.input_skip  # the experiment's overrides apply
    assert net.scale == cfg.data.scale == 4
    default = compose_config(["experiment=calo_srgan", *TINY], tmp_path)
    assert default.model.net._target_ == "lit_sr.domains.calo.nets.calo_generator"


@pytest.mark.parametrize("experiment", ["calo_srgan", "calo_rrdb"])
def test_sizes_and_data_range_follow_the_data_config(experiment, tmp_path):
    import math

    cfg = compose_config([f"experiment={experiment}", *TINY, "data.energy_gev=50"], tmp_path)
    assert cfg.model.scale == cfg.data.scale == cfg.data.hr_pixels // cfg.data.lr_pixels
    assert cfg.model.data_range is None and list(cfg.model.physical_range) == [0.0, 50.0]
    if experiment == "calo_srgan":
        assert cfg.model.critic.input_size == cfg.data.hr_pixels
    model_cfg = cfg.model
    if model_cfg.get("perceptual_net") is not None:
        return  # needs a classifier checkpoint; the data range is the same computation
    model = instantiate(model_cfg, _convert_="all")
    # log1p(E / 0.1 GeV) at the beam energy: the model-space range PSNR/SSIM use
    assert model.data_range == pytest.approx(math.log1p(50.0 / 0.1), rel=1e-6)


def test_code_is_ruff_formatted_and_lint_clean():
    """ruff (pinned in the dev extra, configured in pyproject.toml): format check and lint."""
    exe = Path(sys.executable).with_name("ruff")
    if not exe.exists():
        pytest.skip("ruff is not installed in this environment (pip install -e '.[dev]')")
    for args in (["format", "--check"], ["check"]):
        res = subprocess.run([str(exe), *args], cwd=ROOT, capture_output=True, text=True)
        assert res.returncode == 0, f"ruff {' '.join(args)}:\n{res.stdout}{res.stderr}"
