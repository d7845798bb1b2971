"""Mini benchmark: the training time budget, carried latents, return limits, and prepare -> run -> score wiring."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bench.cli.app import app
from bench.config import DataConfig, parse_set, resolve
from bench.dist import DistInfo
from bench.errors import BenchError
from bench.registry import mini_models
from bench.reproduce.mini import DEFAULT_MODELS, check_return_limits, model_presets
from tests.conftest import SHARED_DATA, SHARED_WEIGHTS, requires_shared_data

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
runner = CliRunner()
needs_taesd = pytest.mark.skipif(not (SHARED_WEIGHTS / "taesd").is_dir(), reason="TAESD weights are not available")
TINY = [  # every mini model shrunk to CPU size; the pipeline, not the model, is under test
    "model.backbone.depth=1",
    "model.backbone.hidden=32",
    "model.backbone.heads=2",
    "train.batch_size=4",
]


def invoke(*args: object) -> object:
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


# ----------------------------------------------------------------------------------------------------------------
# train.max_seconds


def budget_cfg(seconds: float):
    sets = ["data.res=16", "data.synthetic_size=32", "train.batch_size=8", "train.total_images=100000000"]
    sets += ["train.grid_size=2", "train.checkpoint_every=0", "sample.steps=2", f"train.max_seconds={seconds}"]
    sets += ["model.backbone.depth=1", "model.backbone.hidden=32", "model.backbone.heads=2"]
    return resolve(preset="lfm-tiny", overrides=[parse_set(s) for s in sets])


def test_time_budget_stops_training_and_adds_up_over_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import itertools
    import types

    import bench.train
    from bench.checkpoint import latest_checkpoint
    from bench.train import train

    ticks = itertools.count(1)  # a clock that advances 0.1 s per reading: step counts become exact
    monkeypatch.setattr(bench.train, "time", types.SimpleNamespace(perf_counter=lambda: 0.1 * next(ticks)))
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    first = train(budget_cfg(0.35), run_dir, CPU, None, cache, progress=False)
    s = first.state
    assert not first.interrupted and s.step == 4 and s.images_seen == 32  # 0.1 s per step: 4 steps pass 0.35 s
    assert s.train_seconds == pytest.approx(0.4)
    saved = json.loads((latest_checkpoint(run_dir) / "state.json").read_text())
    assert saved["train_seconds"] == pytest.approx(0.4) and saved["step"] == 4
    assert list((run_dir / "samples").glob("grid-*.png"))  # a budget stop is a normal end
    again = train(budget_cfg(0.35), run_dir, CPU, None, cache, progress=False)
    assert again.state.step == 4  # budget already spent: resuming runs no step
    longer = train(budget_cfg(0.75), run_dir, CPU, None, cache, progress=False)  # the budget adds up over resumes
    assert longer.state.step == 8 and longer.state.train_seconds == pytest.approx(0.8)


# ----------------------------------------------------------------------------------------------------------------
# carried latents


def fake_prepared(folder: Path, n: int, shape: tuple[int, int, int], weights_hash: str) -> tuple[dict, dict]:
    """A prepared folder's latent cache as bench.datasets.cache writes it (float16 arrays, meta, marker)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("lat.npy", "lat-flip.npy"):
        np.save(folder / name, rng.standard_normal((n, *shape)).astype(np.float16))
    meta = {"source_hash": "s" * 64, "source": "faces", "count": n, "class_names": [], "skipped": ["bad.jpg (x)"]}
    marker = {"weights_hash": weights_hash, "files": {"latents": "lat.npy", "flipped": "lat-flip.npy"}}
    return meta, {**marker, "encode": "deterministic", "dtype": "float16"}


