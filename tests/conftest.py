"""Shared fixtures: every test runs with its own cache/runs/results folders and never touches the repo's."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BENCH_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"
SHARED_WEIGHTS = SHARED / "weights"


def _compile_cache() -> str:
    """torch.compile's caches for every test: inductor's own default folder, warm from earlier test sessions (a
    per-test cache folder would compile every compiled test from scratch)."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    return default_cache_dir()


COMPILE_CACHE = _compile_cache()


@pytest.fixture(autouse=True, scope="session")
def one_thread() -> None:
    """Tiny models are overhead-bound: one intra-op thread is faster and leaves the other core to the OS/CI."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def seeded() -> None:
    """Every test starts from the same global RNG state, whatever ran before it (statistical checks stay stable)."""
    import torch

    torch.manual_seed(0)


FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """Marks a test whose setup or call failed, so that isolated_paths keeps its folders for a look."""
    report = yield
    if report.failed:
        item.stash[FAILED] = True
    return report


@pytest.fixture(autouse=True)
def isolated_paths(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Each test's own cache/runs/results, removed after it passes: they hold e.g. 65 MB of FID references each,
    and ~900 tests kept 2.4 GiB per session on a shared disk (session 8's CI stopped on a full /tmp)."""
    root = tmp_path_factory.mktemp("bench-env")
    monkeypatch.setenv("BENCH_CACHE_DIR", str(root / "cache"))
    monkeypatch.setenv("BENCH_RUNS_DIR", str(root / "runs"))
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(root / "results"))
    monkeypatch.setenv("BENCH_COMPILE_CACHE_DIR", COMPILE_CACHE)
    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)
    monkeypatch.delenv("BENCH_DEVICE", raising=False)
    if SHARED_WEIGHTS.is_dir():
        monkeypatch.setenv("BENCH_WEIGHTS_ROOT", str(SHARED_WEIGHTS))
    yield root
    if not request.node.stash.get(FAILED, False):
        shutil.rmtree(root, ignore_errors=True)


def requires_shared_data(name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not (SHARED_DATA / name).is_dir(), reason=f"{SHARED_DATA / name} is not available")


@pytest.fixture
def cuda_device() -> torch.device:
    """The GPU for tests marked `gpu` (`pytest -m gpu`); skips where there is none."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    return torch.device("cuda")
