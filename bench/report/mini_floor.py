"""The sampler floor of the mini benchmark (`bench reproduce mini-floor`, records with extra.benchmark "mini-floor"):
per data set and resolution a table of what each flow run's sampler costs with an exact network, and a paragraph
that sets LapFlow's floor against LFM's at the benchmark's own sampler and at the others.

Rows are samplers (the presets' own first, then by NFE), columns the runs; a cell is the latent-space Frechet
distance between the Gaussian fit of the latents and the samples' law, with the fraction of the variance kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.oracles.records import FLOOR_BENCHMARK
from bench.registry import mini_models
from bench.report import render
from bench.report.tables import MISSING, Cell, Loaded, Table, fmt_nfe

METHOD, REFERENCE = "lapflow", "lfm"  # the paper's claim LapFlow < LFM: the pair the paragraph compares


@dataclass
class FloorSection:
    dataset: str
    res: int
    items: list[Loaded] = field(default_factory=list)

    @property
    def tag(self) -> str:
        return f"{self.dataset}{self.res}"

    def values(self, metric: str) -> dict[tuple[str, str], float]:
        """(run, sampler) -> value of `metric` (the newest record where one was measured twice)."""
        out: dict[tuple[str, str], float] = {}
        for item in sorted(self.items, key=lambda i: i.record.created):
            r = item.record
            if r.metric == metric and r.value is not None:
                out[(str(r.extra["run"]), str(r.extra["sampler"]))] = float(r.value)
        return out

    def extras(self) -> dict[tuple[str, str], dict]:
        return {(str(i.record.extra["run"]), str(i.record.extra["sampler"])): i.record.extra for i in self.items}


def collect(records: list[Loaded]) -> list[FloorSection]:
    sections: dict[tuple[str, int], FloorSection] = {}
    for item in records:
        r = item.record
        if r.extra.get("benchmark") == FLOOR_BENCHMARK:
            sections.setdefault((r.dataset, r.resolution), FloorSection(r.dataset, r.resolution)).items.append(item)
    return [sections[k] for k in sorted(sections)]


def _runs(section: FloorSection) -> list[str]:
    names = {run for run, _ in section.extras()}
    known = [name for name in mini_models() if name in names]
    return known + sorted(names - set(known))


def _samplers(section: FloorSection) -> list[str]:
    """The presets' own samplers first (the ones their mini records are scored with), then the others by NFE."""
    extras = section.extras()
    own = {sampler for (_, sampler), extra in extras.items() if extra.get("preset_sampler")}
    nfe = {sampler: float(extra["nfe"]) for (_, sampler), extra in extras.items()}
    return sorted(nfe, key=lambda s: (s not in own, nfe[s], s))


NOTES = (
    "Each run's sampler driven by its family's exact network (bench.oracles: the posterior mean of its training "
    "target) for a Gaussian with the latents' mean and covariance, in float64: what the sampler alone costs, with "
    "nothing left to learn. Cell: the Frechet distance in latent space between that Gaussian and the law of the "
    "samples (0 = exact), and in brackets the fraction of its variance the samples keep (< 100%: too little "
    "variety). NFE per sample: counted.",
    "A second-order model of the latents: it prices the sampler's discretisation on the data's spread, not on its "
    "shapes, and is not an FID. Runs that differ only in what is learnt (mask, time-embedding scale, learning "
    "rate) have their family's floor: the exact network does not depend on them.",
)


def floor_table(section: FloorSection) -> Table:
    runs, samplers = _runs(section), _samplers(section)
    frechet, variance = section.values("floor_frechet"), section.values("floor_variance")
    nfe = {sampler: float(extra["nfe"]) for (_, sampler), extra in section.extras().items()}
    rows = []
    for sampler in samplers:
        row = [Cell(sampler), Cell(fmt_nfe(nfe[sampler]), nfe[sampler])]
        for run in runs:
            f, v = frechet.get((run, sampler)), variance.get((run, sampler))
            row.append(Cell(MISSING) if f is None or v is None else Cell(f"{f:.3f} ({100 * v:.1f}%)", f))
        rows.append(row)
    return Table(
        id=f"mini-floor-{section.tag}",
        title=f"Sampler floor, {section.dataset} {section.res} px: Frechet distance (variance kept)",
        headers=["Sampler", "NFE", *runs],
        rows=rows,
        align="lr" + "r" * len(runs),
        notes=list(NOTES),
        used=list(section.items),
        placed=list(section.items),
    )


def paragraph(section: FloorSection) -> list[str]:
    """LapFlow's floor against LFM's: at the benchmark's own sampler and at the best one measured."""
    frechet, variance = section.values("floor_frechet"), section.values("floor_variance")
    samplers = [s for s in _samplers(section) if (METHOD, s) in frechet and (REFERENCE, s) in frechet]
    if not samplers:
        return []
    own, lines = samplers[0], []

    def compare(s: str) -> str:
        ratio = frechet[(METHOD, s)] / frechet[(REFERENCE, s)] if frechet[(REFERENCE, s)] > 0 else float("inf")
        return (
            f"LapFlow {frechet[(METHOD, s)]:.3f} ({100 * variance[(METHOD, s)]:.1f}% of the variance) against LFM "
            f"{frechet[(REFERENCE, s)]:.3f} ({100 * variance[(REFERENCE, s)]:.1f}%), {ratio:.2f}x"
        )

    more = frechet[(METHOD, own)] > frechet[(REFERENCE, own)]
    why = (
        "LapFlow pays more of it: its finest scale makes a whole noise-to-data trajectory inside its last segment, "
        "with that segment's share of the steps"
        if more
        else "LapFlow pays no more of it than LFM"
    )
    lines.append(
        f"- With exact networks the benchmark's sampler ({own}) leaves {compare(own)}: part of every FID in the "
        f"tables above is this discretisation, and {why}."
    )
    best = min(samplers[1:], key=lambda s: frechet[(METHOD, s)], default=None)
    if best is not None:
        lines.append(
            f"- The best of the other samplers for LapFlow here, {best}, leaves {compare(best)}; "
            "`bench reproduce mini --samplers` scores trained runs with such samplers beside the default."
        )
    return lines


def markdown(section: FloorSection, table: Table) -> list[str]:
    return [render.markdown(table, level=4).rstrip("\n"), "", *paragraph(section)]
