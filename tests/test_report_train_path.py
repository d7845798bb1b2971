"""The mini headline table's training path and compile seconds per row (extra.compile, extra.compile_mode,
extra.compile_stats of the seeds at the row's final point), beside GPU s, which includes the compile.

Every record here is made up (synthetic numbers written with bench.results), never a measurement.
"""

from __future__ import annotations

import pytest

from bench.report.build import generate
from tests.test_report_mini import ONE, PAPER, write_run

EAGER = {"compile": False}  # what bench.reproduce.scorer.compile_state writes for an eager run


def graphs(seconds: float | None) -> dict:
    """A CUDA-graph run's fields; seconds None: a record from before compile_stats existed."""
    state = {"compile": True, "compile_mode": "reduce-overhead"}
    return state if seconds is None else state | {"compile_stats": {"graphs": 1, "compile_seconds": seconds}}


COMPILED = {"compile": True, "compile_mode": "default", "compile_stats": {"graphs": 1, "compile_seconds": 30.0}}

# run -> one training path per seed (seeds 0, 1), each trained to 524,288 images.
PATHS = {
    "lapflow": (EAGER, graphs(84.0)),  # mixed: Compile s (0 + 84) / 2 = 42
    "lfm": (EAGER, EAGER),  # no seed compiled: "-"
    "pyramidal-flow": (COMPILED, COMPILED),  # compiled without graphs: 30
    "dit": (EAGER, graphs(None)),  # a graphs seed without compile_stats: "not recorded"
}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    for run, states in PATHS.items():
        for seed, state in enumerate(states):
            write_run(root, run, seed, [80, 40, 22 + seed], boot=ONE, upto=3, train=state)
    # seed 0 of lapflow also trained to twice the budget with graphs (its compile: 70 s): a further row at 1,048,576
    later = "2026-12-02T00:00:00+00:00"
    write_run(root, "lapflow", 0, [79, 39, 23, 19], boot=ONE, train=graphs(70.0), created=later)
    write_run(root, "lapflow-mask-none", 0, [80, 40, 25], upto=3, train=graphs(50.0))  # an ablation table
    report = generate(root, root / "no-runs", PAPER, with_plots=False)
    return {t.id: t for t in report.tables}


def _rows(table, run: str) -> list[dict[str, str]]:
    return [{h: c.text for h, c in zip(table.headers, r, strict=True)} for r in table.rows if r[1].text == run]


def _value(table, run: str, header: str) -> float | None:
    row = next(r for r in table.rows if r[1].text == run)
    return row[table.headers.index(header)].value


def test_columns_sit_next_to_gpu_seconds(table):
    headers = table["mini-celebahq128"].headers
    gpu = headers.index("GPU s")
    assert headers[gpu + 1 : gpu + 3] == ["Training path", "Compile s"]


def test_mixed_row_counts_each_path_and_averages_compile_with_eager_as_zero(table):
    headline = table["mini-celebahq128"]
    row = _rows(headline, "lapflow")[0]
    assert row["Seeds"] == "2" and row["Training path"] == "eager x1, graphs x1"
    assert row["Compile s"] == "42"  # (0 + 84) / 2
    assert _value(headline, "lapflow", "Compile s") == pytest.approx(42.0)
    gpu = _value(headline, "lapflow", "GPU s")
    assert gpu == pytest.approx(160.5)  # write_run's 160 + seed at 524,288: the recorded seconds, compile included


def test_all_eager_row_reads_eager_and_no_compile(table):
    headline = table["mini-celebahq128"]
    (row,) = _rows(headline, "lfm")
    assert row["Training path"] == "eager" and row["Compile s"] == "-"
    assert _value(headline, "lfm", "Compile s") == 0.0  # CSV: no compile is 0 s, not a gap
    # every cell has a record: the "-" of Compile s does not bring in the "no record" note
    assert not any(n.startswith("`-`: no record") for n in headline.notes)


def test_compiled_without_graphs_and_unrecorded_compile(table):
    headline = table["mini-celebahq128"]
    (pyramidal,) = _rows(headline, "pyramidal-flow")
    assert pyramidal["Training path"] == "compile" and pyramidal["Compile s"] == "30"  # --train-path compile
    (dit,) = _rows(headline, "dit")
    assert dit["Training path"] == "eager x1, graphs x1" and dit["Compile s"] == "not recorded"
    assert _value(headline, "dit", "Compile s") is None
    ((mark, text),) = headline.footnotes
    assert next(r for r in headline.rows if r[1].text == "dit")[headline.headers.index("Compile s")].marks == (mark,)
    assert text.startswith("Not recorded: a compiled seed's record has no extra.compile_stats")


def test_longer_budget_row_has_its_own_seeds_path(table):
    rows = _rows(table["mini-celebahq128"], "lapflow")
    assert [(r["Seeds"], r["Images seen"], r["Training path"], r["Compile s"]) for r in rows] == [
        ("2", "524288", "eager x1, graphs x1", "42"),
        ("1", "1048576", "graphs", "70"),
    ]


def test_footnote_says_gpu_seconds_include_the_compile(table):
    notes = " ".join(table["mini-celebahq128"].notes)
    assert "GPU s: training-loop device seconds up to the final point, compile included" in notes
    assert "Compile s: that part" in notes and "an eager seed counting 0" in notes
    assert "graphs: torch.compile with CUDA graphs" in notes


def test_ablation_tables_keep_without_gpu_seconds_or_paths(table):
    mask = table["mini-celebahq128-ablation-mask"]
    assert not {"GPU s", "Training path", "Compile s"} & set(mask.headers)
