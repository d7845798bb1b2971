"""Class-conditional ImageNet-style benchmark (issue #7): presets of every family (paper XL/2 and B/2 at 256 px,
tiny Imagenette at 64 px), other class-folder layouts through `bench data prepare`, cached latents with labels,
reference statistics of the class-folder data set, and class grids (function and `bench sample --class-grid`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from bench.autoencoders import latent_shape, load_autoencoder
from bench.config import DataConfig, parse_set, resolve, to_dict
from bench.data import load_training_data
from bench.errors import BenchError
from bench.paths import cache_dir
from bench.registry import MODELS
from bench.sample import class_grid, generate
from tests.conftest import SHARED_WEIGHTS
from tests.test_data import write_images

FAMILIES = MODELS.names()
runner = CliRunner()

IMAGENET_DATA = {"dataset": "imagenet", "res": 256, "autoencoder": "sd-vae-ft-ema", "num_classes": 1000}
PAPER_GUIDANCE = {"XL": 1.0, "B": 1.5}  # METHODS.md section 5: XL/2 FIDs without guidance, B/2 with CFG 1.5
LABEL_DROPOUT = 0.1  # METHODS.md: label dropout 0.1 for CFG


def label_embedders(model: torch.nn.Module) -> list[torch.nn.Module]:
    from models.layers import LabelEmbedder

    return [m for m in model.modules() if isinstance(m, LabelEmbedder)]


# ----------------------------------------------------------------------------------------------------------------
# presets


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("size", ["XL", "B"])
def test_paper_imagenet_presets_share_one_setting(family: str, size: str) -> None:
    cfg = resolve(preset=f"{family}-imagenet256-{size.lower()}2")
    assert (cfg.model.backbone.size, cfg.model.backbone.patch) == (size, 2)
    assert {k: getattr(cfg.data, k) for k in IMAGENET_DATA} == IMAGENET_DATA
    assert (cfg.train.batch_size, cfg.train.lr, cfg.train.weight_decay) == (256, 1e-4, 0.0)
    assert cfg.sample.guidance == PAPER_GUIDANCE[size] and cfg.model.class_dropout == LABEL_DROPOUT
    assert latent_shape(cfg.data.autoencoder, cfg.data.res) == (4, 32, 32)  # 256 tokens at patch 2


def test_lapflow_imagenet_presets_change_only_the_method() -> None:
    for size in ("xl2", "b2"):
        lap, lfm = (
            to_dict(resolve(preset=f"lapflow-imagenet256-{size}")),
            to_dict(resolve(preset=f"lfm-imagenet256-{size}")),
        )
        assert all(lap[k] == lfm[k] for k in ("data", "train", "sample"))
        assert lap["model"]["backbone"] == lfm["model"]["backbone"] and lap["model"]["num_scales"] == 2


@pytest.mark.parametrize("family", FAMILIES)
def test_imagenette_tiny_is_the_tiny_preset_on_imagenette(family: str) -> None:
    tiny, nette = resolve(preset=f"{family}-tiny"), resolve(preset=f"{family}-imagenette-tiny")
    assert (nette.data.dataset, nette.data.res, nette.data.autoencoder, nette.data.num_classes) == (
        "imagenet",
        64,
        "taesd",
        10,
    )
    assert nette.model == dataclasses.replace(tiny.model, backbone=dataclasses.replace(tiny.model.backbone, patch=2))
    assert nette.sample == dataclasses.replace(tiny.sample, guidance=2.0)
    changed = {k for k, v in to_dict(nette.train).items() if to_dict(tiny.train)[k] != v}
    assert changed <= {"total_images", "ema_decay", "grid_size"}
    assert nette.train.total_images // nette.train.batch_size >= 1000  # enough optimiser steps to learn something


@pytest.mark.parametrize("family", FAMILIES)
def test_imagenette_tiny_model_has_a_null_class_and_label_dropout(family: str) -> None:
    cfg = resolve(preset=f"{family}-imagenette-tiny")
    shape = latent_shape(cfg.data.autoencoder, cfg.data.res)
    assert shape == (4, 8, 8)
    torch.manual_seed(0)
    model = MODELS.load(family)(cfg.model, shape, cfg.data.num_classes).train()
    embedders = label_embedders(model)
    assert embedders and all(e.table.num_embeddings == 11 and e.dropout == LABEL_DROPOUT for e in embedders)
    loss = model.loss(torch.randn(4, *shape), torch.tensor([0, 3, 9, 9]))
    assert loss.shape == (4,) and torch.isfinite(loss).all()


# ----------------------------------------------------------------------------------------------------------------
# data: layouts, labels, latents, reference statistics


def write_jpegs(folder: Path, count: int, suffix: str, seed: int) -> None:
    """`count` small JPEGs with the given file suffix (e.g. '.JPEG', Tiny ImageNet's)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}{suffix}", format="JPEG")


def test_tiny_imagenet_layout_and_top_level_class_folders_prepare(tmp_path: Path) -> None:
    from bench.cli.data import app

    nested = tmp_path / "tiny-imagenet"
    for k, wnid in enumerate(("n01443537", "n01629819")):
        write_jpegs(nested / "train" / wnid / "images", 2 + k, ".JPEG", k)
        (nested / "train" / wnid / f"{wnid}_boxes.txt").write_text("img0.JPEG\t0\t0\t8\t8\n")  # not an image: ignored
    result = runner.invoke(app, ["prepare", "imagenet", "--res", "16", "--path", str(nested), "--num-classes", "2"])
    assert result.exit_code == 0, result.output + str(result.exception)
    assert "Prepared 5 images" in result.output and "Classes: 2." in result.output
    labels = np.load(next(cache_dir().glob("imagenet-16-*/labels.npy")))
    assert labels.tolist() == [0, 0, 1, 1, 1]

    flat = tmp_path / "flat"  # class folders at the top: the documented `--split ""`
    write_jpegs(flat / "n01", 1, ".jpg", 5)
    write_jpegs(flat / "n02", 1, ".jpeg", 6)
    result = runner.invoke(app, ["prepare", "imagenet", "--res", "16", "--path", str(flat)])
    assert result.exit_code != 0 and "no split folder 'train'" in str(result.exception)
    result = runner.invoke(app, ["prepare", "imagenet", "--res", "16", "--path", str(flat), "--split", ""])
    assert result.exit_code == 0 and "Prepared 2 images" in result.output and "Classes: 2." in result.output


@pytest.mark.skipif(not (SHARED_WEIGHTS / "taesd").is_dir(), reason="no TAESD weights")
def test_cached_latents_keep_the_labels_in_order(tmp_path: Path) -> None:
    for k, wnid in enumerate(("n03", "n01")):
        write_images(tmp_path / "inet" / "train" / wnid, 2 + k, size=(24, 20), seed=k)
    cfg = DataConfig(dataset="imagenet", res=16, autoencoder="taesd", path=str(tmp_path / "inet"), num_classes=2)
    data = load_training_data(cfg, None, tmp_path / "cache", progress=False)
    assert data.latents.shape == (5, 4, 2, 2) and data.flipped is not None
    assert data.meta["class_names"] == ["n01", "n03"] and data.labels.tolist() == [0, 0, 0, 1, 1]
    ae = load_autoencoder("taesd")
    images = torch.from_numpy(np.load(next((tmp_path / "cache").glob("imagenet-16-*/images.npy"))))
    with torch.inference_mode():
        direct = ae.encode(images.float() / 127.5 - 1).float()
    assert torch.allclose(data.latents, direct, atol=2e-2 * float(direct.abs().max()))  # float16 storage
    x, y = data.batch(torch.tensor([4, 0]), torch.tensor([True, False]))
    assert y.tolist() == [1, 0] and torch.equal(x[0], data.flipped[4]) and torch.equal(x[1], data.latents[0])


def test_reference_statistics_of_a_class_folder_data_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`bench eval ref-stats imagenet`: every image of every class, labels ignored (a stand-in feature network)."""
    from bench.cli.eval import app
    from bench.metrics import fid

    for k, wnid in enumerate(("n01", "n02", "n03")):
        write_images(tmp_path / "inet" / "train" / wnid, 2, size=(20, 20), seed=k)
    projection = np.random.default_rng(0).standard_normal((3, 2048))
    monkeypatch.setattr(
        fid, "make_extractor", lambda *a, **k: lambda x: x.double().mean(dim=(1, 2)).numpy() @ projection
    )
    result = runner.invoke(
        app, ["ref-stats", "imagenet", "--res", "16", "--path", str(tmp_path / "inet"), "--backend", "tf"]
    )
    assert result.exit_code == 0, result.output + str(result.exception)
    stats = fid.resolve_ref("imagenet16", "tf")
    assert stats.n == 6 and stats.meta["dataset"] == "imagenet" and stats.meta["res"] == 16


# ----------------------------------------------------------------------------------------------------------------
# class grids


def tiny_conditional(num_classes: int = 3) -> tuple[torch.nn.Module, object]:
    cfg = resolve(preset="lfm-tiny", overrides=[parse_set("data.res=16"), parse_set("sample.steps=3")])
    torch.manual_seed(0)
    model = MODELS.load("lfm")(cfg.model, (3, 16, 16), num_classes)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model.eval(), dataclasses.replace(cfg.sample, guidance=2.0)


def test_class_grid_rows_are_classes_and_columns_share_a_seed() -> None:
    model, spec = tiny_conditional()
    ae = load_autoencoder("pixel")
    grid = np.asarray(class_grid(model, [5, 9], spec, ae, classes=[2, 0]))
    assert grid.shape == (2 * 16, 2 * 16, 3)
    (one,) = generate(model, [9], spec, autoencoder=ae, labels=torch.tensor([2]))
    assert np.array_equal(grid[:16, 16:], one.images[0].numpy())  # row 0 = class 2, column 1 = seed 9
    assert not np.array_equal(grid[:16, 16:], grid[16:, 16:])  # same seed, other class
    with pytest.raises(BenchError, match=r"0\.\.2"):
        class_grid(model, [0], spec, ae, classes=[3])
    unconditional, _ = tiny_conditional(num_classes=0)
    with pytest.raises(BenchError, match="class-conditional"):
        class_grid(unconditional, [0], spec, ae)


def test_sample_cli_writes_a_class_grid(tmp_path: Path) -> None:
    from bench.cli.app import app
    from bench.dist import DistInfo
    from bench.train import train

    sets = ["data.res=16", "data.num_classes=3", "data.synthetic_size=8", "train.batch_size=4"]
    sets += ["train.total_images=4", "train.grid_size=3", "sample.steps=2", "sample.guidance=2.0"]
    cfg = resolve(preset="lfm-tiny", overrides=[parse_set(s) for s in sets])
    run_dir = tmp_path / "run"
    train(cfg, run_dir, DistInfo(0, 1, 0, torch.device("cpu")), None, tmp_path / "cache", progress=False)
    result = runner.invoke(app, ["sample", str(run_dir), "--class-grid", "--seeds", "0-3", "--classes", "0,2"])
    assert result.exit_code == 0, result.output + str(result.exception)
    path = run_dir / "samples" / "seeds-0-3" / "class-grid.png"
    assert "2 classes x 4 seeds" in result.output and Image.open(path).size == (4 * 16, 2 * 16)
    assert not list(path.parent.glob("0*.png"))  # only the grid
    result = runner.invoke(app, ["sample", str(run_dir), "--class-grid", "--classes", "a-b"])
    assert result.exit_code == 1 and result.output.startswith("error: Classes must look like")
