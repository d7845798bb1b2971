"""Lazy registries: name -> "module:attr". Nothing is imported until a name is loaded.

A model family is ONE `Family` record (FAMILIES): its builder, config class and presets as "module:attr", its
display label, row order and plot colour, its mini-benchmark runs and its cost hooks. The report, perf and
reproduce code read these records; `register` adds one at run time. CLI choices and `bench ls` come from the
tables below; unknown names get one sentence with the closest match.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.errors import BenchError

ROLES = ("method", "reference", "baseline")  # the method under study; the single-scale reference it is divided by
MINI_DATASET = "celebahq"  # the data set of Family.mini_runs; other data sets' mini runs are in Family.mini_sets


def load_target(target: str) -> Any:
    """The attribute named by "module:attr"."""
    module_name, attr = target.split(":")
    return getattr(importlib.import_module(module_name), attr)


@dataclass(frozen=True)
class Family:
    """Everything the harness knows about one model family; the code itself lives in the family's package."""

    name: str  # CLI and record name, kebab case ("pyramidal-flow")
    label: str  # display name in tables and plots
    builder: str  # "module:attr" of `build(model_cfg, latent_shape, num_classes) -> GenerativeModel`
    config: str  # "module:attr" of the frozen config dataclass (a torch-free module)
    presets: str  # "module:attr" of {preset name: nested override dict} (same torch-free module)
    order: int = 99  # row order within a resolution (paper-only methods interleave: bench/report/select.py)
    color: str = "tab:cyan"  # matplotlib colour of its plot series
    role: str = "baseline"  # one of ROLES
    # Mini benchmark: run name -> preset; the first run is the family's headline run (one table row per family).
    mini_runs: Mapping[str, str] = field(default_factory=dict)
    mini_default: tuple[str, ...] = ()  # runs besides the headline one that `bench reproduce mini` trains by default
    mini_ablations: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)  # axis -> (run, label)
    paper_better_than: str = ""  # the family the paper's CelebA-HQ 256 FID puts behind this one ("" none)
    # Mini runs on other data sets (`bench reproduce mini --dataset`) or at another resolution of one (key data set +
    # px, "celebahq256", picked by a carry of that resolution): key -> run name -> preset; the first run of each is
    # the family's headline run there. Run names match mini_runs' so tables line up across data sets.
    mini_sets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # Cost hooks: "module:attr" of `scales(model: dict, latent_side: int) -> int` (None: one scale), the NFE of the
    # paper's CelebA-HQ 256 sampler (None: not reported), the module whose masked_attention/prefix_attention
    # `bench perf attention` times, and the model overrides that `bench perf forward` times (one record each).
    scales: str | None = None
    paper_nfe: int | None = None
    attention: str | None = None
    forward_variants: tuple[Mapping[str, Any], ...] = ({},)
    perf_forward: bool = True  # timed by default in `bench perf forward`

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise BenchError(f"Family '{self.name}': role '{self.role}' is not one of {', '.join(ROLES)}.")

    @property
    def headline_run(self) -> str | None:
        return next(iter(self.mini_runs), None)

    def mini_runs_of(self, dataset: str = MINI_DATASET) -> Mapping[str, str]:
        """The family's mini runs (run -> preset) on `dataset`."""
        return self.mini_runs if dataset == MINI_DATASET else self.mini_sets.get(dataset, {})

    def num_scales(self, model: Mapping[str, Any], latent_side: int) -> int:
        """Scales (or stages) of a config given as a record's model dict; 1 for a single-scale family."""
        return int(load_target(self.scales)(model, latent_side)) if self.scales else 1


FAMILIES: dict[str, Family] = {}  # registration order: the mini benchmark's headline order


def register(family: Family) -> Family:
    """Add a family (tests, plug-ins); its name must be new."""
    if family.name in FAMILIES:
        raise BenchError(f"A family named '{family.name}' is registered already.")
    FAMILIES[family.name] = family
    return family


def unregister(name: str) -> Family:
    return FAMILIES.pop(name)


def family(name: str) -> Family:
    return FAMILIES[MODELS.check(name)]


