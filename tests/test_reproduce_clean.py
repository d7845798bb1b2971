"""`bench reproduce mini --real-features-clean`: clean-fid FID at the last point, on tiny models, on the CPU.

The tf metrics run on cheap_fid's stand-in features (the wiring of the tf path is tested elsewhere); clean-fid runs
for real (clean-fid's PIL-bicubic resize and the verified Inception network on the CPU), and its FID is compared
with bench.metrics.fid's own clean-fid extractor applied to the very images the pipeline scored.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.cli.app import app
from bench.metrics.fid import make_extractor as real_make_extractor  # before cheap_fid replaces it in the module
from tests.conftest import SHARED_DATA, requires_shared_data
from tests.test_reproduce_benchmark import real_features
from tests.test_reproduce_mini import TINY, cheap_fid, fabricated_carry, invoke, needs_taesd, runner  # noqa: F401

SETS = [a for s in TINY for a in ("--set", s)] + ["--set", "sample.steps=2"]
TIMING = {"score_seconds", "sample_seconds", "gpu_seconds", "loss"}  # differ between two trainings of one seed


def clean_features(carry: Path, n: int = 8, **meta_changes: str) -> Path:
    """A clean reference-features file of the carry's source: real clean-fid features of random images."""
    from safetensors.torch import save_file

    from bench.metrics.inception import FID_INCEPTION_SHA256

    manifest = json.loads((carry / "carry.json").read_text())
    images = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8))
    feats = real_make_extractor("clean")(images)
    meta = {"format": "bench-reference-features", "dataset": "celebahq", "res": str(manifest["res"])}
    meta |= {"backend": "clean", "source_hash": manifest["source_hash"], "inception_sha256": FID_INCEPTION_SHA256}
    path = carry.parent / "ref-clean" / f"celebahq64-clean-features-{len(meta_changes)}.safetensors"
    path.parent.mkdir(exist_ok=True)
    save_file({"features": torch.from_numpy(feats.astype(np.float32))}, str(path), metadata=meta | meta_changes)
    return path


