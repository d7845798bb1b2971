"""Result records: one JSON file per measurement, written atomically, read back strictly (DESIGN.md).

A record carries its protocol, sampling spec (with the measured NFE), resolved config, seeds, git commit and dirty
flag, and environment, so every number the suite reports can be traced to how it was measured.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.io import atomic_write_json

SCHEMA_VERSION = 1
REQUIRED = (
    "schema_version",
    "model",
    "preset",
    "dataset",
    "resolution",
    "metric",
    "value",
    "unit",
    "protocol",
    "sampling",
    "config",
    "seeds",
    "git",
    "environment",
    "created",
)


@dataclass(frozen=True)
class Record:
    model: str  # family name ("lapflow", "lfm", ...)
    preset: str  # preset or run name
    dataset: str
    resolution: int  # image resolution in px
    metric: str  # fid | clean_fid | gflops_forward | gflops_sample | gflops_decode | time_sampler | time_e2e | nfe
    value: float | None  # None = "n/a" (the family cannot do it; `note` says why)
    unit: str  # "" | "GFLOPs" | "s" | "images/s" | ...
    protocol: dict[str, Any]  # at least {"name": ...}; e.g. fid-tf-5k-celebahq128, time-b1-e2e-bf16
    sampling: dict[str, Any] = field(default_factory=dict)  # SampleSpec fields + measured "nfe"
    config: dict[str, Any] = field(default_factory=dict)  # resolved RunConfig
    seeds: dict[str, Any] = field(default_factory=dict)  # e.g. {"start": 0, "count": 5000}
    git: dict[str, Any] = field(default_factory=dict)  # {"commit": ..., "dirty": ...}
    environment: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # p10/p90, batch, per-call breakdown, ...
    note: str = ""
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def protocol_name(self) -> str:
        return str(self.protocol.get("name", ""))


def make_record(**fields: Any) -> Record:
    """A Record stamped with the git state and creation time (unless given)."""
    from bench.runtime import git_state

    fields.setdefault("git", git_state())
    fields.setdefault("created", datetime.now(UTC).isoformat(timespec="seconds"))
    return Record(**fields)


def run_record(
    cfg: Any, metric: str, value: float | None, unit: str, protocol: dict[str, Any], **fields: Any
) -> Record:
    """A Record about the run/preset `cfg` (a RunConfig): model, preset, data set, resolution and config from it."""
    from bench.config import to_dict

    return make_record(
        model=cfg.family,
        preset=cfg.preset or cfg.run_name,
        dataset=cfg.data.dataset,
        resolution=cfg.data.res,
        metric=metric,
        value=value,
        unit=unit,
        protocol=protocol,
        config=to_dict(cfg),
        **fields,
    )


def record_filename(record: Record) -> str:
    """Stable, readable name: <metric>__<preset>__<res>__<protocol>__<hash8>.json."""
    payload = json.dumps(dataclasses.asdict(record), sort_keys=True, default=str).encode()
    digest = hashlib.sha256(payload).hexdigest()[:8]
    parts = [record.metric, record.preset, str(record.resolution), record.protocol_name or "none", digest]
    return "__".join(re.sub(r"[^A-Za-z0-9._-]+", "-", p) for p in parts) + ".json"


def write_record(record: Record, results_dir: Path, subdir: str = "") -> Path:
    """Write atomically (bench.io: temporary file, fsync, rename; mode 0644): a killed writer leaves no part."""
    folder = Path(results_dir) / subdir if subdir else Path(results_dir)
    path = folder / record_filename(record)
    return atomic_write_json(path, dataclasses.asdict(record), indent=2, sort_keys=True, default=str, fsync=True)


def read_record(path: Path) -> Record:
    """Strict read: unknown schema version, missing or unknown fields are clear errors."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BenchError(f"Result record '{path}' cannot be read ({exc}).") from None
    if not isinstance(data, dict):
        raise BenchError(f"Result record '{path}' is a JSON {type(data).__name__}, not an object.")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BenchError(f"Result record '{path}' has schema version {version}; this suite reads {SCHEMA_VERSION}.")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise BenchError(f"Result record '{path}' lacks the field(s) {', '.join(missing)}.")
    names = {f.name for f in dataclasses.fields(Record)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise BenchError(f"Result record '{path}' has unknown field(s) {', '.join(unknown)}.")
    return Record(**data)


# Folders under results/ that hold no result records: the paper's numbers, raw provenance files of GPU runs, anchors
# and sample grids (with their row index .json).
NON_RECORD_FOLDERS = ("paper", "provenance", "anchors", "grids")


def record_paths(results_dir: Path, exclude: tuple[str, ...] = NON_RECORD_FOLDERS) -> list[Path]:
    """Every record file under results_dir, sorted, skipping hidden files and the folders in `exclude`."""
    root = Path(results_dir)
    return [
        p
        for p in sorted(root.glob("**/*.json"))
        if not p.name.startswith(".") and not (set(p.relative_to(root).parts[:-1]) & set(exclude))
    ]


def load_records(results_dir: Path, exclude: tuple[str, ...] = NON_RECORD_FOLDERS) -> list[Record]:
    """Every record under results_dir (see record_paths)."""
    return [read_record(p) for p in record_paths(results_dir, exclude)]
