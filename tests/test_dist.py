"""torchrun on CPU (gloo): two processes train the tiny preset; sampling with 1 or 2 processes is identical."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.skipif(not (BIN / "torchrun").exists(), reason="torchrun not installed next to this Python")
def test_torchrun_train_and_sample_identical_across_process_counts(tmp_path):
    env = {
        **os.environ,
        "BENCH_RUNS_DIR": str(tmp_path / "runs"),
        "BENCH_CACHE_DIR": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    sets = [
        "data.res=16",
        "data.synthetic_size=48",
        "train.batch_size=8",
        "train.total_images=32",
        "train.log_every=8",
        "train.grid_size=4",
        "sample.steps=3",
    ]
    torchrun = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "--no-python", str(BIN / "bench")]
    set_args = [a for s in sets for a in ("--set", s)]
    train = ["train", "--preset", "lfm-tiny", "--name", "ddp", "--no-progress", *set_args]
    done = subprocess.run(torchrun + train, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "runs" / "ddp"
    assert list((run_dir / "checkpoints").glob("step-00000004"))

    one = subprocess.run(
        [
            str(BIN / "bench"),
            "sample",
            str(run_dir),
            "--seeds",
            "0-5",
            "--out",
            str(tmp_path / "one"),
            "--batch-size",
            "4",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [*torchrun, "sample", str(run_dir), "--seeds", "0-5", "--out", str(tmp_path / "two"), "--batch-size", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    names = sorted(p.name for p in (tmp_path / "one").glob("*.png"))
    assert names == [f"{i:06d}.png" for i in range(6)]
    assert names == sorted(p.name for p in (tmp_path / "two").glob("*.png"))
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
