"""DiT backbone sizes (torch-free, so configs and `bench ls` import no model code)."""

from __future__ import annotations

from dataclasses import dataclass

# DiT model sizes (depth, hidden width, heads): DiT paper Table 1.
DIT_SIZES: dict[str, tuple[int, int, int]] = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}


@dataclass(frozen=True)
class BackboneConfig:
    """Transformer size. `size` names a DiT size; depth/hidden/heads > 0 override it (tiny CPU presets)."""

    size: str = "L"
    patch: int = 2
    depth: int = 0
    hidden: int = 0
    heads: int = 0
    mlp_ratio: float = 4.0

    def dims(self) -> tuple[int, int, int]:
        if self.size not in DIT_SIZES and not (self.depth and self.hidden and self.heads):
            raise ValueError(f"Unknown backbone size '{self.size}'; choose one of {', '.join(DIT_SIZES)}.")
        d, h, n = DIT_SIZES.get(self.size, (0, 0, 0))
        return self.depth or d, self.hidden or h, self.heads or n
