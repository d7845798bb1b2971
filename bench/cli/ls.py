"""`bench ls`: what the registries offer (no model code is imported)."""

from __future__ import annotations

from typing import Annotated

import typer

from bench.errors import BenchError
from bench.registry import AUTOENCODERS, DATASETS, MODELS, all_presets, unknown_name_message

KINDS = ("models", "datasets", "autoencoders", "presets")


def ls_command(kind: Annotated[str, typer.Argument(help="models | datasets | autoencoders | presets")]) -> None:
    """List registered models, datasets, autoencoders (with whether their weights are here) or presets."""
    if kind == "models":
        lines = MODELS.names()
    elif kind == "datasets":
        lines = DATASETS.names()
    elif kind == "autoencoders":
        lines = [autoencoder_line(name) for name in AUTOENCODERS.names()]
    elif kind == "presets":
        lines = [f"{name:34s} {family}" for name, (family, _) in sorted(all_presets().items())]
    else:
        raise BenchError(unknown_name_message("listing", kind, list(KINDS)))
    typer.echo("\n".join(lines))


def autoencoder_line(name: str) -> str:
    """'taesd  weights present (/path)' or 'sd-vae-ft-mse  weights missing: put them in ...' (no weights loaded)."""
    from bench.autoencoders import get_spec, resolve_weights
    from bench.paths import weights_root

    spec = get_spec(name)
    if spec.kind == "identity":
        return f"{name:14s} no weights needed (pixel space)"
    try:
        return f"{name:14s} weights present ({resolve_weights(spec)})"
    except BenchError:
        root = weights_root()
        where = str(root / name) if root is not None else f"$BENCH_WEIGHTS_ROOT/{name}"
        return f"{name:14s} weights missing: put the diffusers folder of '{spec.hub_id}' in {where}"
