"""Report plots (matplotlib Agg, PNG and PDF) with fixed metadata, so the same records give byte-identical files.

Every plot names the protocol of each series in its legend; paper points are hollow markers on dashed lines.
Plots without data are skipped (the README says so).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import registry
from bench.report.paper import PaperData
from bench.report.select import SPECS_BY_ID, backbone, descriptors, in_benchmark, method_label, variant_axes
from bench.report.tables import Loaded, gpu_of, newest_by
from bench.reproduce.mini import MINI_SUBDIR
from bench.results import Record

RC = {
    "svg.hashsalt": "bench-report",  # fixed SVG ids
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 7,
    "savefig.dpi": 150,
}
PNG_METADATA = {"Software": None}
PDF_METADATA = {"CreationDate": None, "Producer": None}
FID_METRICS = ("fid", "clean_fid")
PAPER_STYLE = {"marker": "o", "mfc": "none", "linestyle": "--"}
LEGEND_DROP_PT = 34  # legend top below the axes: room for tick labels and the x label
Files = dict[str, bytes]  # report-relative path -> content


@contextmanager
def _style() -> Iterator[None]:
    import matplotlib as mpl
    import matplotlib.style

    with matplotlib.style.context("default"), mpl.rc_context(RC):
        yield


def _figure(ncols: int = 1, width: float = 5.5, height: float = 4.0) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def _save(fig: Any, stem: str) -> Files:
    """PNG and PDF bytes; the constrained layout runs once (it dominates the cost) and is then frozen."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.get_layout_engine().execute(fig)
    fig.set_layout_engine("none")
    out = {}
    for fmt, metadata in (("png", PNG_METADATA), ("pdf", PDF_METADATA)):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, metadata=metadata)
        out[f"plots/{stem}.{fmt}"] = buffer.getvalue()
    return out


def _run_key(r: Record) -> tuple[str, str, str, int]:
    return (r.model, r.preset, r.dataset, r.resolution)


def _latest(items: list[Loaded], metric: str, batch1: bool = False) -> dict[tuple, Loaded]:
    """Newest reportable record of `metric` per run (and per protocol/GPU for timings)."""

    def wanted(r: Record) -> bool:
        reportable = r.protocol.get("reportable") is not False  # tables footnote these; plots leave them out
        if r.metric != metric or r.value is None or not reportable or in_benchmark(r):  # benchmarks: own section
            return False
        return not batch1 or r.extra.get("batch") == 1

    chosen = newest_by((i for i in items if wanted(i.record)), lambda r: (*_run_key(r), r.protocol_name, gpu_of(r)))
    return dict(sorted(chosen.items()))


def _paper_points(paper: PaperData, table: str, x_column: str) -> list[tuple[float, float, str]]:
    """(x, FID, label) for paper rows with both numbers; GFLOPs become per sample (per forward x NFE)."""
    cells = {(e.resolution, e.method, e.setting, e.column): e.value for e in paper.entries if e.table == table}
    points = []
    for (res, method, setting, column), fid in sorted(cells.items()):
        if column != "fid" or fid is None:
            continue
        x = cells.get((res, method, setting, x_column))
        if x_column == "gflops":
            nfe = cells.get((res, method, setting, "nfe"))
            x = x * nfe if x is not None and nfe is not None else None
        if x is not None:
            points.append((x, fid, f"{method_label(method)} {res}"))
    return points


