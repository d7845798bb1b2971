"""`bench reproduce mini-score` (CPU): FID of a mini-run's latents, as result records in RESULTS/mini/.

The FID Inception weights (87 MB) cannot travel to the GPU machine, so scoring happens here: each model's latents
are decoded with the autoencoder they were trained in (its weights hash checked against the carry's), quantised
once, and scored with torch-fidelity (primary) and clean-fid against the cached reference statistics, which must
come from the same images as the carried latents. A model already scored (same latents hash and protocol) is
skipped, so an interrupted scoring resumes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.errors import BenchError
from bench.reproduce.mini import FORMAT_VERSION, RUN_FORMAT, RUN_SUMMARY, code_fingerprint, sha256_file

RESULTS_SUBDIR = "mini"


def read_summary(run_out: Path) -> dict:
    path = Path(run_out) / RUN_SUMMARY
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        raise BenchError(f"'{run_out}' holds no readable {RUN_SUMMARY}: pass the --out folder of a mini-run.") from None
    if summary.get("format") != RUN_FORMAT or summary.get("version") != FORMAT_VERSION:
        raise BenchError(f"'{path}' is not a mini-run summary (format {RUN_FORMAT} v{FORMAT_VERSION}).")
    if not summary.get("models"):
        raise BenchError(f"'{path}' lists no finished model.")
    return summary


def provenance(summary: dict) -> dict:
    """The git state of the code that trained: the GPU run's own, else this checkout's when the code hash matches."""
    from bench.runtime import git_state

    gpu = dict(summary.get("git") or {})
    code = gpu.get("code_sha256", "")
    if gpu.get("commit") not in (None, "", "unknown"):
        return {**gpu, "source": "GPU run"}
    if code and code == code_fingerprint():
        return {**git_state(), "code_sha256": code, "source": "this checkout; its code hash equals the GPU run's"}
    return {"commit": "unknown", "dirty": None, "code_sha256": code, "source": "GPU run without git; code differs here"}


def _scored(folder: Path) -> set[tuple[str, str]]:
    """(latents sha256, protocol name) of the records already in `folder`."""
    from bench.results import read_record

    done = set()
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = read_record(path)
        except BenchError:
            continue
        done.add((str(record.extra.get("latents_sha256", "")), record.protocol_name))
    return done


def check_references(carry: dict, backends: list[str]) -> str:
    """The reference name (e.g. celebahq128) after checking each backend's statistics match the carried images."""
    from bench.metrics.fid import resolve_ref

    ref = f"{carry['dataset']}{carry['res']}"
    for backend in backends:
        stats = resolve_ref(ref, backend)
        if stats.meta.get("source_hash") != carry["source_hash"]:
            raise BenchError(
                f"The {backend} reference statistics of '{ref}' come from other images than the carried latents; "
                "rerun `bench reproduce mini-prepare` on the same data."
            )
    return ref


