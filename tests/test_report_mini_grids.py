"""The mini benchmark's one labelled sample grid per section, composed from the raw grids' rows.

Every grid here is made up (random tiles on tiny synthetic grids), never a sample of a model.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.report.build import build_report
from bench.report.mini import Section
from bench.report.mini_plots import index_rows, sample_grid, sample_grid_name, sample_rows
from bench.sample import image_grid
from tests.test_report_mini import PAPER, write_fixture

TILE = 8
COLUMNS = 4
SECTION = Section("celebahq", 128, {}, {}, [])
FOLDER = Path("mini") / "celebahq128"


def _row(run: str, seed: int, images: int, point: int = 0) -> dict:
    return {"run": run, "train_seed": seed, "point": point, "images_seen": images}


def raw_grid(results: Path, tag: str, rows: list[dict], created: str | None = None, tile: int = TILE,
             per_row: int = COLUMNS) -> Path:  # fmt: skip
    """A raw grid drawn as bench/reproduce/benchmark.py draws it (each row's `per_row` images one after another,
    COLUMNS to a tile row: bench.sample.image_grid), its index beside it and, given `created`, its provenance file;
    the tiles are random (never all black), different in every grid."""
    path = results / FOLDER / "grids" / f"{tag}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(sum(tag.encode()))
    images = torch.from_numpy(rng.integers(1, 256, (len(rows) * per_row, tile, tile, 3), dtype=np.uint8))
    image_grid(images, columns=COLUMNS).save(path)
    path.with_suffix(".json").write_text(json.dumps({"rows": rows, "columns": COLUMNS, "tile": tile}))
    if created is not None:
        provenance = results / FOLDER / "provenance" / f"{tag}.json"
        provenance.parent.mkdir(parents=True, exist_ok=True)
        provenance.write_text(json.dumps({"tag": tag, "created": created}))
    return path


def _pixels(data: bytes | Path) -> np.ndarray:
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
        return np.asarray(image.convert("RGB"))


def _fixture(results: Path) -> dict[str, Path]:
    """Grids whose rows come in another order than the report's, with older, shorter and other-seed rows to skip."""
    return {
        "old": raw_grid(results, "lfm-lapflow-seed0-old", [_row("lfm", 0, 64), _row("lapflow", 0, 64)], "2026-01-01"),
        "new": raw_grid(results, "lfm-lapflow-seed0-new", [_row("lfm", 0, 64), _row("lapflow", 0, 32)], "2026-02-01"),
        "abl": raw_grid(results, "ablations", [_row("other-run", 0, 8), _row("lapflow-mask-none", 0, 16)]),
        "dit": raw_grid(results, "dit-seeds", [_row("dit", 2, 16), _row("dit", 1, 8), _row("dit", 1, 4)], "2026-03"),
        "seed1": raw_grid(results, "lapflow-seed1", [_row("lapflow", 1, 128), _row("lapflow-t1-0.3", 0, 8)]),
    }


