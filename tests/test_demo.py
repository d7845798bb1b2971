"""`bench demo`: the shapes data file, the grids from start to end, and ONE picture that shows the model learned."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from bench.cli.app import app
from bench.cli.demo import (
    DEMO_PICTURE,
    PANEL_INCHES,
    PICTURE_DPI,
    grid_every,
    picture_panels,
    read_losses,
    sample_grids,
    shapes_file,
)
from bench.config import DataConfig
from bench.datasets.carried import load_carried
from bench.datasets.synthetic import SHAPES_BACKGROUND, shapes_images
from bench.paths import runs_dir

runner = CliRunner()
DEMO_IMAGES = 1536  # 48 steps of 32: seconds on one core, and enough for the loss and the samples to move


def test_grid_every_is_whole_batches() -> None:
    assert grid_every(32_768, 32) == 10_944  # 342 steps: grids after 10,944 and 21,888 images, then at the end
    assert grid_every(1536, 32) == 512
    assert grid_every(96, 32) == 32 and grid_every(10, 32) == 32  # at least one batch


def test_shapes_file_holds_the_shapes_images(tmp_path) -> None:
    path = shapes_file(tmp_path, 12, 16)
    assert shapes_file(tmp_path, 12, 16) == path  # written once, then reused
    cfg = DataConfig(dataset="synthetic", res=16, autoencoder="pixel", path=str(path), flip=False)
    data = load_carried(cfg, path, torch.device("cpu"))
    pixels = (data.latents * 127.5 + 127.5).round().to(torch.uint8).numpy()
    assert np.array_equal(pixels, shapes_images(12, 16))  # exact through fp16
    assert data.meta["source"].startswith("bench.datasets.synthetic.shapes_image")


def background_distance(grid: np.ndarray) -> float:
    """Mean distance of a grid's pixels from the shapes' plain background colour (0 = all background)."""
    return float(np.abs(grid / 255.0 - np.array(SHAPES_BACKGROUND)).mean())


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory: pytest.TempPathFactory):
    """Folders of the module's one demo run (module fixtures start before the per-test isolated_paths)."""
    root = tmp_path_factory.mktemp("demo")
    env = {"BENCH_RUNS_DIR": str(root / "runs"), "BENCH_CACHE_DIR": str(root / "cache")}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        for key in ("BENCH_DATA_ROOT", "BENCH_DEVICE"):  # e.g. a --device of an earlier CLI test stays in os.environ
            patch.delenv(key, raising=False)
        yield patch


@pytest.fixture(scope="module")
def demo_run(demo_env: pytest.MonkeyPatch):
    result = runner.invoke(app, ["demo", "--images", str(DEMO_IMAGES)])
    assert result.exit_code == 0, result.output
    return result.output, runs_dir() / "demo-lfm-shapes32"


def test_demo_writes_one_picture_with_the_expected_panels(demo_run) -> None:
    output, run_dir = demo_run
    picture = run_dir / DEMO_PICTURE
    assert f"picture of the run (training images, samples from start to end, loss curve): {picture}" in output
    every = grid_every(DEMO_IMAGES, 32)
    assert [images for images, _ in sample_grids(run_dir)] == [0, every, 2 * every, DEMO_IMAGES]
    titles = [title for title, _ in picture_panels(run_dir, shapes_images(16, 32).transpose(0, 2, 3, 1), "real")]
    assert titles == [
        "real",
        "samples at the start",
        f"after {every:,} images",
        f"after {2 * every:,} images",
        f"at the end ({DEMO_IMAGES:,} images)",
    ]
    width, height = Image.open(picture).size
    assert width == pytest.approx(PANEL_INCHES * len(titles) * PICTURE_DPI, abs=2) and height > 500


def test_demo_learned_something(demo_run) -> None:
    _, run_dir = demo_run
    images, losses = read_losses(run_dir)
    assert images[-1] == DEMO_IMAGES and len(losses) == DEMO_IMAGES // (8 * 32)
    assert losses[-1] < 0.8 * losses[0]  # the loss went down
    grids = [np.asarray(Image.open(path).convert("RGB"), dtype=float) for _, path in sample_grids(run_dir)]
    start, end = background_distance(grids[0]), background_distance(grids[-1])
    assert end < 0.6 * start  # the untrained model's noise gives way to the plain background of the shapes
    examples = background_distance(shapes_images(16, 32).transpose(0, 2, 3, 1).astype(float))
    assert abs(end - examples) < abs(start - examples)


def test_demo_resumes_as_complete_and_redraws(demo_run, monkeypatch: pytest.MonkeyPatch) -> None:
    _, run_dir = demo_run
    monkeypatch.setenv("BENCH_RUNS_DIR", str(run_dir.parent))  # the module's run (each test has its own folders)
    monkeypatch.setenv("BENCH_CACHE_DIR", str(run_dir.parent.parent / "cache"))
    (run_dir / DEMO_PICTURE).unlink()
    result = runner.invoke(app, ["demo", "--images", str(DEMO_IMAGES)])
    assert result.exit_code == 0, result.output
    assert "already complete" in result.output and (run_dir / DEMO_PICTURE).is_file()
