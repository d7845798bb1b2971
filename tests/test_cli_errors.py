"""Bad input on every command: one sentence on stderr, exit code 1, no traceback, nothing written (issue 16)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from bench.cli.app import app

runner = CliRunner()
TINY = ("--preset", "lfm-tiny", "--res", "16", "--set", "data.synthetic_size=16")


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_sentence(result, pattern: str) -> None:
    assert result.exit_code == 1, result.output
    assert ("Traceback" not in result.output and result.exception is None) or isinstance(result.exception, SystemExit)
    text = result.output.strip()
    assert text.startswith("error:") and text.count("\n") == 0, text
    assert re.search(pattern, text, re.S), text


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    return {"binary": binary, "list": listing, "file": a_file, "dir": tmp_path}


TRAIN_CASES = [
    (["--res", "100000"], r"Resolution 100000 px .* between 1 and 2048"),
    (["--res", "0"], r"Resolution 0 px"),
    (["--res", "-16"], r"Resolution -16 px"),
    (["--set", "train.batch_size=0"], r"train.batch_size must be positive, got 0"),
    (["--set", "train.batch_size=-4"], r"train.batch_size must be positive, got -4"),
    (["--set", "train.micro_batch=3"], r"not divisible by train.micro_batch 3"),
    (["--set", "train.total_images=0"], r"train.total_images must be positive"),
    (["--set", "train.lr=-1"], r"train.lr must be positive"),
    (["--set", "train.precision=fp8"], r"Unknown precision 'fp8'.*auto, fp32, bf16"),
    (["--set", "train.lr_schedule=step"], r"Unknown train.lr_schedule 'step'"),
    (["--set", "train.ema_decay=1.5"], r"train.ema_decay must lie in \[0, 1\)"),
    (["--set", "train.keep_checkpoints=0"], r"keep_checkpoints must be at least 1"),
    (["--set", "train.log_every=-1"], r"train.log_every must be 0 or positive"),
    (["--set", "train.batch_size=abc"], r"expects int"),
    (["--set", "train.lr=["], r"not a valid YAML"),
    (["--set", "=5"], r"dotted key"),
    (["--set", "train..lr=5"], r"dotted key"),
    (["--set", "data.synthetic_size=0"], r"synthetic_size must be positive"),
    (["--set", "data.num_classes=-1"], r"num_classes must be 0"),
    (["--name", "../../x"], r"Run name '\.\./\.\./x' must be one folder name"),
    (["--name", "a/b"], r"Run name 'a/b'"),
    (["--name", ".hidden"], r"Run name '\.hidden'"),
    (["--dataset", "celeba"], r"Unknown dataset 'celeba'.*Did you mean 'celebahq'"),
    (["--dataset", "celebahq"], r"No folder for data set 'celebahq'"),
    (["--autoencoder", "vae"], r"Unknown autoencoder 'vae'"),
]


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
@pytest.mark.parametrize(("args", "pattern"), TRAIN_CASES, ids=[" ".join(a) for a, _ in TRAIN_CASES])
def test_train_refuses_bad_config_before_any_work(args, pattern, dry_run, isolated_paths):
    result = invoke("train", *TINY, *args, *(["--dry-run"] if dry_run else []), "--no-progress")
    assert_one_sentence(result, pattern)
    assert not list(isolated_paths.glob("runs/**/config.yaml")) and not (isolated_paths / "cache").exists()


@pytest.mark.parametrize(
    ("key", "pattern"),
    [
        ("binary", r"is not a text \(UTF-8 YAML\) file"),
        ("list", r"must hold a mapping"),
        ("dir", r"is a folder"),
    ],
)
def test_train_refuses_bad_config_files(files, key, pattern):
    assert_one_sentence(invoke("train", *TINY, "--config", files[key], "--dry-run"), pattern)


def test_bad_model_option_is_refused_by_dry_run():
    result = invoke("train", "--preset", "lapflow-tiny", "--set", "model.mask=bogus", "--dry-run")
    assert_one_sentence(result, r"Unknown LapFlow mask 'bogus'")


@pytest.mark.parametrize(
    ("device", "pattern"),
    [
        ("gpu", r"Unknown device 'gpu'; choose auto, cpu, cuda or cuda:N"),
        ("tpu", r"Unknown device 'tpu'"),
        ("cuda:99", r"cuda:99"),
    ],
)
def test_bad_device_is_one_sentence(device, pattern):
    assert_one_sentence(invoke("--device", device, "train", *TINY, "--dry-run"), pattern)
    assert_one_sentence(invoke("--device", device, "eval", "run", "lfm", "--preset", "lfm-tiny"), pattern)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_says_so():
    result = invoke("--device", "cuda", "train", *TINY, "--dry-run")
    assert_one_sentence(result, r"Device 'cuda' was asked for, but no CUDA GPU is visible here; use --device cpu")


def test_missing_weights_name_the_folder_and_an_autoencoder_that_runs(tmp_path, monkeypatch):
    from tests.conftest import SHARED_WEIGHTS

    if not (SHARED_WEIGHTS / "taesd").is_dir():
        pytest.skip("TAESD weights are not here")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = invoke("train", "lapflow", "--dataset", "synthetic", "--dry-run")  # the paper default: sd-vae-ft-mse
    assert_one_sentence(result, r"sd-vae-ft-mse.*sd-vae-ft-mse.*available here: taesd.*\(e\.g\. --autoencoder taesd\)")
    listing = invoke("ls", "autoencoders").output
    assert re.search(r"taesd\s+weights present", listing) and re.search(r"sd-vae-ft-mse\s+weights missing", listing)


def test_runs_folder_that_is_a_file_is_refused(files, monkeypatch):
    monkeypatch.setenv("BENCH_RUNS_DIR", str(files["file"]))
    assert_one_sentence(invoke("train", *TINY, "--dry-run"), r"run folder .* cannot be created: .* is a file")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from bench.config import parse_set, resolve
    from bench.dist import DistInfo
    from bench.train import train

    root = tmp_path_factory.mktemp("errors-run")
    sets = ["data.res=16", "data.synthetic_size=16", "train.batch_size=8", "train.total_images=8", "train.grid_size=0"]
    cfg = resolve(preset="lfm-tiny", overrides=[parse_set(s) for s in [*sets, "sample.steps=2"]])
    train(cfg, root / "run", DistInfo(0, 1, 0, torch.device("cpu")), None, root / "cache", progress=False)
    return root / "run"


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--set", "train.lr=5"], r"takes sampling keys only; 'train.lr' does not apply \(sampling keys: sample"),
        (["--set", "train.steps=5"], r"did you mean 'sample.steps'\?"),
        (["--set", "sample.step=5"], r"Unknown config key 'sample.step'. Did you mean 'sample.steps'"),
        (["--batch-size", "0"], r"--batch-size must be positive, got 0"),
        (["--batch-size", "-4"], r"--batch-size must be positive, got -4"),
        (["--seeds", "9-3"], r"Seeds must look like"),
        (["--weights", "best"], r"Unknown weights 'best'"),
    ],
)
def test_sample_refuses_bad_input(run_dir, args, pattern, tmp_path):
    result = invoke("sample", run_dir, "--out", tmp_path / "out", *args)
    assert_one_sentence(result, pattern)
    assert not (tmp_path / "out").exists()


def test_sample_out_that_is_a_file_is_refused(run_dir, files):
    assert_one_sentence(invoke("sample", run_dir, "--out", files["file"]), r"output folder .* is a file")


def test_sample_in_one_process_prints_no_rank(run_dir, tmp_path):
    result = invoke("sample", run_dir, "--seeds", "0-2", "--out", tmp_path / "s", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "rank 0" not in result.output and result.output.strip().endswith(f"wrote 3 images to {tmp_path / 's'}")
    assert "bench sample: lfm" in result.output and "step-00000001" in result.output  # the header
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["000000.png", "000001.png", "000002.png"]


EVAL_CASES = [
    (["run", "lfm", "--preset", "lfm-tiny", "--metrics", "nfe", "--steps", "0"], r"--steps must be positive"),
    (["run", "lfm", "--preset", "lfm-tiny", "--metrics", "nfe", "--precision", "fp8"], r"Unknown precision 'fp8'"),
    (["run", "lfm", "--preset", "lfm-tiny", "--metrics", "time", "--time-batch", "0"], r"must be positive"),
    (["run", "lfm", "--preset", "lfm-tiny", "--metrics", "speed"], r"Unknown metric 'speed'"),
    (["run", "lfm", "--preset", "lfm-tiny", "--res", "0"], r"must be positive"),
    (["run", "lfm", "--metrics", "fid"], r"FID needs trained weights"),
    (["ref-stats", "celebahq", "--res", "100000"], r"Resolution 100000 px \(--res\)"),
    (["fid-folder", "/nonexistent/samples", "--ref", "celebahq64"], r"Sample folder '/nonexistent/samples'"),
    (["fid-features", "/nonexistent.npy", "--ref", "celebahq64"], r"Features file ./nonexistent.npy. does not exist"),
]


@pytest.mark.parametrize(("args", "pattern"), EVAL_CASES, ids=[" ".join(a[:2]) + " " + a[-1] for a, _ in EVAL_CASES])
def test_eval_refuses_bad_input(args, pattern, isolated_paths):
    assert_one_sentence(invoke("eval", *args), pattern)
    assert not list(isolated_paths.glob("results/**/*.json"))


def test_eval_all_takes_no_subcommand():
    assert_one_sentence(invoke("eval", "--all", "run", "lfm"), r"takes no sub-command")


def test_data_prepare_refuses_huge_resolution():
    assert_one_sentence(invoke("data", "prepare", "synthetic", "--res", "100000"), r"Resolution 100000 px")


def fake_reference(path: Path, res: int, dataset: str = "celebahq") -> Path:
    from bench.metrics.fid import FeatureStats, save_stats

    rows = np.random.default_rng(0).normal(size=(8, 2048))
    return save_stats(path, FeatureStats.of(rows), {"backend": "tf", "dataset": dataset, "res": res, "count": 8})


def test_fid_of_32px_samples_against_a_64px_reference_is_refused(tmp_path, isolated_paths):
    ref = fake_reference(tmp_path / "celebahq64-tf.npz", 64)
    folder = tmp_path / "samples"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / f"{i:06d}.png")
    result = invoke("eval", "fid-folder", folder, "--ref", ref, "--backend", "tf", "--num-samples", "2")
    assert_one_sentence(result, r"holds 64 px statistics but the samples are 32 px")
    latents = tmp_path / "z.npy"
    np.save(latents, np.zeros((2, 4, 4, 4), np.float32))  # TAESD: 4x4 latents decode to 32 px
    result = invoke("eval", "fid-latents", latents, "--autoencoder", "taesd", "--ref", ref, "--backend", "tf")
    assert_one_sentence(result, r"holds 64 px statistics but the samples are 32 px")
    assert not list(isolated_paths.glob("results/**/*.json"))


@pytest.mark.parametrize("where", ["file", "below-file"])
def test_unwritable_results_folder_is_refused_before_measuring(tmp_path, files, where):
    ref = fake_reference(tmp_path / "ref.npz", 64)
    feats = tmp_path / "feats.npy"
    np.save(feats, np.zeros((4, 2048), np.float32))
    out = files["file"] if where == "file" else files["file"] / "results"
    result = invoke("eval", "fid-features", feats, "--ref", ref, "--out", out)
    assert_one_sentence(result, r"results folder .* (is a file|cannot be created)")


def test_fid_features_record_names_the_device(tmp_path, monkeypatch):
    """The environment of fid-folder/-latents/-features records is built for the device they ran on."""
    import bench.runtime

    seen = []
    real = bench.runtime.environment
    monkeypatch.setattr(bench.runtime, "environment", lambda device=None: seen.append(device) or real(device))
    ref = fake_reference(tmp_path / "ref.npz", 64)
    feats = tmp_path / "feats.npy"
    np.save(feats, np.random.default_rng(1).normal(size=(8, 2048)).astype(np.float32))
    result = invoke("eval", "fid-features", feats, "--ref", ref, "--device", "cpu", "--out", tmp_path / "res")
    assert result.exit_code == 0, result.output
    assert [str(d) for d in seen] == ["cpu"]
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "res").glob("*.json")]
    assert record["environment"]["gpu"] is None and record["resolution"] == 64


def test_report_names_an_unreadable_record_and_how_to_skip_it(tmp_path, files):
    results = tmp_path / "results"
    results.mkdir()
    (results / "bad.json").write_text("[1, 2]")
    result = invoke("report", "--results-dir", results, "--out", tmp_path / "rep", "--no-plots")
    assert_one_sentence(result, r"bad.json.*skip it by renaming it to start with '\.'")
    assert_one_sentence(invoke("report", "--out", files["file"], "--no-plots"), r"report folder .* is a file")


def test_missing_reference_is_refused_before_scoring(tmp_path, isolated_paths):
    feats = tmp_path / "feats.npy"
    np.save(feats, np.zeros((4, 2048), np.float32))
    result = invoke("eval", "fid-features", feats, "--ref", "celebahq64")
    assert_one_sentence(result, r"No tf reference statistics for 'celebahq64'; run `bench eval ref-stats celebahq")
    assert not list(isolated_paths.glob("results/**/*.json"))