def test_rows_one_per_run_in_report_order_with_newest_largest_seed0(tmp_path):
    grids = _fixture(tmp_path)
    rows = sample_rows(tmp_path, SECTION)
    # headline runs (registry order), then the ablations (registry order), then any other run by name
    assert [r.run for r in rows] == ["lapflow", "lfm", "dit", "lapflow-mask-none", "lapflow-t1-0.3", "other-run"]
    picked = {r.run: (r.grid, r.seed, r.images, r.tiles[0][1] // TILE) for r in rows}
    assert picked["lapflow"] == (grids["old"], 0, 64, 1)  # seed 0's largest images (seed 1 went further: not used)
    assert picked["lfm"] == (grids["new"], 0, 64, 0)  # the same point in two grids: the newer provenance wins
    assert picked["dit"] == (grids["dit"], 1, 8, 1)  # no seed 0: the lowest seed, at its largest images
    assert picked["lapflow-mask-none"] == (grids["abl"], 0, 16, 1)
    assert picked["lapflow-t1-0.3"] == (grids["seed1"], 0, 8, 1)


def _raw_tiles(grid: Path, per_row: int, i: int, tile: int = TILE) -> np.ndarray:
    """Index row i of a raw grid, its tiles side by side, cut by the writer's own layout (not by the report's)."""
    raw, places = _pixels(grid), [divmod(j, COLUMNS) for j in range(i * per_row, (i + 1) * per_row)]
    return np.concatenate([raw[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] for r, c in places], axis=1)


def test_composed_rows_equal_the_raw_rows_and_are_labelled(tmp_path):
    _fixture(tmp_path)
    rows = sample_rows(tmp_path, SECTION)
    out = _pixels(sample_grid(rows))
    width = TILE * COLUMNS
    margin = out.shape[1] - width
    assert out.shape == (TILE * len(rows), margin + width, 3) and margin > 20
    for i, row in enumerate(rows):
        top = row.tiles[0][1]
        assert (out[i * TILE : (i + 1) * TILE, margin:] == _pixels(row.grid)[top : top + TILE]).all(), row.run
        assert (out[i * TILE : (i + 1) * TILE, margin:] == _raw_tiles(row.grid, COLUMNS, top // TILE)).all()
        assert (out[i * TILE : (i + 1) * TILE, :margin] < 128).any(), f"no label beside {row.run}"
    assert rows[0].label == "lapflow (seed 0)\n64 images"


def test_rows_follow_the_tile_geometry_of_the_index(tmp_path):
    path = raw_grid(tmp_path, "three", [_row("a", 0, 1), _row("b", 0, 1), _row("c", 0, 1)], tile=5)
    assert [r.tiles for r in index_rows(path)] == [
        tuple((5 * c, 5 * i, 5 * c + 5, 5 * i + 5) for c in range(COLUMNS)) for i in range(3)
    ]
    index = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**index, "rows": index["rows"][:2]}))  # does not fit the image
    assert index_rows(path) is None and sample_rows(tmp_path, SECTION) == []
    path.with_suffix(".json").unlink()
    assert index_rows(path) is None


def test_rows_of_fewer_images_than_columns_wrap_as_the_writer_lays_them_out(tmp_path):
    """A command whose first sample batch is smaller than the columns: its rows' tiles wrap across tile rows."""
    for n, per_row in ((4, 3), (2, 3), (1, 2), (3, 1)):  # (2, 3) and (1, 2): several counts fit, the black tail decides
        results = tmp_path / f"{n}-{per_row}"
        rows = [_row("lapflow", 0, 8 * (i + 1)) for i in range(n - 1)] + [_row("lfm", 0, 8)]
        grid = raw_grid(results, "wrapped", rows, per_row=per_row)
        assert [len(r.tiles) for r in index_rows(grid)] == [per_row] * n
        chosen = sample_rows(results, SECTION)
        assert [(r.run, r.images) for r in chosen] == [("lapflow", 8 * (n - 1)), ("lfm", 8)][2 - min(n, 2) :]
        out = _pixels(sample_grid(chosen))
        margin = out.shape[1] - TILE * per_row
        for i, row in enumerate(chosen):
            index = rows.index({"run": row.run, "train_seed": 0, "point": 0, "images_seen": row.images})
            assert (out[i * TILE : (i + 1) * TILE, margin:] == _raw_tiles(grid, per_row, index)).all(), (n, per_row)


def test_report_writes_one_grid_deterministically_and_removes_the_old_ones(tmp_path):
    results = tmp_path / "results"
    write_fixture(results)
    _fixture(results)
    out = tmp_path / "reports"
    stale = [out / "samples" / "mini-celebahq128-lfm-lapflow-seed0-old.png", out / "samples" / "mini-old.png"]
    for path in stale:  # what the report wrote before: a labelled copy of every raw grid
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"old")
    first = build_report(results, out, tmp_path / "no-runs", PAPER)
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["mini-celebahq128-runs.png"]
    assert [n for n in first.files if n.startswith("samples/")] == [sample_grid_name(SECTION)]
    data = (out / "samples" / "mini-celebahq128-runs.png").read_bytes()
    assert data == sample_grid(sample_rows(results, SECTION))
    second = build_report(results, out, tmp_path / "no-runs", PAPER)
    assert second.files == first.files and (out / "samples" / "mini-celebahq128-runs.png").read_bytes() == data
    tables_md, readme = first.files["tables.md"].decode(), first.files["README.md"].decode()
    links = re.findall(r"\]\((samples/[^)]+)\)", tables_md)
    assert links == ["samples/mini-celebahq128-runs.png"]  # one valid link, to the file written
    assert "- samples/mini-celebahq128-runs.png" in readme and "mini-celebahq128-lfm" not in readme
    assert "- mini-celebahq128: sample grid ablations.png, dit-seeds.png, lapflow-seed1.png," in readme
