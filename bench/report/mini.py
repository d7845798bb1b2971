"""The mini benchmark's section of `bench report`: its records and their statistics (its tables: mini_tables.py).

Records: extra.benchmark == MINI_BENCHMARK (bench/reproduce/mini.py), one per metric and evaluation point, under
results/mini/<dataset><res>/; of several records of one point, a run's final point wins, then the newest. Per
dataset and resolution (a `Section`), each metric is shown under one protocol only: the most common one there
(ties: the first name); records under any other protocol are left to the "other" table. A run's final point is the
largest images seen common to all its seeds (a longer budget that some seeds reached is a further tier); values
are means over training seeds, the spread is their sample standard deviation (n >= 2), and each seed's FID carries
a bootstrap interval over samples.
Records of other samplers at a run's last point (extra.sampler, `bench reproduce mini --samplers`) stay out of the
section's runs (its tables, curves, knees and spreads are the preset's sampler's); they form a Section per sampler in
`Section.samplers`, shown by mini_samplers.py.
The latent statistics of the sample sets (bench.reproduce.latent.LATENT_METRICS) form sections of their own
(`collect(records, LATENT_METRICS)`), shown by mini_latent.py.
The text (knee verdicts aside) is in mini_text.py, the curves and labelled grids in mini_plots.py.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from bench.report.tables import Loaded
from bench.reproduce.mini import MINI_BENCHMARK, MINI_METRICS

METRICS = tuple(dict.fromkeys(("fid", "clean_fid", *MINI_METRICS)))  # column order; clean_fid once it exists
METRIC_TITLES = {
    "fid": "FID",
    "clean_fid": "clean FID",
    "kid": "KID",
    "precision": "Precision",
    "recall": "Recall",
    "memorisation": "Memorisation",
}
KNEE_CHANGE = 0.10  # a run is past the knee when FID changes by < 10% over the last doubling of images
HALF_RATIO = (1.5, 2.5)  # the "half" point may sit this far from exactly half of the final images


def fmt_images(n: float) -> str:
    """1.05M, 262k, 512."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:g}"


@dataclass(frozen=True)
class Stat:
    """One metric over the training seeds at one point (n >= 1)."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return math.fsum(self.values) / self.n

    @property
    def std(self) -> float | None:
        """Sample standard deviation (ddof 1); None for one seed."""
        if self.n < 2:
            return None
        return math.sqrt(math.fsum((v - self.mean) ** 2 for v in self.values) / (self.n - 1))


@dataclass
class Run:
    """One run (extra.run) of a section: seed -> images seen -> metric -> its newest record."""

    name: str
    family: str
    points: dict[int, dict[int, dict[str, Loaded]]] = field(default_factory=dict)

    @property
    def seeds(self) -> list[int]:
        return sorted(self.points)

    def images(self, metric: str | None = "fid") -> list[int]:
        """Images seen at which every seed has a record of `metric` (None: of any metric), ascending."""
        sets = [{i for i, m in pts.items() if metric is None or metric in m} for pts in self.points.values()]
        return sorted(set.intersection(*sets)) if sets else []

    @property
    def final(self) -> int | None:
        """The largest images seen common to all seeds (with an FID record where the run has any)."""
        common = self.images("fid") or self.images(None)
        return common[-1] if common else None

    def records(self, metric: str, images: int) -> list[Loaded]:
        """The seeds' records of `metric` at `images`, in seed order."""
        return [pts[images][metric] for _, pts in sorted(self.points.items()) if metric in pts.get(images, {})]

    def stat(self, metric: str, images: int | None) -> Stat | None:
        if images is None:
            return None
        values = tuple(float(i.record.value) for i in self.records(metric, images) if i.record.value is not None)
        return Stat(values) if values else None

    def all_records(self) -> list[Loaded]:
        return [i for pts in self.points.values() for metrics in pts.values() for i in metrics.values()]

    def restricted(self, seeds: list[int]) -> Run:
        """The same run with only these training seeds."""
        return Run(self.name, self.family, {s: self.points[s] for s in seeds if s in self.points})


def tiers(run: Run) -> list[Run]:
    """The run at its final point (all seeds), then at each longer budget that only some of its seeds reached.

    A seed trained further (e.g. seed 0 to 4x the budget of seed 1) is shown at the longer budget too, with the seeds
    that reached it: each tier is the run restricted to those seeds, so its final point is the longer one."""
    out = [run]
    reached = {s: max((i for i, m in pts.items() if "fid" in m), default=0) for s, pts in run.points.items()}
    for images in sorted(set(reached.values())):
        tier = run.restricted([s for s, last in reached.items() if last >= images])
        if (tier.final or 0) > (out[-1].final or 0):
            out.append(tier)
    return out


@dataclass
class Section:
    """The mini-benchmark records of one data set and resolution."""

    dataset: str
    res: int
    protocols: dict[str, str]  # metric -> the one protocol shown
    runs: dict[str, Run]
    placed: list[Loaded]  # every record this section accounts for (shown or superseded)
    samplers: dict[str, Section] = field(default_factory=dict)  # extra.sampler -> its records (protocols as here)

    @property
    def tag(self) -> str:
        return f"{self.dataset}{self.res}"

    def metrics(self) -> list[str]:
        return [m for m in METRICS if m in self.protocols]

    def gpus(self) -> list[str]:
        return sorted({str(i.record.environment.get("gpu") or "cpu") for i in self.placed})


def _point_of(item: Loaded) -> tuple[str, int, int] | None:
    """(run, training seed, images seen) of a mini record, None when the record lacks them."""
    extra = item.record.extra
    run, seed, images = extra.get("run"), extra.get("train_seed"), extra.get("images_seen")
    if not isinstance(run, str) or not isinstance(seed, int) or not isinstance(images, int):
        return None
    return run, seed, images


