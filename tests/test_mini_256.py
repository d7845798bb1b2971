"""The 256 px mini benchmark (issue #14, item 5): a CelebA-HQ carry at 256 px trains `<family>-celebahq256-mini`
(the 128 px mini recipe on TAESD latents 4x32x32) under the same run names, so its tables line up with 128 px."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.config import resolve
from bench.errors import BenchError
from bench.registry import mini_headline_runs, mini_models
from bench.reproduce.benchmark import mini_dataset
from bench.reproduce.mini import Carry, model_presets

FAMILIES = ("lapflow", "lfm", "pyramidal-flow", "dit")


def carry(dataset: str, res: int) -> Carry:
    return Carry(Path("/nonexistent/carry"), {"dataset": dataset, "res": res})


@pytest.mark.parametrize(
    ("dataset", "res", "asked", "key"),
    [
        ("celebahq", 256, "", "celebahq256"),
        ("celebahq", 256, "celebahq", "celebahq256"),
        ("celebahq", 128, "", "celebahq"),
        ("imagenette", 128, "", "imagenette"),
        ("imagenette", 128, "imagenette", "imagenette"),
        ("celebahq", 64, "", "celebahq"),  # no 64 px set: the 128 px presets train on the carry's data
    ],
)
def test_the_carry_picks_the_run_set_of_its_data_set_and_resolution(dataset, res, asked, key) -> None:
    assert mini_dataset(carry(dataset, res), asked) == key


def test_a_dataset_that_is_not_the_carrys_is_refused() -> None:
    with pytest.raises(BenchError, match="does not match the carry"):
        mini_dataset(carry("celebahq", 256), "imagenette")


def test_256_runs_are_the_128_recipe_at_256_px_under_the_same_names() -> None:
    runs = model_presets(list(FAMILIES), mini_dataset(carry("celebahq", 256), ""))
    assert runs == {f: f"{f}-celebahq256-mini" for f in FAMILIES}
    assert mini_headline_runs("celebahq256") == mini_headline_runs()
    for family, preset in runs.items():
        at_256, at_128 = resolve(preset=preset), resolve(preset=mini_models()[family])
        assert (at_256.data.res, at_128.data.res) == (256, 128)
        assert (at_256.model, at_256.train, at_256.sample) == (at_128.model, at_128.train, at_128.sample)
        assert (at_256.data.dataset, at_256.data.autoencoder) == ("celebahq", "taesd")
