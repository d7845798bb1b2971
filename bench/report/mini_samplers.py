"""Other samplers at each run's last point (`bench reproduce mini --samplers`, records with extra.sampler): a table of
their own and a paragraph on whether the paper's orderings change with the sampler.

The records sit in `Section.samplers` (bench/report/mini.py), never in the section's runs: the headline and ablation
tables, curves, knees and seed spreads stay on the preset's sampler. Here each (run, training seed, point) scored with
other samplers gets one row per sampler, the preset's first; the orderings of mini_text.py are compared on those
points only, the preset's sampler against each other one, with the same verdict rule (seed spread with two or more
seeds each, else bootstrap intervals) and the change of the FID gap in units of the preset's comparison's spread.
"""

from __future__ import annotations

import math
import re

from bench.registry import mini_models
from bench.report import render
from bench.report.mini import Run, Section, Stat, fmt_images
from bench.report.mini_tables import _columns
from bench.report.mini_text import Ordering, _compare, orderings
from bench.report.select import method_label
from bench.report.tables import MISSING, Cell, Footnotes, Loaded, Table, fmt_nfe, fmt_sig
from bench.reproduce.samplers import ADAPTIVE

FIELDS = ("fid", "fid_boot", "clean_fid", "kid", "precision", "recall")  # bench.report.mini_tables columns
Key = tuple[str, int, int]  # (run, training seed, images seen)


def _keys(section: Section) -> set[Key]:
    return {(r.name, seed, images) for r in section.runs.values() for seed, pts in r.points.items() for images in pts}


def restricted(section: Section, keys: set[Key]) -> Section:
    """The section's records at these points only: the preset's sampler where other samplers were scored."""
    runs: dict[str, Run] = {}
    for name, seed, images in sorted(keys):
        run = section.runs.get(name)
        metrics = run.points.get(seed, {}).get(images) if run is not None else None
        if metrics:
            runs.setdefault(name, Run(name, run.family)).points.setdefault(seed, {})[images] = metrics
    placed = [i for run in runs.values() for i in run.all_records()]
    return Section(section.dataset, section.res, section.protocols, runs, placed)


def scored_points(section: Section) -> set[Key]:
    """Every (run, seed, images seen) that some other sampler scored."""
    return set().union(*(_keys(sub) for sub in section.samplers.values()))


def sampler_name(item: Loaded) -> str:
    """A record's sampler as --samplers names it: its extra.sampler, else from its spec ('euler:50', 'ddpm:50')."""
    name = item.record.extra.get("sampler")
    if isinstance(name, str):
        return name
    solver = str(item.record.sampling.get("solver", "?"))
    return solver if solver == ADAPTIVE else f"{solver}:{item.record.sampling.get('steps')}"


def _nfe_cell(items: list[Loaded]) -> Cell:
    """The measured NFE per sample (dopri5: the mean over the samples of their batch's NFE)."""
    values = [i.record.extra.get("nfe_per_sample", i.record.sampling.get("nfe")) for i in items]
    values = [float(v) for v in values if isinstance(v, int | float)]
    return Cell(fmt_nfe(values[0]), values[0]) if values else Cell(MISSING)


def _run_order(names: set[str]) -> list[str]:
    known = [name for name in mini_models() if name in names]
    return known + sorted(names - set(known))


NOTES = (
    "Each run's last point sampled again with other samplers (`bench reproduce mini --samplers`): the same EMA, "
    "seeds and scoring as the row of the preset's sampler (default: Euler 50 steps; DiT: DDPM respaced to 50 "
    "steps), one row per training seed. These records enter no other table, curve, knee or seed spread.",
    "NFE per sample: measured. dopri5 (the record's atol and rtol, 1e-5 unless set) adapts its steps to each "
    "sampling batch: its NFE is the mean over the samples of their batch's, and depends on the batch size "
    "(extra.sample_batch).",
    "90% interval: the seed's FID +- 1.645 x the standard deviation of the bootstrap resamplings of its samples.",
)


