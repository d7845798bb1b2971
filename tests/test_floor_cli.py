"""`bench reproduce mini-floor`: the sampler floor of mini runs on a carry's latents, as records (bench.oracles)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.cli.app import app
from bench.config import DataConfig
from bench.results import load_records

runner = CliRunner()


def latent_carry(root: Path, n: int = 40, res: int = 32) -> Path:
    """A carry folder as mini-prepare writes it, from correlated random latents and a stand-in autoencoder folder
    (the floor reads the latents only; the folder's hash ties them together as for a real one)."""
    from bench.autoencoders import weights_hash
    from bench.datasets.carried import export_carried

    weights = root / "carry" / "taesd"
    weights.mkdir(parents=True)
    (weights / "config.json").write_text("{}")
    (weights / "diffusion_pytorch_model.safetensors").write_bytes(b"stand-in")
    prep, shape = root / "prep", (4, res // 8, res // 8)
    prep.mkdir()
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((np.prod(shape), np.prod(shape))) / 4
    for name in ("lat.npy", "lat-flip.npy"):
        np.save(prep / name, (rng.standard_normal((n, np.prod(shape))) @ mix).reshape(n, *shape).astype(np.float16))
    meta = {"source_hash": "s" * 64, "source": "faces", "count": n, "class_names": [], "skipped": []}
    marker = {"weights_hash": weights_hash(weights), "files": {"latents": "lat.npy", "flipped": "lat-flip.npy"}}
    marker |= {"encode": "deterministic", "dtype": "float16"}
    name = f"celebahq{res}-taesd.safetensors"
    data = DataConfig(dataset="celebahq", res=res, autoencoder="taesd")
    export_carried(prep, meta, marker, data, root / "carry" / name)
    manifest = {"format": "bench-mini-carry", "version": 1, "dataset": "celebahq", "res": res, "autoencoder": "taesd"}
    manifest |= {"latents": name, "weights": "taesd", "weights_hash": marker["weights_hash"]}
    manifest |= {"source_hash": meta["source_hash"], "count": n, "flip": True}
    (root / "carry" / "carry.json").write_text(json.dumps(manifest))
    return root / "carry"


def test_floor_records_per_run_sampler_and_metric(tmp_path: Path) -> None:
    carry, out = latent_carry(tmp_path), tmp_path / "results"
    args = ["reproduce", "mini-floor", "--carry", carry, "--models", "lapflow,lfm", "--samplers", "heun:25,euler:50"]
    result = runner.invoke(app, [str(a) for a in [*args, "--out", out]])
    assert result.exit_code == 0, result.output
    records = load_records(out)
    assert all(r.extra["benchmark"] == "mini-floor" for r in records)
    assert {r.protocol_name for r in records} == {"floor-gaussian-celebahq32"}
    # euler:50 is each preset's own sampler: two samplers, not three, for each of the two runs, two metrics each.
    by_key = {(r.extra["run"], r.extra["sampler"], r.metric): r for r in records}
    assert sorted(by_key) == sorted(
        (run, sampler, metric)
        for run in ("lapflow", "lfm")
        for sampler in ("euler:50", "heun:25")
        for metric in ("floor_frechet", "floor_variance")
    )
    for (run, sampler, metric), r in by_key.items():
        assert r.sampling["nfe"] == 50 and r.preset == f"{run}-celebahq128-mini"
        assert r.config["sample"]["solver"] == sampler.split(":")[0]
        assert r.value == r.extra["variance" if metric == "floor_variance" else "frechet"]
    for run in ("lapflow", "lfm"):
        euler, heun = (by_key[(run, s, "floor_frechet")].value for s in ("euler:50", "heun:25"))
        assert 0 < heun < euler  # second order beats first at the same NFE
        assert by_key[(run, "euler:50", "floor_variance")].value < 1  # Euler under-disperses
    assert "lapflow euler:50: Frechet" in result.output


def test_each_run_takes_the_entries_of_its_kind_of_solver(tmp_path: Path) -> None:
    """DiT's floor is its DDPM chain (the preset's 50 steps) and DDIM; the flow run skips ddim, DiT skips heun."""
    carry, out = latent_carry(tmp_path), tmp_path / "results"
    args = ["reproduce", "mini-floor", "--carry", carry, "--models", "dit,lfm", "--samplers", "ddim:20,heun:10"]
    result = runner.invoke(app, [str(a) for a in [*args, "--out", out]])
    assert result.exit_code == 0, result.output
    pairs = {(r.extra["run"], r.extra["sampler"]) for r in load_records(out)}
    assert pairs == {("dit", "ddpm:50"), ("dit", "ddim:20"), ("lfm", "euler:50"), ("lfm", "heun:10")}
    dit = {r.extra["sampler"]: r for r in load_records(out) if r.extra["run"] == "dit" and r.metric == "floor_variance"}
    assert dit["ddpm:50"].extra["nfe"] == 50 and dit["ddpm:50"].extra["preset_sampler"]
    assert 0.9 < dit["ddpm:50"].value < 1.1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--samplers", "euler:0"], "needs at least one step"),
        (["--samplers", "dopri5:10"], "dopri5 adapts its steps"),
        (["--models", "lapflow-nope"], "Unknown mini benchmark model"),
    ],
)
def test_bad_input_is_one_sentence(tmp_path: Path, args: list[str], message: str) -> None:
    carry, out = latent_carry(tmp_path), tmp_path / "results"
    result = runner.invoke(app, ["reproduce", "mini-floor", "--carry", str(carry), "--out", str(out), *args])
    assert result.exit_code == 1 and message in result.output, result.output
    assert not out.exists() or not list(out.rglob("*.json"))
