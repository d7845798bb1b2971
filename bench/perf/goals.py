"""The performance goals (sampler time ratio, latency, training throughput, FID time) as result records, measured
side by side in one process.

- sampler: the method vs the reference (bench.registry: LapFlow vs LFM) sampler time at equal NFE (fixed-step
  Euler), per resolution and fast path, with the fvcore FLOP ratio beside the time ratio (the floor a perfectly
  efficient implementation would reach);
- latency: batch-1 end-to-end (sampling, decode, quantise, copy to host) at the paper's NFE;
- training: images/s eager and compiled, and the compiled loss curve against the eager one under the same seeds;
- fid: Inception feature throughput, and the wall time of a whole FID-5k at 128 px on this machine.
Each goal record carries `goal` (threshold, direction) and `met`; `bench report` shows them beside the anchors
in results/anchors/performance.json. Random-init networks throughout: cost does not depend on weights.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import registry
from bench.config import resolve
from bench.metrics.timing import TimingProtocol, synchronize, time_sampling
from bench.perf.harness import LAYOUT_BATCH, build, record
from bench.perf.suites import TrainFailure, raise_failures, training_suite

# Goal thresholds, stored in each goal record (`extra.goal`: value and "<=" or ">=").
SAMPLER_RATIO_GOAL = 0.70
LATENCY_GOAL_S = 0.40
FID_CPU_GOAL_S = 15 * 60
LOSS_TOLERANCE = 0.02  # compiled vs eager training loss, relative, per step (bf16 autocast)


def _mini_preset() -> str:
    """The reference family's mini-benchmark preset: the config that FID records without a model carry."""
    ref = registry.reference()
    return ref.mini_runs[str(ref.headline_run)]


def goal(value: float | None, threshold: float, direction: str) -> dict[str, Any]:
    met = None if value is None else (value <= threshold if direction == "<=" else value >= threshold)
    return {"goal": {"threshold": threshold, "direction": direction}, "met": met}


def _nontrivial(model: Any) -> Any:
    """Random-init adaLN-Zero networks predict exactly zero, which would make every fast-vs-eager difference 0:
    all-zero parameters get N(0, 0.02) values (the cost of a forward does not change)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model.eval()


def _euler(cfg: Any, steps: int) -> Any:
    return dataclasses.replace(cfg.sample, solver="euler", steps=steps, stage_steps=None, guidance=1.0)


def _flop_ratio(models: dict[str, Any], specs: dict[str, Any]) -> float:
    from bench.metrics.flops import trace_flops

    per_sample = {f: trace_flops(models[f], specs[f]).per_sample_gflops for f in models}
    return per_sample[registry.method().name] / per_sample[registry.reference().name]


def sampler_goal(
    device: torch.device,
    out: Path,
    resolutions: list[int],
    fast_paths: list[str],
    steps: int = 10,
    warmup: int = 3,
    repeats: int = 10,
    batch_scale: float = 1.0,
    backbone: dict | None = None,
) -> dict[tuple[int, str], float]:
    """time_sampler of the reference and the method per fast path (bench.registry), and their ratio as a
    `sampler_time_ratio` goal record."""
    ratios = {}
    ref, meth = registry.reference().name, registry.method().name
    for res in resolutions:
        batch = max(1, int(LAYOUT_BATCH[res] * batch_scale))
        built = {f: build(f"{f}-celebahq{res}-l2", res, device, backbone) for f in (ref, meth)}
        models = {f: _nontrivial(m) for f, (_, m) in built.items()}
        specs = {f: _euler(cfg, steps) for f, (cfg, _) in built.items()}
        flop_ratio = _flop_ratio(models, specs)
        for fast in fast_paths:
            tp = TimingProtocol(batch, "sampler", warmup, repeats, "bf16", fast)
            medians = {}
            for family, (cfg, model) in built.items():
                result = time_sampling(model, specs[family], tp)
                medians[family] = result.stats.median
                protocol = tp.as_dict(device)
                nfe = {"nfe": result.nfe}
                record(cfg, "time_sampler", result.stats.median, "s", protocol, device, result.extra(), out, nfe)
            ratios[(res, fast)] = ratio = medians[meth] / medians[ref]
            extra = {
                f"{meth}_s": medians[meth],
                f"{ref}_s": medians[ref],
                "flop_ratio": flop_ratio,
                "time_per_flop_vs_lfm": ratio / flop_ratio,
                "steps": steps,
                **goal(ratio, SAMPLER_RATIO_GOAL, "<="),
            }
            protocol = {**tp.as_dict(device), "name": f"{tp.name(device)}-ratio", "nfe": steps}
            record(built[meth][0], "sampler_time_ratio", ratio, "x LFM", protocol, device, extra, out)
        del built, models
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the next resolution's models start from a clean pool
    return ratios


def latency_goal(
    device: torch.device,
    out: Path,
    fast_paths: list[str],
    res: int = 256,
    families: tuple[str, ...] | None = None,
    warmup: int = 3,
    repeats: int = 10,
    backbone: dict | None = None,
    nfe: dict[str, int] | None = None,
) -> dict[tuple[str, str], float]:
    """Batch-1 time_e2e at the paper's NFE (Family.paper_nfe; Euler steps = NFE: the paper's dopri5 NFE on trained
    weights) of `families` (default: the method, then the reference); the method's record carries the goal."""
    from bench.metrics.measure import cost_autoencoder

    meth = registry.method().name
    families = families or (meth, registry.reference().name)
    nfe = nfe or {f.name: f.paper_nfe for f in registry.families() if f.paper_nfe}
    medians = {}
    for family in families:
        cfg, model = build(f"{family}-celebahq{res}-l2", res, device, backbone)
        _nontrivial(model)
        autoencoder, note = cost_autoencoder(cfg, device)
        spec = _euler(cfg, nfe[family])
        for fast in fast_paths:
            tp = TimingProtocol(1, "e2e", warmup, repeats, "bf16", fast)
            result = time_sampling(model, spec, tp, autoencoder)
            medians[(family, fast)] = result.stats.median
            extra = {**result.extra(), "decoder_note": note}
            if family == meth:
                extra.update(goal(result.stats.median, LATENCY_GOAL_S, "<="))
            protocol = {**tp.as_dict(device), "nfe": nfe[family], "solver": "euler"}
            record(cfg, "time_e2e", result.stats.median, "s", protocol, device, extra, out, {"nfe": result.nfe})
        del model, autoencoder
    return medians