def sampler_table(section: Section) -> Table:
    """Per run, seed and point that other samplers scored: a row for the preset's sampler, then one per sampler."""
    points = scored_points(section)
    default = restricted(section, points)
    columns, notes = _columns(section, FIELDS), Footnotes()
    sets = [("", default), *section.samplers.items()]
    body, used = [], []
    for name in _run_order({key[0] for key in points}):
        for seed, images in sorted((s, i) for run, s, i in points if run == name):
            for label, sub in sets:
                run = sub.runs.get(name)
                if run is None or images not in run.points.get(seed, {}):
                    continue
                one = run.restricted([seed])
                items = list(one.points[seed][images].values())
                used += items
                sampler = sampler_name(items[0]) + ("" if label else " (default)")
                row = [Cell(method_label(run.family)), Cell(name), Cell(str(seed), float(seed)), Cell(str(images))]
                row += [Cell(sampler), *(fn(sub, one, images, notes) for _, fn in columns), _nfe_cell(items)]
                body.append(row)
    headers = ["Model", "Run", "Seed", "Images seen", "Sampler", *(h for h, _ in columns), "NFE per sample"]
    align = "lllrl" + "".join("l" if h.startswith("FID 90%") else "r" for h, _ in columns) + "r"
    title = f"Mini benchmark, {section.dataset} {section.res} px: other samplers at each run's last point"
    table = Table(f"mini-{section.tag}-samplers", title, headers, body, align, list(NOTES), notes.items(), used)
    table.placed = [i for sub in section.samplers.values() for i in sub.placed]
    return table


def _final_stats(section: Section, ordering: Ordering) -> tuple[Stat, Stat, int, int] | None:
    """Both runs' FID over seeds at their final points in this section (None unless both have one)."""
    runs = section.runs.get(ordering.better), section.runs.get(ordering.worse)
    if runs[0] is None or runs[1] is None:
        return None
    finals = runs[0].final, runs[1].final
    a, b = runs[0].stat("fid", finals[0]), runs[1].stat("fid", finals[1])
    return (a, b, finals[0], finals[1]) if a is not None and b is not None else None


def _boot_std(run: Run, images: int) -> float | None:
    """The largest bootstrap std of FID over the run's seeds at this point (None when a seed has none)."""
    stds = [i.record.extra.get("fid_bootstrap", {}).get("std") for i in run.records("fid", images)]
    return max(float(s) for s in stds) if stds and all(isinstance(s, int | float) for s in stds) else None


def _spread(section: Section, ordering: Ordering) -> tuple[float, str] | None:
    """The noise of the comparison's FID gap: the combined seed spread (>= 2 seeds each), else the combined
    bootstrap std (as the verdict of mini_text.py decides)."""
    a, b, final_a, final_b = _final_stats(section, ordering)
    if a.n >= 2 and b.n >= 2:
        return math.hypot(a.std or 0.0, b.std or 0.0), "the combined seed spread"
    boots = _boot_std(section.runs[ordering.better], final_a), _boot_std(section.runs[ordering.worse], final_b)
    if boots[0] is None or boots[1] is None:
        return None
    return math.hypot(*boots), "the combined bootstrap std"


def _outcome(section: Section, ordering: Ordering) -> str:
    """The verdict's first words ('holds', 'does not hold', 'within noise', ...) of mini_text's comparison."""
    runs = section.runs.get(ordering.better), section.runs.get(ordering.worse)
    return re.split(r"[:(]", _compare(ordering, runs), maxsplit=1)[0].strip()


def _signed(value: float) -> str:
    return f"+{fmt_sig(value)}" if value >= 0 else fmt_sig(value)


def _size(change: float, spread: tuple[float, str] | None) -> str:
    if spread is None or spread[0] <= 0:
        return "spread unknown"
    return f"{abs(change) / spread[0]:.1f}x {spread[1]} {fmt_sig(spread[0])}"


