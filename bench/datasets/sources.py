"""Data set sources (registry `bench.registry.DATASETS`): what to read, its labels and a fingerprint of it.

- synthetic: generated (bench.datasets.synthetic); no folder.
- celebahq: any folder of images, searched recursively; largest centred square, Lanczos resize to `res`.
- imagenet: one folder per class under `split` ("train" by default; "" for class folders at the top). Images are
  searched recursively inside each class folder, so layouts such as `train/<wnid>/images/*.JPEG` (Tiny ImageNet)
  work as they are. Class ids follow `classes.tsv` (in the split folder or the data set folder; a `wnid` column,
  optional `index` column) when present, else the sorted folder names. ADM center crop.
- imagenette: the same layout and processing (ImageNet's 10-class subset; the class-conditional mini benchmark).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bench.config import DataConfig
from bench.datasets.images import list_images, load_items
from bench.datasets.synthetic import SYNTHETIC_SEED, SYNTHETIC_VERSION, synthetic_items, synthetic_labels
from bench.errors import BenchError

PREPARE_VERSION = 1  # bump when cropping/resizing changes (invalidates prepared caches)
CLASSES_FILE = "classes.tsv"
FOLDER_PREFIXES = {"imagenet": ("imagenet", "imagenette")}  # data-root folder names each data set accepts


def short_hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:8]


def resolve_data_path(cfg: DataConfig, data_root: Path | None) -> Path:
    """cfg.path, else the first folder under the data root whose name starts with the data set name."""
    if cfg.path:
        path = Path(cfg.path).expanduser()
        if not path.is_dir():
            raise BenchError(f"Data folder '{path}' for data set '{cfg.dataset}' does not exist.")
        return path
    if data_root is None:
        raise BenchError(
            f"No folder for data set '{cfg.dataset}': set data.path, or a data root (--data-root or BENCH_DATA_ROOT)."
        )
    prefixes = FOLDER_PREFIXES.get(cfg.dataset, (cfg.dataset,))
    if data_root.is_dir():
        for child in sorted(data_root.iterdir()):
            if child.is_dir() and child.name.lower().startswith(prefixes):
                return child
    raise BenchError(f"No folder starting with '{cfg.dataset}' under the data root '{data_root}'; set data.path.")


class Source:
    """Base: subclasses fill `count`, `labels`, `class_names` and implement items()/fingerprint()."""

    dataset = ""
    crop = ""

    def __init__(self, cfg: DataConfig, data_root: Path | None) -> None:
        self.cfg = cfg
        self.count = 0
        self.labels: np.ndarray | None = None  # int64 [count], class ids (all class-folder data sets keep them)
        self.class_names: list[str] = []
        self.class_titles: list[str] = []  # readable names in label order (classes.tsv 'name'), else class_names
        self.root: Path | None = None

    def cache_name(self) -> str:
        """Folder under the cache dir: <dataset>-<res>-<hash8 of where the data comes from>."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Hash of everything the prepared images depend on (file list, sizes, mtimes, processing)."""
        raise NotImplementedError

    def items(self) -> Iterator[tuple[np.ndarray | None, str | None]]:
        """(uint8 [3, R, R], None) or (None, reason) per item, in order."""
        raise NotImplementedError

    def item_name(self, index: int) -> str:
        return str(index)


class SyntheticSource(Source):
    dataset = "synthetic"
    crop = "generated"

    def __init__(self, cfg: DataConfig, data_root: Path | None = None) -> None:
        super().__init__(cfg, data_root)
        if cfg.synthetic_size <= 0:
            raise BenchError(f"data.synthetic_size must be positive, got {cfg.synthetic_size}.")
        self.count = cfg.synthetic_size
        self.labels = synthetic_labels(self.count, cfg.num_classes)
        self.class_names = [f"class{i}" for i in range(max(cfg.num_classes, 0))]

    def _params(self) -> tuple:
        return ("synthetic", SYNTHETIC_SEED, SYNTHETIC_VERSION, self.cfg.synthetic_size, self.cfg.num_classes)

    def cache_name(self) -> str:
        return f"synthetic-{self.cfg.res}-{short_hash(*self._params())}"

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps([*self._params(), self.cfg.res]).encode()).hexdigest()

    def items(self) -> Iterator[tuple[np.ndarray | None, str | None]]:
        return synthetic_items(self.count, self.cfg.res, max(self.cfg.num_classes, 0))


