"""The mini benchmark's scorer: samples the EMA at an evaluation point, scores it against the real images' features
and writes one record per metric (bench/reproduce/benchmark.py runs it; the metrics are bench.metrics.distribution).

Unconditional data: one sample set per point at the preset's sampler. Class-conditional data (a `ClassScoring`,
bench.reproduce.classes): one per guidance weight (the preset's at every point, the sweep at the last), each also
scored for class accuracy, and a class grid at the last point. `--samplers` (bench.reproduce.samplers): at the last
point also one set per entry the run takes, its records tagged extra.sampler. Unconditional sets are also summarised
in latent space against the training latents (bench.reproduce.latent: Frechet distance, variance kept per band).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from bench.checkpoint import TrainState
from bench.config import RunConfig
from bench.metrics.protocols import FIDProtocol
from bench.reproduce.classes import ClassScoring, with_guidance
from bench.reproduce.clean import CleanFeatures
from bench.reproduce.latent import LatentMoments, LatentReference, carry_latents, latent_values
from bench.reproduce.mini import MINI_BENCHMARK
from bench.reproduce.reference import Reference
from bench.reproduce.samplers import Sampler

Values = dict[str, tuple[float, dict, dict]]  # metric -> (value, protocol extras, record extras)


@dataclass
class SampleSet:
    features: Tensor  # [N, 2048] on the scoring device
    first: Tensor  # the first images (a grid row)
    labels: Tensor | None  # [N] class ids the samples were drawn with
    nfe: int
    sample_s: float
    feature_s: float
    clean: Tensor | None = None  # clean-fid features of the same images (the last point, with --real-features-clean)
    batches: list[tuple[int, int]] = field(default_factory=list)  # (samples, measured NFE) of each sampling batch
    moments: LatentMoments | None = None  # the sampled latents' sums (unconditional carries)

    @property
    def nfe_per_sample(self) -> float:
        """Mean over the samples of the NFE of the batch that drew them (dopri5 adapts to each batch's error)."""
        return sum(k * n for k, n in self.batches) / sum(k for k, _ in self.batches)


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
    classes: ClassScoring | None = None
    clean: CleanFeatures | None = None  # clean-fid FID at the last point (unconditional carries)
    samplers: tuple[Sampler, ...] = ()  # --samplers: further sample sets at the last point
    latents: LatentReference | None = None  # the training latents' Gaussian fit (setup; unconditional carries)
    written: list[Path] = field(default_factory=list)
    grid_rows: list[tuple[dict, Tensor]] = field(default_factory=list)
    _extractor: object = None
    _autoencoder: nn.Module | None = None

    def setup(self, cfg: RunConfig) -> None:
        from bench.autoencoders import load_autoencoder
        from bench.metrics.fid import make_extractor

        self._extractor = make_extractor("tf", self.device)
        self._autoencoder = load_autoencoder(cfg.data.autoencoder, self.device, cfg.data.autoencoder_path)
        if self.clean is not None:
            self.clean.setup()
        if self.classes is None:
            self.latents = LatentReference.of(carry_latents(cfg))

    def features(self, model: nn.Module, cfg: RunConfig, clean: bool = False) -> SampleSet:
        """Samples of seeds 0..N-1 (labels by seed), decoded once, as Inception features on the device (`clean`:
        also clean-fid's features of the same images; their seconds are counted apart, in self.clean)."""
        from bench.sample import generate

        feats, labels, first, nfe, sample_s, feat_s = [], [], None, 0, 0.0, 0.0
        batches: list[tuple[int, int]] = []
        moments = LatentMoments(self.device) if self.latents is not None else None
        if clean:
            self.clean.start()
        tic = time.perf_counter()
        for batch in generate(
            model, range(self.num_samples), cfg.sample, self.sample_batch, cfg.train.precision, self._autoencoder
        ):
            mid = time.perf_counter()
            sample_s += mid - tic
            first = batch.images[: self.grid_columns] if first is None else first
            feats.append(torch.from_numpy(self._extractor(batch.images)).float().to(self.device))
            labels += [batch.labels] if batch.labels is not None else []
            nfe = max(nfe, batch.nfe)
            batches.append((len(batch.seeds), batch.nfe))
            if moments is not None:
                moments.add(batch.latents)
            feat_s += time.perf_counter() - mid
            if clean:
                self.clean.add(batch.images)  # resized on the pool while the next batch samples
            tic = time.perf_counter()
        clean_feats = self.clean.finish() if clean else None
        labelled = torch.cat(labels) if labels else None
        return SampleSet(torch.cat(feats), first, labelled, nfe, sample_s, feat_s, clean_feats, batches, moments)

    def sample_sets(self, cfg: RunConfig, final: bool) -> list[tuple[RunConfig, dict]]:
        """The sample sets of a point as (config, record tags): the preset's sampler first (its samples make the grid
        row), the other guidance weights of the sweep at the last point (class-conditional data; their weight is
        tagged from the config), then at the last point each --samplers entry the run takes (tag extra.sampler)."""
        weights = self.classes.weights(cfg, final) if self.classes is not None else [None]
        sets = [(cfg if weight is None else with_guidance(cfg, weight), {}) for weight in weights]
        if final:
            sets += [(s.config(cfg), {"sampler": s.name(cfg)}) for s in self.samplers if s.supports(cfg)]
        return sets

    def score(
        self,
        run: str,
        run_dir: Path,
        cfg: RunConfig,
        state: TrainState,
        ema: nn.Module,
        point: int,
        points: list[int],
        between: Callable[[], None] | None = None,
    ) -> None:
        """Every sample set of this point and its records; `between` runs after each set but the last (the command
        bundles what is written, so a slow later set never costs the earlier sets' records)."""
        from bench.ema import young_ema_warning

        warning = young_ema_warning(cfg, state.step)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        final = point == len(points) - 1
        sets = self.sample_sets(cfg, final)
        for i, (variant, tags) in enumerate(sets):
            self._score_set(run, run_dir, variant, state, ema, point, points, grid_row=i == 0, tags=tags)
            if between is not None and i < len(sets) - 1:
                between()
        if final and self.classes is not None:
            meta = {"run": run, "family": cfg.family, "train_seed": cfg.seed, "images_seen": state.images_seen}
            tag = f"{run}-seed{cfg.seed}-{state.images_seen}"
            self.written += self.classes.save_grid(
                self.folder, tag, meta, ema, cfg, self._autoencoder, self.sample_batch
            )

    def _values(self, fake: SampleSet, final: bool) -> Values:
        from bench.metrics import distribution as dm
        from bench.metrics.fid import FeatureStats, RefStats, fid_from_stats

        ref, feats = self.reference, fake.features
        values: Values = {}
        ref_stats = RefStats(ref.mu.cpu().numpy(), ref.sigma.cpu().numpy(), ref.n, ref.meta)
        fid_value = fid_from_stats(FeatureStats.of(feats.double().cpu().numpy()), ref_stats)
        fid_extra: dict = {}
        if final and self.bootstrap:
            boot = dm.bootstrap_fid(feats, ref.mu, ref.sigma, self.bootstrap)
            fid_extra["fid_bootstrap"] = {
                "reps": boot.reps,
                "std": boot.std,
                "mean": boot.mean,
                "p05": boot.p05,
                "p95": boot.p95,
            }
        values["fid"] = (fid_value, {}, fid_extra)
        subset = min(dm.KID_SUBSET_SIZE, len(feats), ref.n)  # torch-fidelity's 1000 from 1000 samples up
        kid_mean, kid_std = dm.kid(feats, ref.features, subset_size=subset)
        values["kid"] = (
            kid_mean,
            {"subsets": dm.KID_SUBSETS, "subset_size": subset, "seed": dm.KID_SEED},
            {"kid_std": kid_std, "kid_subsets": dm.KID_SUBSETS, "kid_subset_size": subset},
        )
        precision, recall = dm.precision_recall(feats, ref.features)
        values["precision"] = (precision, {"k": dm.PRC_NEIGHBORHOOD}, {})
        values["recall"] = (recall, {"k": dm.PRC_NEIGHBORHOOD}, {})
        mem = dm.memorisation(feats, ref.features)
        values["memorisation"] = (
            mem.fraction,
            {"quantile": mem.quantile},
            {"memorisation_threshold": mem.threshold, "median_distance_ratio": mem.median_ratio},
        )
        if self.classes is not None and fake.labels is not None:
            accuracy, extra = self.classes.accuracy(feats, fake.labels.to(feats.device))
            values["class_accuracy"] = (accuracy, {"probe": self.classes.protocol()}, extra)
        return values

    def _score_set(
        self,
        run: str,
        run_dir: Path,
        cfg: RunConfig,
        state: TrainState,
        ema: nn.Module,
        point: int,
        points: list[int],
        grid_row: bool = True,
        tags: dict | None = None,
    ) -> None:
        from bench.reproduce.run import final_loss

        final = point == len(points) - 1
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            fake = self.features(ema, cfg, clean=final and self.clean is not None)
        tic = time.perf_counter()
        values = self._values(fake, final)
        score_s = time.perf_counter() - tic + fake.feature_s
        fid = FIDProtocol("tf", self.num_samples, self.reference.dataset, self.reference.res)
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
            "sample_seconds": fake.sample_s,
            "score_seconds": score_s,
            **compile_state(cfg, run_dir),
        }
        if tags:  # an extra sampler's records name it and its measured cost (the preset's keep the fields they had)
            common |= {**tags, "nfe_per_sample": fake.nfe_per_sample, "nfe_by_batch": [n for _, n in fake.batches]}
            common["sample_batch"] = self.sample_batch  # dopri5's steps adapt to each batch: its results depend on it
        guided = {"guidance": float(cfg.sample.guidance)} if self.classes is not None else {}
        for metric, (value, proto_extra, extra) in values.items():
            protocol = self._feature_protocol(metric, fid, proto_extra, guided)
            self._write(cfg, metric, value, protocol, fake.nfe, {**common, **guided, **extra})
        if self.latents is not None and fake.moments is not None:
            ref, source = self.reference, self.reference.meta.get("source_hash")
            for metric, (value, extra) in latent_values(self.latents, fake.moments).items():
                proto = self.latents.protocol(metric, self.num_samples, ref.dataset, ref.res, source)
                self._write(cfg, metric, value, proto, fake.nfe, {**common, **extra})
                values[metric] = (value, {}, extra)  # shown in the line below
        if grid_row:
            meta = {"run": run, "train_seed": cfg.seed, "point": point, "images_seen": state.images_seen}
            self.grid_rows.append((meta, fake.first))
        shown = ", ".join(f"{m} {v[0]:.4g}" for m, v in values.items())
        which = f" at guidance {cfg.sample.guidance:g}" if guided else ""
        which += f" with {tags['sampler']} (NFE {fake.nfe_per_sample:.4g} per sample)" if tags else ""
        print(
            f"[{run} seed {cfg.seed}] {state.images_seen} images ({state.train_seconds:.0f} s){which}: {shown} "
            f"(sampling {fake.sample_s:.1f} s, scoring {score_s:.1f} s)",
            flush=True,
        )
        if fake.clean is not None:
            self._score_clean(cfg, fake, fid, common)

    def _score_clean(self, cfg: RunConfig, fake: SampleSet, tf: FIDProtocol, common: dict) -> None:
        """The clean-fid FID record of the same samples: protocol fid-clean-<n>-<dataset><res>, the tf record's
        extra fields, its own scoring seconds (resize waits, network, distance)."""
        tic = time.perf_counter()
        value = self.clean.fid(fake.clean)
        score_s = self.clean.seconds + time.perf_counter() - tic
        extra = {**common, "score_seconds": score_s, "clean_resize_workers": self.clean.workers}
        proto = tf.with_backend("clean")
        protocol = self._feature_protocol(proto.metric, proto, {}, {}, self.clean.reference)
        self._write(cfg, proto.metric, value, protocol, fake.nfe, extra)
        print(
            f"[{common['run']} seed {cfg.seed}] {common['images_seen']} images: clean FID {value:.4g} "
            f"(clean-fid features of the same {len(fake.clean)} samples: {score_s:.1f} s added, resize on "
            f"{self.clean.workers} threads)",
            flush=True,
        )

    def _feature_protocol(
        self, metric: str, fid: FIDProtocol, proto_extra: dict, guided: dict, reference: Reference | None = None
    ) -> dict:
        """The protocol of a metric on the Inception features of `fid` (fid, clean_fid: that protocol itself), with
        the guidance weight (one protocol name per metric, the weight beside it) and the reference features."""
        from bench.metrics.protocols import feature_metric_protocol

        fid_metric = metric in ("fid", "clean_fid")
        protocol = fid.as_dict() if fid_metric else feature_metric_protocol(metric, fid, **proto_extra)
        protocol |= guided
        protocol["reference_features"] = (reference or self.reference).describe()
        return protocol

    def _write(self, cfg: RunConfig, metric: str, value: float, protocol: dict, nfe: int, extra: dict) -> None:
        from bench.config import to_dict
        from bench.results import run_record, write_record

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


def compile_state(cfg: RunConfig, run_dir: Path) -> dict:
    """How the run trained: eager, or compiled in train.compile_mode; the loop's note when the mode could not apply
    here (CUDA graphs off CUDA), what it compiled so far (`compile_stats`: graphs, seconds, cache hits; the last
    `compile` event, bench.compiling) and, when compiling failed, eager with the reason (stats.jsonl events)."""
    if not cfg.train.compile:
        return {"compile": False}
    path = run_dir / "stats.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    fallback = next((r for r in rows if r.get("event") == "compile_fallback"), None)
    if fallback is not None:
        return {
            "compile": False,
            "compile_note": f"compile failed at {fallback['images']} images: {fallback['reason']}",
        }
    state = {"compile": True, "compile_mode": cfg.train.compile_mode}
    note = next((r for r in rows if r.get("event") == "compile_note"), None)
    if note is not None:
        state["compile_note"] = note["reason"]
    stats = [r for r in rows if r.get("event") == "compile"]
    if stats:
        state["compile_stats"] = {k: v for k, v in stats[-1].items() if k not in ("event", "images")}
    return state
