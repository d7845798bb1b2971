"""`bench reproduce mini`: the mini benchmark as ONE command on one GPU (train, sample, score in one process).

Per run (a mini-benchmark preset) and training seed, THE training loop (bench.train) trains for a budget in images
seen; at each evaluation point (budget / 2^k, k = P-1..0) the training clock pauses, the EMA samples seeds
0..N-1 through the sampling harness, the samples are decoded and quantised once, and their Inception features
are scored against the real training images: FID (torch-fidelity protocol), KID, precision/recall (k = 3) and
memorisation, plus a bootstrap interval of FID at the last point. One record per metric and point goes to
RESULTS/mini/<dataset><res>/; a sample grid (rows: run x point) and a provenance file beside them.

The real images' features come from `mini-prepare --features` (a safetensors file checked against the carry's
source hash); on a machine that returns few files, `--bundle` packs everything written into one .tar.gz after each
point, and `bench reproduce mini-ingest` unpacks it into results/.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import Tensor, nn

from bench.checkpoint import TrainState
from bench.config import RunConfig
from bench.errors import BenchError
from bench.reproduce.mini import MINI_BENCHMARK, MINI_SUBDIR, Carry, model_presets, read_carry, write_json_atomic
from bench.reproduce.reference import Reference, load_reference

SCORE_GUESS_S = 30.0  # wall seconds to sample and score 5,000 samples of a B/2 model at one point on an H200
MIN_TRAIN_S = 30.0  # a run with less training time left before the deadline is skipped


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


def run_config(carry: Carry, preset: str, name: str, seed: int, opts: BenchmarkOptions) -> RunConfig:
    from bench.config import resolve

    data = carry.data_overrides()
    train = {"total_images": opts.images, "max_seconds": 0.0, "grid_size": 0, "checkpoint_every": 0}
    base = {"data": data, "train": train, "name": f"{name}-seed{seed}", "seed": seed}
    return resolve(preset=preset, overrides=[base, *opts.overrides])


@dataclass
class Scorer:
    """Samples the EMA at a point, scores it and writes the records; keeps the grid rows and the written files."""

    reference: Reference
    device: torch.device
    folder: Path
    num_samples: int
    sample_batch: int
    bootstrap: int
    env: dict
    git: dict
    grid_columns: int
    written: list[Path] = field(default_factory=list)
    grid_rows: list[tuple[dict, Tensor]] = field(default_factory=list)
    _extractor: object = None
    _autoencoder: nn.Module | None = None

    def setup(self, cfg: RunConfig) -> None:
        from bench.autoencoders import load_autoencoder
        from bench.metrics.fid import make_extractor

        self._extractor = make_extractor("tf", self.device)
        self._autoencoder = load_autoencoder(cfg.data.autoencoder, self.device, cfg.data.autoencoder_path)

    def features(self, model: nn.Module, cfg: RunConfig) -> tuple[Tensor, Tensor, int, float, float]:
        """(features [N, 2048] on the device, first images, NFE, sample seconds, feature seconds)."""
        from bench.sample import generate

        feats, first, nfe, sample_s, feat_s = [], None, 0, 0.0, 0.0
        tic = time.perf_counter()
        for batch in generate(
            model, range(self.num_samples), cfg.sample, self.sample_batch, cfg.train.precision, self._autoencoder
        ):
            mid = time.perf_counter()
            sample_s += mid - tic
            first = batch.images[: self.grid_columns] if first is None else first
            feats.append(torch.from_numpy(self._extractor(batch.images)).float().to(self.device))
            nfe = max(nfe, batch.nfe)
            tic = time.perf_counter()
            feat_s += tic - mid
        return torch.cat(feats), first, nfe, sample_s, feat_s

    def score(
        self, run: str, run_dir: Path, cfg: RunConfig, state: TrainState, ema: nn.Module, point: int, points: list[int]
    ) -> None:
        from bench.ema import young_ema_warning
        from bench.metrics import distribution as dm
        from bench.metrics.fid import FeatureStats, RefStats, fid_from_stats
        from bench.metrics.protocols import FIDProtocol
        from bench.reproduce.run import final_loss

        warning = young_ema_warning(cfg, state.step)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            fake, first, nfe, sample_s, feat_s = self.features(ema, cfg)
        tic = time.perf_counter()
        ref = self.reference
        fid = FIDProtocol("tf", self.num_samples, ref.dataset, ref.res)
        values: dict[str, tuple[float, dict, dict]] = {}  # metric -> (value, protocol extras, record extras)
        ref_stats = RefStats(ref.mu.cpu().numpy(), ref.sigma.cpu().numpy(), ref.n, ref.meta)
        fid_value = fid_from_stats(FeatureStats.of(fake.double().cpu().numpy()), ref_stats)
        fid_extra: dict = {}
        final = point == len(points) - 1
        if final and self.bootstrap:
            boot = dm.bootstrap_fid(fake, ref.mu, ref.sigma, self.bootstrap)
            fid_extra["fid_bootstrap"] = {
                "reps": boot.reps,
                "std": boot.std,
                "mean": boot.mean,
                "p05": boot.p05,
                "p95": boot.p95,
            }
        values["fid"] = (fid_value, {}, fid_extra)
        subset = min(dm.KID_SUBSET_SIZE, len(fake), ref.n)  # torch-fidelity's 1000 from 1000 samples up
        kid_mean, kid_std = dm.kid(fake, ref.features, subset_size=subset)
        values["kid"] = (
            kid_mean,
            {"subsets": dm.KID_SUBSETS, "subset_size": subset, "seed": dm.KID_SEED},
            {"kid_std": kid_std, "kid_subsets": dm.KID_SUBSETS, "kid_subset_size": subset},
        )
        precision, recall = dm.precision_recall(fake, ref.features)
        values["precision"] = (precision, {"k": dm.PRC_NEIGHBORHOOD}, {})
        values["recall"] = (recall, {"k": dm.PRC_NEIGHBORHOOD}, {})
        mem = dm.memorisation(fake, ref.features)
        values["memorisation"] = (
            mem.fraction,
            {"quantile": mem.quantile},
            {"memorisation_threshold": mem.threshold, "median_distance_ratio": mem.median_ratio},
        )
        score_s = time.perf_counter() - tic + feat_s
        common = {
            "benchmark": MINI_BENCHMARK,
            "run": run,
            "train_seed": cfg.seed,
            "point": point,
            "points": len(points),
            "final": final,
            "images_seen": state.images_seen,
            "budget_images": points[-1],
            "gpu_seconds": state.train_seconds,
            "steps": state.step,
            "loss": final_loss(run_dir, float("nan")),
            "sample_seconds": sample_s,
            "score_seconds": score_s,
            **compile_state(cfg, run_dir),
        }
        for metric, (value, proto_extra, extra) in values.items():
            self._write(cfg, metric, value, fid, proto_extra, nfe, {**common, **extra})
        self.grid_rows.append(
            ({"run": run, "train_seed": cfg.seed, "point": point, "images_seen": state.images_seen}, first)
        )
        shown = ", ".join(f"{m} {v[0]:.4g}" for m, v in values.items())
        print(
            f"[{run} seed {cfg.seed}] {state.images_seen} images ({state.train_seconds:.0f} s): {shown} "
            f"(sampling {sample_s:.1f} s, scoring {score_s:.1f} s)",
            flush=True,
        )

    def _write(
        self, cfg: RunConfig, metric: str, value: float, fid: object, proto_extra: dict, nfe: int, extra: dict
    ) -> None:
        from bench.config import to_dict
        from bench.metrics.protocols import feature_metric_protocol
        from bench.results import run_record, write_record

        protocol = fid.as_dict() if metric == "fid" else feature_metric_protocol(metric, fid, **proto_extra)
        protocol["reference_features"] = self.reference.describe()
        record = run_record(
            cfg,
            metric,
            value,
            "",
            protocol,
            sampling={**to_dict(cfg.sample), "nfe": nfe},
            seeds={"start": 0, "count": self.num_samples},
            git=self.git,
            environment=self.env,
            extra=extra,
            note=f"Mini benchmark: trained and scored in one process on {self.env.get('gpu') or 'the CPU'}.",
        )
        self.written.append(write_record(record, self.folder))


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
    jobs = [
        (name, seed, run_config(carry, preset, name, seed, opts))
        for name, preset in model_presets(opts.models).items()
        for seed in opts.seeds
    ]
    batches = {cfg.train.batch_size for _, _, cfg in jobs}
    if len(batches) != 1:
        raise BenchError(f"The runs train with different batch sizes {sorted(batches)}; points would differ.")
    points = evaluation_points(opts.images, opts.points, batches.pop())
    for _, _, cfg in jobs:
        validate_run_config(cfg)
    info = init_distributed(device_name())
    if info.world > 1:
        raise BenchError("`bench reproduce mini` is one process on one GPU; run it without torchrun.")
    reference = load_reference(opts.real_features, carry, info.device)
    folder = Path(opts.results) / MINI_SUBDIR / f"{carry.manifest['dataset']}{carry.manifest['res']}"
    env = environment(info.device)
    git = {**git_state(), "code_sha256": code_fingerprint()}
    scorer = Scorer(
        reference, info.device, folder, opts.num_samples, opts.sample_batch, opts.bootstrap, env, git, opts.grid_columns
    )
    tag = _tag(opts)
    summary = _summary(opts, carry, env, git, points, tag)
    warm_up(info.device)
    scorer.setup(jobs[0][2])  # Inception and the carried autoencoder, shared by every run
    for name, seed, cfg in jobs:
        key = f"{name}-seed{seed}"
        left = opts.deadline_s - (time.perf_counter() - started) if opts.deadline_s else float("inf")
        if left < len(points) * SCORE_GUESS_S + MIN_TRAIN_S:
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
        left = opts.deadline_s - (time.perf_counter() - started) - len(points) * SCORE_GUESS_S
        spent = trained_seconds(run_dir)  # train.max_seconds counts over resumes: a resumed run adds to it
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_seconds=spent + max(1.0, left)))
    scored: list[int] = []

    def on_point(state: TrainState, ema: nn.Module) -> None:
        index = points.index(state.images_seen)
        scorer.score(name, run_dir, cfg, state, ema, index, points)
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


def compile_state(cfg: RunConfig, run_dir: Path) -> dict:
    """Whether the run trains compiled: the config's train.compile, unless the loop fell back to eager (its note)."""
    path = run_dir / "stats.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    fallback = next((r for r in rows if r.get("event") == "compile_fallback"), None)
    if cfg.train.compile and fallback is not None:
        return {
            "compile": False,
            "compile_note": f"compile failed at {fallback['images']} images: {fallback['reason']}",
        }
    return {"compile": cfg.train.compile}


def trained_seconds(run_dir: Path) -> float:
    """Training seconds already in the run's newest intact checkpoint (0 for a new run).

    A run longer than one command resumes from its checkpoint when the same command is issued again on the same
    machine (work folder kept, e.g. /tmp of a GPU machine held by back-to-back commands); points it already scored
    are not scored again."""
    from bench.checkpoint import checked_resume_point, read_state

    ckpt = checked_resume_point(run_dir) if run_dir.is_dir() else None
    return read_state(ckpt).train_seconds if ckpt is not None else 0.0


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
