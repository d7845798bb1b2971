"""The mini benchmark's section of tables.md: per resolution its tables, curves and grids, and a paragraph that says,
for each of the paper's orderings, whether it holds in these records, by how much and how sure.

Each ordering compares two runs' mean FID at their final points. With >= 2 seeds on both sides a difference counts
when it exceeds the combined seed spread sqrt(std_a^2 + std_b^2) ("within noise" otherwise), and its size is given
in units of the larger seed std. With one seed on either side the spread over seeds is unknown; the bootstrap
intervals over samples (FID +- 1.645 bootstrap std; over several seeds, their envelope) decide instead: overlapping
means within noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from bench.registry import families, mini_ablations
from bench.registry import family as registry_family
from bench.report import render
from bench.report.mini import Run, Section, Stat, bootstrap_interval, fmt_images, tiers
from bench.report.mini_plots import curve_stems, sample_grid_lines
from bench.report.tables import Table, fmt_sig
from bench.reproduce.mini import MINI_BENCHMARK, MINI_SUBDIR

PAPER_RES = 256  # the paper's CelebA-HQ orderings (FID-50K) and its ablations are at 256 px
NO_RECORDS = (
    f"No mini-benchmark records exist yet (records with extra.benchmark `{MINI_BENCHMARK}` under "
    f"results/{MINI_SUBDIR}/<dataset><res>/, written by `bench reproduce mini`)."
)
INTRO = (
    f"Records of `bench reproduce mini` (extra.benchmark `{MINI_BENCHMARK}`, results/{MINI_SUBDIR}/<dataset><res>/): "
    "every family trains on the same small data set for the same budget in images seen, and is scored at several "
    "points of training against the real images. These numbers compare methods under a short, equal budget; they "
    "are not the paper's FID-50K and are not rows of its tables."
)


def _setting_run(axis: str, label: str) -> str:
    """The run of an ablation setting (bench.registry.mini_ablations), '' when there is none."""
    return next((run for run, setting in mini_ablations().get(axis, ()) if setting == label), "")


@dataclass(frozen=True)
class Ordering:
    """The paper says run `better` has the lower FID than run `worse`."""

    what: str
    better: str
    better_name: str
    worse: str
    worse_name: str


ABLATION_ORDERINGS = (  # the paper's ablation findings: (what, axis, better setting, its name, worse, its name)
    ("mask causal < none", "mask", "causal", "causal", "none", "none"),
    ("mask causal < self", "mask", "causal", "causal", "self", "self"),
    ("2 scales < 1 scale", "num_scales", "2", "2 scales", "1", "1 scale"),
    ("2 scales < 3 scales", "num_scales", "2", "2 scales", "3", "3 scales"),
)


def orderings() -> tuple[Ordering, ...]:
    """The paper's orderings: each family's Family.paper_better_than, then the ablation findings."""
    out = []
    for fam in families():
        if fam.paper_better_than:
            worse = registry_family(fam.paper_better_than)
            out.append(Ordering(f"{fam.label} < {worse.label}", fam.name, fam.label, worse.name, worse.label))
    for what, axis, better, better_name, worse, worse_name in ABLATION_ORDERINGS:
        out.append(Ordering(what, _setting_run(axis, better), better_name, _setting_run(axis, worse), worse_name))
    return tuple(out)


Box = tuple[float, float]  # (low, high) of a 90% bootstrap interval


def _envelope(run: Run, final: int) -> Box | None:
    """The bootstrap interval of the run's FID at its final point (over several seeds: the envelope of theirs)."""
    items = run.records("fid", final)
    intervals = [box for box in (bootstrap_interval(i) for i in items) if box is not None]
    if not intervals or len(intervals) < len(items):
        return None
    return min(box[0] for box in intervals), max(box[1] for box in intervals)


def _seed_verdict(a: Stat, b: Stat, text: str) -> str:
    diff, std_a, std_b = b.mean - a.mean, a.std or 0.0, b.std or 0.0
    larger, combined = max(std_a, std_b), math.hypot(std_a, std_b)
    seeds = f"{a.n} and {b.n} seeds"
    if diff == 0 or abs(diff) < combined:
        return (
            f"within noise: {text} (difference {fmt_sig(abs(diff))}, below the combined seed spread "
            f"{fmt_sig(combined)}; {seeds})"
        )
    how = f"{abs(diff) / larger:.1f}x the larger seed std {fmt_sig(larger)}" if larger > 0 else "seed std 0"
    verdict = "holds" if diff > 0 else "does not hold"
    return f"{verdict}: {text} (difference {fmt_sig(abs(diff))}, {how}; {seeds})"


def _bootstrap_verdict(
    a: Stat, b: Stat, boxes: tuple[Box | None, Box | None], names: tuple[str, str], text: str
) -> str:
    diff = b.mean - a.mean
    unknown = "one seed only: spread unknown"
    first, second = boxes
    if first is None or second is None:
        lacking = " or ".join(name for name, box in zip(names, boxes, strict=True) if box is None)
        order = "in" if diff > 0 else "not in"
        return (
            f"{unknown}, no bootstrap interval for {lacking}: {text} (means {order} the paper's order, difference "
            f"{fmt_sig(abs(diff))})"
        )
    (low_a, high_a), (low_b, high_b) = first, second
    overlap = high_a >= low_b and high_b >= low_a
    verdict = "within noise" if overlap or diff == 0 else ("holds" if diff > 0 else "does not hold")
    box_a, box_b = f"{fmt_sig(low_a)}-{fmt_sig(high_a)}", f"{fmt_sig(low_b)}-{fmt_sig(high_b)}"
    relation = "overlap" if overlap else "do not overlap"
    intervals = f"90% bootstrap intervals {names[0]} {box_a}, {names[1]} {box_b} {relation}"
    return f"{verdict} ({unknown}): {text} (difference {fmt_sig(abs(diff))}; {intervals})"


