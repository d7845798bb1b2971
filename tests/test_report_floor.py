"""The sampler-floor table of `bench report` (bench/report/mini_floor.py) from `bench reproduce mini-floor` records."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli.app import app
from bench.report import mini_floor
from bench.report.build import generate, load_results
from bench.results import write_record
from tests.test_floor_cli import latent_carry
from tests.test_report_mini import PAPER, write_fixture

runner = CliRunner()


@pytest.fixture(scope="module")
def floor_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("floor")
    carry, out = latent_carry(root), root / "results"
    args = ["reproduce", "mini-floor", "--carry", carry, "--models", "lfm,lapflow,pyramidal-flow"]
    result = runner.invoke(app, [str(a) for a in [*args, "--samplers", "heun:25,euler:10", "--out", out]])
    assert result.exit_code == 0, result.output
    return out


def test_floor_table_rows_are_samplers_columns_runs(floor_results: Path) -> None:
    (section,) = mini_floor.collect(load_results(floor_results))
    table = mini_floor.floor_table(section)
    assert table.id == "mini-floor-celebahq32" and len(table.placed) == 3 * 3 * 2
    assert table.headers == ["Sampler", "NFE", "lapflow", "lfm", "pyramidal-flow"]  # registry order
    # The presets' sampler first, then by NFE: euler:10 (10), heun:25 (50).
    assert [row[0].text for row in table.rows] == ["euler:50", "euler:10", "heun:25"]
    frechet = section.values("floor_frechet")
    variance = section.values("floor_variance")
    for row in table.rows:
        for run, cell in zip(table.headers[2:], row[2:], strict=True):
            f, v = frechet[(run, row[0].text)], variance[(run, row[0].text)]
            assert cell.value == f and cell.text == f"{f:.3f} ({100 * v:.1f}%)"
    # Fewer Euler steps cost more; Heun at the same NFE as the preset's Euler costs less.
    assert all(
        frechet[(r, "euler:10")] > frechet[(r, "euler:50")] > frechet[(r, "heun:25")] for r in ("lfm", "lapflow")
    )


def test_floor_paragraph_compares_lapflow_with_lfm_from_the_numbers(floor_results: Path) -> None:
    (section,) = mini_floor.collect(load_results(floor_results))
    lines = mini_floor.paragraph(section)
    frechet, extras = section.values("floor_frechet"), section.extras()
    own = f"LapFlow {frechet[('lapflow', 'euler:50')]:.3f}"
    assert own in lines[0] and "(euler:50)" in lines[0]
    assert f"fine band keeps {100 * extras[('lapflow', 'euler:50')]['bands']['fine']:.1f}%" in lines[0]
    more = frechet[("lapflow", "euler:50")] > frechet[("lfm", "euler:50")]
    assert ("costs LapFlow more than LFM" in lines[0]) == more and ("LapFlow no more than LFM" in lines[0]) != more
    # heun:25 samples with the preset's NFE (50): the equal-cost comparison; euler:10 does not.
    assert lines[1].startswith("- The other headline runs at their own samplers: pyramidal-flow ")
    assert f"{frechet[('pyramidal-flow', 'euler:50')]:.3f} at euler:50" in lines[1]
    assert lines[2].startswith("- At the same NFE, heun:25 leaves LapFlow")
    assert not any("euler:10 leaves" in line for line in lines)


def test_no_floor_records_no_section(tmp_path: Path) -> None:
    assert mini_floor.collect([]) == []


def test_the_floor_sits_in_its_mini_section_after_the_orderings(floor_results: Path, tmp_path: Path) -> None:
    """In tables.md the floor follows the orderings paragraph of the mini section of its data set and resolution;
    a floor without such a section still appears, after the sections."""
    alone = generate(floor_results, floor_results / "no-runs", PAPER, with_plots=False)
    assert "Sampler floor, celebahq 32 px" in alone.files["tables.md"].decode()
    assert "tables/mini-floor-celebahq32.csv" in alone.files
    write_fixture(tmp_path)  # a mini section at celebahq 128 px
    for item in load_results(floor_results):
        write_record(dataclasses.replace(item.record, resolution=128), tmp_path, "mini/celebahq128/floor")
    text = generate(tmp_path, tmp_path / "no-runs", PAPER, with_plots=False).files["tables.md"].decode()
    section = text.index("### celebahq, 128 px")
    orderings, floor = text.index("**The paper's orderings", section), text.index("Sampler floor, celebahq 128 px")
    assert section < orderings < floor < text.index("![FID vs", section)


def test_runs_of_other_solver_kinds_leave_gaps(tmp_path: Path) -> None:
    carry, out = latent_carry(tmp_path), tmp_path / "results"
    args = ["reproduce", "mini-floor", "--carry", carry, "--models", "lfm,dit", "--samplers", "ddim:10,heun:5"]
    assert runner.invoke(app, [str(a) for a in [*args, "--out", out]]).exit_code == 0
    (section,) = mini_floor.collect(load_results(out))
    table = mini_floor.floor_table(section)
    cells = {row[0].text: [c.text for c in row[2:]] for row in table.rows}
    assert table.headers[2:] == ["lfm", "dit"]
    assert cells["heun:5"][1] == cells["ddim:10"][0] == mini_floor.MISSING
    assert cells["euler:50"][1] == cells["ddpm:50"][0] == mini_floor.MISSING
    assert mini_floor.paragraph(section) == []  # no LapFlow run: nothing for the paragraph to compare
