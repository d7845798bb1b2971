"""The `bench` command line. Global options set the environment read by bench.paths, then a command group runs.

Command groups live one per file; heavy imports (torch, models) happen inside commands, so `--help` stays fast
and imports no model code. A BenchError becomes one sentence on stderr and exit code 1.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from bench.cli import data as data_cli
from bench.cli import eval as eval_cli
from bench.cli import floor as floor_cli
from bench.cli import perf as perf_cli
from bench.cli import report as report_cli
from bench.cli import reproduce as reproduce_cli
from bench.cli.demo import demo_command
from bench.cli.ls import ls_command
from bench.cli.sample import sample_command
from bench.cli.train import train_command
from bench.errors import BenchError
from bench.registry import families


class BenchGroup(TyperGroup):
    """Turns a BenchError from any command into one sentence on stderr and exit code 1 (no traceback).

    Faults from outside the suite get one sentence too: Ctrl-C outside the training loop (exit 130), a file
    system error naming its file, running out of memory. `-vv` shows their traceback instead.
    """

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except BenchError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted (Ctrl-C); nothing half-written is kept, rerun the command to continue.", 130)
        except OSError as exc:
            if exc.filename is None or logging.getLogger().level <= logging.DEBUG:
                raise
            fail(f"cannot use '{exc.filename}': {exc.strerror or exc}.")
        except (MemoryError, RuntimeError) as exc:
            if not _is_out_of_memory(exc) or logging.getLogger().level <= logging.DEBUG:
                raise
            fail(f"out of memory ({str(exc).splitlines()[0][:120]}); lower the batch size or the resolution.")
        return None


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=code) from None


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


FAMILY_LABELS = ", ".join(f.label for f in families())
app = typer.Typer(
    name="bench",
    cls=BenchGroup,
    help=f"Reproducibility benchmark suite for multi-scale flow matching ({FAMILY_LABELS}).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)


@app.callback()
def global_options(
    data_root: Annotated[Path | None, typer.Option(help="Data root (else $BENCH_DATA_ROOT).")] = None,
    results_dir: Annotated[Path | None, typer.Option(help="Result records folder (else $BENCH_RESULTS_DIR).")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N (else $BENCH_DEVICE).")] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logging (-vv for debug).")] = 0,
) -> None:
    for key, value in (("BENCH_DATA_ROOT", data_root), ("BENCH_RESULTS_DIR", results_dir), ("BENCH_DEVICE", device)):
        if value is not None:
            os.environ[key] = str(value)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )


app.command("ls")(ls_command)
app.command("train")(train_command)
app.command("sample")(sample_command)
app.command("demo")(demo_command)
app.add_typer(data_cli.app, name="data", help="Prepare data sets (verify, resize, cache latents).")
app.add_typer(eval_cli.app, name="eval", help="Measure FID, GFLOPs, time and NFE; write result records.")
app.add_typer(perf_cli.app, name="perf", help="Performance: attention paths, forwards, training throughput.")
app.add_typer(report_cli.app, name="report", help="Regenerate reports/ from results/.")
app.add_typer(reproduce_cli.app, name="reproduce", help="Reproduce results end to end (mini benchmark on one GPU).")
reproduce_cli.app.command("mini-floor")(floor_cli.mini_floor_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
