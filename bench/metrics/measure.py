"""One model, one configuration: run the measurements of `bench eval run` and write a record after each.

Records (bench.results) are written only once a measurement has completed, atomically; a measurement the model
or this machine cannot make gets an "n/a" record (value None) whose note says why. Heavy imports stay inside the
functions so the CLI's --help imports no torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError

FLOPS_PROTOCOL = {
    "name": "gflops-fvcore",
    "counter": "fvcore",
    "convention": "1 multiply-add = 1 FLOP (DiT)",
    "counted": "matmul, convolution, attention (normalisation and elementwise ops are not counted)",
}


@dataclass
class Target:
    family: str
    cfg: Any  # RunConfig
    run_dir: Path | None  # trained run, or None: the preset's architecture at random init


@dataclass
class Context:
    target: Target
    model: Any
    spec: Any  # SampleSpec
    device: Any
    precision: str
    environment: dict
    out: Path
    autoencoder: Any = None
    autoencoder_note: str = ""  # why it is absent, or that it is at random init

    @property
    def weights(self) -> str:
        return f"ema of run {self.target.run_dir}" if self.target.run_dir else "random init"

    def record(self, metric: str, value: float | None, unit: str, protocol: dict, **fields: Any) -> Any:
        from bench.config import to_dict
        from bench.results import run_record

        cfg = dataclasses.replace(self.target.cfg, sample=self.spec)
        sampling = {**to_dict(self.spec), **fields.pop("sampling", {})}
        extra = {"weights": self.weights, **fields.pop("extra", {})}
        return run_record(
            cfg, metric, value, unit, protocol, sampling=sampling, environment=self.environment, extra=extra, **fields
        )


def emit(record: Any, out: Path) -> Path:
    """Write one record atomically and say so on stdout."""
    from bench.results import write_record

    path = write_record(record, out)
    shown = "n/a" if record.value is None else f"{record.value:.6g}"
    print(f"{record.metric} [{record.protocol_name}] {record.preset} {record.resolution}px = {shown} -> {path}")
    return path


def load_target(target: Target, device: Any) -> Any:
    """The model: trained weights (EMA) from the run directory, else the preset's architecture at random init."""
    from bench.registry import MODELS

    if target.run_dir is not None:
        from bench.checkpoint import load_run

        model, _ = load_run(target.run_dir, "ema", device)
        return model.eval()
    cfg = target.cfg
    if cfg.data.autoencoder == "pixel":
        shape = (3, cfg.data.res, cfg.data.res)
    else:
        from bench.autoencoders import latent_shape

        shape = latent_shape(cfg.data.autoencoder, cfg.data.res)
    model = MODELS.load(cfg.family)(cfg.model, shape, cfg.data.num_classes)
    return model.to(device).eval()


def cost_autoencoder(cfg: Any, device: Any) -> tuple[Any, str]:
    """(autoencoder, note) for GFLOPs and time: the pretrained one, else its architecture at random init (valid for
    cost, never for quality), else (None, why not)."""
    from bench.autoencoders import load_autoencoder, random_init_autoencoder

    try:
        return load_autoencoder(cfg.data.autoencoder, device=device, path=cfg.data.autoencoder_path), ""
    except BenchError as exc:
        missing = str(exc)
    try:
        ae = random_init_autoencoder(cfg.data.autoencoder, device)
    except (BenchError, ImportError, OSError) as exc:
        return None, f"{missing} ({exc})"
    return ae, f"Decoder '{cfg.data.autoencoder}' at random init (pretrained weights absent): valid for cost only."


def sample_once(ctx: Context) -> Any:
    """One batch-1 trajectory from seed 0: the SampleOutput with the measured NFE."""
    import torch

    from bench.runtime import autocast, balanced_labels, per_sample_randn_like

    randn_like = per_sample_randn_like([0], ctx.device)
    noise = randn_like(torch.empty(1, *ctx.model.latent_shape, device=ctx.device))
    y = balanced_labels([0], ctx.model.num_classes)
    with torch.inference_mode(), autocast(ctx.device, ctx.precision):
        return ctx.model.sample(noise, y.to(ctx.device) if y is not None else None, ctx.spec, randn_like)


def run_flops(ctx: Context) -> None:
    """gflops_forward (time-averaged per forward), gflops_sample (times NFE) and gflops_decode records."""
    from bench.metrics.flops import SDPA_NOTE, decode_flops, trace_flops

    protocol = {**FLOPS_PROTOCOL, "attention": SDPA_NOTE}
    note, per_sample = "", None
    measured = dict(sample_once(ctx).nfe_by_call) if ctx.target.run_dir is not None else None
    try:
        report = trace_flops(ctx.model, ctx.spec, measured)
        per_sample = report.per_sample_gflops
    except BenchError as exc:  # adaptive solver at random init: NFE unknown, call shapes still known
        if "adaptive" not in str(exc):
            raise
        report = trace_flops(ctx.model, dataclasses.replace(ctx.spec, solver="euler"))
        note = f"{exc} The per-forward average weights calls by an euler split of {ctx.spec.steps} steps."
    extra = report.as_dict()
    if per_sample is None:  # the euler counts are a surrogate: keep the per-call shapes, drop the totals
        extra = {k: v for k, v in extra.items() if k not in ("per_sample_gflops", "nfe")}
        extra["counts"] = f"euler split of {ctx.spec.steps} steps (surrogate for the adaptive solver)"
    emit(
        ctx.record("gflops_forward", report.time_avg_gflops_per_forward, "GFLOPs", protocol, extra=extra, note=note),
        ctx.out,
    )
    sampling = {"nfe": report.nfe} if per_sample is not None else {}
    emit(
        ctx.record("gflops_sample", per_sample, "GFLOPs", protocol, extra=extra, note=note, sampling=sampling), ctx.out
    )
    decode = decode_flops(ctx.autoencoder, ctx.model.latent_shape) if ctx.autoencoder is not None else None
    emit(ctx.record("gflops_decode", decode, "GFLOPs", protocol, note=ctx.autoencoder_note), ctx.out)


