"""The mini benchmark's tables (bench/report/mini.py has the records and their statistics): the headline table of
the four families, a row per run at its final point and one per longer budget some seeds reached, and one table per
ablation axis (bench.registry.mini_ablations)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

from bench.registry import mini_ablations, mini_headline_runs
from bench.report.mini import KNEE_CHANGE, Run, Section, bootstrap_interval, knee, tiers
from bench.report.select import method_label
from bench.report.tables import MISSING, Cell, Footnotes, Table, fmt_sig
from bench.reproduce.mini import TRAIN_PATHS, record_train_path

AXIS_TITLES = {
    "mask": "attention mask",
    "critical_time": "critical time T1",
    "num_scales": "number of scales",
    "time_scale": "time-embedding scale (flow families)",
    "learning_rate": "learning rate (LapFlow and LFM)",
    "stage_sampling": "stage sampling over the micro-batches of an optimizer step (LapFlow)",
    "positions": "positional codes across scales (LapFlow)",
    "stage_times": "training times of each stage (LapFlow)",
}
NOT_RUN = "not run"
NOT_RECORDED = "not recorded"


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


def _final_extras(run: Run, final: int, metric: str = "fid") -> list[dict]:
    """Each seed's record extras at `final`: its `metric` record (without any: any record of each seed there)."""
    items = run.records(metric, final) or [next(iter(run.points[s][final].values())) for s in run.seeds]
    return [i.record.extra for i in items]


def _extra_values(run: Run, final: int, key: str, metric: str = "fid") -> list[float]:
    return [float(v) for v in (e.get(key) for e in _final_extras(run, final, metric)) if isinstance(v, int | float)]


def _kid_std_cell(section: Section, run: Run, final: int, notes: Footnotes) -> Cell:
    values = _extra_values(run, final, "kid_std", "kid")
    return Cell(fmt_sig(max(values)), max(values)) if values else Cell(MISSING)


def _gpu_cell(section: Section, run: Run, final: int, notes: Footnotes) -> Cell:
    values = _extra_values(run, final, "gpu_seconds")
    return Cell(f"{math.fsum(values) / len(values):.0f}", math.fsum(values) / len(values)) if values else Cell(MISSING)


def _path_cell(section: Section, run: Run, final: int, notes: Footnotes) -> Cell:
    counts = Counter(record_train_path(e) for e in _final_extras(run, final))
    if len(counts) == 1:
        return Cell(next(iter(counts)))
    return Cell(", ".join(f"{p} x{counts[p]}" for p in TRAIN_PATHS if p in counts)) if counts else Cell(MISSING)


def _compile_cell(section: Section, run: Run, final: int, notes: Footnotes) -> Cell:
    """Mean over seeds of compile_stats.compile_seconds, an eager seed counting 0; `-` (value 0) when none compiled."""
    extras = _final_extras(run, final)
    compiled = [e for e in extras if record_train_path(e) != "eager"]
    if not compiled:
        return Cell(MISSING, 0.0) if extras else Cell(MISSING)
    seconds = [(e.get("compile_stats") or {}).get("compile_seconds") for e in compiled]
    if not all(isinstance(s, int | float) for s in seconds):
        mark = (
            "Not recorded: a compiled seed's record has no extra.compile_stats (records before 9d44e27 wrote none); "
            "its GPU s include its compile all the same."
        )
        return Cell(NOT_RECORDED, None, (notes.mark(mark),))
    mean = math.fsum(seconds) / len(extras)
    return Cell(f"{mean:.0f}", mean)


def _nfe_cell(section: Section, run: Run, final: int, notes: Footnotes) -> Cell:
    items = run.records("fid", final) or run.records(section.metrics()[0], final)
    nfes = sorted({float(n) for n in (i.record.sampling.get("nfe") for i in items) if isinstance(n, int | float)})
    return Cell(", ".join(f"{n:g}" for n in nfes), nfes[0] if len(nfes) == 1 else None) if nfes else Cell(MISSING)


def _prob(value: float) -> str:
    return f"{value:.3f}"


def _fid(value: float) -> str:
    return f"{value:.2f}"


ALWAYS = ("seeds", "images", "gpu", "path", "compile", "nfe", "knee")  # columns shown whichever metrics a section has
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
        "path": ("Training path", _path_cell),
        "compile": ("Compile s", _compile_cell),
        "nfe": ("NFE", _nfe_cell),
        "knee": ("Knee (FID over the last doubling)", lambda s, r, f, n: Cell(knee(r))),
    }
    return [candidates[f] for f in fields if f in ALWAYS or NEEDS.get(f, f) in proto]


HEADLINE_FIELDS = ("seeds", "fid", "fid_std", "fid_boot", "clean_fid", "clean_fid_std", "kid", "kid_std")
HEADLINE_FIELDS += ("precision", "recall", "memorisation", "images", "gpu", "path", "compile", "nfe", "knee")
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
        compile_part = (
            "; Compile s: that part (extra.compile_stats.compile_seconds), mean over seeds, an eager seed counting 0 "
            "(`-`: no seed compiled)"
        )
        notes.append(
            "GPU s: training-loop device seconds up to the final point, compile included, mean over seeds"
            + (compile_part if "compile" in fields else "")
            + f"; measured on {', '.join(gpus)}"
            + (" (not comparable across GPUs)." if len(gpus) > 1 else ".")
        )
    if "path" in fields:
        notes.append(
            "Training path: how the row's seeds trained, named as `--train-path` names it, with the number of seeds "
            "of each when they differ (eager: not compiled; compile: torch.compile without CUDA graphs; graphs: "
            "torch.compile with CUDA graphs, compile_mode reduce-overhead)."
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
    left = ("FID 90%", "Knee", "Training path")
    align = "l" * len(labels) + "".join("l" if h.startswith(left) else "r" for h, _ in columns)
    general = _notes(section, fields, longer)
    if any(c.text == MISSING and c.value is None for row in body for c in row):  # Compile s's `-` is a 0
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
