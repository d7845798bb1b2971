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
