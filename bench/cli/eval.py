"""`bench eval`: FID, GFLOPs, time and NFE as result records (one JSON per measurement, written atomically).

GFLOPs and time need no trained weights (the paper architecture at random init is valid for them); FID needs a
run directory with a checkpoint, or samples scored from a folder, saved latents or saved Inception features.
A record is written only once its measurement has completed, so an interrupted command leaves no partial record.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from bench.errors import BenchError
from bench.metrics.measure import FidRequest
from bench.validate import check_counts, check_reference, folder_resolution

app = typer.Typer(help="Measure FID, GFLOPs, time and NFE; write result records.")

METRICS = ("fid", "flops", "time", "nfe")
DEFAULT_FID_SAMPLES = 5000

OutOpt = Annotated[Path | None, typer.Option("--out", help="Results folder (else $BENCH_RESULTS_DIR or results/).")]
DeviceOpt = Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N (else $BENCH_DEVICE).")]
BackendOpt = Annotated[str, typer.Option("--backend", help="FID backends: tf (torch-fidelity), clean (clean-fid).")]
RefOpt = Annotated[str, typer.Option("--ref", help="Reference: a name like celebahq128 (cached) or an .npz file.")]
BatchOpt = Annotated[int, typer.Option(help="Images per batch (results do not depend on it).")]
ModelOpt = Annotated[str, typer.Option("--model", help="Family recorded as the record's model.")]
FeatOpt = Annotated[Path | None, typer.Option(help="Also save features as PREFIX-<backend>.npy (float32).")]


def results_dir(out: Path | None = None) -> Path:
    """--out, else $BENCH_RESULTS_DIR (the global --results-dir), else ./results."""
    if out is not None:
        return Path(out)
    return Path(os.environ.get("BENCH_RESULTS_DIR", "").strip() or "results")


def output_folder(out: Path | None) -> Path:
    """The results folder, checked writable before anything is measured (a result is never lost at the end)."""
    from bench.paths import check_writable_dir

    return check_writable_dir(results_dir(out), "results folder")


def _device(name: str | None) -> Any:
    from bench.runtime import resolve_device

    return resolve_device(name or os.environ.get("BENCH_DEVICE", "").strip() or "auto")


def split_list(text: str, allowed: tuple[str, ...] | None = None, what: str = "value") -> list[str]:
    items = [p.strip() for p in text.split(",") if p.strip()]
    if not items:
        raise BenchError(f"Give at least one {what}.")
    bad = [p for p in items if allowed is not None and p not in allowed]
    if bad:
        raise BenchError(f"Unknown {what} '{bad[0]}'; choose from {', '.join(allowed or ())}.")
    return items


def split_ints(text: str, what: str) -> list[int]:
    try:
        values = [int(p) for p in split_list(text, what=what)]
    except ValueError:
        raise BenchError(f"{what.capitalize()} must be comma-separated integers, got '{text}'.") from None
    if any(v <= 0 for v in values):
        raise BenchError(f"{what.capitalize()} must be positive, got '{text}'.")
    return values


@contextmanager
def terminate_cleanly() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so temporary files are removed and no partial record survives."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.callback(invoke_without_command=True)
def eval_group(
    ctx: typer.Context,
    all_: Annotated[
        bool, typer.Option("--all", help="Every family at its defaults and every metric that runs here (no FID).")
    ] = False,
) -> None:
    """Measure models (`bench eval --all`: all of them, with a plan first) or score samples (sub-commands)."""
    if ctx.invoked_subcommand is not None:
        if all_:
            raise BenchError("`bench eval --all` takes no sub-command; for options use `bench eval run --all ...`.")
        return
    if not all_:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    from bench.cli.eval_plan import CPU_DEFAULT_METRICS, GPU_DEFAULT_METRICS

    on_gpu = _device(None).type == "cuda"
    if not on_gpu:
        typer.echo(
            "bench eval --all on a CPU: flops and nfe (timing needs a GPU; `bench eval run --all "
            "--metrics time` times here anyway); FID needs a trained run (`bench eval run --run-dir`).",
            err=True,
        )
    run_command(all_=True, metrics=GPU_DEFAULT_METRICS if on_gpu else CPU_DEFAULT_METRICS)


# ----------------------------------------------------------------------------------------------------------------
# bench eval run


def fid_request(
    cfg: Any, protocol: str | None, backend: str, num_samples: int, ref: str | None, batch: int, save: Path | None
) -> FidRequest:
    """Backends, sample count and reference from --protocol, else from the flags and the run's data set."""
    from bench.metrics.protocols import FID_BACKENDS, parse_fid_protocol

    if protocol:
        p = parse_fid_protocol(protocol)
        if p.res != cfg.data.res:
            raise BenchError(f"Protocol '{protocol}' scores {p.res} px images; this model makes {cfg.data.res} px.")
        return FidRequest([p.backend], p.num_samples, ref or p.reference, batch, save)
    backends = split_list(backend, tuple(FID_BACKENDS), "FID backend")
    return FidRequest(backends, num_samples, ref or f"{cfg.data.dataset}{cfg.data.res}", batch, save)


