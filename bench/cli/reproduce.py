"""`bench reproduce`: the mini benchmark on one GPU as three commands (README "Mini benchmark on one GPU").

  bench reproduce mini-prepare                      CPU: carried latents + TAESD weights, FID reference statistics
  bench reproduce mini-run --out DIR                GPU: each model trains for the same time budget, then samples
  bench reproduce mini-score DIR                    CPU: decode, FID (torch-fidelity, clean-fid), result records

Imports stay lazy: `bench --help` must not import torch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bench.errors import BenchError
from bench.registry import mini_headline_runs
from bench.reproduce.mini import DEFAULT_MODELS, GUIDANCE_SWEEP

if TYPE_CHECKING:
    import torch

app = typer.Typer(no_args_is_help=True, help="Reproduce results end to end (the mini benchmark on one GPU).")

DEFAULT_CARRY = Path(".carry/mini")
DEFAULT_FEATURES = Path(".carry/mini-ref")  # git-ignored; 41 MB: travels on its own (README)
DeviceOpt = Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N (else $BENCH_DEVICE).")]
BackendOpt = Annotated[str, typer.Option("--backend", help="FID backends: tf (torch-fidelity), clean (clean-fid).")]


def _device(name: str | None) -> torch.device:
    from bench.paths import device_name
    from bench.runtime import resolve_device

    return resolve_device(name or device_name())


def _backends(text: str) -> list[str]:
    from bench.cli.eval import split_list
    from bench.metrics.protocols import FID_BACKENDS

    return split_list(text, tuple(FID_BACKENDS), "FID backend")


@app.command("mini-prepare")
def mini_prepare_command(
    out: Annotated[Path, typer.Option(help="Carry folder (git-ignored; carry it to the GPU).")] = DEFAULT_CARRY,
    dataset: Annotated[str, typer.Option(help="Data set (under the data root).")] = "celebahq",
    res: Annotated[int, typer.Option(help="Resolution in px (128: 16x16x4 TAESD latents).")] = 128,
    autoencoder: Annotated[str, typer.Option(help="Autoencoder of the latents.")] = "taesd",
    path: Annotated[str, typer.Option(help="Data set folder (else found under the data root).")] = "",
    ref_stats: Annotated[bool, typer.Option("--ref-stats/--no-ref-stats", help="Cache FID reference stats.")] = True,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            help="FID backends: tf (torch-fidelity), clean (clean-fid); default tf,clean for the reference "
            "statistics and tf for --features (clean: the file for `mini --real-features-clean`).",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per Inception batch.")] = 100,
    features: Annotated[
        bool, typer.Option("--features/--no-features", help="Also the real images' features (for `mini`).")
    ] = False,
    features_dir: Annotated[Path, typer.Option(help="Folder of the real-image features file.")] = DEFAULT_FEATURES,
    latents: Annotated[
        bool, typer.Option("--latents/--no-latents", help="Write the carry folder (off: features only).")
    ] = True,
    val_split: Annotated[
        str, typer.Option(help="With --features: also the labelled features of this held-out split (probe), e.g. val.")
    ] = "",
    device: DeviceOpt = None,
) -> None:
    """Prepare the carry folder (latents with mirrored copies, autoencoder weights) and the reference statistics."""
    from bench.cli.eval import terminate_cleanly
    from bench.config import DataConfig
    from bench.registry import AUTOENCODERS, DATASETS
    from bench.reproduce.prepare import prepare_mini

    cfg = DataConfig(dataset=DATASETS.check(dataset), res=res, autoencoder=AUTOENCODERS.check(autoencoder), path=path)
    if cfg.autoencoder == "pixel":
        raise BenchError("The mini benchmark carries latents; choose a latent autoencoder such as taesd.")
    if val_split and not features:
        raise BenchError("--val-split computes features: pass it together with --features.")
    if not latents and not features:
        raise BenchError("--no-latents without --features leaves nothing to prepare.")
    manifest = None
    if latents:
        with terminate_cleanly():
            manifest = prepare_mini(out, cfg, _backends(backend or "tf,clean"), _device(device), batch_size, ref_stats)
    if features:
        from bench.reproduce.prepare import prepare_features, prepare_split_features

        with terminate_cleanly():
            paths = []
            for name in _backends(backend or "tf"):
                tic = time.perf_counter()
                paths.append(prepare_features(cfg, features_dir, _device(device), batch_size, backend=name))
                typer.echo(f"{name} features: {time.perf_counter() - tic:.0f} s.")
            if val_split:  # the class probe's held-out accuracy: tf features (the probe's protocol), any --backend
                paths.append(prepare_split_features(cfg, val_split, features_dir, _device(device), batch_size))
        for path in paths:
            typer.echo(f"Real-image features: {path} ({path.stat().st_size / 2**20:.1f} MiB).")
    if manifest is None:
        return
    typer.echo(
        f"Carry folder {out}: {manifest['count']} images of {dataset} at {res} px as {autoencoder} latents "
        f"({manifest['bytes'] / 2**20:.1f} MiB); reference statistics: {', '.join(manifest['ref_stats']) or 'none'}."
    )
    from bench.reproduce.prepare import oversize_note

    if note := oversize_note(manifest, out):
        typer.echo(note)


@app.command("mini-run")
def mini_run_command(
    out: Annotated[Path, typer.Option(help="Folder for what comes back (latents, mini-run.json, grid.png).")],
    carry: Annotated[Path, typer.Option(help="Carry folder written by mini-prepare.")] = DEFAULT_CARRY,
    models: Annotated[str, typer.Option(help="Comma-separated models or presets (see README).")] = DEFAULT_MODELS,
    budget_s: Annotated[float, typer.Option(help="Training seconds of device time per model.")] = 60.0,
    num_samples: Annotated[int, typer.Option(help="Samples per model (seeds 0..N-1).")] = 5000,
    steps: Annotated[int, typer.Option(help="Sampling steps (NFE) for every model; 0 = the presets' (50).")] = 0,
    batch_size: Annotated[int, typer.Option(help="Samples per sampling batch (results do not depend on it).")] = 500,
    work_dir: Annotated[Path | None, typer.Option(help="Run directories (default $BENCH_RUNS_DIR/mini).")] = None,
    deadline_s: Annotated[float, typer.Option(help="Skip models that would end later (seconds from the start).")] = 0.0,
    limits: Annotated[bool, typer.Option("--limits/--no-limits", help="Enforce the GPU return limits.")] = True,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override for every model.")] = None,
    progress: Annotated[bool, typer.Option(help="Show training progress bars.")] = False,
) -> None:
    """Train every model for the same device-time budget through the training loop, then sample its seeds."""
    from bench.cli.eval import split_list
    from bench.config import parse_set
    from bench.paths import runs_dir
    from bench.reproduce.run import RunOptions, run_mini

    opts = RunOptions(
        carry=carry,
        out=out,
        models=split_list(models, what="model"),
        budget_s=budget_s,
        num_samples=num_samples,
        work_dir=work_dir or runs_dir() / "mini",
        steps=steps,
        sample_batch=batch_size,
        deadline_s=deadline_s,
        limits=limits,
        overrides=[parse_set(s) for s in set_ or []],
        progress=progress,
    )
    summary = run_mini(opts)
    done, skipped = list(summary["models"]), list(summary["skipped"])
    typer.echo(f"mini-run: {len(done)} model(s) done ({', '.join(done)}) -> {out}")
    if skipped:
        typer.echo(f"skipped (deadline): {', '.join(skipped)}", err=True)


@app.command("mini-score")
def mini_score_command(
    run_out: Annotated[Path, typer.Argument(help="The --out folder of a mini-run (as returned by the GPU).")],
    out: Annotated[Path | None, typer.Option("--out", help="Results folder (records go to OUT/mini/).")] = None,
    backend: BackendOpt = "tf,clean",
    num_samples: Annotated[int, typer.Option(help="Samples scored (0 = all the run made).")] = 0,
    batch_size: Annotated[int, typer.Option(help="Images per batch (results do not depend on it).")] = 100,
    carry: Annotated[Path, typer.Option(help="Carry folder whose autoencoder weights decode.")] = DEFAULT_CARRY,
    autoencoder_path: Annotated[str, typer.Option(help="Autoencoder weights folder (overrides --carry).")] = "",
    device: DeviceOpt = None,
) -> None:
    """FID of every model of a mini-run (decoded and scored here), one record per model and backend."""
    from bench.cli.eval import results_dir, terminate_cleanly
    from bench.reproduce.score import read_summary, score_mini

    weights = autoencoder_path
    if not weights:
        name = read_summary(run_out)["carry"]["autoencoder"]
        weights = str(carry / name) if (carry / name).is_dir() else ""
    with terminate_cleanly():
        written = score_mini(
            run_out, results_dir(out), _backends(backend), num_samples, batch_size, _device(device), weights
        )
    typer.echo(f"mini-score: {len(written)} record(s) written.")


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise BenchError(f"Training seeds must be whole numbers like 0,1; got '{text}'.") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise BenchError(f"Give distinct non-negative training seeds like 0,1; got '{text}'.")
    return seeds


@app.command("mini")
def mini_command(
    real_features: Annotated[Path, typer.Option(help="Real-image features (`mini-prepare --features`).")],
    carry: Annotated[Path, typer.Option(help="Carry folder written by mini-prepare.")] = DEFAULT_CARRY,
    models: Annotated[str, typer.Option(help="Comma-separated runs or presets (README).")] = ",".join(
        mini_headline_runs()
    ),
    seeds: Annotated[str, typer.Option(help="Training seeds, e.g. 0,1.")] = "0",
    images: Annotated[int, typer.Option(help="Training budget in images seen, the same for every run.")] = 1_228_800,
    points: Annotated[int, typer.Option(help="Evaluation points: images/2^(P-1), ..., images/2, images.")] = 4,
    num_samples: Annotated[int, typer.Option(help="Samples per point (seeds 0..N-1).")] = 5000,
    batch_size: Annotated[int, typer.Option(help="Samples per sampling batch (results do not depend on it).")] = 500,
    bootstrap: Annotated[int, typer.Option(help="FID bootstrap repetitions at the last point (0 = none).")] = 100,
    work_dir: Annotated[Path | None, typer.Option(help="Run directories (default $BENCH_RUNS_DIR/mini).")] = None,
    deadline_s: Annotated[float, typer.Option(help="Skip runs that would end later (seconds from the start).")] = 0.0,
    bundle: Annotated[Path | None, typer.Option(help="Also pack everything written into this .tar.gz.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Results folder (records go to OUT/mini/).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override for every run.")] = None,
    progress: Annotated[bool, typer.Option(help="Show training progress bars.")] = False,
    dataset: Annotated[str, typer.Option(help="Mini runs of this data set (default: the carry's).")] = "",
    guidance: Annotated[str, typer.Option(help="Class-conditional: guidance weights at the last point.")] = ",".join(
        f"{w:g}" for w in GUIDANCE_SWEEP
    ),
    val_features: Annotated[
        Path | None, typer.Option(help="Class-conditional: the probe's held-out features (default: beside).")
    ] = None,
    real_features_clean: Annotated[
        Path | None,
        typer.Option(help="Also clean-fid FID at the last point: `mini-prepare --features --backend clean`'s file."),
    ] = None,
    train_path: Annotated[
        str,
        typer.Option(help="Training path: auto (CUDA graphs on a GPU, eager elsewhere), eager, compile, graphs."),
    ] = "auto",
    samplers: Annotated[
        str,
        typer.Option(
            help="Also score each run's last point with these samplers, solver[:steps], e.g. euler:100,heun:50,dopri5 "
            "(default steps: the preset's; dopri5 takes none); a run skips the other kind of solver."
        ),
    ] = "",
) -> None:
    """The mini benchmark in one command: train each run, sample and score it at every point, write records."""
    from bench.cli.eval import results_dir, split_list
    from bench.config import parse_set
    from bench.paths import runs_dir
    from bench.reproduce.benchmark import BenchmarkOptions, run_benchmark
    from bench.reproduce.classes import parse_sweep
    from bench.reproduce.samplers import parse_samplers

    opts = BenchmarkOptions(
        carry=carry,
        real_features=real_features,
        results=results_dir(out),
        models=split_list(models, what="model"),
        seeds=_seeds(seeds),
        images=images,
        points=points,
        num_samples=num_samples,
        work_dir=work_dir or runs_dir() / "mini",
        sample_batch=batch_size,
        bootstrap=bootstrap,
        deadline_s=deadline_s,
        overrides=[parse_set(s) for s in set_ or []],
        bundle=bundle,
        progress=progress,
        dataset=dataset,
        guidance=parse_sweep(guidance),
        val_features=val_features,
        real_features_clean=real_features_clean,
        train_path=train_path,
        samplers=parse_samplers(samplers),
    )
    summary = run_benchmark(opts)
    done = [k for k, v in summary["runs"].items() if v["complete"]]
    typer.echo(f"mini: {len(done)} run(s) complete ({', '.join(done) or 'none'}); records in {opts.results}/mini/")
    if summary["skipped"]:
        typer.echo(f"skipped (deadline): {', '.join(summary['skipped'])}", err=True)


@app.command("mini-ingest")
def mini_ingest_command(
    bundle: Annotated[Path, typer.Argument(help="A --bundle file of `bench reproduce mini`.")],
    out: Annotated[Path | None, typer.Option("--out", help="Results folder.")] = None,
    runs: Annotated[Path | None, typer.Option(help="Also unpack the run logs here.")] = None,
) -> None:
    """Unpack a bundle returned by a GPU machine into the results folder (every record checked first)."""
    from bench.cli.eval import results_dir
    from bench.reproduce.bundle import ingest_bundle

    written = ingest_bundle(bundle, results_dir(out), runs)
    typer.echo(f"mini-ingest: {len(written)} file(s) written.")
