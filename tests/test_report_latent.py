"""The report's latent-statistics table (bench/report/mini_latent.py): records of metrics latent_frechet and
latent_variance beside each sample set's FID, set against the sampler floor, and that they change nothing else.

Every record here is made up (synthetic numbers written with bench.results), never a measurement.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.oracles.records import FLOOR_BENCHMARK
from bench.registry import mini_models
from bench.report import mini_floor, mini_latent
from bench.report.build import generate
from bench.report.mini import collect
from bench.report.tables import MISSING
from bench.reproduce.mini import MINI_BENCHMARK
from bench.results import make_record, write_record
from tests.test_report_mini import FAMILY, IMAGES, PAPER, table_rows, write_fixture

FINAL = IMAGES[-1]  # write_fixture's runs: four points, the last one final, two seeds each
TAG = "celebahq128"
GIT = {"commit": "1a7e47" + "0" * 34, "dirty": False}


def _record(run: str, metric: str, value: float, protocol: str, sampling: dict, extra: dict):
    family = FAMILY.get(run, "lapflow")
    return make_record(
        model=family,
        preset=mini_models().get(run, run),
        dataset="celebahq",
        resolution=128,
        metric=metric,
        value=value,
        unit="",
        protocol={"name": protocol},
        sampling=sampling,
        config={"family": family},
        seeds={"start": 0, "count": 5000},
        git=GIT,
        environment={"gpu": "NVIDIA H200"},
        extra=extra,
        created="2026-12-02T00:00:00+00:00",
    )


def write_latent(results: Path, run: str, seed: int, frechet: float, variance: float,
                 bands: tuple[float, float] | None = None, images: int = FINAL,
                 sampler: str | None = None) -> None:  # fmt: skip
    """A sample set's two latent records (the fid record's extra fields; bands: coarse, fine)."""
    point = IMAGES.index(images)
    extra = {"benchmark": MINI_BENCHMARK, "run": run, "train_seed": seed, "point": point, "points": len(IMAGES)}
    extra |= {"final": images == FINAL, "images_seen": images, "budget_images": FINAL, "gpu_seconds": 100.0 + seed}
    sampling = {"solver": "euler", "steps": 50, "nfe": 50}
    if sampler is not None:
        solver, _, steps = sampler.partition(":")
        sampling = {"solver": solver, "steps": int(steps or 50), "nfe": 90}
        extra |= {"sampler": sampler, "nfe_per_sample": 90.0}
    more = {} if bands is None else {"latent_bands": {"coarse": bands[0], "fine": bands[1]}}
    for metric, value, name, plus in (
        ("latent_frechet", frechet, f"latent-frechet-5k-{TAG}", {}),
        ("latent_variance", variance, f"latent-variance-5k-{TAG}", more),
    ):
        write_record(_record(run, metric, value, name, sampling, {**extra, **plus}), results, f"mini/{TAG}")


def write_floor(results: Path, run: str, sampler: str, frechet: float, variance: float, fine: float) -> None:
    """A floor's two records (bench.oracles.records), the preset's sampler being euler:50."""
    solver, _, steps = sampler.partition(":")
    extra = {"benchmark": FLOOR_BENCHMARK, "run": run, "sampler": sampler, "preset_sampler": sampler == "euler:50"}
    extra |= {"nfe": int(steps or 50), "frechet": frechet, "variance": variance}
    extra |= {"bands": {"coarse": variance, "fine": fine}, "mean_error": 0.0, "data_trace": 100.0}
    sampling = {"solver": solver, "steps": int(steps or 50), "nfe": int(steps or 50)}
    for metric, value in (("floor_frechet", frechet), ("floor_variance", variance)):
        record = _record(run, metric, value, f"floor-gaussian-{TAG}", sampling, extra)
        write_record(record, results, f"mini/{TAG}/floor")


def write_floors(results: Path) -> None:
    write_floor(results, "lapflow", "euler:50", 1.58, 0.905, 0.901)
    write_floor(results, "lapflow", "dopri5", 0.003, 0.999, 0.998)
    write_floor(results, "lfm", "euler:50", 1.20, 0.921, 0.941)


def write_latents(results: Path) -> None:
    write_latent(results, "lapflow", 0, 0.80, 0.80, (0.90, 0.70))
    write_latent(results, "lapflow", 1, 0.90, 0.90, (0.92, 0.76))
    write_latent(results, "lapflow", 0, 5.0, 0.50, (0.6, 0.4), images=IMAGES[-2])  # not the final point
    write_latent(results, "lfm", 0, 0.40, 0.93, (0.95, 0.90))
    write_latent(results, "lfm", 1, 0.50, 0.95, (0.97, 0.92))
    write_latent(results, "lapflow-mask-none", 0, 1.20, 0.70)  # one of two seeds, no bands, no floor
    write_latent(results, "lapflow", 1, 0.10, 0.99, (0.99, 0.98), sampler="dopri5")  # another sampler


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """(no latent records, latent records): both with the mini fixture and the floor."""
    plain, latent = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("latent")
    for root in (plain, latent):
        write_fixture(root)
        write_floors(root)
    write_latents(latent)
    return tuple(generate(r, r / "no-runs", PAPER, with_plots=False) for r in (plain, latent))


def _table(report, table_id: str = f"mini-{TAG}-latent"):
    return next(t for t in report.tables if t.id == table_id)


def test_rows_are_means_at_each_runs_final_point_beside_its_floor(reports) -> None:
    table = _table(reports[1])
    assert table.headers[:7] == ["Model", "Run", "Sampler", "Seeds", "Images seen", "Latent Frechet", "Variance kept"]
    assert table.headers[7:] == ["Coarse band kept", "Fine band kept", "Floor Frechet", "Floor variance kept"]
    rows = table_rows(table)
    own = [(r["Run"], r["Sampler"], r["Seeds"], r["Images seen"]) for r in rows[:3]]
    # Headline runs first (registry order), then the ablations; each at its final point, the run's own sampler.
    assert own == [
        ("lapflow", "euler:50", "2", str(FINAL)),
        ("lfm", "euler:50", "2", str(FINAL)),
        ("lapflow-mask-none", "euler:50", "1 of 2", str(FINAL)),
    ]
    lapflow, lfm, none = rows[:3]
    assert (lapflow["Latent Frechet"], lapflow["Variance kept"]) == ("0.850", "85.0%")  # (0.80 + 0.90) / 2
    assert (lapflow["Coarse band kept"], lapflow["Fine band kept"]) == ("91.0%", "73.0%")
    assert table.rows[0][5].value == pytest.approx(0.85) and table.rows[0][6].value == pytest.approx(0.85)
    assert (lfm["Latent Frechet"], lfm["Variance kept"], lfm["Fine band kept"]) == ("0.450", "94.0%", "91.0%")
    assert (lapflow["Floor Frechet"], lapflow["Floor variance kept"]) == ("1.580", "90.5%")
    assert (lfm["Floor Frechet"], lfm["Floor variance kept"]) == ("1.200", "92.1%")
    # One seed of two, no bands in its record and no floor record of its own: gaps.
    assert (none["Latent Frechet"], none["Variance kept"]) == ("1.200", "70.0%")
    assert none["Coarse band kept"] == none["Fine band kept"] == none["Floor Frechet"] == MISSING
    assert any("second-order (Gaussian) summary in latent space" in n and "not an FID" in n for n in table.notes)
    assert any("tr(Cov samples) / tr(Cov data)" in n and "latent-variance-5k-celebahq128" in n for n in table.notes)


def test_other_samplers_stay_out_of_the_means_in_a_block_of_their_own(reports) -> None:
    table = _table(reports[1])
    rows = table_rows(table)
    assert [r["Run"] for r in rows] == ["lapflow", "lfm", "lapflow-mask-none", "lapflow", "lapflow"]
    default, dopri5 = rows[3:]
    # The point dopri5 scored (seed 1's final), first with the run's own sampler at that seed, then dopri5.
    assert (default["Sampler"], default["Seeds"], default["Latent Frechet"]) == ("euler:50 (default)", "1", "0.900")
    assert (default["Floor Frechet"], default["Floor variance kept"]) == ("1.580", "90.5%")
    assert (dopri5["Sampler"], dopri5["Latent Frechet"], dopri5["Variance kept"]) == ("dopri5", "0.100", "99.0%")
    assert (dopri5["Floor Frechet"], dopri5["Floor variance kept"]) == ("0.003", "99.9%")  # the floor at dopri5
    assert any("'(default)'" in n for n in table.notes)
    # Every latent record is placed here (none left to the "other" table), the intermediate point's as superseded.
    assert len(table.placed) == 2 * 7 and len(table.used) == 2 * 7 - 2
    assert "other" not in {t.id for t in reports[1].tables}


def test_the_headline_and_every_other_table_ignore_the_latent_records(reports) -> None:
    plain, latent = reports
    tables = {t.id: t for t in latent.tables}
    assert set(tables) == {t.id for t in plain.tables} | {f"mini-{TAG}-latent"}
    for table in plain.tables:
        assert table.headers == tables[table.id].headers, table.id
        assert table_rows(tables[table.id]) == table_rows(table), table.id
        assert {i.path for i in tables[table.id].used} == {i.path for i in table.used}, table.id
    (section,) = collect(latent.records)
    assert not [i for i in section.placed if i.record.metric.startswith("latent_")]
    assert "latent_frechet" not in section.protocols and "latent_variance" not in section.protocols


def test_the_block_follows_the_floor_and_changes_nothing_else(reports) -> None:
    plain, latent = reports
    text, before = latent.files["tables.md"].decode(), plain.files["tables.md"].decode()
    section = text.index("### celebahq, 128 px")
    floor, block = text.index("Sampler floor, celebahq 128 px"), text.index("latent statistics at each run's final")
    assert section < floor < block < text.index("![FID vs", section)
    (ls,) = mini_latent.collect(latent.records, collect(latent.records), mini_floor.collect(latent.records))
    lines = mini_latent.markdown(ls, _table(latent))
    assert text.replace("\n".join(lines) + "\n\n", "", 1) == before  # the block and its blank line, nothing else
    assert "tables/mini-celebahq128-latent.csv" in latent.files


def test_lapflow_vs_lfm_sentence_from_the_numbers(reports) -> None:
    lines = [line for line in reports[1].files["tables.md"].decode().splitlines() if "LapFlow vs LFM**" in line]
    assert len(lines) == 1
    first = lines[0]
    assert "(at 1.05M images, euler:50; seeds: LapFlow 2, LFM 2)" in first
    assert "keep 85.0% of the data's latent variance against LFM's 94.0%" in first
    assert "the fine band 73.0% against 91.0%" in first
    assert "LapFlow keeps less of the variance than LFM, and less of the fine band." in first
    text = reports[1].files["tables.md"].decode()
    after = text[text.index(first) + len(first) :].split("\n", 2)[1]
    assert after.startswith("- With exact networks (the sampler floor) the same samplers keep 90.5% (LapFlow) and ")
    # trained minus floor: LapFlow 85.0 - 90.5 = -5.5 points (fine 73.0 - 90.1 = -17.1), LFM 94.0 - 92.1 = +1.9
    assert "LapFlow -5.5 points (fine band -17.1), LFM +1.9 points (fine band -3.1)" in after


def test_no_sentence_without_both_runs_and_no_floor_sentence_without_floors(tmp_path: Path) -> None:
    write_fixture(tmp_path)
    write_latent(tmp_path, "lapflow", 0, 0.80, 0.80, (0.90, 0.70))

    def latent_section() -> mini_latent.LatentSection:
        records = generate(tmp_path, tmp_path / "no-runs", PAPER, with_plots=False).records
        (ls,) = mini_latent.collect(records, collect(records), [])
        return ls

    assert mini_latent.paragraph(latent_section()) == []  # no LFM record
    write_latent(tmp_path, "lfm", 0, 0.40, 0.80, (0.95, 0.70))
    ls = latent_section()
    (line,) = mini_latent.paragraph(ls)  # no floor records: one sentence
    assert "seeds: LapFlow 1, LFM 1" in line and "as much of the variance as LFM, and as much of the fine band." in line
    table = mini_latent.latent_table(ls)
    assert [row[9].text for row in table.rows] == [MISSING, MISSING]  # no floor: "-"
    assert len(table.notes) == 4  # no other-sampler block, no note for it


def test_no_latent_records_no_table(reports) -> None:
    plain = reports[0]
    assert mini_latent.collect(plain.records, collect(plain.records), []) == []
    assert not [t for t in plain.tables if t.id.endswith("-latent")]
    assert "latent statistics" not in plain.files["tables.md"].decode()
