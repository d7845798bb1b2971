"""Faults (issue 16): SIGINT and SIGTERM checkpoint and exit 128 + signal; a corrupt newest checkpoint is named and
skipped for the newest intact one; stats.jsonl is cut back to the checkpoint on resume (no repeats, no half line)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.checkpoint import checkpoint_dirs, latest_checkpoint, truncate_stats

runner = CliRunner()
SETS = ("data.res=16", "data.synthetic_size=48", "train.batch_size=8", "train.log_every=8", "train.grid_size=0")
SETS += ("sample.steps=2",)


def train_args(name: str, images: int, *extra: str) -> list[str]:
    sets = [x for s in (*SETS, f"train.total_images={images}", *extra) for x in ("--set", s)]
    return ["train", "--preset", "lfm-tiny", "--no-progress", "--name", name, *sets]


def invoke(*args: str):
    from bench.cli.app import app

    return runner.invoke(app, [str(a) for a in args])


def stats_rows(run_dir: Path) -> list[dict]:
    text = (run_dir / "stats.jsonl").read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def assert_no_repeats(run_dir: Path) -> list[int]:
    images = [r["images"] for r in stats_rows(run_dir) if "event" not in r]
    assert images == sorted(set(images)), images
    return images


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_writes_a_checkpoint_and_exits_nonzero(tmp_path, isolated_paths, signum, code):
    cmd = [sys.executable, "-m", "bench.cli.app", *train_args("sig", 100_000_000)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = isolated_paths / "runs" / "sig"
    deadline = time.time() + 120
    while time.time() < deadline and (
        not (run_dir / "stats.jsonl").exists() or len((run_dir / "stats.jsonl").read_text().splitlines()) < 4
    ):
        time.sleep(0.2)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert out.startswith("interrupted (checkpoint written; rerun the same command to resume)"), out
    assert "Traceback" not in err
    ckpt = latest_checkpoint(run_dir)
    assert ckpt is not None and not list((run_dir / "checkpoints").glob(".*tmp"))
    seen = json.loads((ckpt / "state.json").read_text())["images_seen"]
    assert seen >= 24
    resumed = invoke(*train_args("sig", seen + 16))  # the same run, a little longer: resumes where it stopped
    assert resumed.exit_code == 0, resumed.output
    assert f"resume       from {ckpt.name} ({seen:,} of {seen + 16:,} images)" in resumed.output
    assert resumed.output.strip().splitlines()[-1].startswith(f"done: {seen + 16} images")
    assert assert_no_repeats(run_dir)[-1] == seen + 16


def two_checkpoints(name: str) -> Path:
    """A run with checkpoints at 8 and 16 images (step-00000001, step-00000002)."""
    result = invoke(*train_args(name, 16, "train.checkpoint_every=8", "train.keep_checkpoints=3"))
    assert result.exit_code == 0, result.output
    return Path(os.environ["BENCH_RUNS_DIR"]) / name


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CORRUPTIONS = {
    "truncated model.safetensors": lambda c: truncate(c / "model.safetensors"),
    "missing state.json": lambda c: (c / "state.json").unlink(),
    "malformed state.json": lambda c: (c / "state.json").write_text('{"step": 2, "images_'),
    "0-byte ema.safetensors": lambda c: (c / "ema.safetensors").write_bytes(b""),
    "truncated optimizer.pt": lambda c: truncate(c / "optimizer.pt"),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupt_newest_checkpoint_is_named_and_skipped(tmp_path, corruption, caplog):
    run_dir = two_checkpoints("corrupt")
    newest = run_dir / "checkpoints" / "step-00000002"
    CORRUPTIONS[corruption](newest)
    with caplog.at_level(logging.WARNING, logger="bench.checkpoint"):
        sampled = invoke("sample", run_dir, "--seeds", "0-1", "--out", tmp_path / "s", "--no-progress")
    assert sampled.exit_code == 0, sampled.output
    assert "step-00000001" in sampled.output and len(list((tmp_path / "s").glob("*.png"))) == 2
    assert any("step-00000002" in m and "corrupt" in m for m in caplog.messages), caplog.messages
    resumed = invoke(*train_args("corrupt", 24, "train.checkpoint_every=8", "train.keep_checkpoints=3"))
    assert resumed.exit_code == 0, resumed.output
    assert "resume       from step-00000001 (8 of 24 images); skipping corrupt step-00000002" in resumed.output
    assert (run_dir / "checkpoints" / "corrupt-step-00000002").is_dir()  # set aside for inspection, never loaded
    assert [p.name for p in checkpoint_dirs(run_dir)] == ["step-00000001", "step-00000002", "step-00000003"]
    assert json.loads((latest_checkpoint(run_dir) / "state.json").read_text())["images_seen"] == 24
    assert assert_no_repeats(run_dir) == [8, 16, 24]


def test_no_intact_checkpoint_is_one_sentence(tmp_path):
    run_dir = two_checkpoints("allbad")
    for ckpt in checkpoint_dirs(run_dir):
        (ckpt / "model.safetensors").write_bytes(b"")
    for args in (train_args("allbad", 24), ["sample", run_dir, "--out", tmp_path / "s"]):
        result = invoke(*args)
        assert result.exit_code == 1, result.output
        last = result.output.strip().splitlines()[-1]
        assert last.startswith("error: No intact checkpoint in") and "step-00000002" in last, result.output
        assert "Traceback" not in result.output


def test_stats_jsonl_is_cut_back_to_the_checkpoint_on_resume():
    run_dir = two_checkpoints("stats")
    before = stats_rows(run_dir)  # start, 8, 16
    for ckpt in checkpoint_dirs(run_dir)[1:]:  # as if the run died after step 1's checkpoint ...
        shutil.rmtree(ckpt)
    with open(run_dir / "stats.jsonl", "a") as f:  # ... having logged 16 images and half a line more
        f.write('{"images": 24, "step": 3, "lo')
    result = invoke(*train_args("stats", 24, "train.checkpoint_every=8", "train.keep_checkpoints=3"))
    assert result.exit_code == 0, result.output
    rows = stats_rows(run_dir)  # every line parses: the half line is gone
    assert assert_no_repeats(run_dir) == [8, 16, 24]
    assert [r["images"] for r in rows if r.get("event") == "start"] == [0, 8]
    assert rows[:2] == before[:2]  # the rows up to the checkpoint are kept as they were


def test_truncate_stats_keeps_rows_up_to_the_resume_point(tmp_path):
    path = tmp_path / "stats.jsonl"
    rows = [{"event": "start", "images": 0}, {"images": 8}, {"images": 16}, {"images": 24}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"images": 3')
    assert truncate_stats(path, 16) == 2
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows[:3]
    assert truncate_stats(path, 16) == 0 and truncate_stats(tmp_path / "none.jsonl", 0) == 0
