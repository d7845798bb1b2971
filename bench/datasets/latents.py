"""The training set in memory: latents (or pixels in [-1, 1]), labels and mirrored copies, batched by index."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class LatentDataset:
    """The training set in memory (on the training device): what the model's loss receives."""

    latents: Tensor  # [N, C, h, w] float32 (pixel autoencoder: images in [-1, 1])
    labels: Tensor | None  # [N] long, or None when unconditional
    num_classes: int
    meta: dict  # dataset, res, autoencoder, weights_hash, count, source_hash, ...
    flipped: Tensor | None = None  # [N, C, h, w] latents of the mirrored images (non-pixel autoencoders with flip)
    flip: bool = True  # cfg.flip: when False, batch() ignores its flip argument

    def __len__(self) -> int:
        return int(self.latents.shape[0])

    def batch(self, indices: Tensor, flip: Tensor) -> tuple[Tensor, Tensor | None]:
        """Rows `indices`, mirrored where `flip` (pixels on the fly; latents from the cached mirrored copies)."""
        device = self.latents.device
        idx = indices.to(device=device, dtype=torch.long)
        x = self.latents[idx]
        if self.flip:
            mask = flip.to(device=device, dtype=torch.bool).view(-1, 1, 1, 1)
            mirrored = self.flipped[idx] if self.flipped is not None else x.flip(-1)
            x = torch.where(mask, mirrored, x)
        y = self.labels[idx] if self.labels is not None else None
        return x, y
