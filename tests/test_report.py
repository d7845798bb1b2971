"""`bench report`: golden Markdown from fixture records, LaTeX structure, protocol separation, byte-identical reruns.

The fixture records under tests/fixtures/report/ are made up (see make_fixtures.py), never measurements.
Regenerate the golden files with `BENCH_UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/test_report.py` and review the diff.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from bench.cli.report import app
from bench.errors import BenchError
from bench.report import render
from bench.report.build import build_report, generate, write_report
from bench.report.paper import load_paper
from bench.report.plots import read_stats
from bench.report.select import SPECS_BY_ID, variant_axes
from bench.report.tables import MISSING_NOTE, fmt_sig
from bench.results import read_record, write_record

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "results" / "paper"
FIXTURES = REPO / "tests" / "fixtures" / "report"
RESULTS, RUNS, EXPECTED = FIXTURES / "results", FIXTURES / "runs", FIXTURES / "expected"
LAPFLOW_FID = "celebahq128/fid__lapflow-celebahq128-s2__128__fid-tf-5k-celebahq128__d6309089.json"


def _golden(name: str, text: str) -> None:
    path = EXPECTED / name
    if os.environ.get("BENCH_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from the golden file (see the module docstring)"


@pytest.fixture(scope="module")
def fixture_report():
    return generate(RESULTS, RUNS, PAPER, with_plots=False)


def test_golden_markdown(fixture_report):
    _golden("tables.md", fixture_report.files["tables.md"].decode())
    _golden("README.md", fixture_report.files["README.md"].decode())


def _strip_escapes(tex: str) -> str:
    """Drop comment lines and escaped specials, leaving the LaTeX structure."""
    body = "\n".join(line for line in tex.splitlines() if not line.startswith("%"))
    return re.sub(r"\\[{}&%$#_]", "", body)


def test_latex_structure(fixture_report):
    texs = {k: v.decode() for k, v in fixture_report.files.items() if k.endswith(".tex")}
    assert len(texs) == len(fixture_report.tables) >= 10
    for name, tex in texs.items():
        bare = _strip_escapes(tex)
        depth = 0
        for ch in bare:
            depth += {"{": 1, "}": -1}.get(ch, 0)
            assert depth >= 0, name
        assert depth == 0, name
        stack = []
        for kind, env in re.findall(r"\\(begin|end)\{(\w+)\}", bare):
            if kind == "begin":
                stack.append(env)
            else:
                assert stack.pop() == env, name
        assert not stack, name
        lines = tex.splitlines()
        top, mid, bottom = (lines.index(rule) for rule in ("\\toprule", "\\midrule", "\\bottomrule"))
        assert top < mid < bottom, name
        columns = len(re.search(r"\\begin\{tabular\}\{(\w+)\}", tex).group(1))
        for row in lines[top + 1 : bottom]:
            if row != "\\midrule":
                assert row.endswith("\\\\") and bare_amps(row) == columns - 1, (name, row)
        assert not re.search(r"[_%#$]", bare), name  # every special character is escaped


def bare_amps(row: str) -> int:
    return len(re.findall(r"(?<!\\)&", row))


def _table(report, table_id):
    return next(t for t in report.tables if t.id == table_id)


def _cell(table, row_label: tuple[str, ...], header: str) -> str:
    col = table.headers.index(header)
    for row in table.rows:
        if tuple(c.text for c in row[: len(row_label)]) == row_label:
            cell = row[col]
            return cell.text + (f" [{', '.join(cell.marks)}]" if cell.marks else "")
    raise KeyError(row_label)


def test_two_protocols_make_two_columns(fixture_report, tmp_path):
    fid = _table(fixture_report, "celebahq-fid")
    tf, clean = "fid [fid-tf-5k-celebahq128]", "clean_fid [fid-clean-5k-celebahq128]"
    assert _cell(fid, ("128", "LapFlow"), tf).startswith("38.41") and _cell(fid, ("128", "LapFlow"), clean) == "38.95"
    # Same metric, another sample count: a third column, never merged into the 5k one.
    record = read_record(RESULTS / LAPFLOW_FID)
    shutil.copytree(RESULTS, tmp_path / "results")
    write_record(
        dataclasses.replace(record, value=37.0, protocol={"name": "fid-tf-10k-celebahq128"}), tmp_path / "results"
    )
    fid = _table(generate(tmp_path / "results", tmp_path / "runs", PAPER, with_plots=False), "celebahq-fid")
    assert _cell(fid, ("128", "LapFlow"), "fid [fid-tf-10k-celebahq128]") == "37.00"
    assert _cell(fid, ("128", "LapFlow"), tf).startswith("38.41")
    assert _cell(fid, ("128", "LFM"), "fid [fid-tf-10k-celebahq128]") == "-"
    # Timings on two GPUs are two columns; ratios divide within one column only.
    time = _table(fixture_report, "celebahq-time")
    h100, h200 = (f"time_e2e [time-b1-e2e-bf16] @ NVIDIA {g}" for g in ("H100 80GB HBM3", "H200"))
    assert _cell(time, ("128", "LFM"), h100) == "0.533" and _cell(time, ("128", "LFM"), h200) == "0.471"
    assert _cell(time, ("128", "LapFlow"), h200) == "-"
    cpu = _cell(time, ("128", "LapFlow"), "time_e2e [time-b1-e2e-fp32-cpu] @ cpu")  # protocol says not reportable
    assert cpu.startswith("9.84 [") and "not reportable" in dict(time.footnotes)[cpu[-2]]
    assert _cell(time, ("128", "LapFlow"), f"{h100} / LFM") == f"{0.412 / 0.533:.2f}"
    assert _cell(time, ("256", "LapFlow"), "Paper [s/image] / LFM") == f"{1.51 / 1.70:.2f}"


def test_paper_beside_measured_and_missing_marked(fixture_report):
    gflops = _table(fixture_report, "celebahq-gflops")
    paper, measured = "Paper [GFLOPs/forward]", "gflops_forward [gflops-fvcore]"
    assert (
        _cell(gflops, ("256", "LapFlow"), paper) == "16.5 [a]" and _cell(gflops, ("256", "LapFlow"), measured) == "61.2"
    )
    assert _cell(gflops, ("1024", "LFM"), measured) == "-" and MISSING_NOTE in gflops.notes
    assert any("DiT-B/2" in text for _, text in gflops.footnotes)
    fid = _table(fixture_report, "celebahq-fid")  # two records in one cell: newest shown, footnoted
    assert _cell(fid, ("128", "LapFlow"), "fid [fid-tf-5k-celebahq128]") == "38.41 [a]"
    assert "2 records" in dict(fid.footnotes)["a"]
    assert "n/a" in _cell(
        _table(fixture_report, "celebahq-time"),
        ("128", "Pyramidal Flow"),
        "time_e2e [time-b1-e2e-bf16] @ NVIDIA H100 80GB HBM3",
    )


def test_ablation_rows_come_from_config(fixture_report):
    mask = _table(fixture_report, "ablation-mask-fid")
    assert _cell(mask, ("128", "LapFlow", "none"), "fid [fid-tf-5k-celebahq128]") == "40.20"
    assert _cell(mask, ("256", "LapFlow", "self"), "Paper [FID-50K]") == "5.19"
    main = _table(fixture_report, "celebahq-fid")
    assert "40.20" not in {c.text for row in main.rows for c in row}  # ablation runs stay out of the main table
    separate = _table(fixture_report, "ablation-separate-gflops")
    assert _cell(separate, ("128", "LapFlow", "separate"), "gflops_forward [gflops-fvcore]") == "2.31"
    scales = _table(fixture_report, "ablation-scales-fid")
    assert _cell(scales, ("128", "LFM", "1"), "fid [fid-tf-5k-celebahq128]") == "45.12"
    other = _table(fixture_report, "other")
    assert [r[1].text for r in other.rows] == ["lfm-tiny"]
    record = read_record(RESULTS / LAPFLOW_FID)
    assert variant_axes(record) == set()
    pixel = dataclasses.replace(record, config={**record.config, "data": {"autoencoder": "pixel"}})
    assert variant_axes(pixel) == {"space"}  # num_scales 0: the default for the latent side (3 at 128 px pixels)
    two = {**record.config, "data": {"autoencoder": "pixel"}, "model": {"num_scales": 2}}
    assert variant_axes(dataclasses.replace(record, config=two)) == {"space", "num_scales", "critical_times"} - {
        "critical_times"
    }
    three = dataclasses.replace(record, config={**record.config, "model": {"num_scales": 3}})
    assert variant_axes(three) == {"num_scales"}  # (1/3, 2/3) is the default for 3 scales


def test_paper_data_matches_methods():
    paper = load_paper(PAPER)
    cells = {(e.table, e.method, e.resolution, e.column, e.setting): e for e in paper.entries}
    assert cells[("celebahq", "lapflow", 256, "fid", ())].value == 3.53
    assert cells[("celebahq", "lfm", 1024, "gflops", ())].value == 154.8
    assert cells[("celebahq", "lapflow", 512, "nfe", ())].value is None
    assert "ADM UNet" in cells[("celebahq", "lfm", 512, "fid", ())].note
    assert "no 1024 result" in cells[("celebahq", "lfm", 1024, "fid", ())].note
    assert cells[("imagenet", "lapflow", 256, "fid", (("backbone", "XL/2"), ("cfg", "1")))].value == 14.38
    t1 = sorted((e.setting[0][1], e.value) for e in paper.entries if e.table == "ablation-t1")
    assert t1 == [("0.1", 5.12), ("0.2", 4.37), ("0.5", 3.53), ("0.9", 4.92)]
    assert {e.table for e in paper.entries} == set(SPECS_BY_ID)
    assert len(paper.entries) == 36 + 9 + 22


def _with_grids(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    shutil.copytree(RUNS, runs)
    rng = np.random.default_rng(0)
    for run in ("lapflow-celebahq128-s2", "lfm-celebahq128-s2"):
        (runs / run / "samples").mkdir()
        for images in (1024, 4096):
            pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(runs / run / "samples" / f"grid-{images:010d}.png")
    return runs


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_rerun_is_byte_identical_and_owns_its_folders(tmp_path):
    runs = _with_grids(tmp_path)
    first = build_report(RESULTS, tmp_path / "a", runs, PAPER)
    stale = tmp_path / "a" / "plots" / "gone.png"
    stale.write_bytes(b"old")
    (tmp_path / "a" / "notes.txt").write_text("kept: not a report folder")
    second = build_report(RESULTS, tmp_path / "b", runs, PAPER)
    write_report(second, tmp_path / "a")
    assert not stale.exists() and (tmp_path / "a" / "notes.txt").exists()
    a, b = _snapshot(tmp_path / "a"), _snapshot(tmp_path / "b")
    a.pop("notes.txt")
    assert a == b and set(a) == set(first.files)
    expected_plots = {
        "fid_vs_gflops-celebahq",
        "fid_vs_time-celebahq",
        "cost_vs_resolution-celebahq",
        "training_curves",
        "samples",
    }
    assert {f"plots/{p}.{ext}" for p in expected_plots for ext in ("png", "pdf")} <= set(a)
    grid = runs / "lapflow-celebahq128-s2" / "samples" / "grid-0000004096.png"
    assert (tmp_path / "b" / "samples" / "lapflow-celebahq128-s2.png").read_bytes() == grid.read_bytes()
    readme = (tmp_path / "b" / "README.md").read_text()
    assert "f1x7e0a" in readme and "plots/training_curves.png" in readme and "no measurement for" in readme


def test_cli_writes_reports_and_reports_bad_input(tmp_path, monkeypatch):
    out = tmp_path / "reports"
    args = [
        "--results-dir",
        str(RESULTS),
        "--out",
        str(out),
        "--runs-dir",
        str(tmp_path / "none"),
        "--paper-dir",
        str(PAPER),
    ]
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "kept.png").write_bytes(b"from an earlier full run")
    result = CliRunner().invoke(app, [*args, "--no-plots"])
    assert result.exit_code == 0, result.output
    assert (out / "tables.md").is_file() and (out / "tables" / "celebahq-fid.tex").is_file()
    assert (out / "plots" / "kept.png").is_file()  # --no-plots leaves plots/ alone
    assert "not regenerated (--no-plots)" in (out / "README.md").read_text()
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path / "missing"))
    result = CliRunner().invoke(app, ["--out", str(out)])
    assert isinstance(result.exception, BenchError) and "does not exist" in str(result.exception)


def test_read_stats_and_number_format(tmp_path):
    path = tmp_path / "stats.jsonl"
    path.write_text(
        '{"event": "start", "images": 0}\n{"images": 64, "loss": 2.0}\n{"images": 128, "loss": 1.5}\n'
        '{"images": 64, "loss": 1.9}\n{"images": 19'
    )  # resumed run, then a torn last line
    assert [(r["images"], r["loss"]) for r in read_stats(path)] == [(64, 1.9), (128, 1.5)]
    assert [fmt_sig(v) for v in (0.0123456, 0.412, 3.914, 61.23, 154.8)] == ["0.0123", "0.412", "3.91", "61.2", "154.8"]
    assert render.latex_escape("a_b & 5% `x_y`") == r"a\_b \& 5\% \texttt{x\_y}"
