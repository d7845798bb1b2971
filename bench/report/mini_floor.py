"""The sampler floor of the mini benchmark (`bench reproduce mini-floor`, records with extra.benchmark "mini-floor"):
per data set and resolution a table of what each flow run's sampler costs with an exact network, and a paragraph
that sets LapFlow's floor against LFM's at the benchmark's own sampler and at the others.

Rows are samplers (the presets' own first, then by NFE), columns the runs; a cell is the latent-space Frechet
distance between the Gaussian fit of the latents and the samples' law, with the fraction of the variance kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.oracles.records import FLOOR_BENCHMARK
from bench.registry import mini_headline_runs, mini_models
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


def _nfe(section: FloorSection) -> dict[tuple[str, str], float]:
    return {key: float(extra["nfe"]) for key, extra in section.extras().items()}


def _samplers(section: FloorSection) -> list[str]:
    """The presets' own samplers first (the ones their mini records are scored with), then the others by NFE (an
    adaptive one's smallest)."""
    own = {sampler for (_, sampler), extra in section.extras().items() if extra.get("preset_sampler")}
    least: dict[str, float] = {}
    for (_, sampler), n in _nfe(section).items():
        least[sampler] = min(n, least.get(sampler, n))
    return sorted(least, key=lambda s: (s not in own, least[s], s))


def _nfe_cell(values: list[float]) -> Cell:
    """One NFE, or the range of an adaptive sampler's (each run's is then in its cell)."""
    lo, hi = min(values), max(values)
    return Cell(fmt_nfe(lo), lo) if lo == hi else Cell(f"{fmt_nfe(lo)}-{fmt_nfe(hi)}")


NOTES = (
    "Each run's sampler driven by its family's exact network (bench.oracles: the posterior mean of its training "
    "target) for a Gaussian with the latents' mean and covariance, in float64: what the sampler alone costs, with "
    "nothing left to learn. Cell: the Frechet distance in latent space between that Gaussian and the law of the "
    "samples (0 = exact), and in brackets the fraction of its variance the samples keep (< 100%: too little "
    "variety). NFE per sample: counted; where it differs between runs (dopri5 adapts its steps), each cell gives "
    "its run's (with several input blocks, Pyramidal Flow's jump noise, the largest of their batches': dopri5's "
    "law then holds to within its tolerance).",
    "A second-order model of the latents: it prices the sampler's discretisation on the data's spread, not on its "
    "shapes, and is not an FID. Runs that differ only in what is learnt (mask, time-embedding scale, learning "
    "rate) have their family's floor: the exact network does not depend on them.",
)


def floor_table(section: FloorSection) -> Table:
    runs, samplers = _runs(section), _samplers(section)
    frechet, variance, nfe = section.values("floor_frechet"), section.values("floor_variance"), _nfe(section)
    rows = []
    for sampler in samplers:
        counts = [nfe[(run, sampler)] for run in runs if (run, sampler) in nfe]
        row = [Cell(sampler), _nfe_cell(counts)]
        for run in runs:
            f, v = frechet.get((run, sampler)), variance.get((run, sampler))
            if f is None or v is None:  # not this run's kind of solver, or not computed
                row.append(Cell(MISSING))
                continue
            own_nfe = f", NFE {fmt_nfe(nfe[(run, sampler)])}" if len(set(counts)) > 1 else ""
            row.append(Cell(f"{f:.3f} ({100 * v:.1f}%{own_nfe})", f))
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
    """LapFlow's floor against LFM's: at the benchmark's own sampler, and at the other samplers of its NFE."""
    frechet, variance, nfe = section.values("floor_frechet"), section.values("floor_variance"), _nfe(section)
    bands = {key: extra["bands"] for key, extra in section.extras().items()}
    samplers = [s for s in _samplers(section) if (METHOD, s) in frechet and (REFERENCE, s) in frechet]
    if not samplers:
        return []
    own = samplers[0]

    def compare(s: str) -> str:
        ratio = frechet[(METHOD, s)] / frechet[(REFERENCE, s)] if frechet[(REFERENCE, s)] > 0 else float("inf")
        return (
            f"LapFlow {frechet[(METHOD, s)]:.3f} ({100 * variance[(METHOD, s)]:.1f}% of the variance) against LFM "
            f"{frechet[(REFERENCE, s)]:.3f} ({100 * variance[(REFERENCE, s)]:.1f}%), {ratio:.2f}x"
        )

    fine = f"{100 * bands[(METHOD, own)]['fine']:.1f}% against {100 * bands[(REFERENCE, own)]['fine']:.1f}%"
    coarse = f"{100 * bands[(METHOD, own)]['coarse']:.1f}% against {100 * bands[(REFERENCE, own)]['coarse']:.1f}%"
    lines = [
        f"- With exact networks the benchmark's sampler ({own}) leaves {compare(own)}; the fine band keeps {fine}, "
        f"the coarse band {coarse}: the sampler alone costs "
        + (
            "LapFlow more than LFM, as its finest scale runs from noise to data inside its last segment, with that "
            "segment's share of the steps."
            if frechet[(METHOD, own)] > frechet[(REFERENCE, own)]
            else "LapFlow no more than LFM."
        )
    ]
    own_floors = [
        f"{run} {frechet[key]:.3f} at {key[1]} ({100 * variance[key]:.1f}%)"
        for key, extra in section.extras().items()
        if (run := key[0]) in mini_headline_runs() and run not in (METHOD, REFERENCE) and extra.get("preset_sampler")
    ]
    if own_floors:
        lines.append(f"- The other headline runs at their own samplers: {', '.join(sorted(own_floors))}.")
    same_cost = [s for s in samplers[1:] if nfe[(METHOD, s)] == nfe[(METHOD, own)] == nfe[(REFERENCE, s)]]
    lines += [f"- At the same NFE, {s} leaves {compare(s)}." for s in same_cost]
    if len(samplers) > 1:
        lines.append(
            "- A floor is not a trained run's FID: whether this cost reaches FID is measured on trained runs by "
            "`bench reproduce mini --samplers` (the table of other samplers, where scored)."
        )
    return lines


def markdown(section: FloorSection, table: Table) -> list[str]:
    return [render.markdown(table, level=4).rstrip("\n"), "", *paragraph(section)]
