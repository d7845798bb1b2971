"""Latent statistics of the mini benchmark's sample sets (metrics latent_frechet and latent_variance, records of
`bench reproduce mini` beside each set's FID): per data set and resolution a table of each run's final point, set
against the sampler floor of the same run and sampler (mini_floor.py), and a sentence on LapFlow against LFM.

The records form sections of their own (`mini.collect(records, LATENT_METRICS)`), so they never reach the headline
and ablation tables, curves or knees; a row's point and seeds are those of the run's headline or ablation row (the
FID section's tiers). Records of other samplers (extra.sampler) stay out of those rows' means: they get a second
block of rows, each point they scored with the run's own sampler at the same seeds first ("default"), as the
other-samplers table of FIDs (mini_samplers.py) has them, and each row beside the floor of its own sampler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bench.oracles.floor import BANDS  # the keys of extra.latent_bands, as of a floor record's extra.bands
from bench.registry import mini_ablations, mini_headline_runs
from bench.report import mini, render
from bench.report.mini import Run, Section, Stat, fmt_images, tiers
from bench.report.mini_floor import METHOD, REFERENCE, FloorSection
from bench.report.mini_samplers import sampler_name, scored_points
from bench.report.select import method_label
from bench.report.tables import MISSING, Cell, Loaded, Table
from bench.reproduce.latent import LATENT_METRICS

FRECHET, VARIANCE = LATENT_METRICS
DEFAULT = " (default)"  # the run's own sampler at the points and seeds other samplers scored


@dataclass
class LatentSection:
    """The latent records of one data set and resolution, with the FID section and the floor of the same ones."""

    latent: Section  # the run's own sampler; latent.samplers: the other samplers' records
    main: Section | None = None  # the FID section: each run's rows (final point, longer tiers) come from it
    floor: FloorSection | None = None

    @property
    def tag(self) -> str:
        return self.latent.tag


@dataclass
class Row:
    """One run's latent statistics at one point and sampler: means over the seeds with records there."""

    run: Run  # the latent records of the row's seeds
    images: int
    sampler: str
    own: bool  # the run's own sampler (the floor's preset_sampler)
    of: int  # the seeds of the row's point (those of its headline tier, or those other samplers scored)
    items: list[Loaded] = field(default_factory=list)

    @property
    def seeds(self) -> int:
        return len({i.record.extra["train_seed"] for i in self.items})

    def stat(self, metric: str) -> Stat | None:
        return self.run.stat(metric, self.images)

    def band(self, band: str) -> Stat | None:
        values = [(i.record.extra.get("latent_bands") or {}).get(band) for i in self.run.records(VARIANCE, self.images)]
        values = [float(v) for v in values if isinstance(v, int | float)]
        return Stat(tuple(values)) if values else None


def collect(records: list[Loaded], sections: list[Section], floors: list[FloorSection]) -> list[LatentSection]:
    """A LatentSection per data set and resolution with latent records (none today: no table)."""
    mains, by_tag = {s.tag: s for s in sections}, {f.tag: f for f in floors}
    return [LatentSection(s, mains.get(s.tag), by_tag.get(s.tag)) for s in mini.collect(records, LATENT_METRICS)]


def run_order() -> list[str]:
    """Headline runs, then the ablations' in the order of their tables (a run once); runs no table names are left to
    the "other" table, as their FIDs are."""
    return list(dict.fromkeys([*mini_headline_runs(), *(r for s in mini_ablations().values() for r, _ in s)]))


def _row(run: Run, seeds: list[int], images: int, sampler: str | None, own: bool) -> Row | None:
    """The run's latent records of these seeds at `images`; None without any."""
    sub = Run(run.name, run.family, {s: run.points[s] for s in seeds if images in run.points.get(s, {})})
    items = [i for m in LATENT_METRICS for i in sub.records(m, images)]
    if not items:
        return None
    return Row(sub, images, sampler or sampler_name(items[0]), own, len(seeds), items)


def own_rows(ls: LatentSection) -> list[Row]:
    """Each run at its final point, a headline run also at each longer budget some seeds reached (as the headline
    table; the ablation tables show the final point only)."""
    rows = []
    for name in run_order():
        run = ls.latent.runs.get(name)
        if run is None:
            continue
        main = ls.main.runs.get(name) if ls.main else None
        points = (tiers(main) if name in mini_headline_runs() else [main]) if main and main.final else [run]
        for tier in points:
            row = _row(run, tier.seeds, tier.final, None, True) if tier.final is not None else None
            rows += [row] if row else []
    return rows