def training_goal(
    device: torch.device,
    out: Path,
    presets: list[str],
    batch: int = 64,
    warmup: int = 10,
    steps: int = 30,
    backbone: dict | None = None,
    compile_backend: str = "inductor",
    precision: str = "bf16",
    profile_steps: int = 0,
    modes: tuple[str, ...] = ("compile",),
    failures: list[TrainFailure] | None = None,
) -> dict[str, dict[str, float]]:
    """Eager training of each preset, then each compiled mode of `modes` (bench.perf.suites.TRAIN_MODES), all in one
    process under the same seeds; a `train_loss_match` record per preset and mode compares the losses step by step
    (and whether the RNG states after the timed steps agree: the same random draws). Returns {preset: {mode: dev}}.

    A preset that fails in a mode (training_suite records it as n/a and goes on) gets an n/a loss match for that mode
    (for every mode when eager failed) saying why; the pairs that finished are compared as usual. Failures go to
    `failures`, or, without that list, are raised as one BenchError once every record is written."""
    from bench.perf.suites import TRAIN_MODES

    own: list[TrainFailure] = [] if failures is None else failures
    digests: dict[str, dict[str, str]] = {"eager": {}}
    args = (device, out, presets, batch, warmup, steps)
    eager = training_suite(*args, None, precision, backbone, profile_steps, rng_digests=digests["eager"], failures=own)
    deviations: dict[str, dict[str, float]] = {p: {} for p in presets}
    for mode in modes:
        digests[mode] = {}
        compiled = training_suite(
            *args, compile_backend, precision, backbone, profile_steps, TRAIN_MODES[mode] or "default", digests[mode],
            own,
        )  # fmt: skip
        for preset in presets:
            cfg = resolve(preset=preset)
            protocol = {
                "name": f"train-b{batch}-{precision}-{mode}-vs-eager{'' if device.type == 'cuda' else '-cpu'}",
                "compile_backend": compile_backend,
                "compile_mode": TRAIN_MODES[mode],
                "batch": batch,
                "steps": warmup + steps,
                "tolerance": f"max relative loss difference per step <= {LOSS_TOLERANCE}",
            }
            if preset not in eager or preset not in compiled:
                failed = [f for f in own if f.preset == preset and f.mode in ("eager", mode)]
                note = "not compared: " + "; ".join(f.sentence() for f in failed)
                extra = {"failures": [dataclasses.asdict(f) for f in failed], **goal(None, LOSS_TOLERANCE, "<=")}
                record(cfg, "train_loss_match", None, "relative", protocol, device, extra, out, note=note)
                continue
            a, b = torch.tensor(eager[preset]), torch.tensor(compiled[preset])
            rel = ((b - a).abs() / a.abs().clamp_min(1e-12)).max().item()
            deviations[preset][mode] = rel
            extra = {
                "eager_losses": eager[preset],
                "compiled_losses": compiled[preset],
                "rng_match": digests[mode][preset] == digests["eager"][preset],
                **goal(rel, LOSS_TOLERANCE, "<="),
            }
            record(cfg, "train_loss_match", rel, "relative", protocol, device, extra, out)
    if failures is None:
        raise_failures(own, out)
    return deviations


