"""`bench reproduce mini` (one command: train, sample and score at every point) on tiny models, on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.cli.app import app
from bench.errors import BenchError
from bench.reproduce.benchmark import evaluation_points
from bench.reproduce.latent import LATENT_METRICS
from bench.reproduce.mini import MINI_BENCHMARK, MINI_METRICS
from tests.test_reproduce_mini import TINY, cheap_fid, fabricated_carry, invoke, needs_taesd, runner  # noqa: F401

POINTS = 2


def test_evaluation_points_halve_back_from_the_budget() -> None:
    assert evaluation_points(1_228_800, 4, 256) == [153_600, 307_200, 614_400, 1_228_800]
    assert evaluation_points(32, 2, 4) == [16, 32]
    with pytest.raises(BenchError, match="at least 32 images"):
        evaluation_points(16, 4, 4)
    with pytest.raises(BenchError, match="not a multiple"):
        evaluation_points(36, 2, 8)


def test_a_compiled_run_needs_its_compile_time_before_the_deadline_to_start() -> None:
    from bench.config import resolve
    from bench.reproduce.deadline import COMPILE_GUESS_S, MIN_TRAIN_S, SCORE_GUESS_S, start_guess

    eager = resolve(preset="lfm-celebahq128-mini", overrides=[{"train": {"compile": False}}])
    graphs = resolve(preset="lfm-celebahq128-mini", overrides=[{"train": {"compile": True}}])
    assert start_guess([8, 16], eager, None) == MIN_TRAIN_S + 2 * SCORE_GUESS_S
    assert start_guess([8, 16], graphs, None) == COMPILE_GUESS_S + MIN_TRAIN_S + 2 * SCORE_GUESS_S
    assert start_guess([], graphs, None) == 0.0  # nothing left to score: a resumed complete run costs nothing


def real_features(carry: Path, n: int = 16) -> Path:
    """A reference-features file of the carry's source: cheap_fid's features of random images."""
    from safetensors.torch import save_file

    from bench.metrics import fid
    from bench.metrics.inception import FID_INCEPTION_SHA256

    manifest = json.loads((carry / "carry.json").read_text())
    images = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8))
    feats = fid.make_extractor("tf")(images)
    meta = {"format": "bench-reference-features", "dataset": "celebahq", "res": str(manifest["res"])}
    meta |= {"backend": "tf", "source_hash": manifest["source_hash"], "inception_sha256": FID_INCEPTION_SHA256}
    path = carry.parent / "ref" / "celebahq64-tf-features.safetensors"
    path.parent.mkdir()
    save_file({"features": torch.from_numpy(feats.astype(np.float32)), "_": torch.zeros(1)}, str(path), metadata=meta)
    return path


@needs_taesd
def test_one_command_trains_scores_every_point_and_bundles_it(tmp_path: Path, cheap_fid: None) -> None:  # noqa: F811
    from bench.reproduce.bundle import ingest_bundle
    from bench.results import load_records

    carry = fabricated_carry(tmp_path)
    feats, results, bundle = real_features(carry), tmp_path / "results", tmp_path / "out" / "mini.tar.gz"
    sets = [a for s in TINY for a in ("--set", s)] + ["--set", "sample.steps=2"]
    out = invoke("reproduce", "mini", "--real-features", feats, "--carry", carry, "--models", "lfm,lapflow",
                 "--seeds", "0,1", "--images", 16, "--points", POINTS, "--num-samples", 6, "--batch-size", 4,
                 "--bootstrap", 2, "--work-dir", tmp_path / "runs", "--out", results, "--bundle", bundle,
                 *sets).output  # fmt: skip
    assert "4 run(s) complete" in out
    records = load_records(results)
    # runs x seeds x points x metrics (the Inception ones and the latent statistics)
    assert len(records) == 2 * 2 * POINTS * (len(MINI_METRICS) + len(LATENT_METRICS))
    folder = results / "mini" / "celebahq64"
    assert {p.parent for p in folder.glob("*.json")} == {folder}
    by_key = {(r.extra["run"], r.extra["train_seed"], r.extra["point"], r.metric): r for r in records}
    fid = by_key[("lapflow", 1, 1, "fid")]
    assert fid.extra["benchmark"] == MINI_BENCHMARK and fid.extra["images_seen"] == 16 and fid.extra["final"]
    assert fid.config["seed"] == 1 and fid.protocol["name"] == "fid-tf-6-celebahq64" and fid.sampling["nfe"] == 2
    assert fid.extra["compile"] is False  # --train-path auto on the CPU: eager
    assert fid.extra["fid_bootstrap"]["reps"] == 2 and "fid_bootstrap" not in by_key[("lapflow", 1, 0, "fid")].extra
    first = by_key[("lfm", 0, 0, "kid")]
    assert (
        first.extra["images_seen"] == 8 and first.extra["steps"] == 2 and first.protocol["name"].startswith("kid-tf-6")
    )
    assert 0 < first.extra["gpu_seconds"] <= fid.extra["gpu_seconds"] + 60
    assert by_key[("lfm", 0, 1, "precision")].protocol["name"] == "precision-k3-tf-6-celebahq64"
    for r in records:
        reference = r.protocol["reference_latents" if r.metric in LATENT_METRICS else "reference_features"]
        assert np.isfinite(r.value) and reference["source_hash"] == "s" * 64
    variance, frechet = by_key[("lapflow", 1, 1, "latent_variance")], by_key[("lapflow", 1, 1, "latent_frechet")]
    assert variance.protocol["name"] == "latent-variance-6-celebahq64" and frechet.protocol["space"] == "latent"
    assert variance.protocol["reference_latents"]["count"] == 2 * 12  # the fabricated carry: 12 images, their mirrors
    assert variance.value > 0 and set(variance.extra["latent_bands"]) == {"coarse", "fine"} and frechet.value > 0
    assert variance.extra["images_seen"] == fid.extra["images_seen"] and variance.sampling == fid.sampling
    assert all(0 <= by_key[(n, s, p, m)].value <= 1 for n, s, p, m in by_key if m in ("precision", "recall"))
    # seeds differ (other initialisation and data order), the same seed is the same training
    assert by_key[("lfm", 0, 1, "fid")].value != by_key[("lfm", 1, 1, "fid")].value
    grid = json.loads((folder / "grids" / "lfm-lapflow-seed0-1-16.json").read_text())
    assert [(r["run"], r["train_seed"], r["point"]) for r in grid["rows"]][:2] == [("lfm", 0, 0), ("lfm", 0, 1)]
    assert len(grid["rows"]) == 2 * 2 * POINTS and grid["tile"] == 64
    summary = json.loads((folder / "provenance" / "lfm-lapflow-seed0-1-16.json").read_text())
    assert summary["points"] == [8, 16] and summary["runs"]["lapflow-seed1"]["complete"]
    # the bundle holds everything written; ingesting it elsewhere reproduces the records
    elsewhere = tmp_path / "elsewhere"
    written = ingest_bundle(bundle, elsewhere, tmp_path / "runs-here")
    assert (
        len(load_records(elsewhere)) == len(records)
        and (tmp_path / "runs-here" / "lfm-seed0" / "stats.jsonl").is_file()
    )
    assert sorted(p.name for p in (elsewhere / "mini" / "celebahq64").iterdir()) == sorted(
        p.name for p in folder.iterdir()
    )
    assert len(written) > len(records)
    # ... and the report's mini section reads them: tables, curves, the labelled grid and the paragraph
    from bench.report.build import generate

    report = generate(results, tmp_path / "no-runs", Path(__file__).parents[1] / "results" / "paper")
    text = report.files["tables.md"].decode()
    assert "### celebahq, 64 px" in text and "- LapFlow < LFM: " in text and "2 and 2 seeds" in text
    assert "- mask causal < none: not measured" in text
    assert {"plots/mini-celebahq64-fid-vs-images.png", "plots/mini-celebahq64-fid-vs-gpu-seconds.png"} <= set(
        report.files
    )
    assert any(name.startswith("samples/mini-celebahq64-") for name in report.files)


@needs_taesd
def test_one_command_refuses_features_of_other_images(tmp_path: Path, cheap_fid: None) -> None:  # noqa: F811
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    carry = fabricated_carry(tmp_path)
    feats = real_features(carry)
    with safe_open(str(feats), framework="pt") as f:
        meta = dict(f.metadata())
    save_file(load_file(str(feats)), str(feats), metadata={**meta, "source_hash": "t" * 64})
    result = runner.invoke(app, [
        "reproduce", "mini", "--real-features", str(feats), "--carry", str(carry), "--models", "lfm",
        "--images", "16", "--points", "2", "--num-samples", "6", "--work-dir", str(tmp_path / "runs"),
        "--out", str(tmp_path / "results"), "--set", "train.batch_size=4"])  # fmt: skip
    assert result.exit_code == 1 and "other images than the carried latents" in result.output
    assert not (tmp_path / "results").exists()


def test_train_path_picks_graphs_on_cuda_and_set_overrides_it(tmp_path: Path) -> None:
    from bench.config import parse_set
    from bench.reproduce.benchmark import BenchmarkOptions, run_config, train_path
    from bench.reproduce.mini import Carry

    assert [train_path("auto", d) for d in ("cuda", "cuda:1", "cpu")] == ["graphs", "graphs", "eager"]
    assert train_path("compile", "cuda") == "compile"
    with pytest.raises(BenchError, match="--train-path must be auto or one of eager, compile, graphs, not 'fast'"):
        train_path("fast", "cuda")
    manifest = {"dataset": "celebahq", "res": 128, "autoencoder": "taesd", "latents": "l.safetensors", "weights": "w"}
    carry = Carry(tmp_path, manifest)  # configs only: nothing is read
    opts = BenchmarkOptions(carry.folder, tmp_path, tmp_path, ["lfm"], [0], 16, 2, 6, tmp_path)
    graphs = run_config(carry, "lfm-celebahq128-mini", "lfm", 0, opts, "graphs").train
    assert (graphs.compile, graphs.compile_mode) == (True, "reduce-overhead")
    opts.overrides = [parse_set("train.compile_mode=default")]  # --set wins over the path
    assert run_config(carry, "lfm-celebahq128-mini", "lfm", 0, opts, "graphs").train.compile_mode == "default"
    assert run_config(carry, "lfm-celebahq128-mini", "lfm", 0, opts, "eager").train.compile is False


def test_ingest_refuses_a_bundle_with_a_bad_record_before_writing(tmp_path: Path) -> None:
    import io
    import tarfile

    from bench.reproduce.bundle import ingest_bundle

    bundle = tmp_path / "b.tar.gz"
    with tarfile.open(bundle, "w:gz") as tar:
        for name, data in (("results/mini/x/grids/a.json", b"{}"), ("results/mini/x/fid__a.json", b"[1, 2]")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(BenchError, match="is a JSON list, not an object"):
        ingest_bundle(bundle, tmp_path / "results")
    assert not (tmp_path / "results").exists()
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("results/../../x.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(BenchError, match="unexpected path"):
        ingest_bundle(evil, tmp_path / "results")
    with pytest.raises(BenchError, match="not a readable"):
        ingest_bundle(tmp_path / "missing.tar.gz", tmp_path / "results")


def test_ingest_refuses_to_overwrite_a_run_of_another_budget(tmp_path: Path) -> None:
    import io
    import tarfile

    from bench.reproduce.bundle import ingest_bundle

    def bundle(name: str, images: int) -> Path:
        path = tmp_path / name
        with tarfile.open(path, "w:gz") as tar:
            files = {
                "runs/lfm-seed0/config.yaml": f"train:\n  total_images: {images}\n".encode(),
                "runs/lfm-seed0/stats.jsonl": f'{{"images": {images}}}\n'.encode(),
            }
            for member, data in files.items():
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path

    runs = tmp_path / "runs"
    ingest_bundle(bundle("short.tar.gz", 512), tmp_path / "results", runs)
    ingest_bundle(bundle("again.tar.gz", 512), tmp_path / "results", runs)  # the same run continued: replaced
    with pytest.raises(BenchError, match=r"trained to 512 images and bundle .* trained to 2048; pass another --runs"):
        ingest_bundle(bundle("long.tar.gz", 2048), tmp_path / "results", runs)
    assert (runs / "lfm-seed0" / "stats.jsonl").read_text() == '{"images": 512}\n'  # nothing was unpacked
    ingest_bundle(bundle("long.tar.gz", 2048), tmp_path / "results", tmp_path / "runs-2048")


def test_reference_features_round_trip_and_refuse_other_statistics(tmp_path: Path) -> None:
    from bench.metrics import fid
    from bench.reproduce.mini import Carry
    from bench.reproduce.reference import export_reference_features, load_reference

    feats = np.random.default_rng(0).random((20, 2048)).astype(np.float32)
    np.save(tmp_path / "f-tf.npy", feats)
    meta = {"backend": "tf", "dataset": "celebahq", "res": 128, "source_hash": "h" * 64}
    fid.save_stats(tmp_path / "ref.npz", fid.FeatureStats.of(feats.astype(np.float64)), meta)
    out = export_reference_features(tmp_path / "f-tf.npy", tmp_path / "ref.npz", tmp_path / "out.safetensors")
    carry = Carry(tmp_path, {"dataset": "celebahq", "res": 128, "source_hash": "h" * 64})
    ref = load_reference(out, carry, torch.device("cpu"))
    assert (
        torch.equal(ref.features, torch.from_numpy(feats))
        and ref.n == 20
        and (ref.dataset, ref.res) == ("celebahq", 128)
    )
    assert np.allclose(ref.mu.numpy(), feats.astype(np.float64).mean(0)) and ref.describe()["source_hash"] == "h" * 64
    with pytest.raises(BenchError, match="other images"):
        load_reference(
            out, Carry(tmp_path, {"dataset": "celebahq", "res": 64, "source_hash": "h" * 64}), torch.device("cpu")
        )
    np.save(tmp_path / "g-tf.npy", feats[::-1] * 2)  # other images: their statistics differ
    with pytest.raises(BenchError, match="do not reproduce"):
        export_reference_features(tmp_path / "g-tf.npy", tmp_path / "ref.npz", tmp_path / "g.safetensors")


@needs_taesd
def test_a_longer_budget_resumes_the_run_and_scores_only_new_points(tmp_path: Path, cheap_fid: None) -> None:  # noqa: F811
    from bench.reproduce.benchmark import points_left, trained_seconds
    from bench.reproduce.deadline import score_guess
    from bench.results import load_records

    carry = fabricated_carry(tmp_path)
    feats, results, runs = real_features(carry), tmp_path / "results", tmp_path / "runs"
    sets = [a for s in TINY for a in ("--set", s)] + ["--set", "sample.steps=2"]
    common = ["--real-features", feats, "--carry", carry, "--models", "lfm", "--num-samples", 6, "--batch-size", 6,
              "--bootstrap", 0, "--work-dir", runs, "--out", results, "--deadline-s", 3600, *sets]  # fmt: skip
    invoke("reproduce", "mini", "--images", 16, "--points", 2, *common)
    first = trained_seconds(runs / "lfm-seed0")
    assert first > 0 and trained_seconds(tmp_path / "nothing") == 0.0
    # The deadline check of the resumed command guesses the scoring time of the one point left, not of all three.
    assert points_left([8, 16, 32], runs / "lfm-seed0") == [32] and points_left([8], tmp_path / "nothing") == [8]
    from bench.config import resolve

    cfg = resolve(preset="lfm-celebahq128-mini")
    assert score_guess([], cfg, None) == 0.0 and score_guess([32], cfg, None) * 3 == score_guess([8, 16, 32], cfg, None)
    invoke("reproduce", "mini", "--images", 32, "--points", 3, *common)  # same run, twice the budget
    fids = sorted((r.extra["images_seen"], r.extra["steps"]) for r in load_records(results) if r.metric == "fid")
    assert fids == [(8, 2), (16, 4), (32, 8)]  # 8 and 16 were scored once, by the first command
    assert trained_seconds(runs / "lfm-seed0") > first
