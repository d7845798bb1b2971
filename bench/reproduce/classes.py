"""The class-conditional side of `bench reproduce mini` (a carry with class labels, e.g. Imagenette).

- Samples are class-balanced: seed s is drawn with label s mod K (bench.runtime.balanced_labels), so N samples hold
  N / K of each class; N must be a multiple of K.
- Every point is scored at the preset's guidance weight; the last point also at each weight of the sweep
  (default 1, 1.5, 2, 3). Each record names its weight in its sampling spec, config, protocol and extra.guidance.
- Class accuracy: the linear probe (bench.reproduce.probe) fitted once per command on the real training images'
  features (the reference file's labels) classifies the samples; the record carries the probe's accuracy on the
  held-out split's features (Imagenette's val images) beside it.
- At the last point a class grid (one row per class, the same seeds in every row) is saved with a row index
  (grids/classes/<run>-seed<s>-<images>.png and .json), from which `bench report` builds its labelled class grid.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from bench.config import RunConfig
from bench.errors import BenchError
from bench.reproduce.mini import GUIDANCE_SWEEP, Carry, write_json_atomic
from bench.reproduce.probe import Probe, class_accuracy, fit_probe
from bench.reproduce.reference import Reference, features_path, load_split_features

CLASS_GRID_SEEDS = 4  # columns per class in the saved class grid
CLASS_GRID_DIR = "classes"  # under grids/: not a record folder, and not a run x point grid
VAL_SPLIT = "val"


def with_guidance(cfg: RunConfig, weight: float) -> RunConfig:
    return dataclasses.replace(cfg, sample=dataclasses.replace(cfg.sample, guidance=float(weight)))


@dataclass
class ClassScoring:
    """What a class-conditional command scores beyond the unconditional metrics."""

    probe: Probe
    class_names: list[str]
    val_accuracy: float
    val_meta: dict  # the held-out features file: split, count, source_hash, sha256
    sweep: tuple[float, ...] = GUIDANCE_SWEEP
    grid_seeds: int = CLASS_GRID_SEEDS
    grids: list[Path] = field(default_factory=list)
    class_titles: list[str] = field(default_factory=list)  # readable row labels of the class grid

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def weights(self, cfg: RunConfig, final: bool) -> list[float]:
        """The preset's weight first (its samples make the run x point grid row), then the sweep at the last point."""
        own = float(cfg.sample.guidance)
        return list(dict.fromkeys([own, *(self.sweep if final else ())]))

    def accuracy(self, features: Tensor, labels: Tensor) -> tuple[float, dict]:
        """(mean per-class accuracy of the samples, record extras)."""
        acc = class_accuracy(self.probe.predict(features), labels, self.num_classes)
        return acc.mean, {
            "class_accuracy_per_class": list(acc.per_class),
            "class_counts": list(acc.counts),
            "probe_val_accuracy": self.val_accuracy,
            "probe_train_accuracy": self.probe.train_accuracy,
        }

    def protocol(self) -> dict:
        return {**self.probe.describe(), "val_accuracy": self.val_accuracy, "val_features": self.val_meta}

    def save_grid(
        self, folder: Path, tag: str, meta: dict, model: nn.Module, cfg: RunConfig, autoencoder: nn.Module, batch: int
    ) -> list[Path]:
        """The run's class grid at its last point: PNG and its row index (class names, seeds, guidance)."""
        from bench.sample import atomic_write_image, class_grid

        seeds = list(range(self.grid_seeds))
        with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
            image = class_grid(model, seeds, cfg.sample, autoencoder, None, batch, cfg.train.precision)
        path = folder / "grids" / CLASS_GRID_DIR / f"{tag}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_image(image, path)
        index = {**meta, "guidance": float(cfg.sample.guidance), "classes": self.class_names, "seeds": seeds}
        index["titles"] = self.class_titles or self.class_names
        index |= {"columns": len(seeds), "tile": image.height // self.num_classes}
        write_json_atomic(path.with_suffix(".json"), index)
        self.grids += [path, path.with_suffix(".json")]
        return [path, path.with_suffix(".json")]


def check_balanced(num_samples: int, num_classes: int) -> None:
    if num_samples % num_classes or num_samples < 2 * num_classes:
        raise BenchError(
            f"Class-balanced samples need --num-samples a multiple of the {num_classes} classes (at least "
            f"{2 * num_classes}); got {num_samples}."
        )


def parse_sweep(text: str) -> tuple[float, ...]:
    """'1,1.5,2,3' -> (1.0, 1.5, 2.0, 3.0); weights must be distinct and >= 0."""
    try:
        weights = tuple(float(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise BenchError(f"Guidance weights must be numbers like 1,1.5,2,3; got '{text}'.") from None
    if not weights or min(weights) < 0 or len(set(weights)) != len(weights):
        raise BenchError(f"Give distinct non-negative guidance weights like 1,1.5,2,3; got '{text}'.")
    return weights


def class_scoring(
    carry: Carry, reference: Reference, val_features: Path | None, real_features: Path, sweep: tuple[float, ...]
) -> ClassScoring:
    """Fit the probe on the reference's labelled training features; measure it on the held-out split's features."""
    names = carry.class_names
    if reference.labels is None or reference.meta.get("class_names") != names:
        raise BenchError(
            f"The real-image features hold no class labels of the carried classes; rerun `bench reproduce "
            f"mini-prepare --features --val-split {VAL_SPLIT}` on the same data."
        )
    m = carry.manifest
    path = val_features or features_path(Path(real_features).parent, m["dataset"], int(m["res"]), split=VAL_SPLIT)
    val, val_labels, meta = load_split_features(path, carry, reference.features.device)
    probe = fit_probe(reference.features, reference.labels, len(names))
    accuracy = class_accuracy(probe.predict(val), val_labels, len(names)).mean
    keep = {k: meta.get(k) for k in ("split", "count", "source_hash", "sha256")}
    print(
        f"class probe: {probe.iterations} evaluations, train accuracy {probe.train_accuracy:.4f}, "
        f"{meta.get('split')} accuracy {accuracy:.4f} ({len(val)} images)",
        flush=True,
    )
    return ClassScoring(probe, names, accuracy, keep, sweep, class_titles=carry.class_titles)