def fid_throughput(
    device: torch.device,
    out: Path,
    images: torch.Tensor,
    batch: int,
    backend: str = "tf",
    weights: str = "fid",
) -> float:
    """Inception feature throughput (images/s) over uint8 `images` [N, H, W, 3]; `weights` = fid | random."""
    from bench.metrics.fid import make_extractor

    # The FID weights (87 MB) cannot travel to a lent GPU: there, the same network at random init.
    extractor = make_extractor(backend, device, random_weights=weights == "random")
    extractor(images[: min(batch, 8)])  # warm-up: kernels, cuDNN autotuning
    synchronize(device)
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        extractor(images[i : i + batch])
    synchronize(device)
    seconds = time.perf_counter() - start
    rate = len(images) / seconds
    cfg = resolve(preset=_mini_preset())  # the mini benchmark's FID data: CelebA-HQ at 128 px
    protocol = {
        "name": f"fid-features-{backend}-b{batch}-{weights}",
        "batch": batch,
        "images": len(images),
        "resolution": int(images.shape[1]),
        "backend": backend,
        "weights": weights,
    }
    extra = {"seconds": seconds, "seconds_per_5k": 5000 / rate}
    record(cfg, "fid_feature_throughput", rate, "images/s", protocol, device, extra, out)
    return rate


def fid_goal(
    device: torch.device, out: Path, count: int = 5000, batch: int = 100, backends: tuple[str, ...] = ("tf",)
) -> None:
    """GPU: feature throughput at batch 250 (random weights, random images). CPU: a whole FID of `count` prepared
    CelebA-HQ 128 px images per backend against the cached references (features, statistics, Frechet distance),
    all backends in one pass over the images as `bench eval` computes them, timed."""
    if device.type == "cuda":
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (count, 128, 128, 3), dtype=torch.uint8, generator=g)
        fid_throughput(device, out, images, 250, weights="random")
        return
    from bench.config import DataConfig
    from bench.data import load_prepared_images
    from bench.metrics.fid import compute_stats, fid_from_stats, rebatch, resolve_ref
    from bench.paths import cache_dir, data_root

    data = DataConfig(dataset="celebahq", res=128, autoencoder="pixel", num_classes=0, flip=False)
    images, _, _ = load_prepared_images(data, data_root(), cache_dir(), progress=False)
    chosen = torch.from_numpy(np.array(images[:count])).permute(0, 2, 3, 1)  # [N, H, W, 3] uint8, writable
    refs = {b: resolve_ref("celebahq128", b) for b in backends}
    start = time.perf_counter()
    stats, _ = compute_stats(rebatch([chosen], batch), list(backends), device)
    fids = {b: fid_from_stats(stats[b], refs[b]) for b in backends}
    seconds = time.perf_counter() - start
    cfg = resolve(preset=_mini_preset())
    protocol = {
        "name": f"fid-wall-{'+'.join(backends)}-{len(chosen)}-celebahq128-cpu",
        "backends": list(backends),
        "images": len(chosen),
        "batch": batch,
        "threads": torch.get_num_threads(),
        "what": "prepared CelebA-HQ images stand in for samples (cost does not depend on content)",
        "reportable": False,
    }
    per_5k = seconds * 5000 / len(chosen)
    extra = {"fid_vs_reference": fids, "seconds_per_5k": per_5k, **goal(per_5k, FID_CPU_GOAL_S, "<=")}
    record(cfg, "fid_wall", seconds, "s", protocol, device, extra, out)
