"""The mini benchmark's section of `bench report`: its records, their statistics and its tables.

Records: extra.benchmark == MINI_BENCHMARK (bench/reproduce/mini.py), one per metric and evaluation point, under
results/mini/<dataset><res>/; of several records of one point, a run's final point wins, then the newest. Per
dataset and resolution (a `Section`), each metric is shown under one protocol only: the most common one there
(ties: the first name); records under any other protocol are left to the "other" table. A run's final point is the
largest images seen common to all its seeds (a longer budget that some seeds reached is a further tier); values
are means over training seeds, the spread is their sample standard deviation (n >= 2), and each seed's FID carries
a bootstrap interval over samples.
The text (knee verdicts aside) is in mini_text.py, the curves and labelled grids in mini_plots.py.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.registry import mini_ablations, mini_headline_runs
from bench.report.select import method_label
from bench.report.tables import MISSING, Cell, Footnotes, Loaded, Table, fmt_sig
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
AXIS_TITLES = {
    "mask": "attention mask",
    "critical_time": "critical time T1",
    "num_scales": "number of scales",
    "time_scale": "time-embedding scale (flow families)",
}
KNEE_CHANGE = 0.10  # a run is past the knee when FID changes by < 10% over the last doubling of images
HALF_RATIO = (1.5, 2.5)  # the "half" point may sit this far from exactly half of the final images
NOT_RUN = "not run"


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
    then the newest.

    A seed trained to 4x the budget passes the shorter budget's point on the way; the shorter run's final record is
    the one sized for that budget (its bootstrap interval, its training path and GPU seconds), so it stays the
    point's record and the longer run adds its further points."""
    groups: dict[tuple[str, int, int, str], list[Loaded]] = {}
    for item in items:
        r = item.record
        groups.setdefault((r.extra["run"], r.extra["train_seed"], r.extra["images_seen"], r.metric), []).append(item)
    return {
        key: max(group, key=lambda i: (i.record.extra.get("final") is True, i.record.created, i.path))
        for key, group in groups.items()
    }


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


def collect(records: list[Loaded]) -> list[Section]:
    """The mini benchmark's sections, by data set and resolution; records of other metrics stay unplaced."""
    groups: dict[tuple[str, int], list[Loaded]] = {}
    for item in records:
        r = item.record
        guided = isinstance(r.extra.get("guidance"), int | float)  # class-conditional: bench/report/mini_classes.py
        if r.extra.get("benchmark") == MINI_BENCHMARK and r.metric in METRICS and _point_of(item) and not guided:
            groups.setdefault((r.dataset, r.resolution), []).append(item)
    return [_section(dataset, res, items) for (dataset, res), items in sorted(groups.items())]


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


# Table columns: (header for a section, cell of a run at its final point).
CellFn = Callable[[Section, Run, int, Footnotes], Cell]


def _mean_cell(metric: str, fmt: Callable[[float], str]) -> CellFn:
    def cell(section: Section, run: Run, final: int, notes: Footnotes) -> Cell:
        stat = run.stat(metric, final)
        if stat is None:
            return Cell(MISSING)
        marks = () if stat.n == len(run.seeds) else (notes.mark(f"Mean of the seeds with a {metric} record."),)
        return Cell(fmt(stat.mean), stat.mean, marks)

    return cell


def _std_cell(metric: str) -> CellFn:
    def cell(section: Section, run: Run, final: int, notes: Footnotes) -> Cell:
        stat = run.stat(metric, final)
        if stat is None:
            return Cell(MISSING)
        return Cell("one seed", None) if stat.std is None else Cell(f"{stat.std:.2f}", stat.std)

    return cell


def _bootstrap_cell(section: Section, run: Run, final: int, notes: Footnotes) -> Cell:
    intervals = [bootstrap_interval(i) for i in run.records("fid", final)]
    texts = [f"{low:.2f}-{high:.2f}" for low, high in (i for i in intervals if i is not None)]
    return Cell("; ".join(texts)) if texts else Cell(MISSING)