def run_time(ctx: Context, batches: list[int], warmup: int, repeats: int, fast: str = "eager") -> None:
    """time_sampler and time_e2e records at each batch size (median seconds per call; p10/p90 in extra)."""
    from bench.metrics.timing import TimingProtocol, time_sampling

    adaptive = ctx.spec.solver == "dopri5" and ctx.target.run_dir is None
    for batch in batches:
        for mode in ("sampler", "e2e"):
            tp = TimingProtocol(batch, mode, warmup, repeats, ctx.precision, fast)
            protocol = tp.as_dict(ctx.device)
            if adaptive or (mode == "e2e" and ctx.autoencoder is None):
                why = ctx.autoencoder_note
                if adaptive:
                    why = "An adaptive solver at random init has no meaningful NFE; pass --run-dir or --solver/--steps."
                emit(ctx.record(tp.metric, None, "s", protocol, note=why), ctx.out)
                continue
            result = time_sampling(ctx.model, ctx.spec, tp, ctx.autoencoder if mode == "e2e" else None)
            s = result.stats
            extra = result.extra()
            seeds = {"start": 0, "count": batch}
            record = ctx.record(
                tp.metric, s.median, "s", protocol, extra=extra, sampling={"nfe": result.nfe}, seeds=seeds
            )
            emit(record, ctx.out)


def run_nfe(ctx: Context) -> None:
    out = sample_once(ctx)
    note = "" if ctx.target.run_dir else "Measured with random-init weights (meaningful for fixed-step solvers only)."
    protocol = {"name": "nfe-b1-seed0", "batch": 1, "seed": 0}
    sampling = {"nfe": out.nfe, "nfe_by_call": dict(out.nfe_by_call)}
    seeds = {"start": 0, "count": 1}
    emit(ctx.record("nfe", float(out.nfe), "", protocol, sampling=sampling, seeds=seeds, note=note), ctx.out)


@dataclass
class FidRequest:
    backends: list[str]
    num_samples: int
    ref: str  # reference name (celebahq128) or .npz path
    batch_size: int
    save_features: Path | None = None  # PREFIX: features saved as PREFIX-<backend>.npy
    fast: str = "eager"  # sampling fast path (bench.perf.accel); recorded in the protocol unless eager


def run_fid(ctx: Context, req: FidRequest) -> None:
    """FID of seeds 0..N-1 streamed from the model (no images on disk), one record per backend."""
    from bench.autoencoders import load_autoencoder
    from bench.metrics.fid import compute_stats
    from bench.metrics.fid_sources import model_batches

    cfg = ctx.target.cfg
    decoder = load_autoencoder(cfg.data.autoencoder, device=ctx.device, path=cfg.data.autoencoder_path)
    nfe: list[int] = []
    seeds = list(range(req.num_samples))
    batches = model_batches(ctx.model, seeds, ctx.spec, decoder, req.batch_size, ctx.precision, nfe, req.fast)
    keep = req.save_features is not None
    stats, feats = compute_stats(batches, req.backends, ctx.device, keep_features=keep, progress=True)
    fields = {"sampling": {"nfe": sum(nfe) / len(nfe)}, "seeds": {"start": 0, "count": req.num_samples}}

    def make(metric: str, value: float, unit: str, protocol: dict, extra: dict) -> Any:
        return ctx.record(metric, value, unit, protocol, extra=extra, **fields)

    write_fid_records(stats, feats, req, make, ctx.out)


def write_fid_records(stats: dict, feats: dict, req: FidRequest, make: Any, out: Path) -> None:
    """Score against the reference, save features if asked, then write one record per backend."""
    from bench.metrics.fid import save_feature_files, score
    from bench.metrics.inception import INCEPTION_SCORE_NOTE

    if req.save_features is not None:
        save_feature_files(feats, req.save_features)
    for protocol, value, ref_meta in score(stats, req.ref):
        if protocol.num_samples != req.num_samples:
            raise BenchError(f"Scored {protocol.num_samples} samples, not the {req.num_samples} asked for.")
        proto = {**protocol.as_dict(), "reference_stats": ref_meta}
        if req.fast != "eager":
            proto["fast_path"] = req.fast
        emit(make(protocol.metric, value, "", proto, {"inception_score": INCEPTION_SCORE_NOTE}), out)