@dataclass
class Scorer:
    """What every model of one mini-run is scored with."""

    summary: dict
    run_out: Path
    n: int  # samples scored (seeds 0..n-1)
    ref: str  # reference statistics name, e.g. celebahq128
    ae: Any  # the autoencoder that decodes the latents
    batch_size: int
    device: torch.device
    git: dict
    folder: Path  # records go here
    progress: bool = True

    def score(self, name: str, entry: dict, backends: list[str]) -> list[Path]:
        """Decode, quantise once, extract features for every backend in one pass, write one record per backend."""
        from bench.metrics.fid import compute_stats, score
        from bench.metrics.fid_sources import latent_batches
        from bench.results import write_record

        latents = load_samples(self.run_out / entry["latents_file"], entry["latents_sha256"])
        tic = time.perf_counter()
        batches = latent_batches(latents, self.ae, self.n, self.batch_size, self.device)
        stats, _ = compute_stats(batches, backends, self.device, progress=self.progress)
        seconds = time.perf_counter() - tic
        paths = []
        for protocol, value, ref_meta in score(stats, self.ref):
            record = self.record(entry, name, protocol, value, ref_meta, seconds)
            paths.append(write_record(record, self.folder))
            shown = f"[{name}] {protocol.metric} [{protocol.name}] = {value:.4g} ({seconds:.0f} s)"
            print(f"{shown} -> {paths[-1]}", flush=True)
        return paths

    def record(self, entry: dict, name: str, protocol: Any, value: float, ref_meta: dict, seconds: float) -> Any:
        from bench.metrics.inception import INCEPTION_SCORE_NOTE
        from bench.results import make_record
        from bench.runtime import environment

        carry, train, env = self.summary["carry"], entry["train"], dict(self.summary["environment"])
        note = (
            f"Mini benchmark: trained for {train['budget_s']:g} s of device time on {env.get('gpu') or 'CPU'} "
            f"({train['images_seen']} images seen), sampled there (seeds 0..{self.n - 1}, NFE {entry['nfe']}); "
            f"decoded with {carry['autoencoder']} and scored on the CPU."
        )
        extra = {
            "benchmark": "mini",
            "run": name,
            **train,
            "sample_seconds": entry["sample_seconds"],
            "parameters": entry["parameters"],
            "latents_sha256": entry["latents_sha256"],
            "score_seconds": seconds,
            "inception_score": INCEPTION_SCORE_NOTE,
        }
        return make_record(
            model=entry["family"],
            preset=entry["preset"],
            dataset=carry["dataset"],
            resolution=int(carry["res"]),
            metric=protocol.metric,
            value=value,
            unit="",
            protocol={**protocol.as_dict(), "reference_stats": ref_meta},
            sampling={**entry["sampling"], "nfe": entry["nfe"]},
            config=entry["config"],
            seeds={"start": 0, "count": self.n},
            git=self.git,
            environment={**env, "numerics": entry.get("numerics", {}), "scored_on": environment()},
            extra=extra,
            note=note,
        )


def load_samples(path: Path, expected_sha256: str) -> torch.Tensor:
    from safetensors.torch import load_file

    if not path.is_file():
        raise BenchError(f"Latents file '{path}' listed in {RUN_SUMMARY} is missing.")
    if sha256_file(path) != expected_sha256:
        raise BenchError(f"Latents file '{path}' does not match the hash in {RUN_SUMMARY} (damaged in transfer?).")
    return load_file(str(path))["latents"].float()


def score_mini(
    run_out: Path,
    results: Path,
    backends: list[str],
    num_samples: int = 0,
    batch_size: int = 100,
    device: torch.device | str = "cpu",
    autoencoder_path: str = "",
    progress: bool = True,
) -> list[Path]:
    """Score every finished model of a mini-run into RESULTS/mini/; returns the records written."""
    from bench.autoencoders import load_autoencoder
    from bench.metrics.protocols import FIDProtocol

    summary = read_summary(run_out)
    carry = summary["carry"]
    n = num_samples or int(summary["num_samples"])
    if n > int(summary["num_samples"]):
        raise BenchError(f"The mini-run sampled {summary['num_samples']} seeds; {n} cannot be scored.")
    ref = check_references(carry, backends)
    device = torch.device(device)
    ae = load_autoencoder(carry["autoencoder"], device, autoencoder_path)
    if ae.weights_hash != carry["weights_hash"]:
        raise BenchError(
            f"Autoencoder '{carry['autoencoder']}' here has weights {ae.weights_hash[:12]}, not the "
            f"{carry['weights_hash'][:12]} that encoded the training latents; pass --autoencoder-path."
        )
    folder = Path(results) / RESULTS_SUBDIR
    scorer = Scorer(summary, Path(run_out), n, ref, ae, batch_size, device, provenance(summary), folder, progress)
    done, written = _scored(folder), []
    for name, entry in summary["models"].items():
        names = {b: FIDProtocol(b, n, carry["dataset"], int(carry["res"])).name for b in backends}
        todo = [b for b in backends if (entry["latents_sha256"], names[b]) not in done]
        if not todo:
            print(f"[{name}] already scored ({', '.join(names.values())}); skipped", flush=True)
            continue
        written += scorer.score(name, entry, todo)
    return written