@app.command("run")
def run_command(
    model: Annotated[str | None, typer.Argument(help="Model family (e.g. lfm), or use --all / --preset.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every registered family at its default presets.")] = False,
    metrics: Annotated[str, typer.Option(help="Comma-separated: fid, flops, time, nfe.")] = "flops,time,nfe",
    res: Annotated[str | None, typer.Option(help="Resolutions, e.g. 256,512,1024 (overrides data.res).")] = None,
    preset: Annotated[str | None, typer.Option(help="Preset (default: the family's celebahq<res> preset).")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Trained run (needed for FID; EMA weights).")] = None,
    protocol: Annotated[str | None, typer.Option(help="FID protocol, e.g. fid-tf-5k-celebahq128.")] = None,
    num_samples: Annotated[int, typer.Option(help="FID samples (seeds 0..N-1).")] = DEFAULT_FID_SAMPLES,
    backend: BackendOpt = "tf,clean",
    ref: Annotated[str | None, typer.Option(help="FID reference (default <dataset><res>).")] = None,
    batch_size: BatchOpt = 64,
    solver: Annotated[str | None, typer.Option(help="Override the sampling solver (euler, heun, dopri5).")] = None,
    steps: Annotated[int | None, typer.Option(help="Override the number of solver steps.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="Sampling override, e.g. sample.guidance=1.5.")
    ] = None,
    time_batch: Annotated[str, typer.Option(help="Timing batch sizes (1 = latency, 64 = throughput).")] = "1,64",
    warmup: Annotated[int, typer.Option(help="Timing warm-up calls (protocol: >= 3).")] = 3,
    repeats: Annotated[int, typer.Option(help="Timed repeats (protocol: >= 10).")] = 10,
    precision: Annotated[str | None, typer.Option(help="auto | fp32 | bf16 (default: the config's).")] = None,
    fast: Annotated[str, typer.Option(help="Sampling fast path (time, fid): eager, graph, compile(-graph).")] = "eager",
    save_features: FeatOpt = None,
    device: DeviceOpt = None,
    out: OutOpt = None,
) -> None:
    """Measure MODEL (or --all) and write one record per measurement."""
    from bench.cli.common import apply_sample_overrides, sample_overrides
    from bench.cli.eval_plan import build_targets, echo_plan, measure
    from bench.validate import check_precision

    wanted = split_list(metrics, METRICS, "metric")
    res_list = split_ints(res, "resolutions") if res else None
    batches = split_ints(time_batch, "timing batch sizes")
    check_counts(num_samples=num_samples, batch_size=batch_size, steps=steps, repeats=repeats)
    if precision is not None:
        check_precision(precision, "--precision")
    if "fid" in wanted and run_dir is None:
        raise BenchError("FID needs trained weights: pass --run-dir with a checkpoint.")
    targets = build_targets(model, all_, preset, res_list, run_dir)
    dev, folder = _device(device), output_folder(out)
    if {"time", "fid"} & set(wanted):
        from bench.perf.accel import check_fast_path

        check_fast_path(fast, dev)
    fid = None
    if "fid" in wanted:  # the reference is checked against every target before anything is measured
        fid = dataclasses.replace(
            fid_request(targets[0].cfg, protocol, backend, num_samples, ref, batch_size, save_features), fast=fast
        )
        for target in targets:
            check_reference(fid.ref, fid.backends, target.cfg.data.res, target.cfg.data.dataset)
    # --solver/--steps are sugar for --set sample.solver/sample.steps: one override route, type-checked per target
    sugar = [f"sample.{k}={v}" for k, v in (("solver", solver), ("steps", steps)) if v is not None]
    spec_over = sample_overrides([*sugar, *(set_ or [])], "bench eval run")
    for target in targets:
        apply_sample_overrides(target.cfg.sample, spec_over)
    echo_plan(targets, wanted, dev, folder, batches, fid)
    timing = (batches, warmup, repeats, fast)
    with terminate_cleanly():
        measure(targets, wanted, dev, folder, spec_over, precision, timing, fid)


@app.command("ref-stats")
def ref_stats_command(
    dataset: Annotated[str, typer.Argument(help="Data set name (celebahq, imagenet, synthetic).")],
    res: Annotated[int, typer.Option(help="Resolution in px.")],
    backend: BackendOpt = "tf,clean",
    batch_size: BatchOpt = 100,
    path: Annotated[str, typer.Option(help="Data set folder (else found under the data root).")] = "",
    save_features: FeatOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Reference statistics (.npz: mu, sigma, n, protocol, source hash) of the prepared data set, cached."""
    from bench.metrics.fid import reference_stats
    from bench.metrics.protocols import FID_BACKENDS
    from bench.validate import check_resolution

    backends = split_list(backend, tuple(FID_BACKENDS), "FID backend")
    check_resolution(res, "--res")
    check_counts(batch_size=batch_size)
    root = os.environ.get("BENCH_DATA_ROOT", "").strip()
    with terminate_cleanly():
        data_root = Path(root) if root else None
        paths = reference_stats(
            dataset, res, backends, _device(device), batch_size, data_root, data_path=path, save_features=save_features
        )
    for b, p in paths.items():
        typer.echo(f"{b}: {p}")


def _external_record(
    model: str, name: str, protocol: Any, value: float, extra: dict, note: str, device: Any = None
) -> Any:
    from bench.results import make_record
    from bench.runtime import environment

    return make_record(
        model=model,
        preset=name,
        dataset=protocol["dataset"],
        resolution=protocol["res"],
        metric=extra.pop("metric"),
        value=value,
        unit="",
        protocol=protocol,
        environment=environment(device),
        extra=extra,
        note=note,
    )


def _score_external(
    stats: dict, feats: dict, req: FidRequest, model: str, name: str, note: str, out: Path, device: Any
) -> None:
    """One record per backend; `device` (where the features were computed) names the GPU in the environment."""
    from bench.metrics.measure import write_fid_records

    def make(metric: str, value: float, unit: str, proto: dict, extra: dict) -> Any:
        return _external_record(model, name, proto, value, {**extra, "metric": metric}, note, device)

    write_fid_records(stats, feats, req, make, out)


@app.command("fid-folder")
def fid_folder_command(
    folder: Annotated[Path, typer.Argument(help="Folder of PNG samples (the first N by name are scored).")],
    ref: RefOpt,
    num_samples: Annotated[int, typer.Option(help="Samples scored.")] = DEFAULT_FID_SAMPLES,
    backend: BackendOpt = "tf,clean",
    batch_size: BatchOpt = 100,
    model: ModelOpt = "external",
    name: Annotated[str | None, typer.Option("--name", help="Record name (default: the folder's name).")] = None,
    save_features: FeatOpt = None,
    device: DeviceOpt = None,
    out: OutOpt = None,
) -> None:
    """FID of a folder of PNG samples against reference statistics."""
    from bench.metrics.fid import compute_stats
    from bench.metrics.fid_sources import folder_batches
    from bench.metrics.protocols import FID_BACKENDS

    backends = split_list(backend, tuple(FID_BACKENDS), "FID backend")
    check_counts(num_samples=num_samples, batch_size=batch_size)
    if not folder.is_dir():
        raise BenchError(f"Sample folder '{folder}' does not exist.")
    dev, results = _device(device), output_folder(out)
    check_reference(ref, backends, folder_resolution(folder))
    req = FidRequest(backends, num_samples, ref, batch_size, save_features)
    with terminate_cleanly():
        batches = folder_batches(folder, num_samples, batch_size)
        stats, feats = compute_stats(batches, backends, dev, keep_features=save_features is not None)
        _score_external(stats, feats, req, model, name or folder.name, f"scored from folder {folder}", results, dev)


@app.command("fid-latents")
def fid_latents_command(
    latents: Annotated[Path, typer.Argument(help="Latents (.npy, .pt, .safetensors or a `bench sample` folder).")],
    autoencoder: Annotated[str, typer.Option(help="Autoencoder that decodes them (registry name).")],
    ref: RefOpt,
    autoencoder_path: Annotated[str, typer.Option(help="Local weights folder for the autoencoder.")] = "",
    num_samples: Annotated[int, typer.Option(help="Samples scored (the first N).")] = DEFAULT_FID_SAMPLES,
    backend: BackendOpt = "tf,clean",
    batch_size: BatchOpt = 64,
    model: ModelOpt = "external",
    name: Annotated[str | None, typer.Option("--name", help="Record name (default: the file's stem).")] = None,
    save_features: FeatOpt = None,
    device: DeviceOpt = None,
    out: OutOpt = None,
) -> None:
    """FID of saved latents, decoded and quantised here."""
    from bench.autoencoders import get_spec, load_autoencoder
    from bench.metrics.fid import compute_stats
    from bench.metrics.fid_sources import latent_batches, load_latents
    from bench.metrics.protocols import FID_BACKENDS

    backends = split_list(backend, tuple(FID_BACKENDS), "FID backend")
    check_counts(num_samples=num_samples, batch_size=batch_size)
    dev, results = _device(device), output_folder(out)
    req = FidRequest(backends, num_samples, ref, batch_size, save_features)
    with terminate_cleanly():
        z = load_latents(latents)
        check_reference(ref, backends, z.shape[-1] * get_spec(autoencoder).factor)
        ae = load_autoencoder(autoencoder, device=dev, path=autoencoder_path)
        batches = latent_batches(z, ae, num_samples, batch_size, dev)
        stats, feats = compute_stats(batches, backends, dev, keep_features=save_features is not None)
        note = f"decoded from {latents} with {autoencoder} ({ae.weights_hash})"
        _score_external(stats, feats, req, model, name or latents.stem, note, results, dev)


@app.command("fid-features")
def fid_features_command(
    features: Annotated[Path, typer.Argument(help="Inception features [N, 2048] (.npy) of one backend.")],
    ref: RefOpt,
    backend: Annotated[str, typer.Option(help="Backend that made the features: tf or clean.")] = "tf",
    num_samples: Annotated[int | None, typer.Option(help="Rows scored (default: all).")] = None,
    model: ModelOpt = "external",
    name: Annotated[str | None, typer.Option("--name", help="Record name (default: the file's stem).")] = None,
    device: Annotated[str | None, typer.Option(help="Device that computed the features (named in the record).")] = None,
    out: OutOpt = None,
) -> None:
    """FID from precomputed Inception features (e.g. returned by a GPU run)."""
    from bench.metrics.fid import FeatureStats
    from bench.metrics.fid_sources import load_features
    from bench.metrics.protocols import check_backend

    check_backend(backend)
    check_counts(num_samples=num_samples)
    dev, results = _device(device), output_folder(out)
    rows = load_features(features)
    check_reference(ref, [backend], None)
    n = num_samples or len(rows)
    if n > len(rows):
        raise BenchError(f"Features file '{features}' holds {len(rows)} rows; {n} were asked for.")
    req = FidRequest([backend], n, ref, n, None)
    with terminate_cleanly():
        stats = {backend: FeatureStats.of(rows[:n])}
        note = f"scored from features {features}"
        _score_external(stats, {}, req, model, name or features.stem, note, results, dev)


def main() -> None:
    """Standalone entry (`python -m bench.cli.eval`): a BenchError is one sentence on stderr and exit code 1."""
    try:
        app(standalone_mode=False)
    except BenchError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
