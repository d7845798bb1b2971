"""The learning-rate ablation (issue #14 item 8): `<lapflow|lfm>-celebahq128-mini-lr<rate>` differ from their mini
preset only in train.lr (half and twice the recipe's), and their axis holds both families at the three rates."""

from __future__ import annotations

import dataclasses

import pytest

from bench.config import resolve
from bench.registry import mini_ablations, mini_models
from models.presets_common import MINI_LR_ABLATION


@pytest.mark.parametrize("family", ["lapflow", "lfm"])
@pytest.mark.parametrize(("suffix", "lr"), sorted(MINI_LR_ABLATION.items()))
def test_lr_preset_is_its_mini_preset_at_another_rate(family: str, suffix: str, lr: float) -> None:
    base, other = resolve(preset=mini_models()[family]), resolve(preset=mini_models()[f"{family}-{suffix}"])
    assert base.train.lr == 2e-4 and other.train.lr == lr and lr in (base.train.lr / 2, base.train.lr * 2)
    assert dataclasses.replace(other.train, lr=base.train.lr) == base.train
    assert (other.model, other.data, other.sample) == (base.model, base.data, base.sample)


def test_learning_rate_axis_holds_both_families_at_three_rates() -> None:
    rows = mini_ablations()["learning_rate"]
    assert [run for run, _ in rows] == [
        f"{family}{suffix}" for family in ("lapflow", "lfm") for suffix in ("-lr1e-4", "", "-lr4e-4")
    ]
    rates = [resolve(preset=mini_models()[run]).train.lr for run, _ in rows]
    assert rates == [1e-4, 2e-4, 4e-4] * 2 and all(
        f"{rate:.0e}".replace("e-0", "e-") in label for (_, label), rate in zip(rows, rates, strict=True)
    )
