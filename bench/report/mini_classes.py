"""The class-conditional part of the mini benchmark's report section (records with extra.guidance, e.g. Imagenette).

Records of one data set and resolution are split by guidance weight; each weight's records form a mini.Section, so
final points, seed means, bootstrap intervals and the ordering verdicts are the unconditional section's
(bench/report/mini.py, mini_text.py). The preset's weight is the one scored at every point (the most records); the
sweep's other weights exist at the last point only. One table per data set: FID and KID per weight, class accuracy
per weight (the linear probe of bench/reproduce/probe.py), images seen and GPU seconds; the paragraph tests the
paper's ImageNet orderings; figures are in mini_class_plots.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.registry import family as registry_family
from bench.registry import mini_models
from bench.report import render
from bench.report.mini import METRICS, Run, Section, _section, fmt_images
from bench.report.mini_text import Ordering, verdict
from bench.report.select import method_label
from bench.report.tables import MISSING, Cell, Loaded, Table, fmt_sig
from bench.reproduce.mini import CLASS_METRICS, MINI_BENCHMARK

CLASS_TABLE_METRICS = (*METRICS, *CLASS_METRICS)
NO_GUIDANCE = 1.0
# The paper's ImageNet 256 orderings: (better family, worse family, guidance weight). Without guidance (w = 1) at
# DiT-XL/2: LapFlow 14.38 < Pyramidal Flow 17.10 < DiT 19.50; with CFG 1.5 at DiT-B/2: LapFlow 4.12 < LFM 4.46.
CLASS_ORDERINGS = (("lapflow", "pyramidal-flow", 1.0), ("pyramidal-flow", "dit", 1.0), ("lapflow", "lfm", 1.5))


def is_class_record(item: Loaded) -> bool:
    """A class-conditional mini record: it names the guidance weight its samples were drawn with."""
    return isinstance(item.record.extra.get("guidance"), int | float)


@dataclass
class ClassSection:
    dataset: str
    res: int
    by_weight: dict[float, Section]  # guidance weight -> that weight's records as a mini section, weights ascending
    placed: list[Loaded]

    @property
    def tag(self) -> str:
        return f"{self.dataset}{self.res}"

    @property
    def weights(self) -> list[float]:
        return list(self.by_weight)

    @property
    def preset_weight(self) -> float:
        """The weight scored at every point: the one with the most records (ties: the smaller weight)."""
        return max(self.by_weight, key=lambda w: (len(self.by_weight[w].placed), -w))

    @property
    def preset(self) -> Section:
        return self.by_weight[self.preset_weight]

    def runs(self) -> list[str]:
        """The data set's mini runs (registry order) that have records, then any others by name."""
        have = {name for s in self.by_weight.values() for name in s.runs}
        known = [name for name in mini_models(self.dataset) if name in have]
        return known + sorted(have - set(known))


def collect(records: list[Loaded]) -> list[ClassSection]:
    groups: dict[tuple[str, int], dict[float, list[Loaded]]] = {}
    for item in records:
        r = item.record
        if r.extra.get("benchmark") == MINI_BENCHMARK and r.metric in CLASS_TABLE_METRICS and is_class_record(item):
            weights = groups.setdefault((r.dataset, r.resolution), {})
            weights.setdefault(float(r.extra["guidance"]), []).append(item)
    out = []
    for (dataset, res), weights in sorted(groups.items()):
        by_weight = {w: _section(dataset, res, items) for w, items in sorted(weights.items())}
        out.append(ClassSection(dataset, res, by_weight, [i for s in by_weight.values() for i in s.placed]))
    return out


def _final_stat_cell(section: Section | None, name: str, metric: str, fmt: str) -> Cell:
    run = section.runs.get(name) if section is not None else None
    stat = run.stat(metric, run.final) if run is not None else None
    if stat is None:
        return Cell(MISSING)
    text = f"{stat.mean:.2f}" if fmt == "fid" else f"{stat.mean:.3f}" if fmt == "prob" else fmt_sig(stat.mean)
    return Cell(text, stat.mean)


def _gpu_seconds(run: Run) -> Cell:
    final = run.final
    items = run.records("fid", final) if final is not None else []
    values = [float(v) for v in (i.record.extra.get("gpu_seconds") for i in items) if isinstance(v, int | float)]
    return Cell(f"{sum(values) / len(values):.0f}", sum(values) / len(values)) if values else Cell(MISSING)


def probe_accuracies(section: ClassSection) -> list[float]:
    values = {i.record.extra.get("probe_val_accuracy") for i in section.placed if i.record.metric == "class_accuracy"}
    return sorted(float(v) for v in values if isinstance(v, int | float))


