"""The mini benchmark's figures: FID curves per resolution and one sample grid per section with each row labelled.

Curves: FID (the section's one FID protocol) against images seen and against GPU seconds, one line per headline run
(mean over training seeds at each point common to all of its seeds) with min-max error bars over the seeds; log x.
Sample grid: each `bench reproduce mini` command leaves a raw grid results/mini/<dataset><res>/grids/<tag>.png (or
grid-<tag>.png there) with its row index beside it, the same name in .json ({"rows": [{"run", "train_seed", "point",
"images_seen"}, ...], "columns", "tile"}). The report writes ONE grid per section, samples/mini-<dataset><res>-runs.png:
one row per run (headline runs, then ablations, then any other run), each the run at its largest images seen for
training seed 0 (else its lowest seed) cut from the newest raw grid holding it, labelled with run, seed and images
seen (PIL's default font; same inputs, same bytes). A raw grid without an index that fits its image is not used.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.registry import mini_ablations, mini_headline_runs
from bench.report.mini import Run, Section, fmt_images
from bench.report.plots import Files, _figure, _legend, _save, _scale, _style, method_color
from bench.report.select import method_label
from bench.reproduce.mini import MINI_SUBDIR

X_AXES = {"images": "Images seen", "gpu-seconds": "GPU seconds of training (compilation included where compiled)"}
MARKERS = "os^DvP"
LINESTYLES = ("-", "--", "-.", ":")
LABEL_PAD = 6  # px around the row labels of a grid


@dataclass(frozen=True)
class CurvePoint:
    x: float  # mean over seeds
    x_low: float
    x_high: float
    fid: float  # mean over seeds
    fid_low: float
    fid_high: float


def _points(run: Run, x_axis: str) -> list[CurvePoint]:
    out = []
    for images in run.images("fid"):
        stat = run.stat("fid", images)
        if stat is None:
            continue
        if x_axis == "images":
            xs = [float(images)]
        else:
            seconds = (i.record.extra.get("gpu_seconds") for i in run.records("fid", images))
            xs = [float(v) for v in seconds if isinstance(v, int | float)]
            if len(xs) != stat.n or min(xs) <= 0:
                continue
        mean = sum(xs) / len(xs)
        out.append(CurvePoint(mean, min(xs), max(xs), stat.mean, min(stat.values), max(stat.values)))
    return out


def budget_runs(section: Section, name: str) -> list[tuple[int, Run]]:
    """The run's training budgets (extra.budget_images), each as the Run of the FID records trained to it (newest per
    seed and point), in budget order. A curve follows one training run: a 4x budget's points carry its own GPU
    seconds and training path, so they are drawn as a line of their own, not joined to the shorter runs' points."""
    by_budget: dict[int, Run] = {}
    items = [i for i in section.placed if i.record.extra.get("run") == name and i.record.metric == "fid"]
    for item in sorted(items, key=lambda i: (i.record.created, str(i.path))):  # the newest comes last and stays
        extra = item.record.extra
        budget = extra.get("budget_images")
        if isinstance(budget, int):
            run = by_budget.setdefault(budget, Run(name, item.record.model))
            run.points.setdefault(extra["train_seed"], {}).setdefault(extra["images_seen"], {})["fid"] = item
    return sorted(by_budget.items())


def curve_series(section: Section, x_axis: str) -> dict[tuple[str, int], tuple[Run, list[CurvePoint]]]:
    """(headline run, budget) -> (its records at that budget, their points), for those with at least one point."""
    series = {}
    for name in mini_headline_runs():
        for budget, run in budget_runs(section, name) if name in section.runs else []:
            points = _points(run, x_axis)
            if points:
                series[(name, budget)] = (run, points)
    return series


def curve_stem(section: Section, x_axis: str) -> str:
    return f"mini-{section.tag}-fid-vs-{x_axis}"


def curve_stems(section: Section) -> list[str]:
    """The curves this section has data for (plots/<stem>.png and .pdf)."""
    return [curve_stem(section, x) for x in X_AXES if curve_series(section, x)]