def _scatter(ax: Any, points: list[tuple[float, float, str]], label: str, done: set, paper: bool = False) -> None:
    """One series; each point's text is written once per plot, alternately above and below to limit overlap."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    style = {"marker": "o", "mfc": "none", "color": "0.35"} if paper else {"marker": "s"}
    ax.plot(xs, ys, linestyle="none", label=label, **style)
    for x, y, text in sorted(points):
        if text not in done:
            offset = (4, 3) if len(done) % 2 == 0 else (4, -9)
            done.add(text)
            ax.annotate(text, (x, y), textcoords="offset points", xytext=offset, fontsize=6)


def short_label(record: Record) -> str:
    """'LapFlow 128', plus the ablation axes on which the run differs from the default ('mask=none')."""
    values = descriptors(record)
    extra = " ".join(f"{axis}={values[axis]}" for axis in sorted(variant_axes(record)))
    return f"{method_label(record.model)} {record.resolution}" + (f" {extra}" if extra else "")


def _scale(ax: Any, axis: str, base: float = 10, force: bool = False) -> str:
    """Log scale with plain tick labels (0.5, 2, 100) when the data span a decade or more (or `force`), else
    linear; returns the suffix for the axis label. Call after plotting."""
    from matplotlib.ticker import FuncFormatter

    low, high = sorted(ax.dataLim.intervalx if axis == "x" else ax.dataLim.intervaly)
    if not force and (low <= 0 or high / low < base):
        return ""
    getattr(ax, f"set_{axis}scale")("log", base=base)

    def minor(v: float, _: object) -> str:
        mantissa = round(v / 10 ** math.floor(math.log10(v)), 6) if v > 0 else 0
        return f"{v:g}" if mantissa in (2, 5) else ""

    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(FuncFormatter(minor))
    return " (log)"


def _legend(ax: Any) -> None:
    """Below the axes: series labels name protocols and GPUs and are long."""
    from matplotlib.transforms import offset_copy

    below = offset_copy(ax.transAxes, fig=ax.figure, y=-LEGEND_DROP_PT, units="points")
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, 0.0), bbox_transform=below, frameon=False)


def fid_vs_cost(records: list[Loaded], paper: PaperData, dataset: str, cost: str) -> Files:
    """FID against GFLOPs per sample (cost='gflops') or batch-1 seconds per sample (cost='time').

    Measured runs and the paper's numbers get separate panels: their protocols (and scales) differ.
    """
    costs = _latest(records, "gflops_sample") if cost == "gflops" else _latest(records, "time_e2e", batch1=True)
    series: dict[str, list[tuple[float, float, str]]] = {}
    for metric in FID_METRICS:
        for fid_key, fid in _latest(records, metric).items():
            if fid.record.dataset != dataset:
                continue
            for cost_key, x in costs.items():
                if cost_key[:4] == fid_key[:4]:
                    where = f" @ {cost_key[5]}" if cost_key[5] else ""
                    label = f"{metric} [{fid_key[4]}] vs {cost_key[4]}{where}"
                    series.setdefault(label, []).append((x.record.value, fid.record.value, short_label(fid.record)))
    paper_points = _paper_points(paper, dataset, cost)
    panels = [(f"measured: {dataset}", series)] if series else []
    if len(paper_points) >= 2:  # a lone paper point compares nothing
        what = "GFLOPs/forward x NFE" if cost == "gflops" else "s/image, GPU not named"
        panels.append((f"paper: {dataset}", {f"paper [FID-50K; {what}]": paper_points}))
    if not panels:
        return {}
    noun = "compute" if cost == "gflops" else "time"
    with _style():
        fig, axes = _figure(ncols=len(panels), width=5.2, height=4.8)
        for ax, (title, panel) in zip(axes, panels, strict=True):
            done: set = set()
            for label, points in sorted(panel.items()):
                _scatter(ax, sorted(points), label, done, paper=title.startswith("paper"))
            what = "GFLOPs per sample (all NFE)" if cost == "gflops" else "Seconds per sample, batch 1"
            ax.set_xlabel(what + _scale(ax, "x"))
            ax.set_ylabel("FID (lower is better)")
            ax.set_title(f"{title}: FID vs {noun} per sample")
            _legend(ax)
        return _save(fig, f"fid_vs_{cost}-{dataset}")


def _main_records(records: list[Loaded], table: str) -> list[Loaded]:
    spec = SPECS_BY_ID[table]
    return [i for i in records if spec.row_key(i.record) is not None]


PAPER_ONLY_COLORS = {"ldm": "tab:gray", "edifyimage": "tab:brown", "baseline": "tab:olive"}  # families: registry
OTHER_COLOR = "tab:cyan"


def method_color(method: str) -> str:
    """A family's Family.color, a paper-only method's colour, else OTHER_COLOR."""
    if method in registry.FAMILIES:
        return registry.FAMILIES[method].color
    return PAPER_ONLY_COLORS.get(method, OTHER_COLOR)


def _resolution_lines(items: list[Loaded], metric: str, batch1: bool) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """(method, label) -> [(res, value)]: one line per method, backbone, protocol and GPU (never joined across)."""
    lines: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for key, item in _latest(items, metric, batch1=batch1).items():
        where = f" @ {key[5]}" if key[5] else ""
        label = f"{method_label(key[0])} {backbone(item.record)} {metric} [{key[4]}]{where}"
        lines.setdefault((key[0], label), []).append((key[3], item.record.value))
    return lines


def cost_vs_resolution(records: list[Loaded], paper: PaperData, table: str = "celebahq") -> Files:
    """Batch-1 seconds and GFLOPs per forward against resolution, per method (main-table settings only)."""
    main = _main_records(records, table)
    panels = (("time", "time_e2e", "Seconds per sample, batch 1"), ("gflops", "gflops_forward", "GFLOPs per forward"))
    data = []
    for column, metric, ylabel in panels:
        paper_lines: dict[tuple[str, str], list[tuple[int, float]]] = {}
        for e in paper.entries:
            if e.table == table and e.column == column and e.value is not None:
                paper_lines.setdefault((e.method, f"{method_label(e.method)} (paper)"), []).append(
                    (e.resolution, e.value)
                )
        data.append((ylabel, _resolution_lines(main, metric, column == "time"), paper_lines))
    if not any(lines or paper_lines for _, lines, paper_lines in data):
        return {}
    markers = "s^Dv<>"
    with _style():
        fig, axes = _figure(ncols=2, width=5.0, height=5.4)
        for ax, (ylabel, lines, paper_lines) in zip(axes, data, strict=True):
            resolutions: set[int] = set()
            for i, ((method, label), points) in enumerate(sorted(lines.items())):
                style = {"color": method_color(method), "marker": markers[i % len(markers)]}
                ax.plot(*zip(*sorted(points), strict=True), label=label, **style)
                resolutions |= {p[0] for p in points}
            for (method, label), points in sorted(paper_lines.items()):
                ax.plot(
                    *zip(*sorted(points), strict=True), label=label, **{**PAPER_STYLE, "color": method_color(method)}
                )
                resolutions |= {p[0] for p in points}
            _scale(ax, "x", base=2, force=True)
            ax.set_xticks(sorted(resolutions), [str(r) for r in sorted(resolutions)])
            ax.set_xlabel("Resolution (px, log)")
            ax.set_ylabel(ylabel + _scale(ax, "y"))
            _legend(ax)
        axes[0].set_title(f"{table}: time vs resolution (paper GPU not named)")
        axes[1].set_title(f"{table}: GFLOPs vs resolution (fvcore, 1 MAC = 1 FLOP)")
        return _save(fig, f"cost_vs_resolution-{table}")


def read_stats(path: Path) -> list[dict[str, float]]:
    """Logged training rows (those with a loss), last row per image count, sorted; bad lines are skipped."""
    rows: dict[int, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("loss"), int | float) and "images" in row:
            rows[int(row["images"])] = row
    return [rows[k] for k in sorted(rows)]


def training_curves(runs_dir: Path) -> tuple[Files, list[str]]:
    """Loss and throughput against images seen for every runs/<name>/stats.jsonl; nothing if there is none."""
    runs = {p.parent.name: read_stats(p) for p in sorted(Path(runs_dir).glob("*/stats.jsonl"))}
    runs = {name: rows for name, rows in runs.items() if rows}
    if not runs:
        return {}, []
    from matplotlib.ticker import EngFormatter

    with _style():
        fig, (loss_ax, speed_ax) = _figure(ncols=2, width=5.0)
        for name, rows in runs.items():
            images = [r["images"] for r in rows]
            loss_ax.plot(images, [r["loss"] for r in rows], label=name)
            speed = [(r["images"], r["images_per_s"]) for r in rows if isinstance(r.get("images_per_s"), int | float)]
            if speed:
                speed_ax.plot(*zip(*speed, strict=True), label=name)
        loss_ax.set_ylabel("Training loss (mean per logged window)" + _scale(loss_ax, "y"))
        speed_ax.set_ylabel("Throughput (images/s, all processes)")
        for ax in (loss_ax, speed_ax):
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 50k, 1M
            ax.set_xlabel("Images seen")
            _legend(ax)
        loss_ax.set_title("Training loss (runs/<name>/stats.jsonl)")
        speed_ax.set_title("Training throughput (wall clock incl. logging)")
        return _save(fig, "training_curves"), sorted(runs)


def find_grids(results_dir: Path, runs_dir: Path) -> dict[str, Path]:
    """Latest grid per run: runs/<name>/samples/grid-*.png, and grid-*.png anywhere under results/ (not paper/, nor
    the mini benchmark's, which its own section labels: bench/report/mini_plots.py)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(Path(runs_dir).glob("*/samples/grid-*.png")):
        found.setdefault(path.parent.parent.name, []).append(path)
    root = Path(results_dir)
    for path in sorted(root.glob("**/grid-*.png")):
        rel = path.relative_to(root)
        if rel.parts[0] not in ("paper", MINI_SUBDIR):
            found.setdefault("-".join(rel.parent.parts) or "results", []).append(path)
    return {name: max(paths, key=lambda p: p.name) for name, paths in sorted(found.items())}


def sample_grids(results_dir: Path, runs_dir: Path) -> tuple[Files, dict[str, Path]]:
    """Copy each run's latest grid to samples/<run>.png and compose an overview figure."""
    grids = find_grids(results_dir, runs_dir)
    if not grids:
        return {}, {}
    files = {f"samples/{name}.png": path.read_bytes() for name, path in grids.items()}
    from PIL import Image

    with _style():
        fig, axes = _figure(ncols=len(grids), width=3.2, height=3.6)
        for ax, (name, path) in zip(axes, grids.items(), strict=True):
            with Image.open(path) as image:
                ax.imshow(image.convert("RGB"), interpolation="nearest")
            ax.set_title(f"{name}\n{path.name}", fontsize=7)
            ax.set_axis_off()
        files.update(_save(fig, "samples"))
    return files, grids
