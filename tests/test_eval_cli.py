"""`bench eval`: records from a tiny preset on CPU, FID from saved features, bad input, and interruption safety."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bench.cli.eval import app
from bench.errors import BenchError
from bench.results import load_records, read_record

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_run_writes_flops_time_and_nfe_records(tmp_path: Path) -> None:
    args = ["run", "lfm", "--preset", "lfm-tiny", "--res", "32,64", "--metrics", "flops,time,nfe", "--steps", "2",
            "--time-batch", "1,2", "--warmup", "1", "--repeats", "1", "--device", "cpu",
            "--out", str(tmp_path)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    records = load_records(tmp_path)
    assert len(records) == 2 * (3 + 1 + 4)  # per resolution: 3 GFLOPs, 1 NFE, 2 batches x 2 timing modes
    by = {(r.metric, r.resolution, r.protocol_name): r for r in records}
    for res in (32, 64):
        forward = by[("gflops_forward", res, "gflops-fvcore")]
        sample = by[("gflops_sample", res, "gflops-fvcore")]
        assert sample.value == pytest.approx(forward.value * 2) and sample.sampling["nfe"] == 2
        assert by[("gflops_decode", res, "gflops-fvcore")].value == 0.0  # pixel space
        assert by[("nfe", res, "nfe-b1-seed0")].value == 2
        e2e = by[("time_e2e", res, "time-b2-e2e-fp32-cpu")]
        assert e2e.protocol["device"] == "cpu" and not e2e.protocol["reportable"] and e2e.unit == "s"
        assert e2e.extra["p10"] <= e2e.value <= e2e.extra["p90"] and e2e.sampling["nfe"] == 2
        assert forward.config["data"]["res"] == res and forward.extra["weights"] == "random init"
    # 64 px has 4x the tokens of 32 px: more than 4x the FLOPs (attention is quadratic).
    assert by[("gflops_forward", 64, "gflops-fvcore")].value > 4 * by[("gflops_forward", 32, "gflops-fvcore")].value


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "lfm", "--metrics", "flops,speed"], "Unknown metric 'speed'"),
        (["run", "lfm", "--metrics", "fid"], "--run-dir"),
        (["run", "--all", "--preset", "lfm-tiny"], "drop MODEL and --preset"),
        (["run", "lfmm"], "Unknown model 'lfmm'"),
        (["run", "lfm", "--res", "256,abc"], "comma-separated integers"),
        (["run", "lfm", "--res", "96"], "no single CelebA-HQ 96 px preset"),
        (["fid-features", "missing.npy", "--ref", "celebahq128"], "does not exist"),
        (["run", "lfm", "--preset", "lfm-tiny", "--metrics", "time", "--fast", "jit"], "Unknown fast path 'jit'"),
        (
            ["run", "lfm", "--preset", "lfm-tiny", "--metrics", "time", "--fast", "graph", "--device", "cpu"],
            "needs a CUDA device",
        ),
        (["run", "lfm", "--preset", "lfm-tiny", "--set", "sample.stepz=3"], "Did you mean 'sample.steps'"),
        (["run", "lfm", "--preset", "lfm-tiny", "--set", "train.lr=1"], "takes sampling keys only"),
        (["run", "lfm", "--preset", "lfm-tiny", "--set", "sample.steps=many"], "sample.steps"),
        (["run", "lfm", "--preset", "lfm-tiny", "--solver", "rk9"], "rk9"),
    ],
)
def test_bad_input_is_one_sentence(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert isinstance(result.exception, BenchError), result.output
    assert message in str(result.exception)


@pytest.fixture
def cheap_fid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-ins for the Inception network and the 2048-d distance: the wiring is under test here (the network
    and the distance are tested in test_fid.py; a 2048-d eigen-decomposition takes many seconds on 2 busy cores)."""
    from bench.metrics import fid

    projection = np.random.default_rng(0).standard_normal((48, 2048))

    def extractor(backend: str, device: object = "cpu", cache_dir: object = None) -> object:
        def features(images: torch.Tensor) -> np.ndarray:
            pooled = images.double().reshape(len(images), 4, -1, 4, 3).mean(dim=(2,)).reshape(len(images), -1) / 255
            return pooled.numpy()[:, :48] @ projection + (0.5 if backend == "clean" else 0.0)

        return features

    exact = fid.frechet_distance
    monkeypatch.setattr(fid, "make_extractor", extractor)
    monkeypatch.setattr(
        fid, "frechet_distance", lambda m1, s1, m2, s2: exact(m1[:64], s1[:64, :64], m2[:64], s2[:64, :64])
    )


def make_refs(folder: Path, images: torch.Tensor, dataset: str = "synthetic", res: int = 32) -> str:
    """Reference .npz files (tf and clean) of `images` under folder/fid-refs, named <dataset><res>."""
    from bench.metrics import fid

    stats, _ = fid.compute_stats([images], ["tf", "clean"])
    for backend, s in stats.items():
        meta = {"backend": backend, "dataset": dataset, "res": res, "source_hash": "test"}
        fid.save_stats(fid.ref_stats_path(dataset, res, backend, folder), s, meta)
    return f"{dataset}{res}"


