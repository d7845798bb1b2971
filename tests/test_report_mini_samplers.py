"""The report's other-samplers table and paragraph (records of `bench reproduce mini --samplers`), and that those
records stay out of the headline and ablation tables, the curves, knees and seed spreads.

Every record here is made up (synthetic numbers written with bench.results), never a measurement.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.report.build import generate
from bench.report.mini import collect, sampler_order
from bench.report.mini_plots import curve_series
from bench.report.tables import fmt_sig
from tests.test_report_mini import ONE, PAPER, table_rows, write_fixture, write_run

# (run, seed) -> FID at the last point with dopri5 (~87 NFE) and with Euler 100 steps; the fixture's own Euler-50
# FIDs there: lapflow 20 and 22, lfm 30 and 31.
DOPRI5 = {("lapflow", 0): 18.0, ("lapflow", 1): 19.0, ("lfm", 0): 31.0, ("lfm", 1): 32.0}
EULER100 = {("lapflow", 0): 25.0, ("lapflow", 1): 26.0, ("lfm", 0): 23.0, ("lfm", 1): 24.0}


def write_samplers(results: Path) -> None:
    for (run, seed), fid in DOPRI5.items():
        write_run(results, run, seed, [fid], boot=ONE, sampler="dopri5", nfe=86.5 + seed)
    for (run, seed), fid in EULER100.items():
        write_run(results, run, seed, [fid], boot=ONE, sampler="euler:100", nfe=100)


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> tuple:
    plain, both = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("samplers")
    write_fixture(plain)
    write_fixture(both)
    write_samplers(both)
    return tuple(generate(r, r / "no-runs", PAPER, with_plots=False) for r in (plain, both))


def test_sampler_records_stay_out_of_every_other_table_curve_and_knee(reports) -> None:
    plain, both = reports
    tables = {t.id: t for t in both.tables}
    assert set(tables) == {t.id for t in plain.tables} | {"mini-celebahq128-samplers"}  # no "other" table either
    for table in plain.tables:  # headline (knees, seed spreads) and ablations: the same cells and records
        assert table_rows(tables[table.id]) == table_rows(table), table.id
        assert {i.path for i in tables[table.id].used} == {i.path for i in table.used}, table.id
    (section,) = collect(both.records)
    (plain_section,) = collect(plain.records)
    assert not [i for i in section.placed if "sampler" in i.record.extra]
    for axis in ("images", "gpu-seconds"):
        assert curve_series(section, axis).keys() == curve_series(plain_section, axis).keys()
        assert [p for _, pts in curve_series(section, axis).values() for p in pts] == [
            p for _, pts in curve_series(plain_section, axis).values() for p in pts
        ]
    assert list(section.samplers) == ["dopri5", "euler:100"]
    text, plain_text = both.files["tables.md"].decode(), plain.files["tables.md"].decode()
    start = text.index("#### Mini benchmark, celebahq 128 px: other samplers")
    end = text.index("- Not scored with another sampler for both runs:")
    end = text.index("\n\n", end) + 2
    assert text[:start] + text[end:] == plain_text  # the sampler block is all that is added


def test_the_sampler_table_has_a_row_per_run_seed_and_sampler_default_first(reports) -> None:
    _, both = reports
    table = next(t for t in both.tables if t.id == "mini-celebahq128-samplers")
    rows = table_rows(table)
    fid, boot = "FID [fid-tf-5k-celebahq128]", "FID 90% interval per seed (bootstrap)"
    got = [(r["Run"], r["Seed"], r["Sampler"], r[fid], r["NFE per sample"]) for r in rows]
    assert got == [
        ("lapflow", "0", "euler:50 (default)", "20.00", "50"),
        ("lapflow", "0", "dopri5", "18.00", "86.5"),
        ("lapflow", "0", "euler:100", "25.00", "100"),
        ("lapflow", "1", "euler:50 (default)", "22.00", "50"),
        ("lapflow", "1", "dopri5", "19.00", "87.5"),
        ("lapflow", "1", "euler:100", "26.00", "100"),
        ("lfm", "0", "euler:50 (default)", "30.00", "50"),
        ("lfm", "0", "dopri5", "31.00", "86.5"),
        ("lfm", "0", "euler:100", "23.00", "100"),
        ("lfm", "1", "euler:50 (default)", "31.00", "50"),
        ("lfm", "1", "dopri5", "32.00", "87.5"),
        ("lfm", "1", "euler:100", "24.00", "100"),
    ]
    assert rows[0][boot] == "19.50-20.50" and rows[1][boot] == "17.00-19.00"
    assert rows[1]["Images seen"] == "1048576" and rows[1]["Model"] == "LapFlow"
    assert rows[1]["KID [kid-tf-5k-celebahq128]"] == "0.0180" and rows[1]["Recall [recall-k3-tf-5k-celebahq128]"]
    assert len(table.placed) == 2 * len(DOPRI5) * 5  # every sampler record (5 metrics) is placed here
    assert all("sampler" in i.record.extra for i in table.placed)


def test_the_paragraph_says_whether_each_ordering_changes_with_the_sampler(reports) -> None:
    _, both = reports
    text = both.files["tables.md"].decode()
    (line,) = [x for x in text.splitlines() if x.startswith("- LapFlow < LFM (")]
    spread = math.hypot(math.sqrt(2), math.sqrt(0.5))  # seed stds of lapflow (20, 22) and lfm (30, 31)
    assert line == (
        "- LapFlow < LFM (1.05M images): euler:50 (default) holds (gap +9.50); "
        f"dopri5 holds (gap +13.0, +3.50: {3.5 / spread:.1f}x the combined seed spread {spread:.2f}); "
        f"euler:100 does not hold (gap -2.00, -11.5: {11.5 / spread:.1f}x the combined seed spread {spread:.2f}): "
        "the verdict changes with euler:100."
    )
    assert "- Not scored with another sampler for both runs: LFM < Pyramidal Flow, mask causal < none" in text


def test_the_paragraph_gives_each_runs_fid_change_from_the_default_sampler(reports) -> None:
    _, both = reports
    (line,) = [x for x in both.files["tables.md"].decode().splitlines() if x.startswith("- FID change from")]
    # the fixture's Euler-50 FIDs at the last point: lapflow 20 and 22, lfm 30 and 31 (seeds 0 and 1)
    lapflow_dopri5 = (DOPRI5[("lapflow", 0)] - 20 + DOPRI5[("lapflow", 1)] - 22) / 2  # -2.50
    lfm_euler100 = (EULER100[("lfm", 0)] - 30 + EULER100[("lfm", 1)] - 31) / 2  # -7.00
    assert line == (
        f"- FID change from the default sampler at the same points: lapflow (2 seeds) dopri5 {lapflow_dopri5:+.2f}, "
        f"euler:100 +4.50; lfm (2 seeds) dopri5 +1.00, euler:100 {lfm_euler100:+.2f}."
    )


def test_one_seed_measures_the_change_against_the_bootstrap_std(tmp_path: Path) -> None:
    write_run(tmp_path, "lapflow", 0, [40, 30], boot=ONE)
    write_run(tmp_path, "lfm", 0, [35, 25], boot=ONE)
    write_run(tmp_path, "lapflow", 0, [24.0], boot=ONE, sampler="dopri5", nfe=90)
    write_run(tmp_path, "lfm", 0, [25.5], boot=ONE, sampler="dopri5", nfe=80)
    write_run(tmp_path, "lfm", 1, [20.0], protocol="fid-tf-2k-celebahq128", sampler="heun:50", nfe=100)
    report = generate(tmp_path, tmp_path / "no-runs", PAPER, with_plots=False)
    (line,) = [x for x in report.files["tables.md"].decode().splitlines() if x.startswith("- LapFlow < LFM (")]
    boot = math.hypot(ONE, ONE)
    assert line == (
        "- LapFlow < LFM (1.05M images): euler:50 (default) does not hold (gap -5.00); "
        f"dopri5 within noise (gap +1.50, +6.50: {6.5 / boot:.1f}x the combined bootstrap std {fmt_sig(boot)}): "
        "the verdict changes with dopri5."
    )
    # a sampler record under another protocol never joins the sampler table's columns: it is in "other"
    other = next(t for t in report.tables if t.id == "other")
    assert [(r[4].text, r[5].text) for r in other.rows] == [("fid", "fid-tf-2k-celebahq128")]


def test_samplers_sort_by_solver_then_steps() -> None:
    assert sorted(["heun:50", "euler:200", "euler:100", "dopri5"], key=sampler_order) == [
        "dopri5",
        "euler:100",
        "euler:200",
        "heun:50",
    ]