def class_table(section: ClassSection) -> Table:
    weights, preset = section.weights, section.preset
    headers = ["Model", "Run", "Seeds"]
    for title in ("FID", "KID", "Class accuracy"):
        headers += [f"{title} w={w:g}" for w in weights]
    headers += ["Images seen", "GPU s"]
    rows, used = [], []
    for name in section.runs():
        run = preset.runs.get(name)
        label = method_label(run.family) if run is not None else name
        row = [Cell(label), Cell(name), Cell(str(len(run.seeds)), float(len(run.seeds))) if run else Cell(MISSING)]
        for metric, fmt in (("fid", "fid"), ("kid", "sig"), ("class_accuracy", "prob")):
            row += [_final_stat_cell(section.by_weight[w], name, metric, fmt) for w in weights]
        final = run.final if run is not None else None
        row += [Cell(str(final)) if final is not None else Cell(MISSING), _gpu_seconds(run) if run else Cell(MISSING)]
        rows.append(row)
        used += [i for s in section.by_weight.values() if name in s.runs for i in s.runs[name].all_records()]
    probes = ", ".join(f"{v:.3f}" for v in probe_accuracies(section)) or MISSING
    notes = [
        f"Protocols: FID [{preset.protocols.get('fid')}], KID [{preset.protocols.get('kid')}], class accuracy "
        f"[{preset.protocols.get('class_accuracy')}]; w: classifier-free guidance weight (1 = none). Samples are "
        "class-balanced (seed s has class s mod K). Values: means over training seeds at each run's final point; "
        f"the preset's weight w={section.preset_weight:g} is scored at every point, the others at the last.",
        "Class accuracy: a multinomial logistic-regression probe on the Inception pool features of the real training "
        "images assigns each sample a class; per class c the fraction of samples of class c assigned to c, mean over "
        f"classes (chance 1/K). The probe's own accuracy on the held-out real images: {probes}.",
        "GPU s: training-loop device seconds up to the final point, mean over seeds; measured on "
        f"{', '.join(preset.gpus())}.",
    ]
    title = f"Class-conditional mini benchmark, {section.dataset} {section.res} px: FID, KID and class accuracy"
    align = "ll" + "r" * (len(headers) - 2)
    table = Table(f"mini-{section.tag}-classes", title, headers, rows, align, notes, [], used, [])
    table.placed = list(section.placed)
    return table


def class_orderings(dataset: str) -> list[tuple[Ordering, float]]:
    out = []
    for better, worse, weight in CLASS_ORDERINGS:
        a, b = registry_family(better), registry_family(worse)
        run_a, run_b = next(iter(a.mini_runs_of(dataset)), ""), next(iter(b.mini_runs_of(dataset)), "")
        cfg = "" if weight == NO_GUIDANCE else f" with CFG w={weight:g}"
        out.append((Ordering(f"{a.label} < {b.label}{cfg}", run_a, a.label, run_b, b.label), weight))
    return out


def paragraph(section: ClassSection) -> list[str]:
    lines = [
        f"**The paper's class-conditional orderings in these records ({section.dataset} {section.res} px; the paper's "
        "are ImageNet 256: LapFlow 14.38 < Pyramidal Flow 17.10 < DiT 19.50 without guidance at XL/2, LapFlow 4.12 < "
        f"LFM 4.46 with CFG 1.5 at B/2).** FID [{section.preset.protocols.get('fid', 'none')}] at the named guidance "
        "weight, lower is better; a difference counts as in the unconditional paragraph (seed spread, or bootstrap "
        "intervals with one seed).",
        "",
    ]
    for ordering, weight in class_orderings(section.dataset):
        sub = section.by_weight.get(weight)
        text = verdict(sub, ordering) if sub is not None else f"not measured (no records at guidance {weight:g})"
        lines.append(f"- {ordering.what}: {text}.")
    return lines


def markdown(sections: list[ClassSection], tables: dict[str, Table], figures: dict[str, list[str]]) -> list[str]:
    """The class-conditional subsections (lines); [] when there are no class-conditional records."""
    lines: list[str] = []
    for section in sections:
        final = section.preset.runs and max((r.final or 0) for r in section.preset.runs.values())
        lines += ["", f"### {section.dataset}, {section.res} px, class-conditional", ""]
        weights = ", ".join(f"{w:g}" for w in section.weights)
        lines += [f"Budget up to {fmt_images(final or 0)} images seen; guidance weights {weights}.", ""]
        lines += [render.markdown(tables[section.tag], level=4).rstrip("\n"), "", *paragraph(section), ""]
        lines += figures.get(section.tag, [])
    return lines[:-1] if lines and lines[-1] == "" else lines
