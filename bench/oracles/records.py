"""`bench reproduce mini-floor`: the sampler floor of mini-benchmark runs on a Gaussian fit of a carry's latents,
as result records (one per metric, run and sampler) under results/mini/<dataset><res>/floor/."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from bench.config import RunConfig, resolve, to_dict
from bench.errors import BenchError
from bench.oracles.floor import Floor, sampler_floor
from bench.oracles.gaussian import fit_gaussian
from bench.oracles.networks import ORACLES, install_exact_network
from bench.reproduce.latent import carry_latents
from bench.reproduce.samplers import Sampler, default_name
from bench.results import Record, run_record, write_record

FLOOR_BENCHMARK = "mini-floor"  # extra.benchmark: keeps these records out of the mini benchmark's FID tables
FLOOR_METRICS = {"floor_frechet": ("frechet", ""), "floor_variance": ("variance", "fraction")}
PROTOCOL_NOTE = (
    "the latents' mean and covariance as a Gaussian; each family's exact network for it (the posterior mean of its "
    "training target, bench.oracles); its own sampler in float64; the law of the samples read off exactly"
)


def floor_protocol(dataset: str, res: int, count: int) -> dict:
    return {
        "name": f"floor-gaussian-{dataset}{res}",
        "data": f"Gaussian fit of {count} latents (the carry's images and their mirrors)",
        "method": PROTOCOL_NOTE,
        "distance": "Frechet distance between Gaussians, in latent space",
        "precision": "float64",
    }


def run_floors(
    runs: dict[str, str],
    data_overrides: dict,
    samplers: tuple[Sampler, ...],
    out: Path,
    subdir: str,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """For each run (name -> preset): its preset's sampler, then each entry of its kind of solver (flow or
    diffusion, as `reproduce mini --samplers`), two records each. Runs of families without an exact network are
    refused before anything is computed."""
    configs = {name: resolve(preset=p, overrides=[{"data": data_overrides, "name": name}]) for name, p in runs.items()}
    missing = [f"{name} ({cfg.family})" for name, cfg in configs.items() if cfg.family not in ORACLES]
    if missing:
        raise BenchError(f"No exact network for {', '.join(missing)}; these families have one: {', '.join(ORACLES)}.")
    first = next(iter(configs.values()))
    latents = carry_latents(first)
    mu, sigma = fit_gaussian(latents)
    protocol = floor_protocol(first.data.dataset, first.data.res, int(latents.shape[0]))
    written: list[Path] = []
    for name, base in configs.items():
        specs = [base] + [entry.config(base) for entry in samplers if entry.supports(base)]
        for cfg in dict((str(c.sample), c) for c in specs).values():  # an entry that is the preset's own: once
            floor = _floor_of(cfg, tuple(latents.shape[1:]), mu, sigma)
            s = cfg.sample
            tolerances = f" (atol {s.atol:g}, rtol {s.rtol:g})" if s.solver == "dopri5" else ""
            log(
                f"{name} {default_name(cfg)}{tolerances}: Frechet {floor.frechet:.4f}, "
                f"variance kept {floor.variance:.4f} (coarse {floor.bands['coarse']:.4f}, "
                f"fine {floor.bands['fine']:.4f}), NFE {floor.nfe}"
            )
            own = cfg.sample == base.sample
            for record in floor_records(cfg, name, floor, protocol, float(sigma.trace()), own):
                written.append(write_record(record, out, subdir))
    return written


def _floor_of(cfg: RunConfig, shape: tuple[int, ...], mu: torch.Tensor, sigma: torch.Tensor) -> Floor:
    from bench.registry import MODELS

    # The exact network replaces model.net, so the preset's backbone is built at a token size (the record keeps the
    # preset's config): only the sampler and the training path's constants are used.
    token = dataclasses.replace(cfg.model.backbone, depth=1, hidden=8, heads=2)
    model = MODELS.load(cfg.family)(dataclasses.replace(cfg.model, backbone=token), shape, 0)
    install_exact_network(cfg.family, model, mu, sigma, cfg.sample)
    return sampler_floor(model, cfg.sample, mu, sigma)


def floor_records(
    cfg: RunConfig, run: str, floor: Floor, protocol: dict, data_trace: float, preset_sampler: bool
) -> list[Record]:
    from bench.runtime import environment

    extra = {
        "benchmark": FLOOR_BENCHMARK,
        "run": run,
        "sampler": default_name(cfg),  # as `reproduce mini --samplers` names it: floor rows join trained ones
        "preset_sampler": preset_sampler,  # the sampler the run's mini records are scored with
        "nfe": floor.nfe,
        "frechet": floor.frechet,
        "variance": floor.variance,
        "bands": floor.bands,
        "mean_error": floor.mean_error,
        "data_trace": data_trace,
    }
    sampling = {**to_dict(cfg.sample), "nfe": floor.nfe}
    records = []
    for metric, (field, unit) in FLOOR_METRICS.items():
        value = dataclasses.asdict(floor)[field]
        records.append(
            run_record(cfg, metric, value, unit, protocol, sampling=sampling, environment=environment(), extra=extra)
        )
    return records
