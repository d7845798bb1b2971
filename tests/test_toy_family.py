"""A family added at run time (its own package in a temporary folder, one `register` call) gets the contract
tests, a report row label and order, a plot colour and a mini-benchmark entry without touching any other file."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import registry
from bench.config import resolve
from bench.registry import Family
from bench.report.plots import method_color
from bench.report.select import method_label, method_order
from bench.reproduce.mini import model_presets
from tests import test_contract

CONFIG = """
from dataclasses import dataclass, field

from models.sizes import BackboneConfig


@dataclass(frozen=True)
class ToyConfig:
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig("S", 4, depth=2, hidden=32, heads=2))
    sigma_min: float = 0.0
    time_scale: float = 1.0
    class_dropout: float = 0.1


TINY = {"dataset": "synthetic", "res": 16, "autoencoder": "pixel"}
PRESETS = {
    "toy-tiny": {"data": TINY, "sample": {"solver": "euler", "steps": 4}},
    "toy-celebahq128-mini": {"data": {"dataset": "celebahq", "res": 128, "autoencoder": "taesd"}},
}
"""
MODEL = """
from baselines.lfm.model import LatentFlowMatching


def build(cfg, latent_shape, num_classes=0):
    return LatentFlowMatching(cfg, latent_shape, num_classes)  # a rectified flow on the shared DiT
"""
CONTRACT = [
    lambda: test_contract.test_loss_is_finite_per_sample("toy"),
    lambda: test_contract.test_gradients_reach_every_parameter("toy", 0),
    lambda: test_contract.test_gradients_reach_every_parameter("toy", 3),
    lambda: test_contract.test_sampling_is_seed_deterministic_and_batch_independent("toy"),
    lambda: test_contract.test_sample_reports_nfe_matching_flop_trace("toy"),
    lambda: test_contract.test_conditional_sampling_with_guidance("toy"),
]


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Family]:
    package = tmp_path / "toyfamily"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "config.py").write_text(textwrap.dedent(CONFIG))
    (package / "model.py").write_text(textwrap.dedent(MODEL))
    monkeypatch.syspath_prepend(str(tmp_path))
    family = Family(
        "toy",
        "Toy Flow",
        builder="toyfamily.model:build",
        config="toyfamily.config:ToyConfig",
        presets="toyfamily.config:PRESETS",
        order=3,
        color="tab:pink",
        mini_runs={"toy": "toy-celebahq128-mini"},
    )
    registry.register(family)
    try:
        yield family
    finally:
        registry.unregister("toy")


def test_a_registered_family_passes_the_contract_tests(toy: Family) -> None:
    assert "toy" in registry.MODELS.names() and resolve(preset="toy-tiny").family == "toy"
    for check in CONTRACT:
        check()


def test_a_registered_family_gets_report_label_order_colour_and_mini_entry(toy: Family) -> None:
    assert method_label("toy") == "Toy Flow" and method_color("toy") == "tab:pink"
    assert method_order("lfm") < method_order("toy") < method_order("lapflow")
    assert registry.mini_headline_runs()[-1] == "toy" and "toy" in registry.mini_default_runs()
    assert model_presets(["toy"]) == {"toy": "toy-celebahq128-mini"}


def test_a_family_name_is_registered_once(toy: Family) -> None:
    with pytest.raises(Exception, match="registered already"):
        registry.register(toy)