def test_fid_from_saved_features(tmp_path: Path, cheap_fid: None) -> None:
    from bench.metrics.fid import FeatureStats, save_stats

    features = np.random.default_rng(0).standard_normal((40, 2048)).astype(np.float32)
    np.save(tmp_path / "samples.npy", features)
    meta = {"backend": "tf", "dataset": "celebahq", "res": 128, "source_hash": "x"}
    ref = save_stats(tmp_path / "ref.npz", FeatureStats.of(features), meta)
    out = tmp_path / "results"
    args = ["fid-features", str(tmp_path / "samples.npy"), "--ref", str(ref), "--backend", "tf", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (record,) = load_records(out)
    assert record.metric == "fid" and record.protocol_name == "fid-tf-40-celebahq128"
    assert record.protocol["inception_sha256"].startswith("7ff4a85c") and record.protocol["library"] == "torch-fidelity"
    assert abs(record.value) < 1e-6  # the set against itself
    assert "unavailable" in record.extra["inception_score"]
    wrong = runner.invoke(app, [*args[:4], "--backend", "clean", "--out", str(out)])
    assert isinstance(wrong.exception, BenchError) and "backend 'tf'" in str(wrong.exception)


def test_fid_from_folder_and_latents(tmp_path: Path, cheap_fid: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.sample import quantize, save_png

    latents = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    images = quantize(latents)
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    ref = make_refs(tmp_path / "cache", images)
    save_png(images, list(range(6)), tmp_path / "pngs")
    np.save(tmp_path / "z.npy", latents.numpy())
    out = tmp_path / "results"
    common = ["--ref", ref, "--num-samples", "6", "--batch-size", "4", "--out", str(out)]
    assert runner.invoke(app, ["fid-folder", str(tmp_path / "pngs"), *common]).exit_code == 0
    assert (
        runner.invoke(app, ["fid-latents", str(tmp_path / "z.npy"), "--autoencoder", "pixel", *common]).exit_code == 0
    )
    records = load_records(out)
    assert sorted((r.preset, r.metric) for r in records) == [
        ("pngs", "clean_fid"), ("pngs", "fid"), ("z", "clean_fid"), ("z", "fid")
    ]  # fmt: skip
    # The set against itself; not exactly 0: six samples give a rank-5 covariance, whose square root is noisy.
    assert all(abs(r.value) < 1e-4 and r.protocol_name.endswith("-6-synthetic32") for r in records)
    short = runner.invoke(app, ["fid-folder", str(tmp_path / "pngs"), "--ref", ref, "--num-samples", "7"])
    assert isinstance(short.exception, BenchError) and "holds 6 PNG files" in str(short.exception)


def test_fid_streamed_from_a_model_does_not_depend_on_batch_size(tmp_path: Path, cheap_fid: None) -> None:
    from bench.autoencoders import load_autoencoder
    from bench.config import resolve
    from bench.metrics.measure import Context, FidRequest, Target, run_fid
    from bench.registry import MODELS

    cfg = resolve(preset="lfm-tiny")
    torch.manual_seed(0)
    model = MODELS.load("lfm")(cfg.model, (3, 32, 32), 0).eval()
    for p in model.parameters():  # non-zero output layer, so samples depend on the network
        torch.nn.init.normal_(p, std=0.02)
    spec = dataclasses.replace(cfg.sample, steps=2)
    ref_images = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    ref = make_refs(tmp_path / "cache", ref_images)
    values = {}
    for batch in (2, 5):
        out = tmp_path / f"results-{batch}"
        ctx = Context(
            Target("lfm", cfg, None), model, spec, torch.device("cpu"), "fp32", {}, out, load_autoencoder("pixel")
        )
        req = FidRequest(["tf", "clean"], 6, str(fid_ref_path(tmp_path / "cache", ref, "tf")), batch)
        run_fid(ctx, dataclasses.replace(req, backends=["tf"]))
        (record,) = load_records(out)
        assert record.protocol_name == "fid-tf-6-synthetic32" and record.seeds == {"start": 0, "count": 6}
        assert record.sampling["nfe"] == 2 and record.value > 0
        values[batch] = record.value
    # Per-sample seeds give the same images; only float summation order differs (amplified by the rank-5 sqrt).
    assert values[2] == pytest.approx(values[5], rel=1e-6)


def fid_ref_path(cache: Path, ref: str, backend: str) -> Path:
    from bench.metrics.fid import ref_stats_path

    return ref_stats_path(ref.rstrip("0123456789"), int(ref[len(ref.rstrip("0123456789")) :]), backend, cache)


def test_killed_eval_leaves_no_partial_record(tmp_path: Path) -> None:
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "bench.cli.eval", "run", "lfm", "--preset", "lfm-tiny", "--res", "32",
           "--metrics", "flops,time", "--time-batch", "1", "--warmup", "1", "--repeats", "100000",
           "--device", "cpu", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]  # the three GFLOPs records; timing is now running
        assert all(line.startswith("gflops_") for line in lines), lines
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 3 and all(n.startswith("gflops_") and n.endswith(".json") for n in names), names
    assert all(read_record(out / n).value is not None for n in names)


def test_steps_flag_and_set_are_one_override_route(tmp_path: Path) -> None:
    base = ["run", "lfm", "--preset", "lfm-tiny", "--res", "32", "--metrics", "nfe", "--device", "cpu"]
    for extra, out in ((["--steps", "3"], "a"), (["--set", "sample.steps=3"], "b")):
        result = runner.invoke(app, [*base, *extra, "--out", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
    a, b = (next(r for r in load_records(tmp_path / d) if r.metric == "nfe") for d in ("a", "b"))
    assert a.value == b.value == 3 and a.sampling == b.sampling and a.sampling["steps"] == 3
