"""Table rows from result records and the paper's numbers; rendering lives in render.py.

Comparison tables put the paper's number and each measured column side by side. A measured column is keyed by
(metric, protocol name, GPU for timings, unit), so two protocols never share a column; a cell with several records
shows the newest and says so in a footnote.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from bench import registry
from bench.report.paper import PaperData, PaperEntry
from bench.report.select import (
    SPECS_BY_ID,
    RowKey,
    TableSpec,
    autoencoder,
    backbone,
    method_label,
    method_order,
    solver,
)
from bench.results import Record

MISSING = "-"
NOT_AVAILABLE = "n/a"
TIMED = {"time_e2e", "time_sampler", "train_throughput"}  # metrics whose value depends on the GPU
RATIO_BASE, RATIO_LABEL = registry.reference().name, registry.reference().label  # the "/ LFM" columns
MISSING_NOTE = (
    "`-`: no number (the paper reports none, or nothing was measured under that column's protocol); "
    "reports/README.md lists what is missing."
)


@dataclass(frozen=True, eq=False)
class Loaded:
    """A record and its path relative to the results folder (identity-hashed: records hold dicts)."""

    path: str
    record: Record


@dataclass(frozen=True)
class Cell:
    text: str
    value: float | None = None  # the number behind `text` (CSV); None for labels and gaps
    marks: tuple[str, ...] = ()  # footnote marks


@dataclass
class Table:
    id: str
    title: str
    headers: list[str]
    rows: list[list[Cell]]
    align: str  # one letter per column: l (labels) or r (numbers)
    notes: list[str] = field(default_factory=list)  # unmarked notes
    footnotes: list[tuple[str, str]] = field(default_factory=list)  # (mark, text)
    used: list[Loaded] = field(default_factory=list)  # records shown
    missing: list[str] = field(default_factory=list)  # rows with a paper number and no measurement
    placed: list[Loaded] = field(default_factory=list)  # records that belong here (shown or superseded)


class Footnotes:
    """Letters a, b, ... in order of first use; the same text keeps its letter."""

    def __init__(self) -> None:
        self.marks: dict[str, str] = {}

    def mark(self, text: str) -> str:
        if text not in self.marks:
            n, letters = len(self.marks), ""
            while True:
                letters = chr(ord("a") + n % 26) + letters
                n = n // 26 - 1
                if n < 0:
                    break
            self.marks[text] = letters
        return self.marks[text]

    def items(self) -> list[tuple[str, str]]:
        return [(mark, text) for text, mark in self.marks.items()]


def fmt_sig(value: float) -> str:
    """Three significant digits below 1, two decimals from 1, one from 10."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.{2 - math.floor(math.log10(abs(value)))}f}"


