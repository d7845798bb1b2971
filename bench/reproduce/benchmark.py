"""`bench reproduce mini`: the mini benchmark as ONE command on one GPU (train, sample, score in one process).

Per run (a mini-benchmark preset) and training seed, THE training loop (bench.train) trains for a budget in images
seen; at each evaluation point (budget / 2^k, k = P-1..0) the training clock pauses, the EMA samples seeds
0..N-1 through the sampling harness, the samples are decoded and quantised once, and their Inception features
are scored against the real training images: FID (torch-fidelity protocol), KID, precision/recall (k = 3) and
memorisation, plus a bootstrap interval of FID at the last point (`--samplers`: there also with each other sampler,
bench.reproduce.samplers). One record per metric and point goes to RESULTS/mini/<dataset><res>/; a sample grid
(rows: run x point) and a provenance file beside them.

The real images' features come from `mini-prepare --features` (a safetensors file checked against the carry's
source hash); on a machine that returns few files, `--bundle` packs everything written into one .tar.gz after each
point, and `bench reproduce mini-ingest` unpacks it into results/.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from bench.checkpoint import TrainState
from bench.config import RunConfig
from bench.errors import BenchError
from bench.reproduce.clean import CleanFeatures
from bench.reproduce.deadline import score_guess, start_guess
from bench.reproduce.mini import (
    GUIDANCE_SWEEP,
    MINI_SUBDIR,
    TRAIN_PATHS,
    Carry,
    model_presets,
    read_carry,
    write_json_atomic,
)
from bench.reproduce.reference import load_reference
from bench.reproduce.samplers import Sampler, check_samplers
from bench.reproduce.scorer import Scorer


@dataclass
class BenchmarkOptions:
    carry: Path
    real_features: Path  # from `mini-prepare --features`
    results: Path  # records go to RESULTS/mini/<dataset><res>/
    models: list[str]
    seeds: list[int]
    images: int  # training budget in images seen (the same for every run)
    points: int  # evaluation points: images / 2^(points-1), ..., images / 2, images
    num_samples: int
    work_dir: Path  # run directories (checkpoints): never part of what is returned
    sample_batch: int = 500
    bootstrap: int = 100  # FID bootstrap repetitions at the last point (0 = none)
    deadline_s: float = 0.0  # > 0: skip runs that would end later; stop training before it
    overrides: list[dict] = field(default_factory=list)
    bundle: Path | None = None
    grid_columns: int = 8
    progress: bool = False
    dataset: str = ""  # the mini runs of this data set (bench.registry.mini_datasets); "" = the carry's
    guidance: tuple[float, ...] = GUIDANCE_SWEEP  # class-conditional carries: the sweep at the last point
    val_features: Path | None = None  # the probe's held-out features (default: beside --real-features)
    real_features_clean: Path | None = None  # clean-fid features (`mini-prepare --features --backend clean`)
    train_path: str = "auto"  # TRAIN_PATHS key; auto: CUDA graphs on a CUDA device, eager elsewhere
    samplers: tuple[Sampler, ...] = ()  # further samplers scored at each run's last point (bench.reproduce.samplers)


def evaluation_points(images: int, points: int, batch: int) -> list[int]:
    """images / 2^k for k = points-1..0, each a whole number of batches (so the loop reaches it exactly)."""
    if points < 1 or images < batch * 2 ** (points - 1):
        raise BenchError(
            f"{points} evaluation points need at least {batch * 2 ** (points - 1)} images (batch {batch})."
        )
    out = [max(batch, (images >> k) // batch * batch) for k in range(points - 1, -1, -1)]
    if len(set(out)) != len(out) or out[-1] != images:
        raise BenchError(f"--images {images} is not a multiple of the batch {batch} times 2^{points - 1}.")
    return out


def train_path(asked: str, device: str) -> str:
    """The training path of --train-path on this device ('auto': graphs on CUDA, eager elsewhere)."""
    if asked == "auto":
        return "graphs" if device.startswith("cuda") else "eager"
    if asked not in TRAIN_PATHS:
        raise BenchError(f"--train-path must be auto or one of {', '.join(TRAIN_PATHS)}, not '{asked}'.")
    return asked


def run_config(
    carry: Carry, preset: str, name: str, seed: int, opts: BenchmarkOptions, path: str = "eager"
) -> RunConfig:
    from bench.config import resolve

    data = carry.data_overrides()
    train = {"total_images": opts.images, "max_seconds": 0.0, "grid_size": 0, "checkpoint_every": 0}
    train |= TRAIN_PATHS[path]
    base = {"data": data, "train": train, "name": f"{name}-seed{seed}", "seed": seed}
    return resolve(preset=preset, overrides=[base, *opts.overrides])


def _device_kind() -> str:
    """'cuda' or 'cpu': where `bench reproduce mini` will train (BENCH_DEVICE, auto = CUDA when available)."""
    from bench.paths import device_name

    asked = device_name()
    return ("cuda" if torch.cuda.is_available() else "cpu") if asked == "auto" else asked


def mini_dataset(carry: Carry, asked: str) -> str:
    """The mini-run set that trains on this carry: the carry's data set at its resolution ("celebahq256") when such a
    set exists, else its data set's, else the CelebA-HQ runs (another data set trains those presets on its data).
    --dataset, when given, must name the carry's data set."""
    from bench.registry import MINI_DATASET, mini_datasets

    own = str(carry.manifest["dataset"])
    at_res = f"{own}{carry.manifest['res']}"
    if asked and asked not in (own, at_res):
        raise BenchError(f"--dataset {asked} does not match the carry '{carry.folder}', which holds {own} latents.")
    if at_res in mini_datasets():
        return at_res
    return asked or (own if own in mini_datasets() else MINI_DATASET)  # an unknown --dataset is refused later


