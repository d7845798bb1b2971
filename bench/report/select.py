"""Which table row a record belongs to: descriptors read from the record's config, and the table specs.

A row is (resolution, method, setting), where the setting holds the values of the table's axes (e.g. the mask in
the mask ablation). A record enters a table when its dataset matches and every ablation axis of the method that the
table does not vary has its default value (METHODS.md section 1), so ablation runs never leak into the main tables.
Records of a benchmark with a section of its own (extra.benchmark; bench/report/mini.py) enter none of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench import registry
from bench.results import Record

RowKey = tuple[int, str, tuple[str, ...]]  # (resolution, method, setting values in the table's axis order)

# Methods with paper numbers only (results/paper): (display name, row order); families' come from bench.registry.
PAPER_ONLY_METHODS = {
    "ldm": ("LDM", 0),
    "edifyimage": ("EdifyImage", 3),
    "baseline": ("Baseline (unnamed)", 5),
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
    "stage_sampling": "Stage sampling",
    "positions": "Positions",
    "stage_times": "Stage times",
}
# The method's ablation axes and their defaults (METHODS.md section 1); num_scales/critical_times depend on the record.
VARIANT_AXES = (
    "architecture",
    "mask",
    "critical_times",
    "path",
    "num_scales",
    "space",
    "stage_sampling",
    "positions",
    "stage_times",
)
PIXEL = "pixel"
AE_DOWNSAMPLE = 8  # SD-VAE, EQ-VAE and TAESD latents are 8x smaller than the image
UNKNOWN_ORDER = 1000  # a method that is neither registered nor in the paper data: after every known one


def method_label(method: str) -> str:
    if method in registry.FAMILIES:
        return registry.FAMILIES[method].label
    return PAPER_ONLY_METHODS.get(method, (method, 0))[0]


def method_order(method: str) -> tuple[int, str]:
    """Sort key of a method's rows within a resolution (Family.order; paper-only methods interleave)."""
    if method in registry.FAMILIES:
        return (registry.FAMILIES[method].order, method)
    return (PAPER_ONLY_METHODS.get(method, ("", UNKNOWN_ORDER))[1], method)


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


def _latent_side(record: Record) -> int:
    return record.resolution // (1 if autoencoder(record) == PIXEL else AE_DOWNSAMPLE)


def _scales(record: Record, model: dict[str, Any]) -> int:
    """The family's scales hook (bench.registry.Family.num_scales); unregistered methods have one scale."""
    found = registry.FAMILIES.get(record.model)
    return found.num_scales(model, _latent_side(record)) if found else 1


def default_num_scales(record: Record) -> int:
    """The family's default number of scales at the record's latent side (single-scale families: 1)."""
    return _scales(record, {})


def num_scales(record: Record) -> int:
    """The configured number of scales (a multi-scale family's 0 means its default)."""
    return _scales(record, _model(record))


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
        "stage_sampling": str(model.get("stage_sampling", "uniform")),
        "positions": str(model.get("positions", "own")),
        "stage_times": str(model.get("stage_times", "active")),
    }


def default_descriptors(record: Record) -> dict[str, str]:
    """The paper's default variant of the method for this record (critical times: evenly spaced for its own scales)."""
    scales = num_scales(record)
    return {
        "architecture": "MoT",
        "mask": "causal",
        "critical_times": format_times([k / scales for k in range(1, scales)]) if scales > 1 else "",
        "path": "linear",
        "num_scales": str(default_num_scales(record)),
        "space": "latent",
        "stage_sampling": "uniform",
        "positions": "own",
        "stage_times": "active",
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


METHOD, REFERENCE = registry.method().name, registry.reference().name
ABLATION = (METHOD,)
TABLE_SPECS: tuple[TableSpec, ...] = (
    TableSpec("celebahq", "CelebA-HQ, unconditional", "celebahq", ratio=True),
    TableSpec("imagenet", "ImageNet, class-conditional", "imagenet", axes=("backbone", "cfg"), ratio=True),
    TableSpec("ablation-vae", "Ablation: autoencoder (CelebA-HQ)", "celebahq", ("autoencoder",), (METHOD, REFERENCE)),
    TableSpec("ablation-separate", "Ablation: separate networks vs MoT", "celebahq", ("architecture",), ABLATION),
    TableSpec("ablation-mask", "Ablation: attention mask", "celebahq", ("mask",), ABLATION),
    TableSpec("ablation-t1", "Ablation: critical time T_1", "celebahq", ("critical_times",), ABLATION),
    TableSpec("ablation-path", "Ablation: probability path", "celebahq", ("path",), ABLATION),
    TableSpec(
        "ablation-scales",
        "Ablation: number of scales",
        "celebahq",
        ("num_scales",),
        (METHOD, REFERENCE),
        free=("critical_times",),
    ),
    TableSpec("ablation-pixel", "Ablation: pixel vs latent space", "celebahq", ("space",), ABLATION),
)
SPECS_BY_ID = {spec.id: spec for spec in TABLE_SPECS}