def fmt_nfe(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


@dataclass(frozen=True)
class Group:
    name: str
    title: str
    metrics: tuple[str, ...]
    fmt: Callable[[float], str]


GROUPS = {
    "fid": Group("fid", "FID", ("fid", "clean_fid"), lambda v: f"{v:.2f}"),
    "nfe": Group("nfe", "NFE", ("nfe",), fmt_nfe),
    "time": Group("time", "Time (s)", ("time_e2e", "time_sampler"), fmt_sig),
    "gflops": Group("gflops", "GFLOPs", ("gflops_forward", "gflops_sample", "gflops_decode"), fmt_sig),
}
ColumnKey = tuple[int, str, str, str, str]  # (metric order, metric, protocol, gpu, unit)


def gpu_of(record: Record) -> str:
    return str(record.environment.get("gpu") or "cpu") if record.metric in TIMED else ""


def column_key(record: Record, group: Group) -> ColumnKey:
    order = group.metrics.index(record.metric)
    return (order, record.metric, record.protocol_name, gpu_of(record), record.unit)


def column_header(key: ColumnKey) -> str:
    _, metric, protocol, gpu, _ = key
    return f"{metric} [{protocol or 'no protocol'}]" + (f" @ {gpu}" if gpu else "")


def short_commit(record: Record) -> str:
    """The record's code as a 12-digit git hash, '+dirty' for a changed working tree."""
    return str(record.git.get("commit", "unknown"))[:12] + ("+dirty" if record.git.get("dirty") else "")


def newest(items: list[Loaded]) -> Loaded:
    return max(items, key=lambda item: (item.record.created, item.path))


def newest_by(items: Iterable[Loaded], key: Callable[[Record], Any]) -> dict[Any, Loaded]:
    """The newest record of each group of records with the same key (groups in order of first appearance)."""
    groups: dict[Any, list[Loaded]] = {}
    for item in items:
        groups.setdefault(key(item.record), []).append(item)
    return {k: newest(group) for k, group in groups.items()}


def measured_setting(items: Iterable[Loaded]) -> str:
    """Backbone, autoencoder and solver of the measured records in a row (all distinct ones)."""
    parts = {", ".join(p for p in (backbone(i.record), autoencoder(i.record), solver(i.record)) if p) for i in items}
    return "; ".join(sorted(p for p in parts if p))


def row_sort_key(key: RowKey) -> tuple:
    res, method, setting = key
    return (res, method_order(method), tuple(_natural(v) for v in setting))


def _natural(text: str) -> tuple[int, float, str]:
    try:
        return (0, float(text.split(",")[0].split("/")[0]), text)
    except ValueError:
        return (1, 0.0, text)


def value_cell(item: Loaded | None, count: int, group: Group, notes: Footnotes) -> Cell:
    if item is None:
        return Cell(MISSING)
    marks = []
    if count > 1:
        marks.append(notes.mark(f"{count} records measure this cell; the newest is shown (all are listed in README)."))
    if item.record.protocol.get("reportable") is False:
        marks.append(notes.mark("The record's protocol marks it not reportable (e.g. CPU, or too few repeats)."))
    value = item.record.value
    if value is None:
        marks.append(notes.mark(f"n/a ({item.record.preset}): {item.record.note or 'the family cannot do this.'}"))
        return Cell(NOT_AVAILABLE, None, tuple(marks))
    return Cell(group.fmt(value), float(value), tuple(marks))


def ratio_cell(value: float | None, base: float | None) -> Cell:
    if value is None or base is None or base == 0:
        return Cell(MISSING)
    return Cell(f"{value / base:.2f}", value / base)


def _collect(spec: TableSpec, group: Group, records: list[Loaded]) -> dict[RowKey, dict[ColumnKey, list[Loaded]]]:
    """Records of this group by row and column (several per cell when measured more than once)."""
    measured: dict[RowKey, dict[ColumnKey, list[Loaded]]] = {}
    for item in records:
        key = spec.row_key(item.record) if item.record.metric in group.metrics else None
        if key is not None:
            measured.setdefault(key, {}).setdefault(column_key(item.record, group), []).append(item)
    return measured


def _paper_cell(entry: PaperEntry | None, group: Group, notes: Footnotes) -> Cell:
    if entry is None:
        return Cell(MISSING)
    marks = (notes.mark(entry.note),) if entry.note else ()
    return Cell(group.fmt(entry.value) if entry.value is not None else MISSING, entry.value, marks)


def _with_ratios(rows: dict[RowKey, list[Cell]], ratio: bool) -> dict[RowKey, list[Cell]]:
    """Each value cell followed by its ratio to the reference's value in the same column, resolution and setting."""
    if not ratio:
        return rows
    out = {}
    for key, cells in rows.items():
        base = rows.get((key[0], RATIO_BASE, key[2]))
        out[key] = [
            c for i, cell in enumerate(cells) for c in (cell, ratio_cell(cell.value, base[i].value if base else None))
        ]
    return out


def comparison_table(spec: TableSpec, group: Group, records: list[Loaded], paper: PaperData) -> Table | None:
    """Paper vs measured for one table and one column group; None when there is nothing to compare."""
    measured = _collect(spec, group, records)
    entries = {(e.resolution, e.method, e.setting_for(spec.axes)): e for e in paper.for_table(spec.id, group.name)}
    if not entries and len({key[2] for key in measured}) < (2 if spec.axes else 1):
        return None  # no paper number and nothing compared (an ablation table needs two settings)
    columns = sorted({col for cells in measured.values() for col in cells})
    value_headers = [column_header(c) for c in columns]
    if entries:
        value_headers.insert(0, f"Paper [{paper.protocols.get((spec.id, group.name), 'paper')}]")
    notes = Footnotes()
    values: dict[RowKey, list[Cell]] = {}
    used, missing = [], []
    for key in sorted(set(measured) | set(entries), key=row_sort_key):
        cells = [_paper_cell(entries.get(key), group, notes)] if entries else []
        for col in columns:
            items = measured.get(key, {}).get(col, [])
            chosen = newest(items) if items else None
            used += [chosen] if chosen else []
            cells.append(value_cell(chosen, len(items), group, notes))
        values[key] = cells
        entry = entries.get(key)
        if entry is not None and entry.value is not None and key not in measured:
            missing.append(" ".join([str(key[0]), method_label(key[1]), *key[2]]).strip())
    rows = []
    for key, cells in _with_ratios(values, spec.ratio).items():
        setting = measured_setting(i for items in measured.get(key, {}).values() for i in items)
        rows.append([Cell(str(key[0])), Cell(method_label(key[1])), *(Cell(v) for v in key[2]), *cells, Cell(setting)])
    headers = [*spec.headers]
    for header in value_headers:
        headers += [header, f"{header} / {RATIO_LABEL}"] if spec.ratio else [header]
    headers.append("Measured setting")
    general = paper.notes_for(spec.id, group.name)
    if spec.ratio:
        general.append(
            f"`/ {RATIO_LABEL}`: the value divided by {RATIO_LABEL}'s in the same column, resolution and setting."
        )
    if any(c.text == MISSING for row in rows for c in row):
        general.append(MISSING_NOTE)
    align = "l" * len(spec.headers) + "r" * (len(headers) - len(spec.headers) - 1) + "l"
    title = f"{spec.title}: {group.title}"
    table = Table(f"{spec.id}-{group.name}", title, headers, rows, align, general, notes.items(), used, missing)
    table.placed = [i for cells in measured.values() for items in cells.values() for i in items]
    return table


def comparison_tables(records: list[Loaded], paper: PaperData) -> list[Table]:
    tables = []
    for spec in SPECS_BY_ID.values():
        for name in spec.groups:
            table = comparison_table(spec, GROUPS[name], records, paper)
            if table is not None:
                tables.append(table)
    return tables


def _label_cells(r: Record) -> list[Cell]:
    return [Cell(method_label(r.model)), Cell(r.preset), Cell(r.dataset), Cell(str(r.resolution))]


def _number(value: object, fmt: Callable[[float], str] = fmt_sig) -> Cell:
    return Cell(fmt(float(value)), float(value)) if isinstance(value, int | float) else Cell(MISSING)


def _perf_sort(item: Loaded) -> tuple:
    r = item.record
    return (r.dataset, r.resolution, method_order(r.model), r.preset, r.metric, r.protocol_name, gpu_of(r), item.path)


def paper_time(record: Record, paper: PaperData) -> float | None:
    """The paper's seconds per image for this record's row of a main table (batch-1 latency only)."""
    if record.extra.get("batch") != 1:
        return None
    for spec in SPECS_BY_ID.values():
        key = spec.row_key(record) if spec.ratio else None
        for entry in paper.for_table(spec.id, "time") if key else ():
            if (entry.resolution, entry.method, entry.setting_for(spec.axes)) == key:
                return entry.value
    return None


def performance_tables(records: list[Loaded], paper: PaperData) -> list[Table]:
    """Inference time and training throughput records, one row each, beside the paper's seconds where it has them."""
    timing = sorted((i for i in records if i.record.metric in {"time_e2e", "time_sampler"}), key=_perf_sort)
    training = sorted((i for i in records if i.record.metric == "train_throughput"), key=_perf_sort)
    out = []
    if timing:
        headers = ["Method", "Preset", "Dataset", "Res", "Protocol", "GPU", "Batch", "NFE", "Median", "p10", "p90"]
        headers += ["Unit", "Paper [s/image]"]
        rows, notes = [], Footnotes()
        for item in timing:
            r = item.record
            median = value_cell(item, 1, GROUPS["time"], notes)
            anchor = paper_time(r, paper)
            rows.append(
                [
                    *_label_cells(r),
                    Cell(r.protocol_name),
                    Cell(gpu_of(r)),
                    _number(r.extra.get("batch"), fmt_nfe),
                    _number(r.sampling.get("nfe"), fmt_nfe),
                    median,
                    _number(r.extra.get("p10")),
                    _number(r.extra.get("p90")),
                    Cell(r.unit),
                    _number(anchor),
                ]
            )
        note = "Median over repeats with p10/p90; the paper's seconds are shown for batch-1 rows of its main tables."
        out.append(
            Table("performance-time", "Inference time", headers, rows, "lllrllrrrrrlr", [note], notes.items(), timing)
        )
    if training:
        headers = ["Method", "Preset", "Dataset", "Res", "Protocol", "GPU", "Commit", "Batch", "Images/s", "MFU"]
        notes = Footnotes()
        rows = [
            [
                *_label_cells(i.record),
                Cell(i.record.protocol_name),
                Cell(gpu_of(i.record)),
                Cell(short_commit(i.record)),  # re-measurements of one preset and protocol differ by their code
                _number(i.record.extra.get("batch", i.record.protocol.get("batch")), fmt_nfe),  # perf: in protocol
                value_cell(i, 1, GROUPS["time"], notes),
                _number(i.record.extra.get("mfu")),
            ]
            for i in training
        ]
        note = "Commit: the code measured (git short hash, +dirty for a changed working tree)."
        out.append(
            Table(
                "performance-train", "Training throughput", headers, rows, "lllrlllrrr", [note], notes.items(), training
            )
        )
    for table in out:
        table.placed = list(table.used)
        if any(c.text == MISSING for row in table.rows for c in row):
            table.notes.append(MISSING_NOTE)
    return out


def other_table(records: list[Loaded], placed: set[int]) -> Table | None:
    """Records that no other table shows (e.g. synthetic data sets), so nothing is silently dropped."""
    rest = sorted((i for i in records if id(i) not in placed), key=_perf_sort)
    if not rest:
        return None
    notes = Footnotes()
    headers = ["Method", "Preset", "Dataset", "Res", "Metric", "Protocol", "GPU", "Value", "Unit"]
    group = Group("other", "", (), fmt_sig)
    rows = [
        [
            *_label_cells(i.record),
            Cell(i.record.metric),
            Cell(i.record.protocol_name),
            Cell(gpu_of(i.record)),
            value_cell(i, 1, group, notes),
            Cell(i.record.unit),
        ]
        for i in rest
    ]
    note = "Records outside the paper's tables (other data sets, or settings no table varies)."
    return Table("other", "Other measurements", headers, rows, "lllrlllrl", [note], notes.items(), rest)