def run_benchmark(opts: BenchmarkOptions) -> dict:
    """Every run and seed in turn: train to the budget, score at each point; returns the provenance summary."""
    from bench.dist import init_distributed
    from bench.paths import device_name
    from bench.reproduce.mini import code_fingerprint
    from bench.reproduce.run import warm_up
    from bench.runtime import environment, git_state
    from bench.validate import validate_run_config

    started = time.perf_counter()
    if opts.num_samples < 2 or not opts.seeds:
        raise BenchError("mini needs --num-samples >= 2 and at least one training seed.")
    carry = read_carry(opts.carry)
    if carry.class_names:
        from bench.reproduce.classes import check_balanced

        check_balanced(opts.num_samples, len(carry.class_names))
    path = train_path(opts.train_path, _device_kind())
    jobs = [
        (name, seed, run_config(carry, preset, name, seed, opts, path))
        for name, preset in model_presets(opts.models, mini_dataset(carry, opts.dataset)).items()
        for seed in opts.seeds
    ]
    batches = {cfg.train.batch_size for _, _, cfg in jobs}
    if len(batches) != 1:
        raise BenchError(f"The runs train with different batch sizes {sorted(batches)}; points would differ.")
    points = evaluation_points(opts.images, opts.points, batches.pop())
    for _, _, cfg in jobs:
        validate_run_config(cfg)
    sampler_notes = _check_samplers(opts, carry, jobs)
    info = init_distributed(device_name())
    if info.world > 1:
        raise BenchError("`bench reproduce mini` is one process on one GPU; run it without torchrun.")
    reference = load_reference(opts.real_features, carry, info.device)
    clean = _clean_features(opts, carry, info.device)
    classes = None
    if carry.class_names:  # class-conditional: the probe is fitted once, before any training
        from bench.reproduce.classes import class_scoring

        classes = class_scoring(carry, reference, opts.val_features, opts.real_features, opts.guidance)
    folder = Path(opts.results) / MINI_SUBDIR / f"{carry.manifest['dataset']}{carry.manifest['res']}"
    env = environment(info.device)
    git = {**git_state(), "code_sha256": code_fingerprint()}
    scorer = Scorer(
        reference, info.device, folder, opts.num_samples, opts.sample_batch, opts.bootstrap, env, git, opts.grid_columns
    )
    scorer.classes, scorer.clean, scorer.samplers = classes, clean, opts.samplers
    tag = _tag(opts)
    summary = _summary(opts, carry, env, git, points, tag)
    if clean is not None:  # only then: without the option the provenance stays as it was
        summary["clean_fid"] = {"reference_features": clean.reference.describe(), "resize_workers": clean.workers}
    if opts.samplers:  # only then, as clean_fid
        summary["samplers"] = {"entries": [s.text for s in opts.samplers], "skipped": sampler_notes}
    if classes is not None:
        summary["classes"] = {"names": classes.class_names, "guidance": list(classes.sweep), **classes.protocol()}
    warm_up(info.device)
    scorer.setup(jobs[0][2])  # Inception and the carried autoencoder, shared by every run
    for name, seed, cfg in jobs:
        key = f"{name}-seed{seed}"
        left = opts.deadline_s - (time.perf_counter() - started) if opts.deadline_s else float("inf")
        todo = points_left(points, opts.work_dir / key)  # a resumed run scores only the points it has not reached
        if todo and left < start_guess(todo, cfg, classes, clean is not None, opts.samplers):
            summary["skipped"][key] = f"{opts.deadline_s - left:.0f} s spent of the {opts.deadline_s:g} s deadline"
            print(f"[{key}] skipped: {summary['skipped'][key]}", flush=True)
            continue
        tic = time.perf_counter()
        summary["runs"][key] = run_one(name, cfg, opts, info, scorer, points, started, summary, tag)
        summary["runs"][key]["wall_seconds"] = time.perf_counter() - tic
        summary["command_seconds"] = time.perf_counter() - started
        _publish(opts, scorer, summary, tag)
    summary["command_seconds"] = time.perf_counter() - started
    _publish(opts, scorer, summary, tag)
    return summary