def spy(monkeypatch: pytest.MonkeyPatch) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(images the tf extractor saw, images the clean-fid pipeline saw), batch by batch."""
    from bench.metrics import fid
    from bench.reproduce.clean import CleanFeatures

    tf_seen: list[torch.Tensor] = []
    clean_seen: list[torch.Tensor] = []
    cheap, add = fid.make_extractor, CleanFeatures.add

    def recording(*args: object, **kwargs: object) -> object:
        inner = cheap(*args, **kwargs)
        return lambda images: (tf_seen.append(images.clone()), inner(images))[1]

    monkeypatch.setattr(fid, "make_extractor", recording)
    monkeypatch.setattr(
        CleanFeatures, "add", lambda self, images: (clean_seen.append(images.clone()), add(self, images))[1]
    )
    return tf_seen, clean_seen


@needs_taesd
def test_clean_fid_at_the_last_point_is_clean_fid_of_the_same_samples(
    tmp_path: Path,
    cheap_fid: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from safetensors.torch import load_file

    from bench.metrics.fid import FeatureStats, RefStats, fid_from_stats
    from bench.results import load_records

    carry = fabricated_carry(tmp_path)
    tf_file, clean_file = real_features(carry), clean_features(carry)
    tf_seen, clean_seen = spy(monkeypatch)
    common = ["--real-features", tf_file, "--carry", carry, "--models", "lfm", "--images", 16, "--points", 2,
              "--num-samples", 6, "--batch-size", 4, "--bootstrap", 0, *SETS]  # fmt: skip
    plain = tmp_path / "plain"
    invoke("reproduce", "mini", *common, "--work-dir", tmp_path / "runs-plain", "--out", plain)
    out = invoke("reproduce", "mini", *common, "--real-features-clean", clean_file, "--work-dir", tmp_path / "runs",
                 "--out", tmp_path / "results").output  # fmt: skip
    assert "clean FID" in out and "s added, resize on" in out
    records = load_records(tmp_path / "results")
    clean = [r for r in records if r.metric == "clean_fid"]
    assert len(clean) == 1 and len(records) == len(load_records(plain)) + 1  # the last point only
    rec = clean[0]
    tf = next(r for r in records if r.metric == "fid" and r.extra["final"])
    assert rec.protocol["name"] == "fid-clean-6-celebahq64" and rec.protocol["library"] == "clean-fid"
    assert (
        rec.protocol["reference_features"]["backend"] == "clean"
        and tf.protocol["reference_features"]["backend"] == "tf"
    )
    assert set(rec.extra) == set(tf.extra) | {"clean_resize_workers"}  # tf's extras (no bootstrap asked here)
    assert {k: rec.extra[k] for k in tf.extra if k != "score_seconds"} == {
        k: v for k, v in tf.extra.items() if k != "score_seconds"
    }
    assert rec.extra["score_seconds"] > 0 and rec.sampling == tf.sampling and rec.seeds == tf.seeds
    # the same decoded, quantised samples (in two batches of 4 and 2), their clean FID computed directly
    assert [len(b) for b in clean_seen] == [4, 2] and all(
        torch.equal(a, b) for a, b in zip(clean_seen, tf_seen[-2:], strict=True)
    )
    samples = torch.cat(clean_seen)
    ref = load_file(str(clean_file))["features"].double().numpy()
    mu, sigma = FeatureStats.of(ref).mean_cov()
    direct = fid_from_stats(FeatureStats.of(real_make_extractor("clean")(samples)), RefStats(mu, sigma, len(ref)))
    assert rec.value == pytest.approx(direct, rel=1e-6)
    # with or without the option, the tf records say the same (only timings differ between two trainings)
    without = {(r.metric, r.extra["point"]): r for r in load_records(plain)}
    for r in records:
        if r.metric != "clean_fid":
            other = without[(r.metric, r.extra["point"])]
            assert r.value == other.value and r.protocol == other.protocol
            assert {k: v for k, v in r.extra.items() if k not in TIMING} == {
                k: v for k, v in other.extra.items() if k not in TIMING
            }
    # the report's headline table gains the clean FID column (and only with clean records)
    from bench.report.build import generate

    paper = Path(__file__).parents[1] / "results" / "paper"
    tables = {
        name: generate(folder, tmp_path / "no-runs", paper, with_plots=False).files["tables.md"].decode()
        for name, folder in (("clean", tmp_path / "results"), ("plain", plain))
    }
    assert "clean FID [fid-clean-6-celebahq64]" in tables["clean"] and "clean FID" not in tables["plain"]
    row = next(line for line in tables["clean"].splitlines() if line.startswith("| LFM | lfm |"))
    assert f"| {rec.value:.2f} |" in row
    summary = next((tmp_path / "results" / "mini" / "celebahq64" / "provenance").glob("*.json"))
    assert json.loads(summary.read_text())["clean_fid"]["reference_features"]["backend"] == "clean"
    assert "clean_fid" not in json.loads(
        next((plain / "mini" / "celebahq64" / "provenance").glob("*.json")).read_text()
    )


@needs_taesd
@pytest.mark.parametrize(
    ("case", "message"),
    [
        (
            "missing",
            "clean features '.*' do not exist; run `bench reproduce mini-prepare --features --backend clean`",
        ),
        ("tf file", "computed with the tf FID backend, not clean"),
        ("other res", r"other images than the carried latents \(celebahq, 64 px\)"),
        ("other dataset", r"other images than the carried latents \(celebahq, 64 px\)"),
    ],
)
def test_bad_clean_features_stop_the_command_before_training(
    tmp_path: Path,
    cheap_fid: None,  # noqa: F811
    case: str,
    message: str,
) -> None:
    import re

    carry = fabricated_carry(tmp_path)
    tf_file = real_features(carry)
    path = {
        "missing": lambda: tmp_path / "nothing.safetensors",
        "tf file": lambda: tf_file,
        "other res": lambda: clean_features(carry, 2, res="128"),
        "other dataset": lambda: clean_features(carry, 2, dataset="imagenette"),
    }[case]()
    result = runner.invoke(app, [
        "reproduce", "mini", "--real-features", str(tf_file), "--real-features-clean", str(path), "--carry",
        str(carry), "--models", "lfm", "--images", "16", "--points", "2", "--num-samples", "6", "--work-dir",
        str(tmp_path / "runs"), "--out", str(tmp_path / "results"), "--set", "train.batch_size=4"])  # fmt: skip
    assert result.exit_code == 1 and re.search(message, result.output), result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()  # nothing trained or written


@requires_shared_data("celebahq-5k-512")
def test_prepare_writes_clean_features_checked_against_the_clean_statistics(
    tmp_path: Path,
    cheap_fid: None,  # noqa: F811
) -> None:
    import shutil

    from bench.errors import BenchError
    from bench.metrics import fid
    from bench.paths import cache_dir
    from bench.reproduce.mini import Carry
    from bench.reproduce.reference import load_reference, read_features_file

    data = tmp_path / "faces"
    data.mkdir()
    for i in range(12):
        shutil.copyfile(SHARED_DATA / "celebahq-5k-512" / f"{i}.jpg", data / f"{i}.jpg")
    ref = tmp_path / "ref"
    out = invoke("reproduce", "mini-prepare", "--path", data, "--res", 64, "--no-latents", "--features",
                 "--backend", "clean", "--features-dir", ref).output  # fmt: skip
    path = ref / "celebahq64-clean-features.safetensors"
    assert f"Real-image features: {path}" in out and "clean features:" in out
    assert not (ref / "celebahq64-tf-features.safetensors").exists()  # --backend clean: clean only
    feats, labels, meta = read_features_file(path)
    stats = fid.load_stats(fid.ref_stats_path("celebahq", 64, "clean", cache_dir()))
    assert meta["backend"] == "clean" and meta["count"] == "12" and labels is None and stats.backend == "clean"
    assert np.allclose(feats.double().numpy().mean(0), stats.mu, atol=1e-5)  # the cached clean statistics
    carry = Carry(tmp_path, {"dataset": "celebahq", "res": 64, "source_hash": meta["source_hash"]})
    assert load_reference(path, carry, torch.device("cpu"), backend="clean").n == 12
    with pytest.raises(BenchError, match="computed with the clean FID backend, not tf"):
        load_reference(path, carry, torch.device("cpu"))
