"""`bench ls`: what the registries offer (no model code is imported)."""

from __future__ import annotations

from typing import Annotated

import typer

from bench.errors import BenchError
from bench.registry import AUTOENCODERS, DATASETS, MODELS, all_presets, unknown_name_message

KINDS = ("models", "datasets", "autoencoders", "presets")


def ls_command(kind: Annotated[str, typer.Argument(help="models | datasets | autoencoders | presets")]) -> None:
    """List registered models, datasets, autoencoders or presets."""
    if kind == "models":
        lines = MODELS.names()
    elif kind == "datasets":
        lines = DATASETS.names()
    elif kind == "autoencoders":
        lines = AUTOENCODERS.names()
    elif kind == "presets":
        lines = [f"{name:34s} {family}" for name, (family, _) in sorted(all_presets().items())]
    else:
        raise BenchError(unknown_name_message("listing", kind, list(KINDS)))
    typer.echo("\n".join(lines))