def other_rows(ls: LatentSection) -> list[Row]:
    """Per run and point that other samplers scored: its own sampler at the same seeds, then each other sampler."""
    points: dict[tuple[str, int], list[int]] = {}
    for name, seed, images in sorted(scored_points(ls.latent)):
        points.setdefault((name, images), []).append(seed)
    rows = []
    for name in run_order():
        for images in sorted(i for n, i in points if n == name):
            seeds = points[(name, images)]
            base = ls.latent.runs.get(name)
            default = _row(base, seeds, images, None, True) if base else None
            if default is not None:
                rows.append(Row(default.run, images, default.sampler + DEFAULT, True, len(seeds), default.items))
            for sampler, sub in ls.latent.samplers.items():
                row = _row(sub.runs[name], seeds, images, sampler, False) if name in sub.runs else None
                rows += [row] if row else []
    return rows


def _floor(ls: LatentSection, row: Row) -> tuple[float, float, dict] | None:
    """(Frechet, variance kept, bands) of the floor of the row's run at its sampler; at the run's own sampler only
    a floor record that is the preset's (extra.preset_sampler)."""
    if ls.floor is None:
        return None
    key = (row.run.name, row.sampler.removesuffix(DEFAULT))
    frechet, variance = ls.floor.values("floor_frechet"), ls.floor.values("floor_variance")
    extra = ls.floor.extras().get(key)
    if extra is None or key not in frechet or key not in variance or row.own != bool(extra.get("preset_sampler")):
        return None
    return frechet[key], variance[key], extra.get("bands") or {}


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _stat_cell(stat: Stat | None, fmt: Callable[[float], str]) -> Cell:
    return Cell(fmt(stat.mean), stat.mean) if stat is not None else Cell(MISSING)


def _cells(ls: LatentSection, row: Row) -> list[Cell]:
    seeds = Cell(str(row.seeds) if row.seeds == row.of else f"{row.seeds} of {row.of}", float(row.seeds))
    floor = _floor(ls, row)
    return [
        Cell(method_label(row.run.family)),
        Cell(row.run.name),
        Cell(row.sampler),
        seeds,
        Cell(str(row.images), float(row.images)),
        _stat_cell(row.stat(FRECHET), lambda v: f"{v:.3f}"),
        _stat_cell(row.stat(VARIANCE), _pct),
        *(_stat_cell(row.band(b), _pct) for b in BANDS),
        Cell(f"{floor[0]:.3f}", floor[0]) if floor else Cell(MISSING),
        Cell(_pct(floor[1]), floor[1]) if floor else Cell(MISSING),
    ]


def _notes(ls: LatentSection, others: bool) -> list[str]:
    proto = ls.latent.protocols
    notes = [
        "Latent statistics of each sample set (the FID's samples, before decoding), against a Gaussian fit of the "
        "training latents (the carry's images and their mirrors, as the sampler floor uses). Latent Frechet "
        f"[{proto.get(FRECHET, 'no records')}]: the Frechet distance between the Gaussian fit of the samples' latents "
        "and the data's, in latent space (float64; 0: the same mean and covariance). Variance kept "
        f"[{proto.get(VARIANCE, 'no records')}]: tr(Cov samples) / tr(Cov data), the fraction of the data's variance "
        "the samples keep (below 100%: too little variety). Coarse / fine band kept: the same ratio on the two bands "
        "of a two-level Laplacian split of the latents (the floor's bands).",
        "Rows: each run at its final point, as its headline or ablation row (a headline run also at each longer "
        "budget some of its seeds reached), the run's own sampler; values are means over the training seeds with "
        "latent records there (Seeds: their number, 'n of m' where only n of the point's m seeds have them).",
        "Floor Frechet, floor variance kept: the sampler floor of the same run at the row's sampler (`bench reproduce "
        "mini-floor`: its family's exact network for the Gaussian fit of the latents), what a perfect network "
        "would give; `-`: no floor record of that run and sampler (a run that differs from its family only in what "
        "is learnt has its family's floor, under the family's run name).",
        "A second-order (Gaussian) summary in latent space: it compares the means and covariances of the latents, "
        "not the decoded images' Inception features, and is not an FID.",
    ]
    if others:
        notes.insert(
            2,
            "Rows after the run's own: the points other samplers scored (`bench reproduce mini --samplers`, the "
            "other-samplers table), means over the seeds they scored; '(default)': the run's own sampler at the "
            "same seeds and point. These records enter no row of the run's own sampler.",
        )
    return notes