def run_one(
    name: str,
    cfg: RunConfig,
    opts: BenchmarkOptions,
    info: object,
    scorer: Scorer,
    points: list[int],
    started: float,
    summary: dict,
    tag: str,
) -> dict:
    """Train one run to its budget with scoring at every point; returns its provenance entry."""
    import dataclasses

    from bench.paths import cache_dir
    from bench.train import train

    run_dir = opts.work_dir / f"{name}-seed{cfg.seed}"
    if opts.deadline_s:  # stop training in time to score the points it reaches before the deadline
        todo = points_left(points, run_dir)
        guess = score_guess(todo, cfg, scorer.classes, scorer.clean is not None, scorer.samplers)
        left = opts.deadline_s - (time.perf_counter() - started) - guess
        spent = trained_seconds(run_dir)  # train.max_seconds counts over resumes: a resumed run adds to it
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_seconds=spent + max(1.0, left)))
    scored: list[int] = []

    def on_point(state: TrainState, ema: nn.Module) -> None:
        index = points.index(state.images_seen)
        scorer.score(name, run_dir, cfg, state, ema, index, points, lambda: _publish(opts, scorer, summary, tag))
        scored.append(state.images_seen)
        _publish(opts, scorer, summary, tag)

    print(f"[{name} seed {cfg.seed}] training {cfg.preset} for {opts.images} images; points {points}", flush=True)
    result = train(cfg, run_dir, info, None, cache_dir(), opts.progress, points, on_point)
    if result.interrupted:
        raise BenchError(f"`bench reproduce mini` was interrupted while training '{name}'.")
    state = result.state
    return {
        "preset": cfg.preset,
        "train_seed": cfg.seed,
        "images_seen": state.images_seen,
        "steps": state.step,
        "gpu_seconds": state.train_seconds,
        "points_scored": scored,
        "complete": state.images_seen >= points[-1],  # its points scored by this command or an earlier one
        "run_dir": str(run_dir),
    }


def _check_samplers(opts: BenchmarkOptions, carry: Carry, jobs: list[tuple[str, int, RunConfig]]) -> list[str]:
    """--samplers checked against the runs before anything trains; prints (once) which runs skip which entry."""
    if not opts.samplers:
        return []
    if carry.class_names:
        raise BenchError(
            "--samplers scores unconditional carries only; class-conditional runs sweep guidance weights at their "
            "last point (--guidance)."
        )
    notes = check_samplers(opts.samplers, jobs)
    for note in notes:
        print(note, flush=True)
    return notes