def _line(section: Section, default: Section, ordering: Ordering) -> str | None:
    """One ordering under every sampler that scored both its runs; None when none did."""
    base = _final_stats(default, ordering)
    others = [(name, sub) for name, sub in section.samplers.items() if _final_stats(sub, ordering) is not None]
    if base is None or not others:
        return None
    a, b, final_a, final_b = base
    gap, spread, verdict = b.mean - a.mean, _spread(default, ordering), _outcome(default, ordering)
    runs = ((ordering.better, final_a), (ordering.worse, final_b))
    own = "/".join(sorted({sampler_name(default.runs[run].records("fid", final)[0]) for run, final in runs}))
    where = fmt_images(final_a) if final_a == final_b else f"{fmt_images(final_a)} vs {fmt_images(final_b)}"
    clauses, changed = [f"{own} (default) {verdict} (gap {_signed(gap)})"], []
    for name, sub in others:
        sa, sb, _, _ = _final_stats(sub, ordering)
        own_gap = sb.mean - sa.mean
        change, outcome = own_gap - gap, _outcome(sub, ordering)
        clauses.append(f"{name} {outcome} (gap {_signed(own_gap)}, {_signed(change)}: {_size(change, spread)})")
        changed += [name] if outcome != verdict else []
    end = f"the verdict changes with {', '.join(changed)}" if changed else "the verdict is the same with every sampler"
    return f"- {ordering.what} ({where} images): {'; '.join(clauses)}: {end}."


def _changes(section: Section, default: Section) -> str | None:
    """Per run, each other sampler's FID minus the default's at the same points, the mean over those points."""
    parts = []
    for name in _run_order(set(default.runs)):
        base, changes, seeds = default.runs[name], [], set()
        for sampler, sub in section.samplers.items():
            pairs = [
                (seed, metrics["fid"].record.value, base.points[seed][images]["fid"].record.value)
                for seed, pts in (sub.runs[name].points.items() if name in sub.runs else [])
                for images, metrics in pts.items()
                if "fid" in metrics and "fid" in base.points.get(seed, {}).get(images, {})
            ]
            if pairs:
                changes.append(f"{sampler} {_signed(sum(a - b for _, a, b in pairs) / len(pairs))}")
                seeds |= {seed for seed, _, _ in pairs}
        if changes:
            parts.append(f"{name} ({len(seeds)} seed{'s' * (len(seeds) > 1)}) {', '.join(changes)}")
    return f"- FID change from the default sampler at the same points: {'; '.join(parts)}." if parts else None


def paragraph(section: Section) -> list[str]:
    """Whether each of the paper's orderings changes with the sampler (Markdown lines)."""
    default = restricted(section, scored_points(section))
    lines = [
        "**Do the paper's orderings change with the sampler?** The orderings above, on the points of this table "
        "only: gap = FID of the paper's worse run minus FID of its better one (positive: the paper's order), the "
        "verdict by the same rule (seed spread with two or more seeds each, else bootstrap intervals), and the "
        "gap's change from the default sampler's in units of the default comparison's spread. The sample sets of "
        "one point share its network and seeds, so a change carries less noise than that spread.",
        "",
    ]
    changes = _changes(section, default)
    lines += [changes] if changes else []
    unmeasured = []
    for ordering in orderings():
        line = _line(section, default, ordering)
        lines += [line] if line else []
        unmeasured += [] if line else [ordering.what]
    if unmeasured:
        lines.append(f"- Not scored with another sampler for both runs: {', '.join(unmeasured)}.")
    return lines


def markdown(section: Section, table: Table) -> list[str]:
    """The sampler table and its paragraph (lines), for the section's Markdown (mini_text.section_markdown)."""
    return [render.markdown(table, level=4).rstrip("\n"), "", *paragraph(section)]
