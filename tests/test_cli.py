"""CLI behaviour: help without model code, listings, and bad input as one sentence with a non-zero exit."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from bench.cli.app import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_help_imports_no_model_code():
    code = (
        "import sys; from bench.cli.app import app; from typer.testing import CliRunner; "
        "r = CliRunner().invoke(app, ['train', '--help']); assert r.exit_code == 0, r.output; "
        "bad = [m for m in sys.modules if m.startswith(('models', 'baselines', 'torch'))]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_ls_lists_registries():
    assert set(invoke("ls", "models").output.split()) == {"dit", "lapflow", "lfm", "pyramidal-flow"}
    presets = invoke("ls", "presets").output
    assert "lapflow-celebahq256-l2" in presets and "lfm-tiny" in presets
    assert "taesd" in invoke("ls", "autoencoders").output
    bad = invoke("ls", "modles")
    assert bad.exit_code == 1 and "Did you mean 'models'" in bad.output


def test_dry_run_prints_resolved_config():
    result = invoke("train", "lfm", "--preset", "lfm-tiny", "--res", "64", "--set", "train.lr=3e-4", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "res: 64" in result.output and "lr: 0.0003" in result.output and "family: lfm" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "lfmm"], "Unknown model 'lfmm'.*Did you mean 'lfm'"),
        (["train", "lfm", "--preset", "lfm-tiny", "--dataset", "celeba"], "Unknown dataset 'celeba'.*celebahq"),
        (["train", "--preset", "lfm-tinyy"], "Unknown preset 'lfm-tinyy'.*Did you mean 'lfm-tiny'"),
        (["train", "--preset", "lfm-tiny", "--set", "train.bath_size=4"], "Did you mean 'train.batch_size'"),
        (["train", "--preset", "lfm-tiny", "--res", "30"], "not divisible by the patch size 4"),
        (["train", "--preset", "lapflow-tiny", "--res", "36"], "not divisible by 8"),
        (["train", "--preset", "lfm-tiny", "--res", "60", "--autoencoder", "taesd"], "not divisible"),
        (["train", "--preset", "lfm-tiny", "--autoencoder", "sd-vae-ft-mse"], "sd-vae-ft-mse"),
        (["sample", "/nonexistent/run"], "not a run directory"),
        (["sample", "/nonexistent/run", "--fast", "graph"], "graph.*needs a CUDA device"),
        (["sample", "/nonexistent/run", "--fast", "turbo"], "Unknown fast path 'turbo'"),
    ],
)
def test_bad_input_is_one_sentence_and_nonzero_exit(args, message, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS_ROOT", str(tmp_path / "no-weights"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BENCH_RUNS_DIR", str(tmp_path / "runs"))
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    import re

    assert re.search(message, result.output, re.S), result.output
    assert result.output.strip().startswith("error:") and result.output.strip().count("\n") == 0
    assert not list(tmp_path.glob("runs/*/config.yaml"))  # refused before any run directory is written


def test_rerunning_a_finished_run_says_so() -> None:
    args = ("train", "--preset", "lfm-tiny", "--res", "16", "--name", "twice", "--no-progress")
    sets = ("--set", "train.total_images=8", "--set", "train.batch_size=4", "--set", "train.sample_every=0")
    first, second = invoke(*args, *sets), invoke(*args, *sets)
    last = first.output.strip().splitlines()[-1]  # after the header (model, device, data, length, resume point)
    assert first.exit_code == 0 and last.startswith("done: 8 images, 2 steps, last loss "), first.output
    assert "resume       from the start" in first.output
    assert second.exit_code == 0 and second.output.strip().splitlines()[-1].startswith("already complete")
    assert "resume       from step-00000002 (8 of 8 images)" in second.output
    assert "last loss" not in second.output


def test_eval_all_runs_every_family_with_the_metrics_that_run_here(monkeypatch):
    import bench.cli.eval as eval_cli

    calls = []
    monkeypatch.setattr(eval_cli, "run_command", lambda **kw: calls.append(kw))
    monkeypatch.setenv("BENCH_DEVICE", "cpu")
    result = invoke("eval", "--all")
    assert result.exit_code == 0, result.output
    assert calls == [{"all_": True, "metrics": "flops,nfe"}] and "timing needs a GPU" in result.output


def test_eval_run_prints_its_plan_and_progress(tmp_path):
    args = ["eval", "run", "lfm", "--preset", "lfm-tiny", "--res", "16", "--metrics", "nfe,flops", "--steps", "2"]
    result = invoke(*args, "--device", "cpu", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "bench eval: 1 model(s) x 2 metric(s)" in result.output and "records     4 (4 per model)" in result.output
    assert "eval [1/2] lfm-tiny 16 px: flops" in result.output and "eval [2/2] lfm-tiny 16 px: nfe" in result.output
    assert len(list(tmp_path.glob("*.json"))) == 4