def verdict(section: Section, ordering: Ordering) -> str:
    """Whether the ordering holds in this section's records, by how much and how sure; where both runs reached a
    longer budget with some of their seeds, also there (the longest such budget)."""
    runs = (section.runs.get(ordering.better), section.runs.get(ordering.worse))
    text = _compare(ordering, runs)
    if runs[0] is None or runs[1] is None:
        return text
    longer = {t.final: t for t in tiers(runs[0])[1:]}, {t.final: t for t in tiers(runs[1])[1:]}
    shared = sorted(set(longer[0]) & set(longer[1]))
    if not shared:
        return text
    images = shared[-1]
    return f"{text}; at {fmt_images(images)} images, {_compare(ordering, (longer[0][images], longer[1][images]))}"


def _compare(ordering: Ordering, runs: tuple[Run | None, Run | None]) -> str:
    finals = [run.final if run is not None else None for run in runs]
    stats = [run.stat("fid", final) if run is not None else None for run, final in zip(runs, finals, strict=True)]
    missing = [name for name, stat in zip((ordering.better, ordering.worse), stats, strict=True) if stat is None]
    if missing:
        return f"not measured (no FID records of {' or '.join(n or 'a run' for n in missing)})"
    (a, b), (run_a, run_b), (final_a, final_b) = stats, runs, finals
    names = (ordering.better_name, ordering.worse_name)
    text = f"{names[0]} {fmt_sig(a.mean)} vs {names[1]} {fmt_sig(b.mean)}"
    if final_a != final_b:
        text += f" (at {fmt_images(final_a)} vs {fmt_images(final_b)} images)"
    if a.n >= 2 and b.n >= 2:
        return _seed_verdict(a, b, text)
    return _bootstrap_verdict(a, b, (_envelope(run_a, final_a), _envelope(run_b, final_b)), names, text)


def paragraph(section: Section) -> list[str]:
    """The generated paragraph on the paper's orderings (Markdown lines)."""
    where = f"{section.res} px" + ("" if section.res == PAPER_RES else f"; the paper's orderings are at {PAPER_RES} px")
    lines = [
        f"**The paper's orderings in these records ({section.dataset} {where}).** FID "
        f"[{section.protocols.get('fid', 'none')}], lower is better, mean over training seeds at each run's final "
        "point. A difference counts when it exceeds the combined seed spread sqrt(std1^2 + std2^2); with one seed, "
        "when the bootstrap intervals over samples do not overlap.",
        "",
    ]
    lines += [f"- {o.what}: {verdict(section, o)}." for o in orderings()]
    return lines


def _figures(section: Section, results_dir: Path) -> list[str]:
    lines = []
    for stem in curve_stems(section):
        what = stem.rsplit("-fid-vs-", 1)[1].replace("-", " ")
        lines += [f"![FID vs {what}](plots/{stem}.png)", "", f"(PDF: plots/{stem}.pdf)", ""]
    lines += [] if lines else ["No FID curve: no headline run has an FID record at a point common to its seeds.", ""]
    return lines + sample_grid_lines(section, results_dir)


def section_markdown(
    section: Section, tables: list[Table], results_dir: Path, samplers: list[str] | None = None
) -> list[str]:
    """`samplers`: the sampler blocks after the orderings: the other samplers' table and paragraph
    (mini_samplers.markdown), then the sampler floor's (mini_floor.markdown)."""
    lines = ["", f"### {section.dataset}, {section.res} px", "", render.markdown(tables[0], level=4).rstrip("\n")]
    lines += ["", *paragraph(section), *(["", *samplers] if samplers else []), "", *_figures(section, results_dir)]
    if len(tables) == 1:
        lines.append(f"No ablation runs at {section.res} px.")
    for table in tables[1:]:
        lines += [render.markdown(table, level=4).rstrip("\n"), ""]
    return lines[:-1] if lines[-1] == "" else lines


def markdown(
    sections: list[Section],
    tables: dict[str, list[Table]],
    results_dir: Path,
    class_lines: list[str] | None = None,
    sampler_lines: dict[str, list[str]] | None = None,
) -> list[str]:
    """The whole mini-benchmark section of tables.md (lines); `class_lines`: its class-conditional subsections;
    `sampler_lines`: per section tag, its sampler blocks (see section_markdown)."""
    lines = ["", "## Mini benchmark (one GPU)", ""]
    if not sections and not class_lines:
        return [*lines, NO_RECORDS]
    lines.append(INTRO)
    for section in sections:
        lines += section_markdown(section, tables[section.tag], results_dir, (sampler_lines or {}).get(section.tag))
    return lines + (class_lines or [])
