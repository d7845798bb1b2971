"""The paper's reported numbers as data (results/paper/*.json, transcribed from METHODS.md section 5).

Each file holds `entries` (table, method, optional setting, resolution, column, value or null, optional note), the
paper's protocol per table column (`protocols`: table -> column -> text for the header) and `notes` (table ->
column -> lines; column "all" applies to every column of that table).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError

ENTRY_KEYS = {"table", "method", "setting", "resolution", "column", "value", "note"}
FILE_KEYS = {"source", "protocols", "notes", "entries"}
ALL_COLUMNS = "all"


@dataclass(frozen=True)
class PaperEntry:
    table: str  # table id, e.g. "celebahq", "ablation-mask"
    method: str  # family name ("lapflow", "lfm", ...) or a paper-only method ("ldm", "edifyimage")
    setting: tuple[tuple[str, str], ...]  # sorted (axis, value) pairs that identify the row beside the method
    resolution: int
    column: str  # column group: fid | nfe | time | gflops
    value: float | None  # None: the paper reports no number here (`note` says so)
    note: str = ""

    def setting_for(self, axes: tuple[str, ...]) -> tuple[str, ...]:
        values = dict(self.setting)
        return tuple(values.get(axis, "") for axis in axes)


@dataclass(frozen=True)
class PaperData:
    entries: tuple[PaperEntry, ...] = ()
    protocols: dict[tuple[str, str], str] = field(default_factory=dict)  # (table, column) -> header text
    notes: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)  # (table, column or "all") -> lines
    sources: tuple[str, ...] = ()  # one line per file
    files: tuple[str, ...] = ()  # file names read

    def for_table(self, table: str, column: str) -> list[PaperEntry]:
        return [e for e in self.entries if e.table == table and e.column == column]

    def notes_for(self, table: str, column: str) -> list[str]:
        return [*self.notes.get((table, ALL_COLUMNS), ()), *self.notes.get((table, column), ())]


def _entry(raw: Any, where: str) -> PaperEntry:
    if not isinstance(raw, dict) or not {"table", "method", "resolution", "column"} <= set(raw):
        raise BenchError(f"Paper entry {where} needs table, method, resolution and column.")
    unknown = sorted(set(raw) - ENTRY_KEYS)
    if unknown:
        raise BenchError(f"Paper entry {where} has unknown field(s) {', '.join(unknown)}.")
    value = raw.get("value")
    if value is not None and not isinstance(value, int | float):
        raise BenchError(f"Paper entry {where} has a non-numeric value {value!r}.")
    setting = raw.get("setting") or {}
    if not isinstance(setting, dict):
        raise BenchError(f"Paper entry {where} has a setting that is not a mapping.")
    return PaperEntry(
        table=str(raw["table"]),
        method=str(raw["method"]),
        setting=tuple(sorted((str(k), str(v)) for k, v in setting.items())),
        resolution=int(raw["resolution"]),
        column=str(raw["column"]),
        value=None if value is None else float(value),
        note=str(raw.get("note", "")),
    )


def load_paper(paper_dir: Path | None) -> PaperData:
    """Every results/paper/*.json file, sorted by name; a missing folder gives no paper numbers."""
    if paper_dir is None or not Path(paper_dir).is_dir():
        return PaperData()
    entries: list[PaperEntry] = []
    protocols: dict[tuple[str, str], str] = {}
    notes: dict[tuple[str, str], tuple[str, ...]] = {}
    sources, files = [], []
    for path in sorted(Path(paper_dir).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BenchError(f"Paper data file '{path}' cannot be read ({exc}).") from None
        if not isinstance(data, dict) or set(data) - FILE_KEYS or "entries" not in data:
            raise BenchError(f"Paper data file '{path}' must hold only {', '.join(sorted(FILE_KEYS))}.")
        entries += [_entry(raw, f"{i} of '{path.name}'") for i, raw in enumerate(data["entries"])]
        for table, columns in data.get("protocols", {}).items():
            protocols.update({(table, column): str(text) for column, text in columns.items()})
        for table, columns in data.get("notes", {}).items():
            for column, lines in columns.items():
                notes[(table, column)] = notes.get((table, column), ()) + tuple(str(line) for line in lines)
        sources.append(str(data.get("source", path.name)))
        files.append(path.name)
    keys = [(e.table, e.method, e.setting, e.resolution, e.column) for e in entries]
    duplicates = sorted({k for k in keys if keys.count(k) > 1}, key=str)
    if duplicates:
        raise BenchError(f"Paper data lists the cell {duplicates[0]} more than once.")
    return PaperData(tuple(entries), protocols, notes, tuple(sources), tuple(files))
