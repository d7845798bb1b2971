"""`bench data prepare` through Typer's CliRunner: success, bad files, --skip-bad, empty class folder, unknown name."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from bench.cli.data import app
from tests.test_data import add_bad_files, write_images

runner = CliRunner()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)
    return tmp_path / "cache"


def message(result: Result) -> str:
    """What the user sees: the output, or the BenchError the lead's app prints as one sentence."""
    return result.output + (str(result.exception) if result.exception else "")


def test_prepare_synthetic(cache: Path) -> None:
    result = runner.invoke(app, ["prepare", "synthetic", "--res", "16", "--synthetic-size", "5"])
    assert result.exit_code == 0, message(result)
    assert "Prepared 5 images of 'synthetic' at 16 px" in result.output
    assert len(list(cache.glob("synthetic-16-*/images.npy"))) == 1


def test_bad_files_are_named_and_skip_bad_proceeds(cache: Path, tmp_path: Path) -> None:
    src = tmp_path / "faces"
    good = write_images(src, 3)
    cut, text = add_bad_files(src, good[0])
    args = ["prepare", "celebahq", "--res", "16", "--path", str(src)]
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert cut in message(result) and text in message(result) and "--skip-bad" in message(result)
    assert not cache.exists() or list(cache.iterdir()) == []  # no output left behind
    result = runner.invoke(app, [*args, "--skip-bad"])
    assert result.exit_code == 0, message(result)
    assert "Prepared 3 images" in result.output and "Skipped 2 unreadable files" in result.output


def test_empty_class_folder(cache: Path, tmp_path: Path) -> None:
    write_images(tmp_path / "inet" / "train" / "n01", 2)
    (tmp_path / "inet" / "train" / "n02").mkdir()
    result = runner.invoke(app, ["prepare", "imagenet", "--res", "16", "--path", str(tmp_path / "inet")])
    assert result.exit_code != 0 and "no images" in message(result) and "n02" in message(result)
    result = runner.invoke(
        app, ["prepare", "imagenet", "--res", "16", "--path", str(tmp_path / "inet"), "--split", "val"]
    )
    assert result.exit_code != 0 and "no split folder 'val'" in message(result)


def test_unknown_dataset_gets_a_close_match(cache: Path) -> None:
    result = runner.invoke(app, ["prepare", "celebhq", "--res", "16"])
    assert result.exit_code != 0 and "Did you mean 'celebahq'?" in message(result)
