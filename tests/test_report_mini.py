"""The mini benchmark's report section: headline and ablation tables, knee check, curves, grids and the paragraph.

Every record here is made up (synthetic numbers written with bench.results), never a measurement.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.registry import mini_models
from bench.report.build import build_report, generate
from bench.report.mini import Run, collect, knee
from bench.report.mini_plots import curve_series
from bench.report.mini_text import NO_RECORDS, orderings, verdict
from bench.reproduce.mini import MINI_BENCHMARK
from bench.results import make_record, write_record

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "results" / "paper"
IMAGES = (131072, 262144, 524288, 1048576)  # 1/8, 1/4, 1/2 and all of the budget
GPU_SECONDS = (40.0, 80.0, 160.0, 320.0)
FAMILY = {"lapflow": "lapflow", "lfm": "lfm", "pyramidal-flow": "pyramidal-flow", "dit": "dit"}


def _values(tag: str, fid: float, seed: int, protocol: str | None, metric: str) -> dict[str, tuple]:
    """metric -> (value, protocol, extras): KID = FID / 1000, precision 0.5 + seed / 100, recall 0.3 + seed / 100."""
    if metric != "fid":  # one metric only (e.g. clean_fid)
        return {metric: (fid, protocol, {})}
    return {
        "fid": (fid, protocol or f"fid-tf-5k-{tag}", {}),
        "kid": (fid / 1000, f"kid-tf-5k-{tag}", {"kid_std": 0.001 * (seed + 1), "kid_subsets": 100}),
        "precision": (0.5 + seed / 100, f"precision-k3-tf-5k-{tag}", {}),
        "recall": (0.3 + seed / 100, f"recall-k3-tf-5k-{tag}", {}),
        "memorisation": (0.01, f"memorisation-q05-tf-5k-{tag}", {}),
    }


ONE = 1 / 1.645  # a bootstrap std whose 90% interval is +- 1


def write_run(results: Path, run: str, seed: int, fids: list[float], boot: float | None = None,
              res: int = 128, protocol: str | None = None, metric: str = "fid", upto: int = len(IMAGES),
              created: str = "2026-12-01T00:00:00+00:00", sampler: str | None = None,
              nfe: float = 50, train: dict | None = None) -> None:  # fmt: skip
    """One seed of one run: its metrics at the last len(fids) points of IMAGES[:upto] (its budget; bootstrap std
    `boot` at the final one; its percentiles sit above the FID, as resampling with replacement does to FID).
    `sampler` ('dopri5', 'euler:100'): records of `bench reproduce mini --samplers` with that NFE per sample.
    `train`: the records' training-path fields (bench.reproduce.scorer.compile_state) in place of compile: true."""
    family = FAMILY.get(run, "lapflow")
    tag = f"celebahq{res}"
    for point, fid in enumerate(fids):
        images = IMAGES[upto - len(fids) + point]
        extra = {
            "benchmark": MINI_BENCHMARK,
            "run": run,
            "train_seed": seed,
            "point": point,
            "points": len(fids),
            "final": point == len(fids) - 1,
            "images_seen": images,
            "budget_images": IMAGES[upto - 1],
            "gpu_seconds": GPU_SECONDS[IMAGES.index(images)] + seed,
            "steps": images // 256,
            "loss": 0.5,
            **({"compile": True} if train is None else train),
        }
        sampling = {"solver": "euler", "steps": 50, "nfe": 50}
        if sampler is not None:
            solver, _, steps = sampler.partition(":")
            sampling = {"solver": solver, "steps": int(steps or 50), "nfe": math.ceil(nfe)}
            extra |= {"sampler": sampler, "nfe_per_sample": nfe, "nfe_by_batch": [math.ceil(nfe)]}
        values = _values(tag, fid, seed, protocol, metric)
        if boot is not None and point == len(fids) - 1:
            shifted = {"p05": fid + 2 - 1.645 * boot, "p95": fid + 2 + 1.645 * boot}
            values["fid"][2]["fid_bootstrap"] = {"reps": 100, "std": boot, **shifted}
        for name, (value, proto, more) in values.items():
            record = make_record(
                model=family,
                preset=mini_models().get(run, run),
                dataset="celebahq",
                resolution=res,
                metric=name,
                value=value,
                unit="",
                protocol={"name": proto},
                sampling=sampling,
                config={"family": family, "seed": seed},
                seeds={"start": 0, "count": 5000},
                git={"commit": "f1x7e0c" + "0" * 33, "dirty": False},
                environment={"gpu": "NVIDIA H200"},
                extra={**extra, **more},
                created=created,
            )
            write_record(record, results, f"mini/{tag}")