def test_carried_latents_load_where_a_data_folder_is_expected(tmp_path: Path) -> None:
    from bench.data import load_training_data
    from bench.datasets.carried import export_carried, read_carried_meta

    cfg = DataConfig(dataset="celebahq", res=32, autoencoder="taesd")
    meta, marker = fake_prepared(tmp_path / "prep", 6, (4, 4, 4), "w" * 64)
    path = export_carried(tmp_path / "prep", meta, marker, cfg, tmp_path / "carry" / "c.safetensors")
    info = read_carried_meta(path)
    assert (info["count"], info["res"], info["weights_hash"], info["skipped"]) == (6, 32, "w" * 64, ["bad.jpg (x)"])
    data = load_training_data(
        DataConfig(dataset="celebahq", res=32, autoencoder="taesd", path=str(path)), None, tmp_path
    )
    expected = torch.from_numpy(np.load(tmp_path / "prep" / "lat.npy").astype(np.float32))
    assert torch.equal(data.latents, expected) and data.flipped is not None and data.labels is None
    assert data.meta["source_hash"] == "s" * 64 and data.meta["folder"] == str(path)
    x, _ = data.batch(torch.tensor([2, 3]), torch.tensor([True, False]))
    assert torch.equal(x[0], data.flipped[2]) and torch.equal(x[1], expected[3])
    with pytest.raises(BenchError, match="hold res 32 but the config asks for 64"):
        load_training_data(DataConfig(dataset="celebahq", res=64, autoencoder="taesd", path=str(path)), None, tmp_path)
    other = tmp_path / "other-weights"
    other.mkdir()
    (other / "config.json").write_text("{}")
    (other / "diffusion_pytorch_model.safetensors").write_bytes(b"not the encoder")
    cfg_other = DataConfig(dataset="celebahq", res=32, autoencoder="taesd", path=str(path), autoencoder_path=str(other))
    with pytest.raises(BenchError, match="are not the ones that encoded"):
        load_training_data(cfg_other, None, tmp_path)
    with pytest.raises(BenchError, match="does not exist"):
        read_carried_meta(tmp_path / "missing.safetensors")


# ----------------------------------------------------------------------------------------------------------------
# names and limits


def test_mini_presets_share_backbone_data_and_nfe() -> None:
    cfgs = {name: resolve(preset=preset) for name, preset in mini_models().items()}
    assert {(*c.model.backbone.dims(), c.model.backbone.patch) for c in cfgs.values()} == {(12, 768, 12, 2)}
    assert {(c.data.dataset, c.data.res, c.data.autoencoder) for c in cfgs.values()} == {("celebahq", 128, "taesd")}
    assert {c.sample.steps for c in cfgs.values()} == {50} and cfgs["dit"].sample.solver == "ddpm"
    assert {c.train.batch_size for c in cfgs.values()} == {256} and cfgs["dit"].train.lr == 1e-4
    assert [cfgs[n].model.mask for n in ("lapflow", "lapflow-mask-none", "lapflow-mask-self")] == [
        "causal",
        "none",
        "self",
    ]
    assert model_presets(["lfm", "dit-tiny"]) == {"lfm": "lfm-celebahq128-mini", "dit-tiny": "dit-tiny"}
    with pytest.raises(BenchError, match="Did you mean 'lapflow'"):
        model_presets(["lapflwo"])


def test_return_limits_are_checked_before_any_work() -> None:
    six = DEFAULT_MODELS.split(",")
    size = check_return_limits(six, 5000, (4, 16, 16))
    assert size == 5000 * (2 * 4 * 16 * 16 + 8) + 64 * 1024  # float16 latents, int64 seeds, header: 9.9 MiB
    with pytest.raises(BenchError, match="returns at most 8"):
        check_return_limits([*six, "lfm-tiny"], 16, (4, 16, 16))
    with pytest.raises(BenchError, match="use at most 8"):
        check_return_limits(["lfm"], 9000, (4, 16, 16))


def test_records_name_the_commit_of_the_code_that_trained() -> None:
    from bench.reproduce.mini import code_fingerprint
    from bench.reproduce.score import provenance
    from bench.runtime import git_state

    here = code_fingerprint()
    assert len(here) == 64 and here == code_fingerprint()
    gpu = provenance({"git": {"commit": "abc", "dirty": False, "code_sha256": "x"}})
    assert gpu["commit"] == "abc" and gpu["source"] == "GPU run"
    same = provenance({"git": {"commit": "unknown", "dirty": None, "code_sha256": here}})
    assert same["commit"] == git_state()["commit"] and same["code_sha256"] == here
    other = provenance({"git": {"commit": "unknown", "dirty": None, "code_sha256": "0" * 64}})
    assert other["commit"] == "unknown" and "differs" in other["source"]


