"""Config precedence, type checks and helpful errors."""

from __future__ import annotations

import pytest

from bench.config import config_from_dict, dump, load_yaml, parse_set, resolve, to_dict
from bench.errors import BenchError


def test_precedence_defaults_preset_file_set(tmp_path):
    base = resolve("lfm")
    assert base.model.backbone.size == "L" and base.train.lr == 2e-4  # paper defaults
    preset = resolve(preset="lfm-tiny")
    assert preset.model.backbone.hidden == 128 and preset.data.res == 32
    file = tmp_path / "c.yaml"
    file.write_text("train:\n  lr: 0.005\ndata:\n  res: 48\n")
    from_file = resolve(preset="lfm-tiny", config_file=str(file))
    assert from_file.train.lr == 0.005 and from_file.data.res == 48
    final = resolve(preset="lfm-tiny", config_file=str(file), overrides=[parse_set("train.lr=1e-4")])
    assert final.train.lr == 1e-4 and final.data.res == 48 and final.preset == "lfm-tiny"


def test_dump_round_trip(tmp_path):
    cfg = resolve(preset="lfm-tiny", overrides=[parse_set("train.betas=[0.9, 0.95]")])
    path = tmp_path / "config.yaml"
    path.write_text(dump(cfg))
    again = config_from_dict(load_yaml(path))
    assert again == cfg and to_dict(again) == to_dict(cfg)
    assert again.train.betas == (0.9, 0.95)


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("train.lrr=1", "Did you mean 'train.lr'"),
        ("model.backbone.depht=3", "Did you mean 'model.backbone.depth'"),
        ("train.lr=fast", "expects float"),
        ("data.res=1.5", "expects int"),
        ("sample.solver=rk4", "Unknown solver"),
    ],
)
def test_bad_overrides_are_one_clear_sentence(assignment, message):
    with pytest.raises(BenchError, match=message):
        resolve(preset="lfm-tiny", overrides=[parse_set(assignment)])


def test_unknown_model_and_preset_suggest_close_match():
    with pytest.raises(BenchError, match="Did you mean 'lfm'"):
        resolve("lfmm")
    with pytest.raises(BenchError, match="Did you mean 'lfm-tiny'"):
        resolve(preset="lfm-tinny")
    with pytest.raises(BenchError, match="belongs to model 'lfm'"):
        resolve("dit", preset="lfm-tiny")


def test_every_preset_resolves_and_is_kebab_case():
    from bench.registry import all_presets

    presets = all_presets()
    assert {"lfm-tiny", "lapflow-tiny", "dit-tiny", "pyramidal-flow-tiny"} <= set(presets)
    for name, (family, _) in presets.items():
        assert name == name.lower() and "/" not in name and "_" not in name
        assert name.startswith(family + "-")
        assert resolve(preset=name).family == family
