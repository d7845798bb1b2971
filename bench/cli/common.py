"""Small pieces shared by the CLI command groups: override parsing, seed ranges, config resolution."""

from __future__ import annotations

from bench.errors import BenchError


def parse_seeds(text: str) -> list[int]:
    """'0-63' (inclusive), '5', or '1,4,9' -> seeds."""
    try:
        if "-" in text.strip("-") and "," not in text:
            lo, hi = (int(p) for p in text.split("-", 1))
            if hi < lo:
                raise ValueError
            return list(range(lo, hi + 1))
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise BenchError(f"Seeds must look like '0-63', '7' or '1,4,9', got '{text}'.") from None


def cli_overrides(sets: list[str] | None, **flags: object) -> list[dict]:
    """CLI sugar flags (e.g. --dataset, --res) then repeated --set key=value, in increasing precedence."""
    from bench.config import parse_set

    flag_keys = {
        "dataset": "data.dataset",
        "res": "data.res",
        "autoencoder": "data.autoencoder",
        "images": "train.total_images",
        "seed": "seed",
        "name": "name",
    }
    out = [parse_set(f"{flag_keys[k]}={v}") for k, v in flags.items() if v is not None]
    return out + [parse_set(s) for s in sets or []]


def echo_header(title: str, rows: list[tuple[str, str]]) -> None:
    """The header of a long command (on stderr, beside the progress bars): what it is about to do."""
    import typer

    width = max((len(k) for k, _ in rows), default=0)
    typer.echo(title, err=True)
    for key, value in rows:
        typer.echo(f"  {key:<{width}}  {value}", err=True)


def count_text(n: float, unit: str = "") -> str:
    """1234567 -> '1.23 M' (parameter counts and the like)."""
    for scale, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:g} {unit}".rstrip()


def signal_exit_code(signum: int) -> int:
    """The shell's convention for a run stopped by a signal: 128 + signum (SIGINT 130, SIGTERM 143)."""
    return 128 + int(signum)


def sample_overrides(sets: list[str], command: str) -> list[dict]:
    """`--set` values of the sample section (the one override route of sampling commands); a key of another
    section does not apply to sampling: refused with the closest sampling key."""
    import dataclasses
    import difflib

    from bench.config import parse_set
    from bench.interface import SampleSpec

    fields = [f.name for f in dataclasses.fields(SampleSpec)]
    out = []
    for text in sets:
        values = parse_set(text)
        key = text.split("=", 1)[0].strip()
        if set(values) != {"sample"}:
            close = difflib.get_close_matches(key.rsplit(".", 1)[-1], fields, n=1, cutoff=0.75)
            hint = (
                f"did you mean 'sample.{close[0]}'?" if close else f"sampling keys: sample.{', sample.'.join(fields)}"
            )
            raise BenchError(f"`{command} --set` takes sampling keys only; '{key}' does not apply ({hint}).")
        out.append(values["sample"])
    return out


def apply_sample_overrides(spec: object, overrides: list[dict]) -> object:
    """The SampleSpec with these sample-section overrides merged in, type-checked (unknown keys refused)."""
    from bench.config import from_dict, merge, to_dict
    from bench.interface import SampleSpec

    values = to_dict(spec)
    for override in overrides:
        values = merge(values, override)
    return from_dict(SampleSpec, values, prefix="sample.")
