"""`bench report`: regenerate reports/ (tables, plots, README) from results/ and the paper's numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.callback(invoke_without_command=True)
def report_command(
    results_dir: Annotated[
        Path, typer.Option(envvar="BENCH_RESULTS_DIR", help="Result records folder (else $BENCH_RESULTS_DIR).")
    ] = Path("results"),
    out: Annotated[
        Path, typer.Option(help="Output folder; tables/, plots/ and samples/ in it are regenerated.")
    ] = Path("reports"),
    runs_dir: Annotated[
        Path, typer.Option(envvar="BENCH_RUNS_DIR", help="Run folders for training curves and sample grids.")
    ] = Path("runs"),
    paper_dir: Annotated[Path | None, typer.Option(help="The paper's numbers (default: <results-dir>/paper).")] = None,
    plots: Annotated[bool, typer.Option(help="Regenerate plots and sample grids (--no-plots: tables only).")] = True,
) -> None:
    """Regenerate reports/ from results/: paper-vs-measured tables (Markdown, LaTeX, CSV), plots and README."""
    from bench.paths import check_writable_dir
    from bench.report.build import build_report

    check_writable_dir(out, "report folder")  # before any record is read or plot drawn
    report = build_report(results_dir, out, runs_dir, paper_dir, plots)
    typer.echo(
        f"report: {len(report.records)} record(s) -> {len(report.files)} file(s) in {out} "
        f"({len(report.tables)} table(s); missing items listed in {out / 'README.md'})"
    )