class FileSource(Source):
    """A list of image files under `root`, prepared with `crop`."""

    def __init__(self, cfg: DataConfig, data_root: Path | None) -> None:
        super().__init__(cfg, data_root)
        self.root = resolve_data_path(cfg, data_root)
        self.files: list[Path] = []

    def cache_name(self) -> str:
        assert self.root is not None
        name = self.cfg.dataset
        return f"{name}-{self.cfg.res}-{short_hash(str(self.root.resolve()), self.cfg.split, name)}"

    def fingerprint(self) -> str:
        digest = hashlib.sha256(json.dumps([PREPARE_VERSION, self.cfg.dataset, self.crop, self.cfg.res]).encode())
        labels = self.labels if self.labels is not None else np.zeros(len(self.files), dtype=np.int64)
        for path, label in zip(self.files, labels.tolist(), strict=True):
            stat = os.stat(path)
            digest.update(f"{self.item_name_of(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\0{label}\n".encode())
        return digest.hexdigest()

    def item_name_of(self, path: Path) -> str:
        assert self.root is not None
        return path.relative_to(self.root).as_posix()

    def item_name(self, index: int) -> str:
        return self.item_name_of(self.files[index])

    def items(self) -> Iterator[tuple[np.ndarray | None, str | None]]:
        return load_items(self.files, self.cfg.res, self.crop)


class FolderSource(FileSource):
    dataset = "celebahq"
    crop = "center"

    def __init__(self, cfg: DataConfig, data_root: Path | None) -> None:
        if cfg.num_classes > 0:
            raise BenchError(f"Data set '{cfg.dataset}' has no classes; set data.num_classes=0.")
        super().__init__(cfg, data_root)
        assert self.root is not None
        self.files = list_images(self.root)
        if not self.files:
            raise BenchError(f"No image files found in '{self.root}' (searched recursively).")
        self.count = len(self.files)


class ClassFolderSource(FileSource):
    dataset = "imagenet"
    crop = "adm"

    def __init__(self, cfg: DataConfig, data_root: Path | None) -> None:
        super().__init__(cfg, data_root)
        assert self.root is not None
        split_dir = self.root / cfg.split if cfg.split else self.root
        if not split_dir.is_dir():
            raise BenchError(f"Data set folder '{self.root}' has no split folder '{cfg.split}' (set data.split).")
        folders = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise BenchError(f"No class folders in '{split_dir}': the imagenet layout is <split>/<class>/<images>.")
        table = next((p for p in (split_dir / CLASSES_FILE, self.root / CLASSES_FILE) if p.is_file()), None)
        self.class_names = self._class_list(table, split_dir, folders)
        titles = read_class_titles(table) if table is not None else {}
        self.class_titles = [titles.get(name, name) for name in self.class_names]
        if cfg.num_classes > 0 and cfg.num_classes != len(self.class_names):
            raise BenchError(
                f"'{split_dir}' has {len(self.class_names)} classes but data.num_classes is {cfg.num_classes}; "
                f"set data.num_classes={len(self.class_names)} (or 0 for unconditional)."
            )
        files, labels, empty = [], [], []
        for label, name in enumerate(self.class_names):
            found = list_images(split_dir / name)
            if not found:
                empty.append(name)
            files += found
            labels += [label] * len(found)
        if empty:
            raise BenchError(f"Class folders with no images in '{split_dir}': {', '.join(empty)}.")
        self.files, self.labels, self.count = files, np.asarray(labels, dtype=np.int64), len(files)

    def _class_list(self, table: Path | None, split_dir: Path, folders: list[str]) -> list[str]:
        """Class names in label order: from the classes table if any (checked against the folders), else sorted."""
        if table is None:
            return folders
        names = read_classes_file(table)
        missing = [n for n in names if n not in folders]
        extra = [f for f in folders if f not in names]
        if missing or extra:
            raise BenchError(
                f"Class folders in '{split_dir}' do not match '{table}': "
                f"missing folders {missing or 'none'}, folders not listed {extra or 'none'}."
            )
        return names


def _classes_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """(lower-case header, rows) of a tab-separated classes file; BenchError when it is empty."""
    rows = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise BenchError(f"Classes file '{path}' is empty.")
    return [h.strip().lower() for h in rows[0]], rows


def read_class_titles(path: Path) -> dict[str, str]:
    """{wnid: readable name} from a classes TSV with 'wnid' and 'name' columns ({} without a 'name' column)."""
    header, rows = _classes_rows(path)
    if "wnid" not in header or "name" not in header:
        return {}
    col, name = header.index("wnid"), header.index("name")
    return {r[col].strip(): r[name].strip() for r in rows[1:] if len(r) > max(col, name) and r[name].strip()}


def read_classes_file(path: Path) -> list[str]:
    """Class names (wnids) in label order from a TSV: header with 'wnid' (and optional 'index'), else one per row."""
    header, rows = _classes_rows(path)
    if "wnid" not in header:
        return [r[0].strip() for r in rows]
    col, idx = header.index("wnid"), header.index("index") if "index" in header else None
    try:
        entries = [(int(r[idx]) if idx is not None else i, r[col].strip()) for i, r in enumerate(rows[1:])]
    except (ValueError, IndexError):
        raise BenchError(
            f"Classes file '{path}' has a malformed row (expected tab-separated wnid and index)."
        ) from None
    if sorted(i for i, _ in entries) != list(range(len(entries))):
        raise BenchError(f"Classes file '{path}' must number its classes 0..{len(entries) - 1} exactly once.")
    return [name for _, name in sorted(entries)]
