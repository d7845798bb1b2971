"""Mixture-of-Transformers DiT for LapFlow (METHODS.md section 1, "Network"; MoT: arXiv 2411.04996).

Each scale has its own expert: patch embedding, 2D sin-cos positions on that scale's own token grid (or, as an
ablation, aligned to the finest grid: `scale_pos_embed`), per-layer adaLN-Zero DiT blocks (norms, QKV, output
projection, MLP) and a final layer. Shared: the time/label embedding and ONE global self-attention per layer over
the tokens of all active scales, ordered coarsest first, under a block mask (attention.py). With one scale this is
exactly models.layers.DiT (same computation, mapped names).
Never imports `bench`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from models.lapflow.attention import MASK_MODES, packed_attention
from models.lapflow.config import POSITIONS
from models.layers import (
    DiTBlock,
    FinalLayer,
    LabelEmbedder,
    PatchEmbed,
    TimestepEmbedder,
    init_dit_weights,
    patch_grid,
    register_time_scale,
    sincos_pos_embed_2d,
    sincos_pos_embed_at,
    split_heads,
    unpatchify,
)
from models.sizes import BackboneConfig

# DiT submodules that belong to an expert (the rest, t_embedder and y_embedder, is shared).
EXPERT_PREFIXES = ("x_embedder.", "blocks.", "final_layer.")


def scale_pos_embed(hidden: int, grid: tuple[int, int], stride: int = 1) -> Tensor:
    """Sin-cos positions [gh * gw, hidden] of a scale whose token grid is `stride` times coarser than the finest.

    Token (i, j) sits at the centre of the stride x stride finest-grid cells it covers, (stride * i + (stride - 1) / 2,
    same for j): the mean of those cells' integer coordinates. The finest grid (stride 1) keeps DiT's integer cells,
    and one global attention can tell from positions which coarse token lies under a fine one (on its own grid,
    coarse (i, j) and fine (i, j) share one code while covering different places of the image).
    """
    if stride == 1:  # DiT's own-grid embedding, bit for bit
        return sincos_pos_embed_2d(hidden, *grid)
    ys, xs = (stride * np.arange(n, dtype=np.float64) + (stride - 1) / 2 for n in grid)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    return sincos_pos_embed_at(hidden, gy, gx)


class ScaleExpert(nn.Module):
    """Everything of one scale except attention and the time/label embedding."""

    def __init__(self, backbone: BackboneConfig, channels: int, size: tuple[int, int], stride: int = 1) -> None:
        super().__init__()
        depth, hidden, heads = backbone.dims()
        p = backbone.patch
        self.grid = patch_grid(size, p)
        self.patch, self.channels = p, channels
        self.x_embedder = PatchEmbed(channels, hidden, p)
        # stride: how many times coarser this grid is than the one the positions are counted on (1: its own)
        self.register_buffer("pos_embed", scale_pos_embed(hidden, self.grid, stride)[None], persistent=False)
        self.blocks = nn.ModuleList(DiTBlock(hidden, heads, backbone.mlp_ratio) for _ in range(depth))
        self.final_layer = FinalLayer(hidden, p, channels)

    @property
    def tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def embed(self, x: Tensor) -> Tensor:
        return self.x_embedder(x) + self.pos_embed.to(x.dtype)  # [B, N, D]

    def output(self, h: Tensor, c: Tensor) -> Tensor:
        return unpatchify(self.final_layer(h, c), self.patch, self.channels, *self.grid)  # [B, C, H_k, W_k]


class MoTDiT(nn.Module):
    """(xs, t, y) -> velocities, where xs are the active scales coarsest first: [x^(S-1), ..., x^(s)].

    `input_size` is the finest scale's size; scale k has size input_size / 2^k. `positions="aligned"` counts every
    scale's positions on the finest scale's token grid (scale k at stride 2^k); "own" on each scale's own grid.
    """

    def __init__(
        self,
        backbone: BackboneConfig,
        channels: int,
        input_size: tuple[int, int],
        num_scales: int,
        num_classes: int = 0,
        class_dropout: float = 0.1,
        time_scale: float = 1.0,
        mask: str = "causal",
        attention: str = "prefix",
        positions: str = "own",
    ) -> None:
        super().__init__()
        if positions not in POSITIONS:
            raise ValueError(f"unknown positions '{positions}'; choose {', '.join(POSITIONS)}")
        if mask not in MASK_MODES:
            raise ValueError(f"unknown attention mask '{mask}'; choose {', '.join(MASK_MODES)}")
        if attention not in ("prefix", "masked"):
            raise ValueError(f"unknown attention implementation '{attention}'; choose prefix or masked")
        hidden = backbone.dims()[1]
        self.num_scales, self.depth = num_scales, backbone.dims()[0]
        self.mask, self.attention = mask, attention
        register_time_scale(self, time_scale)
        self.t_embedder = TimestepEmbedder(hidden)
        self.y_embedder = LabelEmbedder(num_classes, hidden, class_dropout)
        sizes = [(input_size[0] >> k, input_size[1] >> k) for k in range(num_scales)]
        strides = [2**k if positions == "aligned" else 1 for k in range(num_scales)]
        self.experts = nn.ModuleList(
            ScaleExpert(backbone, channels, size, stride) for size, stride in zip(sizes, strides, strict=True)
        )
        init_dit_weights(self)

    def tokens(self, active: int) -> int:
        """Sequence length when the `active` coarsest scales run."""
        return sum(e.tokens for e in self.experts[self.num_scales - active :])

    def forward(self, xs: Sequence[Tensor], t: Tensor, y: Tensor | None = None, finest_only: bool = False) -> list:
        if not 1 <= len(xs) <= self.num_scales:
            raise ValueError(f"expected 1 to {self.num_scales} active scales, got {len(xs)}")
        experts = [self.experts[self.num_scales - 1 - i] for i in range(len(xs))]  # coarsest first
        hs = [e.embed(x) for e, x in zip(experts, xs, strict=True)]
        c = self.t_embedder(t * self.time_scale) + self.y_embedder(y, xs[0].shape[0], xs[0].device)  # [B, D]
        lengths = [e.tokens for e in experts]
        for layer in range(self.depth):
            blocks = [e.blocks[layer] for e in experts]
            pre = [b.project_qkv(h, c) for b, h in zip(blocks, hs, strict=True)]  # ([B, N_i, 3D], state)
            # One contiguous token-axis concat of the projections: q, k and v of all scales are views of it (the
            # per-scale path concatenated strided k and v separately: two copies per layer, profiled as aten::cat).
            qkv = pre[0][0] if len(pre) == 1 else torch.cat([p[0] for p in pre], dim=1)  # [B, N, 3D]
            q, k, v = split_heads(qkv, blocks[0].heads)
            outs = packed_attention(q, k, v, lengths, self.mask, self.attention)
            hs = [b.post_attention(h, o, p[1]) for b, h, o, p in zip(blocks, hs, outs, pre, strict=True)]
        if finest_only:
            return [experts[-1].output(hs[-1], c)]
        return [e.output(h, c) for e, h in zip(experts, hs, strict=True)]


class SeparateNetworks(nn.Module):
    """Ablation: no shared weights. Network k (its own MoT over scales k..S-1) predicts only scale k.

    Network k still reads the coarser active scales, so the fine scale is conditioned on the coarse state as in
    the causal MoT; nothing (embeddings, attention) is shared between networks. With aligned positions, network k
    counts them on its own finest grid (scale k's), the finest grid its attention sees.
    """

    def __init__(self, backbone: BackboneConfig, channels: int, input_size: tuple[int, int], num_scales: int, **kw):
        super().__init__()
        self.num_scales = num_scales
        sizes = [(input_size[0] >> k, input_size[1] >> k) for k in range(num_scales)]
        self.nets = nn.ModuleList(MoTDiT(backbone, channels, sizes[k], num_scales - k, **kw) for k in range(num_scales))

    @property
    def y_embedder(self) -> LabelEmbedder:
        """The label dropout of the loss (the same rate in every network): one draw per sample, applied to y before
        all networks, as with the MoT's one shared embedder; each network then embeds with its own table."""
        return self.nets[0].y_embedder

    def tokens(self, active: int) -> int:
        """Tokens processed in all networks when the `active` coarsest scales run."""
        return sum(self.nets[k].tokens(self.num_scales - k) for k in range(self.num_scales - active, self.num_scales))

    def forward(self, xs: Sequence[Tensor], t: Tensor, y: Tensor | None = None) -> list:
        outs = []
        for i in range(len(xs)):
            k = self.num_scales - 1 - i  # scale of xs[i]
            outs.append(self.nets[k](xs[: i + 1], t, y, finest_only=True)[0])
        return outs


def dit_to_expert_state(state: Mapping[str, Tensor], scale: int = 0) -> dict[str, Tensor]:
    """Rename a models.layers.DiT state dict for MoTDiT: per-scale parts go to `experts.<scale>`, the rest is shared.

    With one scale, MoTDiT.load_state_dict(dit_to_expert_state(dit.state_dict())) gives the same network.
    """
    out = {}
    for key, value in state.items():
        out[f"experts.{scale}.{key}" if key.startswith(EXPERT_PREFIXES) else key] = value
    return out
