"""The mini benchmark's figures: FID curves per resolution and the sample grids with each row labelled.

Curves: FID (the section's one FID protocol) against images seen and against GPU seconds, one line per headline run
(mean over training seeds at each point common to all of its seeds) with min-max error bars over the seeds; log x.
Grids: results/mini/<dataset><res>/grids/<tag>.png (or grid-<tag>.png there) with its row index beside it, the same
name in .json ({"rows": [{"run", "train_seed", "point", "images_seen"}, ...], "columns", "tile"}), become
samples/mini-<dataset><res>-<tag>.png with a label beside each row (PIL's default font; same inputs, same bytes).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.registry import mini_headline_runs
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


def curve_series(section: Section, x_axis: str) -> dict[str, tuple[Run, list[CurvePoint]]]:
    """Headline run -> (run, its points), for the runs with at least one point."""
    series = {}
    for name in mini_headline_runs():
        run = section.runs.get(name)
        points = _points(run, x_axis) if run is not None else []
        if points:
            series[name] = (run, points)
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
        for i, (name, (run, points)) in enumerate(series.items()):
            n = len(run.seeds)
            ax.errorbar(
                [p.x for p in points],
                [p.fid for p in points],
                yerr=[[p.fid - p.fid_low for p in points], [p.fid_high - p.fid for p in points]],
                xerr=[[p.x - p.x_low for p in points], [p.x_high - p.x for p in points]],
                color=method_color(run.family),
                marker=MARKERS[i % len(MARKERS)],
                linestyle=LINESTYLES[i % len(LINESTYLES)],
                capsize=3,
                label=f"{method_label(run.family)} ({name}, {n} seed{'s' if n > 1 else ''})",
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


def grid_paths(results_dir: Path, section: Section) -> list[Path]:
    folder = Path(results_dir) / MINI_SUBDIR / section.tag
    return sorted([*folder.glob("grid-*.png"), *folder.glob("grids/*.png")])


def grid_name(section: Section, path: Path) -> str:
    return f"samples/mini-{section.tag}-{path.stem.removeprefix('grid-')}.png"


def grid_rows(path: Path) -> list[str] | None:
    """One label per row from the grid's sidecar JSON, None when it has none (the grid is copied unlabelled)."""
    try:
        rows = json.loads(path.with_suffix(".json").read_text())["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        return None
    labels = []
    for row in rows:
        images = row.get("images_seen")
        seen = f"{fmt_images(images)} images" if isinstance(images, int | float) else "images seen unknown"
        labels.append(f"{row.get('run', '?')} (seed {row.get('train_seed', '?')})\n{seen}")
    return labels


def labelled_grid(path: Path) -> bytes:
    """The grid with its row labels drawn in a white margin on the left (PNG bytes)."""
    from PIL import Image, ImageDraw, ImageFont

    labels = grid_rows(path)
    if labels is None:
        return path.read_bytes()
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    row_height = image.height / len(labels)
    font = ImageFont.load_default(size=max(9, min(20, round(row_height / 7))))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [probe.multiline_textbbox((0, 0), label, font=font) for label in labels]
    margin = max(box[2] for box in boxes) + 2 * LABEL_PAD
    canvas = Image.new("RGB", (margin + image.width, image.height), "white")
    canvas.paste(image, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (label, box) in enumerate(zip(labels, boxes, strict=True)):
        top = i * row_height + (row_height - box[3]) / 2
        draw.multiline_text((LABEL_PAD, round(top)), label, fill="black", font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def section_files(section: Section, results_dir: Path) -> Files:
    """The section's curves and labelled grids."""
    files: Files = {}
    for x_axis in X_AXES:
        files.update(curve(section, x_axis))
    for path in grid_paths(results_dir, section):
        files[grid_name(section, path)] = labelled_grid(path)
    return files
