"""The class-conditional mini benchmark on the CPU: the linear probe against closed forms, and the whole pipeline
(prepare real Imagenette JPEGs -> train tiny models -> class-balanced samples, guidance sweep, class accuracy ->
report) on a handful of images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.cli.app import app
from bench.config import resolve
from bench.errors import BenchError
from bench.registry import mini_headline_runs, mini_models
from bench.reproduce.mini import MINI_METRICS, model_presets
from bench.reproduce.probe import class_accuracy, fit_probe
from tests.conftest import SHARED_DATA, requires_shared_data
from tests.test_reproduce_mini import TINY, cheap_fid, invoke, needs_taesd, runner  # noqa: F401


def clusters(n: int, k: int, dim: int, seed: int, spread: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=torch.Generator().manual_seed(99)) * 3
    labels = torch.arange(n) % k
    return centres[labels] + spread * torch.randn(n, dim, generator=g), labels


def test_probe_reaches_the_regularised_optimum_deterministically() -> None:
    x, y = clusters(60, 3, 8, 0, spread=2.0)  # overlapping classes: the optimum is interior
    probe = fit_probe(x, y, 3, l2=1e-2)
    # stationarity of mean CE + l2/2 |W|^2 on the standardised features: X^T (P - Y) / n + l2 W = 0, sum(P - Y) = 0
    xs = (x.double() - probe.mean) / probe.scale
    p = torch.softmax(xs @ probe.weight + probe.bias, dim=1)
    residual = p - torch.nn.functional.one_hot(y, 3).double()
    assert torch.allclose(xs.T @ residual / len(x) + 1e-2 * probe.weight, torch.zeros_like(probe.weight), atol=1e-7)
    assert torch.allclose(residual.sum(0), torch.zeros(3, dtype=torch.float64), atol=1e-6)
    again = fit_probe(x, y, 3, l2=1e-2)
    assert torch.equal(again.weight, probe.weight) and torch.equal(again.bias, probe.bias)  # nothing random
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    shuffled = fit_probe(x[order], y[order], 3, l2=1e-2)  # the objective is a mean over rows: order-free
    assert torch.allclose(shuffled.weight, probe.weight, atol=1e-6)
    separable, labels = clusters(40, 4, 16, 2)
    fitted = fit_probe(separable, labels, 4)
    held_out, held_labels = clusters(20, 4, 16, 3)
    assert fitted.train_accuracy == 1.0 and class_accuracy(fitted.predict(held_out), held_labels, 4).mean == 1.0
    with pytest.raises(BenchError, match="each at least once"):
        fit_probe(separable[labels < 3], labels[labels < 3], 4)


def test_class_accuracy_is_the_mean_of_per_class_fractions() -> None:
    acc = class_accuracy(torch.tensor([0, 1, 1, 1, 0, 2]), torch.tensor([0, 0, 1, 1, 1, 2]), 3)
    assert acc.per_class == pytest.approx((0.5, 2 / 3, 1.0)) and acc.mean == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert acc.counts == (2, 3, 1)
    with pytest.raises(BenchError, match="samples of every class"):
        class_accuracy(torch.tensor([0, 1]), torch.tensor([0, 1]), 3)


def test_imagenette_presets_match_the_celebahq_mini_recipe_with_classes() -> None:
    assert mini_headline_runs("imagenette") == mini_headline_runs()  # same run names: tables line up
    for run, preset in mini_models("imagenette").items():
        cfg, base = resolve(preset=preset), resolve(preset=mini_models()[run.removesuffix("-cfg3")])
        assert (cfg.data.dataset, cfg.data.res, cfg.data.num_classes) == ("imagenette", 128, 10)
        assert cfg.model.backbone == base.model.backbone and cfg.train == base.train and cfg.model.class_dropout == 0.1
        assert cfg.sample.steps == base.sample.steps and cfg.sample.guidance == 1.5
    assert resolve(preset=mini_models("imagenette")["dit"]).model.guidance_channels == 0  # all channels
    assert resolve(preset=mini_models("imagenette")["dit-cfg3"]).model.guidance_channels == 3
    assert model_presets(["lfm"], "imagenette") == {"lfm": "lfm-imagenette128-mini"}
    with pytest.raises(BenchError, match="Did you mean 'imagenette'"):
        model_presets(["lfm"], "imagenete")


def small_imagenette(root: Path, per_class: dict[str, int]) -> Path:
    """A copy of a few Imagenette JPEGs per class and split (the real layout and classes.tsv)."""
    src, dest = SHARED_DATA / "imagenette-128", root / "imagenette-small"
    dest.mkdir(parents=True)
    shutil.copyfile(src / "classes.tsv", dest / "classes.tsv")
    for split, n in per_class.items():
        for folder in sorted((src / split).iterdir()):
            (dest / split / folder.name).mkdir(parents=True)
            for f in sorted(folder.glob("*.jpg"))[:n]:
                shutil.copyfile(f, dest / split / folder.name / f.name)
    return dest


@needs_taesd
@requires_shared_data("imagenette-128")
def test_class_conditional_pipeline_prepares_trains_scores_and_reports(
    tmp_path: Path,
    cheap_fid: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bench.report.build import generate
    from bench.results import load_records

    data, carry, ref = small_imagenette(tmp_path, {"train": 2, "val": 1}), tmp_path / "carry", tmp_path / "ref"
    monkeypatch.setattr("bench.reproduce.prepare.MAX_CARRY_BYTES", 2**20)  # this carry is ~5 MiB: over it
    prepared = invoke("reproduce", "mini-prepare", "--dataset", "imagenette", "--path", data, "--res", 64,
                      "--backend", "tf", "--no-ref-stats", "--features", "--val-split", "val", "--features-dir", ref,
                      "--out", carry)  # fmt: skip
    # Over one command's carry: the folder is written whole, the features follow, and the output says how to split.
    assert "over the 1 MiB one GPU command carries" in prepared.output and "`split -n" in prepared.output
    manifest = json.loads((carry / "carry.json").read_text())
    nothing = runner.invoke(app, ["reproduce", "mini-prepare", "--no-latents", "--out", str(tmp_path / "none")])
    assert nothing.exit_code == 1 and "nothing to prepare" in nothing.output and not (tmp_path / "none").exists()
    assert manifest["count"] == 20 and len(manifest["class_names"]) == 10
    val = ref / "imagenette64-val-tf-features.safetensors"
    assert val.is_file() and (ref / "imagenette64-tf-features.safetensors").is_file()
    results = tmp_path / "results"
    sets = [a for s in TINY for a in ("--set", s)] + ["--set", "sample.steps=2"]
    common = ["--real-features", ref / "imagenette64-tf-features.safetensors", "--carry", carry, "--seeds", "0",
              "--images", 16, "--points", 2, "--batch-size", 10, "--bootstrap", 2, "--guidance", "1,2",
              "--work-dir", tmp_path / "runs", "--out", results, *sets]  # fmt: skip
    bad = runner.invoke(app, ["reproduce", "mini", "--models", "lfm", "--num-samples", "15", *map(str, common)])
    assert bad.exit_code == 1 and "multiple of the 10 classes" in bad.output and not results.exists()
    invoke("reproduce", "mini", "--models", "lapflow,lfm", "--num-samples", 20, *common)
    records = load_records(results)
    metrics = (*MINI_METRICS, "class_accuracy")
    # per run: point 0 at the preset's w = 1.5; the last point at 1.5 and the sweep's 1 and 2
    assert len(records) == 2 * 4 * len(metrics)
    keys = {(r.extra["run"], r.extra["point"], r.extra["guidance"], r.metric) for r in records}
    assert len(keys) == len(records) and ("lfm", 0, 1.0, "fid") not in keys and ("lfm", 1, 1.0, "fid") in keys
    for r in records:
        w = r.extra["guidance"]
        assert r.protocol["guidance"] == r.sampling["guidance"] == r.config["sample"]["guidance"] == w
        assert r.dataset == "imagenette" and r.preset.endswith("-imagenette128-mini")
    accuracy = [r for r in records if r.metric == "class_accuracy"]
    assert all(0 <= r.value <= 1 and r.extra["class_counts"] == [2] * 10 for r in accuracy)
    assert all(r.value == pytest.approx(np.mean(r.extra["class_accuracy_per_class"])) for r in accuracy)
    assert len({r.extra["probe_val_accuracy"] for r in accuracy}) == 1  # one probe per command
    assert accuracy[0].protocol["name"] == "class-accuracy-probe-tf-20-imagenette64"
    grids = results / "mini" / "imagenette64" / "grids" / "classes"
    index = json.loads((grids / "lfm-seed0-16.json").read_text())
    assert index["classes"] == manifest["class_names"] and index["guidance"] == 1.5 and index["columns"] == 4
    # Row labels: classes.tsv's readable names, carried beside the wnids (n01440764 is the tench).
    assert index["titles"] == manifest["class_titles"] and manifest["class_titles"][0] == "tench"
    assert manifest["class_names"][0] == "n01440764" and len(set(manifest["class_titles"])) == 10

    report = generate(results, tmp_path / "no-runs", Path(__file__).parents[1] / "results" / "paper")
    text = report.files["tables.md"].decode()
    assert "### imagenette, 64 px, class-conditional" in text and "| FID w=1 | FID w=1.5 | FID w=2 |" in text
    assert "- LapFlow < LFM with CFG w=1.5: " in text and "not measured" not in text.split("LFM with CFG")[1][:40]
    assert "- Pyramidal Flow < DiT: not measured" in text
    assert {"plots/mini-imagenette64-fid-vs-guidance.png", "samples/mini-imagenette64-classes.png"} <= set(report.files)
    assert "### imagenette, 64 px\n" not in text  # not also shown as an unconditional section
    from PIL import Image

    with Image.open(__import__("io").BytesIO(report.files["samples/mini-imagenette64-classes.png"])) as grid:
        assert grid.height > 10 * 64 and grid.width > 2 * 4 * 64  # 10 class rows, two column blocks, labels