def _preferred_by_point(items: list[Loaded]) -> dict[tuple[str, int, int, str], Loaded]:
    """One record per (run, seed, images seen, metric): a run's final point before a longer run's intermediate one,
    then the run of the smaller budget, then the newest.

    A seed trained to 4x the budget passes the shorter budget's points on the way; the shorter run's records are the
    ones sized for that budget (its final point's bootstrap interval, its training path and GPU seconds), so they stay
    the points' records (the shorter tier's knee then comes from its own run) and the longer run adds its further
    points."""
    groups: dict[tuple[str, int, int, str], list[Loaded]] = {}
    for item in items:
        r = item.record
        groups.setdefault((r.extra["run"], r.extra["train_seed"], r.extra["images_seen"], r.metric), []).append(item)
    return {
        key: max(group, key=lambda i: (i.record.extra.get("final") is True, -_budget(i), i.record.created, i.path))
        for key, group in groups.items()
    }


def _budget(item: Loaded) -> float:
    """The images its run was trained for (records without it count as the longest)."""
    budget = item.record.extra.get("budget_images")
    return float(budget) if isinstance(budget, int | float) else math.inf


def _section(dataset: str, res: int, items: list[Loaded]) -> Section:
    by_metric: dict[str, Counter[str]] = {}
    for item in items:
        by_metric.setdefault(item.record.metric, Counter())[item.record.protocol_name] += 1
    protocols = {m: min(c, key=lambda p: (-c[p], p)) for m, c in sorted(by_metric.items())}
    shown = [i for i in items if protocols[i.record.metric] == i.record.protocol_name]
    runs: dict[str, Run] = {}
    chosen = _preferred_by_point(shown)
    for (name, seed, images, metric), item in sorted(chosen.items()):
        run = runs.setdefault(name, Run(name, item.record.model))
        run.points.setdefault(seed, {}).setdefault(images, {})[metric] = item
    return Section(dataset, res, protocols, runs, shown)


def collect(records: list[Loaded], metrics: tuple[str, ...] = METRICS) -> list[Section]:
    """The mini benchmark's sections, by data set and resolution; records of other metrics stay unplaced.
    `metrics`: the metrics a section holds (LATENT_METRICS: the latent statistics' sections, mini_latent.py)."""
    groups: dict[tuple[str, int], list[Loaded]] = {}
    others: dict[tuple[str, int], dict[str, list[Loaded]]] = {}  # records of --samplers, by extra.sampler
    for item in records:
        r = item.record
        guided = isinstance(r.extra.get("guidance"), int | float)  # class-conditional: bench/report/mini_classes.py
        if r.extra.get("benchmark") == MINI_BENCHMARK and r.metric in metrics and _point_of(item) and not guided:
            sampler = r.extra.get("sampler")
            if isinstance(sampler, str):
                others.setdefault((r.dataset, r.resolution), {}).setdefault(sampler, []).append(item)
            else:
                groups.setdefault((r.dataset, r.resolution), []).append(item)
    sections = [_section(dataset, res, items) for (dataset, res), items in sorted(groups.items())]
    for section in sections:
        by_sampler = others.get((section.dataset, section.res), {})
        for name in sorted(by_sampler, key=sampler_order):
            # the section's protocols only: a column never mixes them (records under others go to the "other" table)
            kept = [i for i in by_sampler[name] if section.protocols.get(i.record.metric) == i.record.protocol_name]
            if kept:
                section.samplers[name] = _section(section.dataset, section.res, kept)
    return sections


def sampler_order(name: str) -> tuple[str, int]:
    """'dopri5', 'euler:100', 'euler:200', 'heun:50': by solver, then steps as numbers."""
    solver, _, steps = name.partition(":")
    return solver, int(steps) if steps.isdigit() else 0


def knee(run: Run) -> str:
    """FID change over the last doubling of images (mean over seeds): final point vs the point at half its images."""
    images = run.images("fid")
    if len(images) < 2:
        return "knee unknown: one evaluation point"
    final = images[-1]
    half = min(images[:-1], key=lambda i: (abs(i - final / 2), i))
    if not HALF_RATIO[0] <= final / half <= HALF_RATIO[1]:
        return f"knee unknown: no evaluation point near half of {fmt_images(final)} images"
    before, after = run.stat("fid", half), run.stat("fid", final)
    if before is None or after is None or before.mean == 0:
        return "knee unknown: no FID value"
    change = (after.mean - before.mean) / before.mean
    span = "the last doubling" if final == 2 * half else f"{fmt_images(half)} -> {fmt_images(final)} images"
    verdict = "past the knee" if abs(change) < KNEE_CHANGE else "not past the knee"
    return f"{verdict} (FID {100 * change:+.1f}% over {span})"


BOOTSTRAP_Z = 1.645  # a 90% normal interval, the coverage of p05-p95


def bootstrap_interval(item: Loaded) -> tuple[float, float] | None:
    """FID +- 1.645 bootstrap std of the record (extra.fid_bootstrap std), if it has one.

    The bootstrap's own percentiles are not used: resampling with replacement repeats about a third of the samples,
    which raises FID (its finite-sample bias grows as distinct samples get fewer), so the resampled FIDs sit above
    the point estimate (by ~2 at FID-5k ~ 60 here); their spread is the sampling noise.
    """
    boot = item.record.extra.get("fid_bootstrap")
    if not isinstance(boot, dict) or not isinstance(boot.get("std"), int | float) or item.record.value is None:
        return None
    half = BOOTSTRAP_Z * float(boot["std"])
    return float(item.record.value) - half, float(item.record.value) + half