def _clean_features(opts: BenchmarkOptions, carry: Carry, device: torch.device) -> CleanFeatures | None:
    """The clean-fid scorer of --real-features-clean, its file checked (backend, images, Inception) before training."""
    if opts.real_features_clean is None:
        return None
    if carry.class_names:
        raise BenchError(
            "--real-features-clean scores unconditional carries only; class-conditional sample sets are scored "
            "with torch-fidelity features (--real-features)."
        )
    return CleanFeatures(load_reference(opts.real_features_clean, carry, device, backend="clean"), device)


def _resume_state(run_dir: Path) -> TrainState | None:
    """The state in the run's newest intact checkpoint (None for a new run).

    A run longer than one command resumes from its checkpoint when the same command is issued again on the same
    machine (work folder kept, e.g. /tmp of a GPU machine held by back-to-back commands); points it already scored
    are not scored again."""
    from bench.checkpoint import checked_resume_point, read_state

    ckpt = checked_resume_point(run_dir) if run_dir.is_dir() else None
    return read_state(ckpt) if ckpt is not None else None


def trained_seconds(run_dir: Path) -> float:
    """Training seconds already in the run's newest intact checkpoint (0 for a new run)."""
    state = _resume_state(run_dir)
    return state.train_seconds if state is not None else 0.0


def points_left(points: list[int], run_dir: Path) -> list[int]:
    """The evaluation points past the run's newest intact checkpoint: those this command still has to score."""
    state = _resume_state(run_dir)
    done = state.images_seen if state is not None else 0
    return [p for p in points if p > done]


def _tag(opts: BenchmarkOptions) -> str:
    """A file-name-safe name of this command's runs: '<runs>-seed<seeds>-<images>'."""
    import re

    runs = "-".join(opts.models) if len(opts.models) <= 3 else f"{len(opts.models)}runs"
    seeds = "-".join(str(s) for s in opts.seeds)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{runs}-seed{seeds}-{opts.images}")


def _summary(opts: BenchmarkOptions, carry: Carry, env: dict, git: dict, points: list[int], tag: str) -> dict:
    keep = ("dataset", "res", "autoencoder", "weights_hash", "source_hash", "count", "latents", "flip")
    return {
        "format": "bench-mini-benchmark",
        "version": 1,
        "tag": tag,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["bench", *sys.argv[1:]]) if sys.argv else "",
        "images": opts.images,
        "points": points,
        "num_samples": opts.num_samples,
        "seeds": opts.seeds,
        "models": opts.models,
        "carry": {k: carry.manifest.get(k) for k in keep},
        "environment": env,
        "git": git,
        "runs": {},
        "skipped": {},
    }


def _publish(opts: BenchmarkOptions, scorer: Scorer, summary: dict, tag: str) -> None:
    """Grid (+ its row index) and provenance beside the records; the bundle of everything written, if asked."""
    from bench.reproduce.bundle import write_bundle
    from bench.sample import atomic_write_image, image_grid

    folder = scorer.folder
    files = list(scorer.written)
    if scorer.grid_rows:
        grid = folder / "grids" / f"{tag}.png"
        grid.parent.mkdir(parents=True, exist_ok=True)
        images = torch.cat([row for _, row in scorer.grid_rows])
        atomic_write_image(image_grid(images, columns=opts.grid_columns), grid)
        tile = int(images.shape[1])
        index = {"rows": [meta for meta, _ in scorer.grid_rows], "columns": opts.grid_columns, "tile": tile}
        write_json_atomic(grid.with_suffix(".json"), index)
        files += [grid, grid.with_suffix(".json")]
    provenance = folder / "provenance" / f"{tag}.json"
    write_json_atomic(provenance, summary)
    files.append(provenance)
    if opts.bundle is not None:
        logs = [p for run in summary["runs"].values() for p in _run_logs(Path(run["run_dir"]))]
        write_bundle(opts.bundle, Path(opts.results), files, logs)


def _run_logs(run_dir: Path) -> list[Path]:
    return [p for p in (run_dir / "stats.jsonl", run_dir / "config.yaml") if p.is_file()]