def write_fixture(results: Path) -> None:
    """lapflow past the knee (FID -8.7%), lfm not past it, mask none within noise of causal; 2 seeds each."""
    write_run(results, "lapflow", 0, [80, 40, 22, 20], boot=0.5 * ONE)
    write_run(results, "lapflow", 1, [82, 42, 24, 22], boot=ONE)
    write_run(results, "lfm", 0, [90, 60, 45, 30])
    write_run(results, "lfm", 1, [92, 62, 46, 31])
    write_run(results, "lapflow-mask-none", 0, [80, 40, 25, 21.5])
    write_run(results, "lapflow-mask-none", 1, [80, 40, 25, 23])


def ablation_rows(results: Path, table_id: str) -> tuple[str, list[tuple[str, str, str]]]:
    """The fixture's report (write_fixture into `results`): one ablation table's title and per row (setting, run,
    seeds or "not run")."""
    write_fixture(results)
    report = generate(results, results / "no-runs", PAPER, with_plots=False)
    table = next(t for t in report.tables if t.id == table_id)
    return table.title, [(r[0].text, r[1].text, r[2].text) for r in table.rows]


def variant_axes_of(run: str) -> set[str]:
    """The paper tables' variant axes of a record of this mini run (none: it may sit in their default rows)."""
    from bench.config import resolve
    from bench.report.select import variant_axes
    from bench.results import run_record

    return variant_axes(run_record(resolve(preset=mini_models()[run]), "fid", 1.0, "", {"name": "x"}))


