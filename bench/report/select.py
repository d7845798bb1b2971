"""Which table row a record belongs to: descriptors read from the record's config, and the table specs.

A row is (resolution, method, setting), where the setting holds the values of the table's axes (e.g. the mask in
the mask ablation). A record enters a table when its dataset matches and every LapFlow ablation axis that the table
does not vary has its default value (METHODS.md section 1), so ablation runs never leak into the main tables.
Records of a benchmark with a section of its own (extra.benchmark; bench/report/mini.py) enter none of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.results import Record

RowKey = tuple[int, str, tuple[str, ...]]  # (resolution, method, setting values in the table's axis order)

METHOD_LABELS = {  # display names; the order is the row order within a resolution
    "ldm": "LDM",
    "lfm": "LFM",
    "pyramidal-flow": "Pyramidal Flow",
    "edifyimage": "EdifyImage",
    "dit": "DiT",
    "baseline": "Baseline (unnamed)",
    "lapflow": "LapFlow",
}
AXIS_HEADERS = {
    "backbone": "Backbone",
    "cfg": "CFG",
    "autoencoder": "Autoencoder",
    "architecture": "Architecture",
    "mask": "Mask",
    "critical_times": "Critical times",
    "path": "Path",
    "num_scales": "Scales",
    "space": "Space",
}
# LapFlow ablation axes and their defaults (METHODS.md section 1); num_scales/critical_times depend on the record.
VARIANT_AXES = ("architecture", "mask", "critical_times", "path", "num_scales", "space")
PIXEL = "pixel"
AE_DOWNSAMPLE = 8  # SD-VAE, EQ-VAE and TAESD latents are 8x smaller than the image
TWO_SCALE_MAX_LATENT = 32  # LapFlow default: 2 scales up to a 32 px latent side, else 3 (models/lapflow/config.py)


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def method_order(method: str) -> tuple[int, str]:
    order = list(METHOD_LABELS)
    return (order.index(method) if method in order else len(order), method)


def _model(record: Record) -> dict[str, Any]:
    model = record.config.get("model", {})
    return model if isinstance(model, dict) else {}


def autoencoder(record: Record) -> str:
    data = record.config.get("data", {})
    return str(data.get("autoencoder", "")) if isinstance(data, dict) else ""


def backbone(record: Record) -> str:
    """'XL/2' for a named DiT size; 'd4-w128/4' when depth/width override it (tiny presets)."""
    bb = _model(record).get("backbone")
    if not isinstance(bb, dict):
        return ""
    size, patch = bb.get("size", "?"), bb.get("patch", "?")
    if bb.get("depth") or bb.get("hidden"):
        return f"d{bb.get('depth')}-w{bb.get('hidden')}/{patch}"
    return f"{size}/{patch}"


def guidance(record: Record) -> float:
    sample = record.config.get("sample", {})
    fallback = sample.get("guidance", 1.0) if isinstance(sample, dict) else 1.0
    return float(record.sampling.get("guidance", fallback) or 1.0)


def solver(record: Record) -> str:
    name = str(record.sampling.get("solver", ""))
    steps = record.sampling.get("steps")
    return f"{name} {steps}" if name in {"euler", "heun", "ddpm", "ddim"} and steps else name


def default_num_scales(record: Record) -> int:
    """LapFlow's default for the record's latent side (models/lapflow/config.py); LFM and others are one scale."""
    if record.model != "lapflow":
        return 1
    side = record.resolution // (1 if autoencoder(record) == PIXEL else AE_DOWNSAMPLE)
    return 2 if side <= TWO_SCALE_MAX_LATENT else 3


def num_scales(record: Record) -> int:
    """The configured number of scales (LapFlow's 0 means the default)."""
    configured = int(_model(record).get("num_scales", 0) or 0) if record.model == "lapflow" else 0
    return configured or default_num_scales(record)


def format_times(times: Any) -> str:
    values = times if isinstance(times, list | tuple) else [times]
    return ", ".join(f"{float(t):.3g}" for t in values)


def descriptors(record: Record) -> dict[str, str]:
    """Every axis value of a record, as the strings the paper data uses."""
    model = _model(record)
    scales = num_scales(record)
    times = model.get("critical_times") or [k / scales for k in range(1, scales)]
    return {
        "backbone": backbone(record),
        "cfg": f"{guidance(record):g}",
        "autoencoder": autoencoder(record),
        "architecture": "separate" if model.get("separate_networks") else "MoT",
        "mask": str(model.get("mask", "causal")),
        "critical_times": format_times(times) if scales > 1 else "",
        "path": str(model.get("path", "linear")),
        "num_scales": str(scales),
        "space": PIXEL if autoencoder(record) == PIXEL else "latent",
    }


def default_descriptors(record: Record) -> dict[str, str]:
    """The paper's default LapFlow variant for this record (critical times: evenly spaced for its own scales)."""
    scales = num_scales(record)
    return {
        "architecture": "MoT",
        "mask": "causal",
        "critical_times": format_times([k / scales for k in range(1, scales)]) if scales > 1 else "",
        "path": "linear",
        "num_scales": str(default_num_scales(record)),
        "space": "latent",
    }


def in_benchmark(record: Record) -> bool:
    """Records of a benchmark with a report section of its own (extra.benchmark, e.g. the mini benchmark's)."""
    return bool(record.extra.get("benchmark"))


def variant_axes(record: Record) -> set[str]:
    """Ablation axes on which the record differs from the paper's default."""
    have, want = descriptors(record), default_descriptors(record)
    return {axis for axis in VARIANT_AXES if have[axis] != want[axis]}


@dataclass(frozen=True)
class TableSpec:
    id: str
    title: str
    dataset: str
    axes: tuple[str, ...] = ()  # setting columns beside Res and Method
    methods: tuple[str, ...] = ()  # empty: every family
    free: tuple[str, ...] = ()  # variant axes that may differ from the default (besides `axes`)
    ratio: bool = False  # add "/ LFM" ratio columns
    groups: tuple[str, ...] = ("fid", "nfe", "time", "gflops")

    def row_key(self, record: Record) -> RowKey | None:
        if record.dataset != self.dataset or (self.methods and record.model not in self.methods):
            return None
        if in_benchmark(record):  # e.g. the mini benchmark: its own section, never rows of the paper's tables
            return None
        if variant_axes(record) - set(self.axes) - set(self.free):
            return None
        values = descriptors(record)
        return (record.resolution, record.model, tuple(values[axis] for axis in self.axes))

    @property
    def headers(self) -> list[str]:
        return ["Res", "Method"] + [AXIS_HEADERS.get(axis, axis) for axis in self.axes]


ABLATION = ("lapflow",)
TABLE_SPECS: tuple[TableSpec, ...] = (
    TableSpec("celebahq", "CelebA-HQ, unconditional", "celebahq", ratio=True),
    TableSpec("imagenet", "ImageNet, class-conditional", "imagenet", axes=("backbone", "cfg"), ratio=True),
    TableSpec("ablation-vae", "Ablation: autoencoder (CelebA-HQ)", "celebahq", ("autoencoder",), ("lapflow", "lfm")),
    TableSpec("ablation-separate", "Ablation: separate networks vs MoT", "celebahq", ("architecture",), ABLATION),
    TableSpec("ablation-mask", "Ablation: attention mask", "celebahq", ("mask",), ABLATION),
    TableSpec("ablation-t1", "Ablation: critical time T_1", "celebahq", ("critical_times",), ABLATION),
    TableSpec("ablation-path", "Ablation: probability path", "celebahq", ("path",), ABLATION),
    TableSpec(
        "ablation-scales",
        "Ablation: number of scales",
        "celebahq",
        ("num_scales",),
        ("lapflow", "lfm"),
        free=("critical_times",),
    ),
    TableSpec("ablation-pixel", "Ablation: pixel vs latent space", "celebahq", ("space",), ABLATION),
)
SPECS_BY_ID = {spec.id: spec for spec in TABLE_SPECS}