def _extra_values(run: Run, final: int, key: str, metric: str = "fid") -> list[float]:
    items = run.records(metric, final) or [next(iter(run.points[s][final].values())) for s in run.seeds]
    return [float(v) for v in (i.record.extra.get(key) for i in items) if isinstance(v, int | float)]


def _kid_std_cell(section: Section, run: Run, final: int, notes: Footnotes) -> Cell:
    values = _extra_values(run, final, "kid_std", "kid")
    return Cell(fmt_sig(max(values)), max(values)) if values else Cell(MISSING)


def _gpu_cell(section: Section, run: Run, final: int, notes: Footnotes) -> Cell:
    values = _extra_values(run, final, "gpu_seconds")
    return Cell(f"{math.fsum(values) / len(values):.0f}", math.fsum(values) / len(values)) if values else Cell(MISSING)


def _nfe_cell(section: Section, run: Run, final: int, notes: Footnotes) -> Cell:
    items = run.records("fid", final) or run.records(section.metrics()[0], final)
    nfes = sorted({float(n) for n in (i.record.sampling.get("nfe") for i in items) if isinstance(n, int | float)})
    return Cell(", ".join(f"{n:g}" for n in nfes), nfes[0] if len(nfes) == 1 else None) if nfes else Cell(MISSING)


def _prob(value: float) -> str:
    return f"{value:.3f}"


def _fid(value: float) -> str:
    return f"{value:.2f}"


ALWAYS = ("seeds", "images", "gpu", "nfe", "knee")  # columns shown whichever metrics a section has
NEEDS = {"fid_std": "fid", "fid_boot": "fid", "clean_fid_std": "clean_fid", "kid_std": "kid"}  # column -> metric


def _columns(section: Section, fields: tuple[str, ...]) -> list[tuple[str, CellFn]]:
    proto = section.protocols
    candidates: dict[str, tuple[str, CellFn]] = {
        "seeds": ("Seeds", lambda s, r, f, n: Cell(str(len(r.seeds)), float(len(r.seeds)))),
        "fid": (f"FID [{proto.get('fid')}]", _mean_cell("fid", _fid)),
        "fid_std": ("FID seed std", _std_cell("fid")),
        "fid_boot": ("FID 90% interval per seed (bootstrap)", _bootstrap_cell),
        "clean_fid": (f"clean FID [{proto.get('clean_fid')}]", _mean_cell("clean_fid", _fid)),
        "clean_fid_std": ("clean FID seed std", _std_cell("clean_fid")),
        "kid": (f"KID [{proto.get('kid')}]", _mean_cell("kid", fmt_sig)),
        "kid_std": ("KID subset std (largest over seeds)", _kid_std_cell),
        "precision": (f"Precision [{proto.get('precision')}]", _mean_cell("precision", _prob)),
        "recall": (f"Recall [{proto.get('recall')}]", _mean_cell("recall", _prob)),
        "memorisation": (f"Memorisation [{proto.get('memorisation')}]", _mean_cell("memorisation", _prob)),
        "images": ("Images seen", lambda s, r, f, n: Cell(str(f))),
        "gpu": ("GPU s", _gpu_cell),
        "nfe": ("NFE", _nfe_cell),
        "knee": ("Knee (FID over the last doubling)", lambda s, r, f, n: Cell(knee(r))),
    }
    return [candidates[f] for f in fields if f in ALWAYS or NEEDS.get(f, f) in proto]


HEADLINE_FIELDS = ("seeds", "fid", "fid_std", "fid_boot", "clean_fid", "clean_fid_std", "kid", "kid_std")
HEADLINE_FIELDS += ("precision", "recall", "memorisation", "images", "gpu", "nfe", "knee")
ABLATION_FIELDS = ("seeds", "fid", "fid_std", "fid_boot", "kid", "precision", "recall", "images", "knee")