def _grid(results: Path, rows: list[dict], name: str, tile: int = 16) -> Path:
    """A made-up grid (one row of 8 tiles per entry) and its row index, the same name in .json."""
    path = results / "mini" / "celebahq128" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (tile * len(rows), tile * 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    path.with_suffix(".json").write_text(json.dumps({"rows": rows, "columns": 8, "tile": tile}))
    return path


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    write_fixture(root)
    return root


@pytest.fixture(scope="module")
def report(results):
    return generate(results, results / "no-runs", PAPER, with_plots=False)


def _table(report, table_id):
    return next(t for t in report.tables if t.id == table_id)


def table_rows(table) -> list[dict[str, str]]:
    """A table's rows as {header: cell text} (the report tests' common view of a table)."""
    return [{h: c.text for h, c in zip(table.headers, row, strict=True)} for row in table.rows]


def _row(table, run: str) -> dict[str, str]:
    return next(r for r in table_rows(table) if r[table.headers[1]] == run)  # column 1: the run


def test_headline_table_means_spreads_and_final_point(report):
    table = _table(report, "mini-celebahq128")
    assert [r[1].text for r in table.rows] == ["lapflow", "lfm", "pyramidal-flow", "dit"]
    lapflow, lfm = _row(table, "lapflow"), _row(table, "lfm")
    assert lapflow["Model"] == "LapFlow" and lapflow["Seeds"] == "2"
    assert lapflow["FID [fid-tf-5k-celebahq128]"] == "21.00"
    assert lapflow["FID seed std"] == f"{math.sqrt(2):.2f}"  # sample std of (20, 22)
    assert lapflow["FID 90% interval per seed (bootstrap)"] == "19.50-20.50; 21.00-23.00"
    assert lfm["FID [fid-tf-5k-celebahq128]"] == "30.50" and lfm["FID seed std"] == f"{math.sqrt(0.5):.2f}"
    assert lfm["FID 90% interval per seed (bootstrap)"] == "-"
    assert lapflow["KID [kid-tf-5k-celebahq128]"] == "0.0210"
    assert lapflow["KID subset std (largest over seeds)"] == "0.00200"
    assert lapflow["Precision [precision-k3-tf-5k-celebahq128]"] == "0.505"
    assert lapflow["Recall [recall-k3-tf-5k-celebahq128]"] == "0.305"
    assert lapflow["Memorisation [memorisation-q05-tf-5k-celebahq128]"] == "0.010"
    assert lapflow["Images seen"] == "1048576" and lapflow["GPU s"] == "320" and lapflow["NFE"] == "50"
    assert _row(table, "dit")["Seeds"] == "not run" and table.missing == ["pyramidal-flow", "dit"]
    assert "clean FID" not in " ".join(table.headers)  # no clean_fid records: no column
    fid_col = table.headers.index("FID [fid-tf-5k-celebahq128]")
    assert table.rows[0][fid_col].value == pytest.approx(21.0)  # CSV carries the number


def test_knee_verdicts(report):
    table = _table(report, "mini-celebahq128")
    knee_col = "Knee (FID over the last doubling)"
    assert _row(table, "lapflow")[knee_col] == "past the knee (FID -8.7% over the last doubling)"  # 23 -> 21
    assert _row(table, "lfm")[knee_col] == "not past the knee (FID -33.0% over the last doubling)"  # 45.5 -> 30.5
    one = Run("x", "lfm", {0: {IMAGES[-1]: {}}})
    assert knee(one) == "knee unknown: one evaluation point"


def test_ablation_table_shows_missing_runs_as_not_run(report):
    mask = _table(report, "mini-celebahq128-ablation-mask")
    assert [r[0].text for r in mask.rows] == ["causal", "none", "self"]
    none = _row(mask, "lapflow-mask-none")
    assert none["FID [fid-tf-5k-celebahq128]"] == "22.25" and none["Seeds"] == "2"
    assert none["FID seed std"] == f"{math.sqrt(1.125):.2f}"
    assert _row(mask, "lapflow-mask-self")["Seeds"] == "not run" and "lapflow-mask-self" in mask.missing
    assert _row(mask, "lapflow")["FID [fid-tf-5k-celebahq128]"] == "21.00"
    scales = _table(report, "mini-celebahq128-ablation-num-scales")
    assert [_row(scales, r)["Seeds"] for r in ("lapflow-scales-1", "lapflow", "lapflow-scales-3")] == [
        "not run",
        "2",
        "not run",
    ]


def test_paragraph_verdicts(report, results):
    (section,) = collect(report.records)
    verdicts = {o.what: verdict(section, o) for o in orderings()}
    assert verdicts["LapFlow < LFM"] == (
        f"holds: LapFlow 21.0 vs LFM 30.5 (difference 9.50, {9.5 / math.sqrt(2):.1f}x the larger seed std 1.41; "
        "2 and 2 seeds)"
    )
    assert verdicts["mask causal < none"].startswith("within noise: causal 21.0 vs none 22.2")
    assert (
        f"below the combined seed spread {math.hypot(math.sqrt(2), math.sqrt(1.125)):.2f}"
        in (verdicts["mask causal < none"])
    )
    assert verdicts["LFM < Pyramidal Flow"] == "not measured (no FID records of pyramidal-flow)"
    assert verdicts["mask causal < self"] == "not measured (no FID records of lapflow-mask-self)"
    assert verdicts["2 scales < 1 scale"].startswith("not measured")
    text = report.files["tables.md"].decode()
    assert "- LapFlow < LFM: holds: LapFlow 21.0 vs LFM 30.5" in text
    assert "the paper's orderings are at 256 px" in text and "celebahq 128 px" in text


def test_one_seed_uses_the_bootstrap_interval(tmp_path):
    write_run(tmp_path, "lfm", 0, [45, 30], boot=ONE)
    write_run(tmp_path, "pyramidal-flow", 0, [50, 40], boot=ONE)
    write_run(tmp_path, "lapflow", 0, [44, 30.5], boot=ONE)
    write_run(tmp_path, "lapflow-scales-3", 0, [20, 10], boot=0.5 * ONE)
    (section,) = collect(generate(tmp_path, tmp_path / "no-runs", PAPER, with_plots=False).records)
    verdicts = {o.what: verdict(section, o) for o in orderings()}
    assert verdicts["LFM < Pyramidal Flow"] == (
        "holds (one seed only: spread unknown): LFM 30.0 vs Pyramidal Flow 40.0 (difference 10.0; 90% bootstrap "
        "intervals LFM 29.0-31.0, Pyramidal Flow 39.0-41.0 do not overlap)"
    )
    assert verdicts["LapFlow < LFM"].startswith(
        "within noise (one seed only: spread unknown): LapFlow 30.5 vs LFM 30.0"
    )
    table = _table(generate(tmp_path, tmp_path / "no-runs", PAPER, with_plots=False), "mini-celebahq128")
    assert _row(table, "lfm")["FID seed std"] == "one seed"
    assert _row(table, "lfm")["Knee (FID over the last doubling)"].startswith("not past the knee (FID -33.3%")


def test_a_seed_trained_further_adds_a_tier_and_keeps_the_shorter_runs_final_point(tmp_path):
    later = "2026-12-02T00:00:00+00:00"
    for run, (short0, short1, long0) in {
        "lapflow": ([80, 40, 22], [82, 42, 24], [79, 39, 23, 21]),
        "lfm": ([90, 60, 45], [92, 62, 46], [89, 59, 44, 30]),
    }.items():
        write_run(tmp_path, run, 0, short0, boot=ONE, upto=3)
        write_run(tmp_path, run, 1, short1, boot=ONE, upto=3)
        write_run(tmp_path, run, 0, long0, boot=ONE, upto=4, created=later)  # passes 524k on its way: not final
    report = generate(tmp_path, tmp_path / "no-runs", PAPER, with_plots=False)
    table = _table(report, "mini-celebahq128")
    rows = [r for r in table_rows(table) if r[table.headers[1]] == "lapflow"]
    # The 524k row keeps the 524k runs' final records (22 and 24, each with its bootstrap), not the longer run's 23.
    assert [(r["Seeds"], r["Images seen"], r["FID [fid-tf-5k-celebahq128]"]) for r in rows] == [
        ("2", "524288", "23.00"),
        ("1", "1048576", "21.00"),
    ]
    assert rows[0]["FID 90% interval per seed (bootstrap)"] == "21.00-23.00; 23.00-25.00"
    # ... and its knee its own runs' 262k points (40 and 42), not the newer longer run's 39 for seed 0.
    assert rows[0]["Knee (FID over the last doubling)"] == "not past the knee (FID -43.9% over the last doubling)"
    assert rows[1]["Knee (FID over the last doubling)"] == "past the knee (FID -4.5% over the last doubling)"
    assert rows[1]["FID seed std"] == "one seed"
    (section,) = collect(report.records)
    # Curves follow training runs: the 4x budget is a line of its own, with its own 524k point (23, not 22).
    series = curve_series(section, "images")
    assert list(series) == [("lapflow", 524288), ("lapflow", 1048576), ("lfm", 524288), ("lfm", 1048576)]
    assert [(p.x, p.fid) for p in series[("lapflow", 1048576)][1]] == [
        (131072, 79),
        (262144, 39),
        (524288, 23),
        (1048576, 21),
    ]
    assert [p.fid for p in series[("lapflow", 524288)][1]] == [81, 41, 23]  # means of two seeds
    (lapflow_lfm,) = (o for o in orderings() if o.what == "LapFlow < LFM")
    assert verdict(section, lapflow_lfm) == (
        "holds: LapFlow 23.0 vs LFM 45.5 (difference 22.5, 15.9x the larger seed std 1.41; 2 and 2 seeds); "
        "at 1.05M images, holds (one seed only: spread unknown): LapFlow 21.0 vs LFM 30.0 (difference 9.00; 90% "
        "bootstrap intervals LapFlow 20.0-22.0, LFM 29.0-31.0 do not overlap)"
    )


def test_protocols_never_mix_and_mini_records_stay_out_of_paper_tables(tmp_path):
    write_fixture(tmp_path)
    write_run(tmp_path, "lfm", 2, [10.0], protocol="fid-tf-2k-celebahq128")  # another sample count
    write_run(tmp_path, "lfm", 0, [31.0], protocol="fid-clean-5k-celebahq128", metric="clean_fid")
    write_run(tmp_path, "lfm", 1, [32.0], protocol="fid-clean-5k-celebahq128", metric="clean_fid")
    write_run(tmp_path, "lapflow-lr-1e-3", 0, [20.0])  # a run no table names
    report = generate(tmp_path, tmp_path / "no-runs", PAPER, with_plots=False)
    lfm = _row(_table(report, "mini-celebahq128"), "lfm")
    assert lfm["FID [fid-tf-5k-celebahq128]"] == "30.50"  # the 2k record is not averaged in
    assert lfm["clean FID [fid-clean-5k-celebahq128]"] == "31.50" and lfm["clean FID seed std"] == "0.71"
    assert _row(_table(report, "mini-celebahq128"), "lapflow")["clean FID [fid-clean-5k-celebahq128]"] == "-"
    other = _table(report, "other")  # ... it is shown on its own, under its own protocol, as is the unnamed run
    rows = [(r[1].text, r[4].text, r[5].text) for r in other.rows]
    assert rows[0] == ("lfm-celebahq128-mini", "fid", "fid-tf-2k-celebahq128")
    assert {r[0] for r in rows[1:]} == {"lapflow-lr-1e-3"} and sorted(r[1] for r in rows[1:]) == [
        "fid",
        "kid",
        "memorisation",
        "precision",
        "recall",
    ]
    for table in report.tables:
        if not table.id.startswith(("mini-", "other")):
            assert not [i for i in table.placed if i.record.extra.get("benchmark")], table.id


@pytest.mark.parametrize("name", ["grids/h200.png", "grid-h200.png"])
def test_curves_and_labelled_grid_are_written(tmp_path, name):
    results = tmp_path / "results"
    write_fixture(results)
    rows = [{"run": "lapflow", "train_seed": 0, "point": 3, "images_seen": IMAGES[-1]}]
    rows.append({"run": "lfm", "train_seed": 0, "point": 3, "images_seen": IMAGES[-1]})
    grid = _grid(results, rows, name)
    first = build_report(results, tmp_path / "a", tmp_path / "no-runs", PAPER)
    for stem in ("mini-celebahq128-fid-vs-images", "mini-celebahq128-fid-vs-gpu-seconds"):
        for ext in ("png", "pdf"):
            assert (tmp_path / "a" / "plots" / f"{stem}.{ext}").stat().st_size > 1000
    with Image.open(tmp_path / "a" / "samples" / "mini-celebahq128-runs.png") as out, Image.open(grid) as src:
        labelled, original = np.asarray(out.convert("RGB")), np.asarray(src.convert("RGB"))
    margin = labelled.shape[1] - original.shape[1]
    assert margin > 20 and labelled.shape[0] == original.shape[0]
    assert (labelled[:, margin:] == original).all()  # the samples themselves are untouched
    assert (labelled[:, :margin] < 128).any()  # ... and a label is drawn beside them
    assert first.grids["mini-celebahq128"] == Path(name).name
    tables_md = first.files["tables.md"].decode()
    assert "![samples](samples/mini-celebahq128-runs.png)" in tables_md
    assert "![FID vs gpu seconds](plots/mini-celebahq128-fid-vs-gpu-seconds.png)" in tables_md
    second = build_report(results, tmp_path / "b", tmp_path / "no-runs", PAPER)
    assert first.files == second.files  # deterministic bytes


def test_no_records_says_so(tmp_path):
    (tmp_path / "results").mkdir()
    text = generate(tmp_path / "results", tmp_path / "no-runs", PAPER, with_plots=False).files["tables.md"].decode()
    assert "## Mini benchmark (one GPU)" in text and NO_RECORDS in text
