"""The mini benchmark on one GPU (README "Mini benchmark on one GPU"): shared names, carry layout and limits.

Three commands: `mini-prepare` (CPU: latents of CelebA-HQ 5k at 128 px through TAESD, exported as one carried
file with the TAESD weights beside it; FID reference statistics cached), `mini-run` (GPU: each model trains for the
same GPU-time budget through THE training loop, then samples seeds 0..N-1; returns latents and one summary) and
`mini-score` (CPU: decode, quantise once, FID with torch-fidelity and clean-fid, result records).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError
from bench.io import atomic_write_json
from bench.registry import mini_default_runs

# Run names -> presets, headline runs and ablations come from each family's record (bench.registry: mini_models(),
# mini_headline_runs(), mini_ablations()); every run has the same DiT-B/2 backbone, data and budget.
DEFAULT_MODELS = ",".join(mini_default_runs())
# `bench reproduce mini` writes one record per metric and evaluation point into RESULTS/MINI_SUBDIR/<dataset><res>/
# (metrics below; extra.benchmark == "mini-v2", extra.run, extra.point, extra.images_seen, extra.gpu_seconds, ...).
MINI_SUBDIR = "mini"
MINI_BENCHMARK = "mini-v2"  # extra.benchmark of these records; the retired FID-500 records said "mini"
MINI_METRICS = ("fid", "kid", "precision", "recall", "memorisation")
CLASS_METRICS = ("class_accuracy",)  # class-conditional carries add these (bench/reproduce/classes.py)
GUIDANCE_SWEEP = (1.0, 1.5, 2.0, 3.0)  # class-conditional carries: guidance weights scored at the last point

# --train-path: THE training loop's path (train.compile, train.compile_mode). `graphs` is the fastest path measured
# on an H200 (session 5: 1.9-4.2x eager's images/s, equal RNG, the same FID as eager within the seed spread); a
# compiler failure falls back to eager once, with a note in the records. --set overrides it.
TRAIN_PATHS = {
    "eager": {"compile": False},
    "compile": {"compile": True, "compile_mode": "default"},
    "graphs": {"compile": True, "compile_mode": "reduce-overhead"},
}


def record_train_path(extra: dict) -> str:
    """The TRAIN_PATHS name a record's run trained with, from its extra (bench.reproduce.scorer.compile_state):
    eager when not compiled (records before session 5 have no `compile`; a compile fallback says false), `compile`
    when its graph mode could not apply (a compile_note: CUDA graphs need a CUDA device)."""
    if not extra.get("compile"):
        return "eager"
    if "compile_note" in extra:
        return "compile"
    mode = extra.get("compile_mode", "default")
    return next(
        (name for name, s in TRAIN_PATHS.items() if s.get("compile") and s.get("compile_mode") == mode), "compile"
    )


# The lent GPU machines (device README): one command <= 10 min, 64 MiB carried with the working tree, and at most
# 8 files of at most 16 MiB each come back.
MAX_CARRY_BYTES = 64 * 2**20
MAX_RETURN_FILES = 8
MAX_RETURN_FILE_BYTES = 16 * 2**20

CARRY_MANIFEST = "carry.json"
CARRY_FORMAT = "bench-mini-carry"
RUN_SUMMARY = "mini-run.json"
RUN_FORMAT = "bench-mini-run"
GRID_FILE = "grid.png"
LATENTS_FORMAT = "bench-mini-latents"
FORMAT_VERSION = 1
SAMPLES_FILE_OVERHEAD = 64 * 1024  # safetensors header with the config JSON in its metadata (generous)
CODE_DIRS = ("bench", "models", "baselines")  # the code a GPU run executes: fingerprinted for the records


@dataclass(frozen=True)
class Carry:
    """A prepared carry folder: the latents file, the autoencoder weights folder and the manifest's facts."""

    folder: Path
    manifest: dict

    @property
    def latents(self) -> Path:
        return self.folder / self.manifest["latents"]

    @property
    def weights(self) -> Path:
        return self.folder / self.manifest["weights"]

    @property
    def class_names(self) -> list[str]:
        """The carried labels' class names in label order ([] for a data set without classes)."""
        return list(self.manifest.get("class_names") or [])

    @property
    def class_titles(self) -> list[str]:
        """Readable class names in label order (carries from before they were kept: the class names)."""
        return list(self.manifest.get("class_titles") or self.class_names)

    def data_overrides(self) -> dict:
        """The `data` section of a run on these latents: data set, resolution and autoencoder from the manifest."""
        m = self.manifest
        data = {
            "dataset": m["dataset"],
            "res": m["res"],
            "autoencoder": m["autoencoder"],
            "path": str(self.latents),
            "autoencoder_path": str(self.weights),
            "flip": bool(m.get("flip", True)),
        }
        return {**data, "num_classes": len(self.class_names)} if self.class_names else data