def _notes(section: Section, fields: tuple[str, ...], longer: bool = False) -> list[str]:
    notes = [
        "Final point: the largest images seen common to all seeds of the run; values are means over training seeds "
        "there; seed std: their sample standard deviation (two or more seeds); 90% interval: each seed's FID +- "
        "1.645 x the standard deviation of 100 bootstrap resamplings of its samples, in seed order."
        + (
            " A run's further rows: a longer budget that only some of its seeds reached (Seeds), at the largest "
            "images seen those seeds share."
            if longer
            else ""
        ),
        f"Knee: FID change from the point at half the final images to the final point; past the knee when FID "
        f"changes by less than {KNEE_CHANGE:.0%}.",
    ]
    if "gpu" in fields:
        gpus = section.gpus()
        notes.append(
            "GPU s: training-loop device seconds up to the final point (compile included), mean over seeds; measured "
            f"on {', '.join(gpus)}" + (" (not comparable across GPUs)." if len(gpus) > 1 else ".")
        )
    return notes


def run_table(
    section: Section,
    table_id: str,
    title: str,
    rows: list[tuple[list[str], str]],
    fields: tuple[str, ...],
    labels: list[str],
    longer: bool = False,
) -> Table:
    """One row per (label cells, run name); a run without records reads 'not run'. `longer`: also a row per longer
    budget that only some of a run's seeds reached (`tiers`)."""
    columns = _columns(section, fields)
    notes = Footnotes()
    body, used, missing = [], [], []
    for label, name in rows:
        run = section.runs.get(name)
        if run is None or run.final is None:
            missing.append(name)
            body.append(
                [*(Cell(t) for t in label), *(Cell(NOT_RUN if i == 0 else MISSING) for i in range(len(columns)))]
            )
            continue
        used += run.all_records()
        for tier in tiers(run) if longer else [run]:
            final = tier.final
            body.append([*(Cell(t) for t in label), *(fn(section, tier, final, notes) for _, fn in columns)])
    headers = [*labels, *(h for h, _ in columns)]
    align = "l" * len(labels) + "".join("l" if h.startswith(("FID 90%", "Knee")) else "r" for h, _ in columns)
    general = _notes(section, fields, longer)
    if any(c.text == MISSING for row in body for c in row):
        general.append("`-`: no record (or no bootstrap interval) at the final point.")
    table = Table(table_id, title, headers, body, align, general, notes.items(), used, missing)
    table.placed = list(used)
    return table


def headline_table(section: Section) -> Table:
    rows = []
    headline = mini_headline_runs()
    for name in headline:
        run = section.runs.get(name)
        rows.append(([method_label(run.family if run else name), name], name))
    title = f"Mini benchmark, {section.dataset} {section.res} px: the four families at their final point"
    table = run_table(section, f"mini-{section.tag}", title, rows, HEADLINE_FIELDS, ["Model", "Run"], longer=True)
    known = {*headline, *(run for settings in mini_ablations().values() for run, _ in settings)}
    # Every record of the section's known runs is accounted for here (shown, or superseded by a newer one); runs
    # that no table names are left to the "other" table.
    table.placed = [i for i in section.placed if i.record.extra["run"] in known]
    return table


def ablation_tables(section: Section) -> list[Table]:
    """One table per ablation axis (bench.registry.mini_ablations), when a run of the section is not a headline."""
    if not set(section.runs) - set(mini_headline_runs()):
        return []
    tables = []
    for axis, settings in mini_ablations().items():
        rows = [([label, run], run) for run, label in settings]
        title = f"Mini benchmark, {section.dataset} {section.res} px: ablation of the {AXIS_TITLES.get(axis, axis)}"
        table_id = f"mini-{section.tag}-ablation-{axis.replace('_', '-')}"
        tables.append(run_table(section, table_id, title, rows, ABLATION_FIELDS, ["Setting", "Run"]))
    return tables


def section_tables(section: Section) -> list[Table]:
    return [headline_table(section), *ablation_tables(section)]
