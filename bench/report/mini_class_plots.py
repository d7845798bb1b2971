"""Figures of the class-conditional mini section: FID against guidance weight per family, the FID curves and sample
grid of the preset's weight (mini_plots), and one labelled class grid.

Class grid: each run's newest grids/classes/<run>-seed<s>-<images>.png (its .json names the classes, seeds and
guidance) at its largest images seen, lowest training seed; the families' grids side by side in registry order, one
row per class (labelled with the class name), one column block per family (labelled with its name, run, images
seen and guidance). PIL's default font; the same inputs give the same bytes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from bench.registry import mini_headline_runs
from bench.report.mini import fmt_images
from bench.report.mini_classes import ClassSection
from bench.report.mini_plots import LINESTYLES, MARKERS, sample_grid_lines, section_files
from bench.report.plots import Files, _figure, _legend, _save, _style, method_color
from bench.report.select import method_label
from bench.reproduce.mini import MINI_SUBDIR

BLOCK_GAP = 12  # px between the families' column blocks
PAD = 6


def guidance_stem(section: ClassSection) -> str:
    return f"mini-{section.tag}-fid-vs-guidance"


def guidance_series(section: ClassSection) -> dict[str, tuple[str, list[tuple[float, float, float, float]]]]:
    """Headline run -> (family, [(weight, mean FID, min, max) at the run's final point]) for runs with two weights."""
    out = {}
    for name in mini_headline_runs(section.dataset):
        points, fam = [], ""
        for weight, sub in section.by_weight.items():
            run = sub.runs.get(name)
            stat = run.stat("fid", run.final) if run is not None else None
            if stat is not None:
                fam = run.family
                points.append((weight, stat.mean, min(stat.values), max(stat.values)))
        if len(points) >= 2:
            out[name] = (fam, points)
    return out


def guidance_curve(section: ClassSection) -> Files:
    series = guidance_series(section)
    if not series:
        return {}
    with _style():
        fig, (ax,) = _figure(width=6.0, height=4.6)
        for i, (name, (fam, points)) in enumerate(series.items()):
            ax.errorbar(
                [p[0] for p in points],
                [p[1] for p in points],
                yerr=[[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]],
                color=method_color(fam),
                marker=MARKERS[i % len(MARKERS)],
                linestyle=LINESTYLES[i % len(LINESTYLES)],
                capsize=3,
                label=f"{method_label(fam)} ({name})",
            )
        ax.set_xticks(section.weights, [f"{w:g}" for w in section.weights])
        ax.set_xlabel("Classifier-free guidance weight w (1 = none)")
        ax.set_ylabel(f"FID [{section.preset.protocols.get('fid')}] (lower is better)")
        ax.set_title(f"{section.dataset} {section.res} px, final point: mean over seeds, bars min-max", fontsize=8)
        _legend(ax)
        return _save(fig, guidance_stem(section))


def class_grids(results_dir: Path, section: ClassSection) -> list[tuple[Path, dict]]:
    """(grid, its index) chosen per headline run: largest images seen, then lowest training seed."""
    folder = Path(results_dir) / MINI_SUBDIR / section.tag / "grids" / "classes"
    found: dict[str, tuple[Path, dict]] = {}
    for path in sorted(folder.glob("*.png")) if folder.is_dir() else []:
        try:
            index = json.loads(path.with_suffix(".json").read_text())
        except (OSError, ValueError):
            continue
        run, key = index.get("run"), (-int(index.get("images_seen", 0)), int(index.get("train_seed", 0)))
        best = found.get(run)
        if best is None or key < (-int(best[1]["images_seen"]), int(best[1]["train_seed"])):
            found[run] = (path, index)
    return [found[name] for name in mini_headline_runs(section.dataset) if name in found]


def class_grid_name(section: ClassSection) -> str:
    return f"samples/mini-{section.tag}-classes.png"


def labelled_class_grid(grids: list[tuple[Path, dict]]) -> bytes:
    """The chosen grids side by side, class names on the left, one header per column block (PNG bytes)."""
    from PIL import Image, ImageDraw, ImageFont

    images = []
    for path, _ in grids:
        with Image.open(path) as opened:
            images.append(opened.convert("RGB"))
    classes = list(grids[0][1].get("titles") or grids[0][1].get("classes") or [])  # readable names where kept
    rows = len(classes) or 1
    tile = images[0].height // rows
    font = ImageFont.load_default(size=max(9, min(16, tile // 6)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    heads = [
        f"{method_label(str(i.get('family', '')))}\n{i.get('run')} seed {i.get('train_seed')}\n"
        f"{fmt_images(int(i.get('images_seen', 0)))} images, w={float(i.get('guidance', 1)):g}"
        for _, i in grids
    ]
    left = max(probe.textbbox((0, 0), c, font=font)[2] for c in classes) + 2 * PAD if classes else PAD
    top = max(probe.multiline_textbbox((0, 0), h, font=font)[3] for h in heads) + 2 * PAD
    width = left + sum(im.width for im in images) + BLOCK_GAP * (len(images) - 1)
    canvas = Image.new("RGB", (width, top + max(im.height for im in images)), "white")
    draw = ImageDraw.Draw(canvas)
    x = left
    for image, head in zip(images, heads, strict=True):
        canvas.paste(image, (x, top))
        draw.multiline_text((x + PAD, PAD), head, fill="black", font=font)
        x += image.width + BLOCK_GAP
    for r, name in enumerate(classes):
        box = probe.textbbox((0, 0), name, font=font)
        draw.text((PAD, top + r * tile + (tile - box[3]) // 2), name, fill="black", font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def files(section: ClassSection, results_dir: Path) -> Files:
    out: Files = {**section_files(section.preset, results_dir), **guidance_curve(section)}
    grids = class_grids(results_dir, section)
    if grids:
        out[class_grid_name(section)] = labelled_class_grid(grids)
    return out


def figure_lines(section: ClassSection, results_dir: Path) -> list[str]:
    """Markdown for the section's figures (those that `files` makes)."""
    from bench.report.mini_plots import curve_stems

    lines = []
    for stem in [*curve_stems(section.preset), *([guidance_stem(section)] if guidance_series(section) else [])]:
        what = stem.rsplit("-fid-vs-", 1)[1].replace("-", " ")
        lines += [f"![FID vs {what}](plots/{stem}.png)", "", f"(PDF: plots/{stem}.pdf)", ""]
    grids = class_grids(results_dir, section)
    if grids:
        sources = ", ".join(f"results/{p.relative_to(results_dir).as_posix()}" for p, _ in grids)
        lines += [f"Class grid (one row per class, one column block per family; from {sources}):", ""]
        lines += [f"![class grid]({class_grid_name(section)})", ""]
    return lines + sample_grid_lines(section.preset, results_dir)