def latent_table(ls: LatentSection) -> Table:
    own, others = own_rows(ls), other_rows(ls)
    headers = ["Model", "Run", "Sampler", "Seeds", "Images seen", "Latent Frechet", "Variance kept"]
    headers += [f"{b.capitalize()} band kept" for b in BANDS] + ["Floor Frechet", "Floor variance kept"]
    known = set(run_order())
    placed = [i for i in ls.latent.placed if i.record.extra["run"] in known]
    placed += [i for sub in ls.latent.samplers.values() for i in sub.placed if i.record.extra["run"] in known]
    return Table(
        id=f"mini-{ls.tag}-latent",
        title=f"Mini benchmark, {ls.latent.dataset} {ls.latent.res} px: latent statistics at each run's final point, "
        "trained vs the sampler floor",
        headers=headers,
        rows=[_cells(ls, row) for row in [*own, *others]],
        align="lll" + "r" * (len(headers) - 3),
        notes=_notes(ls, bool(others)),
        used=list({id(i): i for row in [*own, *others] for i in row.items}.values()),  # a default row's again
        placed=placed,
    )


def _kept(a: float, b: float) -> str:
    """'less', 'more' or 'as much' (to the 0.1% the table shows)."""
    return "as much" if round(1000 * a) == round(1000 * b) else "less" if a < b else "more"


def paragraph(ls: LatentSection) -> list[str]:
    """LapFlow against LFM: variance kept and its fine band at the largest point both have (their final points where
    they share none), and beside them their floors at the same samplers."""
    rows = {(r.run.name, r.images): r for r in own_rows(ls) if r.stat(VARIANCE) is not None}
    mine, ref = ([r for (n, _), r in rows.items() if n == name] for name in (METHOD, REFERENCE))
    if not mine or not ref:
        return []
    common = sorted({r.images for r in mine} & {r.images for r in ref})
    a, b = (rows[(METHOD, common[-1])], rows[(REFERENCE, common[-1])]) if common else (mine[0], ref[0])
    va, vb, fa, fb = a.stat(VARIANCE).mean, b.stat(VARIANCE).mean, a.band("fine"), b.band("fine")
    images = {fmt_images(r.images): None for r in (a, b)}
    samplers = {r.sampler: None for r in (a, b)}
    text = (
        f"- **Latent statistics, LapFlow vs LFM** (at {' and '.join(images)} images, {' and '.join(samplers)}; "
        f"seeds: LapFlow {a.seeds}, LFM {b.seeds}): LapFlow's samples keep {_pct(va)} of the data's latent variance "
        f"against LFM's {_pct(vb)}"
    )
    bands = fa is not None and fb is not None
    text += f", the fine band {_pct(fa.mean)} against {_pct(fb.mean)}" if bands else ""
    kept = _kept(va, vb)
    text += f": LapFlow keeps {kept} of the variance {'as' if kept == 'as much' else 'than'} LFM"
    text += f", and {_kept(fa.mean, fb.mean)} of the fine band." if bands else "."
    lines = [text]
    floors = _floor(ls, a), _floor(ls, b)
    if floors[0] and floors[1]:

        def diff(row: Row, floor: tuple[float, float, dict]) -> str:
            fine, floor_fine = row.band("fine"), floor[2].get("fine")
            part = f"{100 * (row.stat(VARIANCE).mean - floor[1]):+.1f} points"
            if fine is not None and isinstance(floor_fine, int | float):
                part += f" (fine band {100 * (fine.mean - floor_fine):+.1f})"
            return part

        lines.append(
            f"- With exact networks (the sampler floor) the same samplers keep {_pct(floors[0][1])} (LapFlow) and "
            f"{_pct(floors[1][1])} (LFM) of the variance; trained minus floor: LapFlow {diff(a, floors[0])}, LFM "
            f"{diff(b, floors[1])}: what the trained network, not its sampler, changes."
        )
    return lines


def markdown(ls: LatentSection, table: Table) -> list[str]:
    """The latent table and its sentences, for the mini section's sampler blocks (after the floor's)."""
    return [render.markdown(table, level=4).rstrip("\n"), "", *paragraph(ls)]