# ----------------------------------------------------------------------------------------------------------------
# run and score (fabricated carry: no image preparation, no Inception network)


@pytest.fixture
def cheap_fid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-ins for the Inception network and the 2048-d distance (both tested in test_fid.py): mean colours of a
    4x4 grid projected to 2048 dims, distance on the first 48 dims (a 2048-d eigen-decomposition is slow here)."""
    from bench.metrics import fid

    projection = np.random.default_rng(0).standard_normal((48, 2048))

    def extractor(backend: str, device: object = "cpu", cache_dir: object = None) -> object:
        def features(images: torch.Tensor) -> np.ndarray:
            b, h, w, _ = images.shape
            cells = images.double().reshape(b, 4, h // 4, 4, w // 4, 3).mean(dim=(2, 4)).reshape(b, 48) / 255
            return cells.numpy() @ projection + (0.5 if backend == "clean" else 0.0)

        return features

    exact = fid.frechet_distance
    monkeypatch.setattr(fid, "make_extractor", extractor)
    monkeypatch.setattr(
        fid, "frechet_distance", lambda m1, s1, m2, s2: exact(m1[:48], s1[:48, :48], m2[:48], s2[:48, :48])
    )


def fabricated_carry(root: Path, n: int = 12, res: int = 64) -> Path:
    """A carry folder as mini-prepare writes it, from random latents, plus reference statistics of random features
    for the same source (64 px by default: TAESD decoding dominates these tests' time on a CPU)."""
    from bench.autoencoders import weights_hash
    from bench.datasets.carried import export_carried
    from bench.metrics import fid
    from bench.paths import cache_dir
    from bench.reproduce.prepare import copy_weights

    cfg = DataConfig(dataset="celebahq", res=res, autoencoder="taesd")
    meta, marker = fake_prepared(root / "prep", n, (4, res // 8, res // 8), weights_hash(SHARED_WEIGHTS / "taesd"))
    carry, name = root / "carry", f"celebahq{res}-taesd.safetensors"
    export_carried(root / "prep", meta, marker, cfg, carry / name)
    copy_weights("taesd", "", carry / "taesd")
    manifest = {"format": "bench-mini-carry", "version": 1, "dataset": "celebahq", "res": res, "autoencoder": "taesd"}
    manifest |= {"latents": name, "weights": "taesd", "weights_hash": marker["weights_hash"]}
    manifest |= {"source_hash": meta["source_hash"], "count": n, "flip": True}
    (carry / "carry.json").write_text(json.dumps(manifest))
    for backend in ("tf", "clean"):
        stats = fid.FeatureStats.of(np.random.default_rng(1).standard_normal((8, 2048)))
        ref_meta = {"backend": backend, "dataset": "celebahq", "res": res, "source_hash": meta["source_hash"]}
        fid.save_stats(fid.ref_stats_path("celebahq", res, backend, cache_dir()), stats, ref_meta)
    return carry


@needs_taesd
def test_run_then_score_writes_latents_summary_grid_and_records(tmp_path: Path, cheap_fid: None) -> None:
    from bench.results import load_records

    carry, out, results = fabricated_carry(tmp_path), tmp_path / "out", tmp_path / "results"
    sets = [a for s in TINY for a in ("--set", s)]
    invoke("reproduce", "mini-run", "--carry", carry, "--out", out, "--models", "lfm,dit", "--budget-s", 0.5,
           "--num-samples", 4, "--steps", 2, "--batch-size", 4, *sets)  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["dit.safetensors", "grid.png", "lfm.safetensors", "mini-run.json"]
    summary = json.loads((out / "mini-run.json").read_text())
    assert list(summary["models"]) == ["lfm", "dit"] and summary["grid_rows"] == ["lfm", "dit"]
    lfm = summary["models"]["lfm"]
    assert lfm["train"]["train_seconds"] >= 0.5 and lfm["train"]["images_seen"] == 4 * lfm["train"]["steps"]
    assert lfm["nfe"] == 2 and lfm["preset"] == "lfm-celebahq128-mini" and lfm["config"]["data"]["res"] == 64
    from safetensors.torch import load_file

    saved = load_file(str(out / "lfm.safetensors"))
    assert saved["latents"].dtype == torch.float16 and saved["latents"].shape == (4, 4, 8, 8)
    assert torch.equal(saved["seeds"], torch.arange(4)) and saved["latents"].isfinite().all()

    invoke("reproduce", "mini-score", out, "--carry", carry, "--out", results)
    records = load_records(results)
    assert sorted((r.preset, r.metric, r.protocol_name) for r in records) == [
        ("dit-celebahq128-mini", "clean_fid", "fid-clean-4-celebahq64"),
        ("dit-celebahq128-mini", "fid", "fid-tf-4-celebahq64"),
        ("lfm-celebahq128-mini", "clean_fid", "fid-clean-4-celebahq64"),
        ("lfm-celebahq128-mini", "fid", "fid-tf-4-celebahq64"),
    ]
    rec = next(r for r in records if r.preset == "lfm-celebahq128-mini" and r.metric == "fid")
    assert np.isfinite(rec.value) and rec.value > 0 and rec.seeds == {"start": 0, "count": 4}
    assert rec.extra["images_seen"] == lfm["train"]["images_seen"] and rec.sampling["nfe"] == 2
    assert rec.git["commit"] == summary["git"]["commit"] and "scored_on" in rec.environment
    assert all(p.parent.name == "mini" for p in results.rglob("*.json"))
    again = invoke("reproduce", "mini-score", out, "--carry", carry, "--out", results)
    assert "0 record(s)" in again.output and len(load_records(results)) == 4  # already scored: skipped


@needs_taesd
def test_run_refuses_too_many_files_and_skips_past_the_deadline(tmp_path: Path) -> None:
    carry, out = fabricated_carry(tmp_path), tmp_path / "out"
    seven = ",".join([*DEFAULT_MODELS.split(","), "lfm-tiny"])
    result = runner.invoke(app, ["reproduce", "mini-run", "--carry", str(carry), "--out", str(out), "--models", seven])
    assert result.exit_code == 1 and "at most 8" in result.output and not out.exists()
    result = runner.invoke(app, ["reproduce", "mini-run", "--carry", str(carry), "--out", str(out),
                                 "--work-dir", str(out / "runs")])  # fmt: skip
    assert result.exit_code == 1 and "outside --out" in result.output
    invoke("reproduce", "mini-run", "--carry", carry, "--out", out, "--models", "lfm", "--deadline-s", 5)
    summary = json.loads((out / "mini-run.json").read_text())
    assert summary["models"] == {} and "deadline 5 s" in summary["skipped"]["lfm"]


# ----------------------------------------------------------------------------------------------------------------
# the whole sequence on 40 real images (slow: TAESD encoding and training on 2 CPU cores)


@pytest.mark.slow
@needs_taesd
@requires_shared_data("celebahq-5k-512")
def test_prepare_run_score_on_forty_real_faces(tmp_path: Path, cheap_fid: None) -> None:
    from bench.results import load_records

    faces = tmp_path / "celebahq-40"
    faces.mkdir()
    for i in range(40):
        shutil.copyfile(SHARED_DATA / "celebahq-5k-512" / f"{i}.jpg", faces / f"{i}.jpg")
    carry, out, results = tmp_path / "carry", tmp_path / "out", tmp_path / "results"
    invoke("reproduce", "mini-prepare", "--out", carry, "--path", faces, "--batch-size", 20)
    manifest = json.loads((carry / "carry.json").read_text())
    assert manifest["count"] == 40 and set(manifest["ref_stats"]) == {"tf", "clean"}
    sets = [a for s in TINY for a in ("--set", s)]
    invoke("reproduce", "mini-run", "--carry", carry, "--out", out, "--models", "lapflow,pyramidal-flow",
           "--budget-s", 3, "--num-samples", 16, "--steps", 4, *sets)  # fmt: skip
    invoke("reproduce", "mini-score", out, "--carry", carry, "--out", results)
    records = load_records(results)
    assert len(records) == 4 and {r.protocol_name for r in records} == {
        "fid-tf-16-celebahq128",
        "fid-clean-16-celebahq128",
    }
    assert all(r.protocol["reference_stats"]["source_hash"] == manifest["source_hash"] for r in records)