def _image_ticks(ax: Any, xs: list[float]) -> None:
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log", base=2)
    ticks = sorted(set(xs))
    if len(ticks) <= 10:
        ax.set_xticks(ticks, [fmt_images(t) for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())


def curve(section: Section, x_axis: str) -> Files:
    series = curve_series(section, x_axis)
    if not series:
        return {}
    with _style():
        fig, (ax,) = _figure(width=6.0, height=4.6)
        xs = []
        families = list(dict.fromkeys(name for name, _ in series))
        shorter = {name: min(b for n, b in series if n == name) for name in families}
        for (name, budget), (run, points) in series.items():
            i, longer = families.index(name), budget > shorter[name]
            n = len(run.seeds)
            ax.errorbar(
                [p.x for p in points],
                [p.fid for p in points],
                yerr=[[p.fid - p.fid_low for p in points], [p.fid_high - p.fid for p in points]],
                xerr=[[p.x - p.x_low for p in points], [p.x_high - p.x for p in points]],
                color=method_color(run.family),
                marker=MARKERS[i % len(MARKERS)],
                markerfacecolor="none" if longer else None,  # a longer budget: hollow markers, thin line
                linestyle=LINESTYLES[i % len(LINESTYLES)],
                linewidth=0.9 if longer else None,
                capsize=3,
                label=f"{method_label(run.family)} ({name}, {fmt_images(budget)} budget, {n} seed{'s' * (n > 1)})",
            )
            xs += [p.x for p in points]
        suffix = " (log)"
        if x_axis == "images":
            _image_ticks(ax, xs)
        else:
            suffix = _scale(ax, "x", force=True)
        ax.set_xlabel(X_AXES[x_axis] + suffix)
        ax.set_ylabel(f"FID [{section.protocols.get('fid')}] (lower is better)")
        ax.set_title(f"Mini benchmark {section.dataset} {section.res} px: mean over seeds, bars min-max", fontsize=8)
        _legend(ax)
        return _save(fig, curve_stem(section, x_axis))


def raw_grids(results_dir: Path, section: Section) -> list[Path]:
    """Every raw grid of the section: results/mini/<tag>/grids/*.png and the older layout's grid-*.png there."""
    folder = Path(results_dir) / MINI_SUBDIR / section.tag
    return sorted([*folder.glob("grid-*.png"), *folder.glob("grids/*.png")])


@dataclass(frozen=True)
class GridRow:
    """One row of a raw grid: the run, training seed and images seen it shows, and where its tiles lie."""

    run: str
    seed: int
    images: int
    grid: Path
    tiles: tuple[tuple[int, int, int, int], ...]  # its tiles' (left, top, right, bottom) px in the raw grid, in order
    created: str  # the grid's provenance time, "" when unknown

    @property
    def label(self) -> str:
        return f"{self.run} (seed {self.seed})\n{fmt_images(self.images)} images"


def _created(grid: Path) -> str:
    """When the command that drew the grid started: provenance/<tag>.json's "created" ("" when unknown)."""
    folder = grid.parent.parent if grid.parent.name == "grids" else grid.parent
    try:
        created = json.loads((folder / "provenance" / f"{grid.stem.removeprefix('grid-')}.json").read_text())["created"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return created if isinstance(created, str) else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tiles_per_row(grid: Path, rows: int, columns: int, tile: int, size: tuple[int, int]) -> int | None:
    """How many tiles each index row has, of the counts that fit the image (None when none does).

    bench/reproduce/benchmark.py concatenates the rows' images (a point's first `columns` images; fewer where its first
    sample batch is smaller, the same count for every point of one command) and lays them out `columns` to a tile row,
    black after the last (bench.sample.image_grid). Where several counts fit, the trailing black tiles decide.
    """
    width, height = size
    if width % columns or height % tile:
        return None
    tile_rows, tile_width = height // tile, width // columns
    fits = [k for k in range(columns, 0, -1) if -(-rows * k // columns) == tile_rows]
    if len(fits) <= 1:
        return fits[0] if fits else None
    import numpy as np
    from PIL import Image

    with Image.open(grid) as image:
        pixels = np.asarray(image.convert("RGB"))

    def blank(slot: int) -> bool:
        r, c = divmod(slot, columns)
        return not pixels[r * tile : (r + 1) * tile, c * tile_width : (c + 1) * tile_width].any()

    filled = tile_rows * columns  # tiles up to the last one that is not all black
    while filled and blank(filled - 1):
        filled -= 1
    return next((k for k in fits if rows * k <= filled), None)


def index_rows(grid: Path) -> list[GridRow] | None:
    """The grid's rows as its index (the .json beside it) lists them; None without an index that fits the image.
    Index row i is tiles i*k .. (i+1)*k - 1 in reading order (k: _tiles_per_row; `columns` in every grid so far)."""
    from PIL import Image

    try:
        index = json.loads(grid.with_suffix(".json").read_text())
        rows, columns, tile = index["rows"], index["columns"], index["tile"]
        with Image.open(grid) as image:
            size = image.size
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(rows, list) or not rows or not _is_int(columns) or not _is_int(tile) or min(columns, tile) < 1:
        return None
    per_row = _tiles_per_row(grid, len(rows), columns, tile, size)
    if per_row is None:
        return None
    tile_width, created, out = size[0] // columns, _created(grid), []
    for i, row in enumerate(rows):
        places = [divmod(j, columns) for j in range(i * per_row, (i + 1) * per_row)]
        tiles = tuple((c * tile_width, r * tile, (c + 1) * tile_width, (r + 1) * tile) for r, c in places)
        fields = [row.get(k) for k in ("run", "train_seed", "images_seen")] if isinstance(row, dict) else []
        if fields and isinstance(fields[0], str) and _is_int(fields[1]) and _is_int(fields[2]):
            out.append(GridRow(fields[0], fields[1], fields[2], grid, tiles, created))
    return out


def _row_order(runs: set[str]) -> list[str]:
    """The headline runs, then the ablation runs (bench.registry order), then any other run by name."""
    named = [*mini_headline_runs(), *(run for settings in mini_ablations().values() for run, _ in settings)]
    order = [run for run in dict.fromkeys(named) if run in runs]
    return order + sorted(runs - set(order))


def sample_rows(results_dir: Path, section: Section) -> list[GridRow]:
    """One row per run: its training seed 0 (else its lowest seed) at the largest images seen any raw grid shows for
    that seed, taken from the newest grid that holds it (provenance time, then name; its first such row)."""
    found: dict[str, list[GridRow]] = {}
    for grid in raw_grids(results_dir, section):
        for row in index_rows(grid) or []:
            found.setdefault(row.run, []).append(row)
    chosen = []
    for run in _row_order(set(found)):
        rows = found[run]
        seed = 0 if any(r.seed == 0 for r in rows) else min(r.seed for r in rows)
        images = max(r.images for r in rows if r.seed == seed)
        best = [r for r in rows if (r.seed, r.images) == (seed, images)]
        chosen.append(max(best, key=lambda r: (r.created, r.grid.as_posix(), -r.tiles[0][1], -r.tiles[0][0])))
    return chosen


def sample_grid_name(section: Section) -> str:
    return f"samples/mini-{section.tag}-runs.png"


def sample_grid(rows: list[GridRow]) -> bytes:
    """The rows stacked in order, each labelled in a white margin on the left (PNG bytes; same inputs, same bytes)."""
    from PIL import Image, ImageDraw, ImageFont

    opened: dict[Path, Image.Image] = {}
    for row in rows:
        if row.grid not in opened:
            with Image.open(row.grid) as image:
                opened[row.grid] = image.convert("RGB")
    heights = [max(b[3] - b[1] for b in row.tiles) for row in rows]
    widths = [sum(b[2] - b[0] for b in row.tiles) for row in rows]
    font = ImageFont.load_default(size=max(9, min(20, round(max(heights) / 7))))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [probe.multiline_textbbox((0, 0), row.label, font=font) for row in rows]
    margin = max(box[2] for box in boxes) + 2 * LABEL_PAD
    canvas = Image.new("RGB", (margin + max(widths), sum(heights)), "white")
    draw = ImageDraw.Draw(canvas)
    top = 0
    for row, height, box in zip(rows, heights, boxes, strict=True):
        left = margin
        for tile in row.tiles:
            canvas.paste(opened[row.grid].crop(tile), (left, top))
            left += tile[2] - tile[0]
        draw.multiline_text((LABEL_PAD, top + (height - box[3]) // 2), row.label, fill="black", font=font)
        top += height
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def _sources(results_dir: Path, rows: list[GridRow]) -> tuple[Path, list[str]]:
    """The raw grids' common folder (relative to results_dir) and each row's grid name in it."""
    root = Path(results_dir)
    folder = Path(os.path.commonpath([r.grid.parent for r in rows]))
    return folder.relative_to(root), [r.grid.relative_to(folder).as_posix() for r in rows]


def sample_grid_lines(section: Section, results_dir: Path) -> list[str]:
    """Markdown for the section's labelled sample grid (none without one), naming the raw grid of every row."""
    rows = sample_rows(results_dir, section)
    if not rows:
        return []
    folder, names = _sources(results_dir, rows)
    sources = ", ".join(f"{row.run} from {name}" for row, name in zip(rows, names, strict=True))
    name = sample_grid_name(section)
    head = (
        f"Sample grid {name}: one row per run (headline runs, then ablations), each at its largest images seen for "
        f"training seed 0 (else its lowest seed), from the newest raw grid that holds it (results/{folder.as_posix()}/"
        f": {sources}):"
    )
    return [head, "", f"![samples]({name})", ""]


def grid_sources(results_dir: Path, section: Section) -> list[str]:
    """The names of the raw grids the section's sample grid takes its rows from, sorted."""
    return sorted({row.grid.name for row in sample_rows(results_dir, section)})


def section_files(section: Section, results_dir: Path) -> Files:
    """The section's curves and its one labelled sample grid."""
    files: Files = {}
    for x_axis in X_AXES:
        files.update(curve(section, x_axis))
    rows = sample_rows(results_dir, section)
    if rows:
        files[sample_grid_name(section)] = sample_grid(rows)
    return files