def families() -> list[Family]:
    return list(FAMILIES.values())


def _with_role(role: str) -> Family:
    return next(f for f in FAMILIES.values() if f.role == role)


def method() -> Family:
    """The method under study (its ablations and goals)."""
    return _with_role("method")


def reference() -> Family:
    """The single-scale reference (the '/ LFM' ratio columns; the other side of the perf goals)."""
    return _with_role("reference")


class _FamilyField(Mapping[str, str]):
    """A live {family name: one "module:attr" field} view of FAMILIES."""

    def __init__(self, attr: str) -> None:
        self.attr = attr

    def __getitem__(self, name: str) -> str:
        return getattr(FAMILIES[name], self.attr)

    def __iter__(self) -> Iterator[str]:
        return iter(FAMILIES)

    def __len__(self) -> int:
        return len(FAMILIES)


@dataclass(frozen=True)
class Registry:
    kind: str  # "model", "dataset", ... used in messages
    table: Mapping[str, str]

    def names(self) -> list[str]:
        return sorted(self.table)

    def check(self, name: str) -> str:
        if name in self.table:
            return name
        raise BenchError(unknown_name_message(self.kind, name, self.names()))

    def load(self, name: str) -> Any:
        return load_target(self.table[self.check(name)])


def unknown_name_message(kind: str, name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"Unknown {kind} '{name}'; choose one of: {', '.join(choices)}.{hint}"


def _lapflow_mini(suffix: str = "") -> str:
    return f"lapflow-celebahq128-mini{suffix}"


register(
    Family(
        "lapflow",
        "LapFlow",
        builder="models.lapflow.model:build",
        config="models.lapflow.config:LapFlowConfig",
        presets="models.lapflow.config:PRESETS",
        order=6,
        color="tab:red",
        role="method",
        mini_runs={
            "lapflow": _lapflow_mini(),
            "lapflow-mask-none": _lapflow_mini("-mask-none"),  # ablation: no block mask (all scales see all)
            "lapflow-mask-self": _lapflow_mini("-mask-self"),  # ablation: each scale attends only to itself
            "lapflow-t1-0.3": _lapflow_mini("-t1-0.3"),  # ablation: critical time T1 = 0.3 (default 0.5)
            "lapflow-t1-0.7": _lapflow_mini("-t1-0.7"),
            "lapflow-scales-1": _lapflow_mini("-scales-1"),  # ablation: one scale (the MoT reduces to LFM)
            "lapflow-scales-3": _lapflow_mini("-scales-3"),
            "lapflow-ts1000": _lapflow_mini("-ts1000"),  # time-embedding ablation: the network sees 1000 t
            "lapflow-lr1e-4": _lapflow_mini("-lr1e-4"),  # learning-rate ablation (the recipe's 2e-4 halved, doubled)
            "lapflow-lr4e-4": _lapflow_mini("-lr4e-4"),
            # stage-sampling ablation: steps of 2 x 128 micro-batches, stages uniform (control) or stratified
            "lapflow-mb128": _lapflow_mini("-mb128"),
            "lapflow-stratified": _lapflow_mini("-stratified"),
            # positional-code ablation: every scale's sin-cos positions on the finest token grid
            "lapflow-aligned": _lapflow_mini("-aligned"),
            # stage-time ablation: each stage trains on its own sampler segment, stages drawn by segment length
            "lapflow-segment": _lapflow_mini("-segment"),
        },
        mini_default=("lapflow-mask-none", "lapflow-mask-self"),
        mini_ablations={  # the default run (lapflow) sits in each
            "mask": (("lapflow", "causal"), ("lapflow-mask-none", "none"), ("lapflow-mask-self", "self")),
            "critical_time": (("lapflow-t1-0.3", "0.3"), ("lapflow", "0.5"), ("lapflow-t1-0.7", "0.7")),
            "num_scales": (("lapflow-scales-1", "1"), ("lapflow", "2"), ("lapflow-scales-3", "3")),
            # A cause that would apply to every flow family alike (issue #14), so its table holds all three.
            "time_scale": (
                ("lapflow", "LapFlow t x1"),
                ("lfm", "LFM t x1"),
                ("pyramidal-flow", "Pyramidal Flow t x1"),
                ("lapflow-ts1000", "LapFlow t x1000"),
                ("lfm-ts1000", "LFM t x1000"),
                ("pyramidal-flow-ts1000", "Pyramidal Flow t x1000"),
            ),
            # Does the LapFlow-LFM gap depend on the learning rate? Both families at three rates.
            "learning_rate": (
                ("lapflow-lr1e-4", "LapFlow lr 1e-4"),
                ("lapflow", "LapFlow lr 2e-4"),
                ("lapflow-lr4e-4", "LapFlow lr 4e-4"),
                ("lfm-lr1e-4", "LFM lr 1e-4"),
                ("lfm", "LFM lr 2e-4"),
                ("lfm-lr4e-4", "LFM lr 4e-4"),
            ),
            # Does the fine expert trail because it is updated on only half of the steps (one stage per step of one
            # micro-batch)? Stratified steps update every expert every step; 2 x 128 uniform isolates accumulation.
            "stage_sampling": (
                ("lapflow", "uniform, 1 x 256"),
                ("lapflow-mb128", "uniform, 2 x 128"),
                ("lapflow-stratified", "stratified, 2 x 128"),
            ),
            # Does one global attention need positions that match across scales? On its own grid coarse (i, j) gets
            # fine (i, j)'s code though it covers fine (2i..2i+1, 2j..2j+1); aligned puts it at (2i + 0.5, 2j + 0.5).
            "positions": (("lapflow", "own grid (METHODS.md)"), ("lapflow-aligned", "aligned to the finest grid")),
            # Is the coarse-only segment the sampler runs ([0, T1]) undertrained? Under METHODS.md's t ~ U[T_{s+1}, 1]
            # the coarse-only stage spends half its draws after T1, where the causal mask makes them repeat the
            # coarse half of stage 0: [0, T1] gets half of LFM's training density. Segment times make it uniform.
            "stage_times": (
                ("lapflow", "t ~ U[T_{s+1}, 1] (METHODS.md)"),
                ("lapflow-segment", "t ~ U[T_{s+1}, T_s], stages by segment length"),
            ),
        },
        paper_better_than="lfm",
        mini_sets={
            "imagenette": {"lapflow": "lapflow-imagenette128-mini"},
            "celebahq256": {"lapflow": "lapflow-celebahq256-mini"},
        },
        scales="models.lapflow.config:scales_of",
        paper_nfe=80,  # CelebA-HQ 256 (METHODS.md section 5)
        attention="models.lapflow.attention",
        forward_variants=({"attention": "prefix"}, {"attention": "masked"}),
    )
)
register(
    Family(
        "lfm",
        "LFM",
        builder="baselines.lfm.model:build",
        config="baselines.lfm.config:LFMConfig",
        presets="baselines.lfm.config:PRESETS",
        order=1,
        color="tab:blue",
        role="reference",
        mini_runs={
            "lfm": "lfm-celebahq128-mini",
            "lfm-ts1000": "lfm-celebahq128-mini-ts1000",
            "lfm-lr1e-4": "lfm-celebahq128-mini-lr1e-4",
            "lfm-lr4e-4": "lfm-celebahq128-mini-lr4e-4",
        },
        mini_sets={"imagenette": {"lfm": "lfm-imagenette128-mini"}, "celebahq256": {"lfm": "lfm-celebahq256-mini"}},
        paper_better_than="pyramidal-flow",
        paper_nfe=89,  # CelebA-HQ 256 (METHODS.md section 5)
    )
)
register(
    Family(
        "pyramidal-flow",
        "Pyramidal Flow",
        builder="baselines.pyramidal_flow.model:build",
        config="baselines.pyramidal_flow.config:PyramidalFlowConfig",
        presets="baselines.pyramidal_flow.config:PRESETS",
        order=2,
        color="tab:green",
        mini_runs={
            "pyramidal-flow": "pyramidal-flow-celebahq128-mini",
            "pyramidal-flow-ts1000": "pyramidal-flow-celebahq128-mini-ts1000",
        },
        mini_sets={
            "imagenette": {"pyramidal-flow": "pyramidal-flow-imagenette128-mini"},
            "celebahq256": {"pyramidal-flow": "pyramidal-flow-celebahq256-mini"},
        },
    )
)
register(
    Family(
        "dit",
        "DiT",
        builder="baselines.dit.model:build",
        config="baselines.dit.config:DiTConfig",
        presets="baselines.dit.config:PRESETS",
        order=4,
        color="tab:purple",
        mini_runs={"dit": "dit-celebahq128-mini"},
        # cfg3: guidance on the first 3 of 4 latent channels, as DiT's released sampler (an option, not the default)
        mini_sets={
            "imagenette": {"dit": "dit-imagenette128-mini", "dit-cfg3": "dit-imagenette128-mini-cfg3"},
            "celebahq256": {"dit": "dit-celebahq256-mini"},
        },
        perf_forward=False,  # its network is LFM's DiT forward
    )
)

# Views of FAMILIES by field, for the code that only needs one table (live: a registered family appears at once).
MODELS = Registry("model", _FamilyField("builder"))  # the adapter factory
MODEL_CONFIGS = Registry("model", _FamilyField("config"))  # each family's frozen config dataclass
PRESET_TABLES = Registry("model", _FamilyField("presets"))  # each family's presets

DATASETS = Registry(
    "dataset",
    {
        "synthetic": "bench.data:SyntheticSource",
        "celebahq": "bench.data:FolderSource",
        "imagenet": "bench.data:ClassFolderSource",
        "imagenette": "bench.data:ClassFolderSource",  # ImageNet's 10-class subset: the class-conditional mini data
    },
)

# Autoencoders: an `AutoencoderSpec` constant each (geometry, scale, weights source); `load_autoencoder` builds it.
AUTOENCODERS = Registry(
    "autoencoder",
    {
        "pixel": "bench.autoencoders:PIXEL",
        "taesd": "bench.autoencoders:TAESD",
        "taesd3": "bench.autoencoders:TAESD3",
        "sd-vae-ft-mse": "bench.autoencoders:SD_VAE_FT_MSE",
        "sd-vae-ft-ema": "bench.autoencoders:SD_VAE_FT_EMA",
        "eq-vae": "bench.autoencoders:EQ_VAE",
    },
)


def all_presets() -> dict[str, tuple[str, dict]]:
    """{preset name: (family, overrides)} over every family."""
    out: dict[str, tuple[str, dict]] = {}
    for owner in PRESET_TABLES.names():
        for name, overrides in PRESET_TABLES.load(owner).items():
            out[name] = (owner, overrides)
    return out


def preset(name: str) -> tuple[str, dict]:
    presets = all_presets()
    if name not in presets:
        raise BenchError(unknown_name_message("preset", name, sorted(presets)))
    return presets[name]


def mini_models(dataset: str = MINI_DATASET) -> dict[str, str]:
    """Every family's mini-benchmark runs on `dataset`: run name -> preset, families in registration order."""
    return {run: p for f in FAMILIES.values() for run, p in f.mini_runs_of(dataset).items()}


def mini_headline_runs(dataset: str = MINI_DATASET) -> tuple[str, ...]:
    """The main comparison of the mini benchmark on `dataset`: each family's headline run there."""
    return tuple(run for f in FAMILIES.values() for run in list(f.mini_runs_of(dataset))[:1])


def mini_datasets() -> tuple[str, ...]:
    """The data sets with mini runs: the CelebA-HQ one first, then the others by name."""
    return (MINI_DATASET, *sorted({d for f in FAMILIES.values() for d in f.mini_sets} - {MINI_DATASET}))


def mini_ablations() -> dict[str, tuple[tuple[str, str], ...]]:
    """Ablation tables of the mini benchmark: axis -> ((run, setting label), ...)."""
    return {axis: runs for f in FAMILIES.values() for axis, runs in f.mini_ablations.items()}


def mini_default_runs() -> tuple[str, ...]:
    """What `bench reproduce mini` trains without --models: the headline runs, then each family's defaults."""
    return (*mini_headline_runs(), *(run for f in FAMILIES.values() for run in f.mini_default))