def read_carry(folder: Path) -> Carry:
    path = Path(folder) / CARRY_MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        raise BenchError(f"'{folder}' has no readable {CARRY_MANIFEST}; run `bench reproduce mini-prepare`.") from None
    if manifest.get("format") != CARRY_FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise BenchError(f"'{path}' is not a mini benchmark carry manifest (format {CARRY_FORMAT} v{FORMAT_VERSION}).")
    carry = Carry(Path(folder), manifest)
    for needed in (carry.latents, carry.weights):
        if not needed.exists():
            raise BenchError(f"The carry folder '{folder}' lacks '{needed.name}'; run `bench reproduce mini-prepare`.")
    return carry


def model_presets(names: list[str], dataset: str = "") -> dict[str, str]:
    """Short names (or preset names) -> presets of `dataset`'s mini runs, in order; unknown names get a close match."""
    from bench.registry import MINI_DATASET, all_presets, mini_datasets, mini_models, unknown_name_message

    if dataset and dataset not in mini_datasets():
        raise BenchError(unknown_name_message("mini benchmark data set", dataset, list(mini_datasets())))
    presets, runs = all_presets(), mini_models(dataset or MINI_DATASET)
    out: dict[str, str] = {}
    for name in names:
        preset = runs.get(name, name)
        if preset not in presets:
            raise BenchError(unknown_name_message("mini benchmark model", name, sorted(runs)))
        if name in out:
            raise BenchError(f"Model '{name}' is listed twice.")
        out[name] = preset
    return out


def check_return_limits(names: list[str], num_samples: int, latent_shape: tuple[int, ...]) -> int:
    """Refuse, before any work, a run whose returned files would exceed the device limits; returns bytes per file."""
    files = len(names) + 2  # one latents file per model, the summary and the grid
    if files > MAX_RETURN_FILES:
        raise BenchError(
            f"{len(names)} models return {files} files (one latents file each, {RUN_SUMMARY} and {GRID_FILE}), but "
            f"the GPU machine returns at most {MAX_RETURN_FILES}; run at most {MAX_RETURN_FILES - 2} models per "
            "command (or pass --no-limits on a machine of your own)."
        )
    per_sample = 2 * math.prod(latent_shape) + 8  # float16 latents + int64 seed
    size = num_samples * per_sample + SAMPLES_FILE_OVERHEAD
    if size > MAX_RETURN_FILE_BYTES:
        most = (MAX_RETURN_FILE_BYTES - SAMPLES_FILE_OVERHEAD) // per_sample
        raise BenchError(
            f"{num_samples} samples of latents {list(latent_shape)} make a {size / 2**20:.1f} MiB file per model, "
            f"over the {MAX_RETURN_FILE_BYTES // 2**20} MiB the GPU machine returns per file; use at most {most} "
            "samples (or pass --no-limits on a machine of your own)."
        )
    return size


def code_fingerprint(root: Path | None = None) -> str:
    """sha256 over the suite's Python sources (paths and bytes): ties a GPU run without git to a checkout."""
    from bench.runtime import REPO_ROOT

    base = Path(root) if root is not None else REPO_ROOT
    digest = hashlib.sha256()
    for folder in CODE_DIRS:
        for path in sorted((base / folder).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            digest.update(path.relative_to(base).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: dict) -> None:
    """The mini benchmark's JSON files (summaries, manifests, grid indexes): indented, values str() if need be."""
    atomic_write_json(path, data, default=str)
