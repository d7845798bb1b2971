"""Shared DiT building blocks (ONE copy for LFM, LapFlow, Pyramidal Flow and DiT).

Follows the structure of facebookresearch/DiT (adaLN-Zero blocks, fixed 2D sin-cos positions, sinusoidal
timestep embedding with 256 frequencies, label embedding with a null class for classifier-free guidance).
Attention runs through torch.nn.functional.scaled_dot_product_attention. The block exposes its attention
input/output halves so that a Mixture-of-Transformers can run per-scale experts around ONE global attention.
This module never imports `bench`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.interface import LossDraws
from models.sizes import DIT_SIZES, BackboneConfig

__all__ = ["DIT_SIZES", "BackboneConfig", "DiT", "DiTBlock", "FinalLayer"]

TIME_FREQUENCIES = 256  # DiT's sinusoidal timestep embedding size
MAX_PERIOD = 10_000


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def timestep_embedding(t: Tensor, dim: int = TIME_FREQUENCIES, max_period: int = MAX_PERIOD) -> Tensor:
    """Sinusoidal embedding [B, dim] of (possibly fractional) timesteps t [B] (DiT/ADM convention)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int, frequencies: int = TIME_FREQUENCIES) -> None:
        super().__init__()
        self.frequencies = frequencies
        self.mlp = nn.Sequential(nn.Linear(frequencies, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: Tensor) -> Tensor:
        emb = timestep_embedding(t, self.frequencies).to(self.mlp[0].weight.dtype)
        return self.mlp(emb)


class LabelEmbedder(nn.Module):
    """Class embedding with one extra row, the null class (id = num_classes), used by label dropout and CFG.

    Unconditional models use num_classes = 0: a single always-on embedding (LFM's convention).
    """

    def __init__(self, num_classes: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dropout = dropout if num_classes > 0 else 0.0
        self.table = nn.Embedding(num_classes + 1, hidden)

    def null_labels(self, batch: int, device: torch.device) -> Tensor:
        return torch.full((batch,), self.num_classes, dtype=torch.long, device=device)

    def dropout_draws(self, y: Tensor | None) -> LossDraws:
        """Label dropout's uniform draw per sample, for a family's loss_draws: none when nothing can be dropped."""
        if y is None or not self.training or self.dropout <= 0:
            return {}
        return {"label_dropout": torch.rand(y.shape[0], device=y.device)}

    def drop_labels(self, y: Tensor | None, draws: LossDraws) -> Tensor | None:
        """y with the null class where the sample's dropout draw falls below the rate (a training loss applies this
        before the network, from draws taken outside any compiled graph)."""
        u = draws.get("label_dropout")
        if y is None or u is None:
            return y
        return torch.where(u < self.dropout, torch.full_like(y, self.num_classes), y)

    def forward(self, y: Tensor | None, batch: int, device: torch.device) -> Tensor:
        return self.table(self.null_labels(batch, device) if y is None else y)


class PatchEmbed(nn.Module):
    """[B, C, H, W] -> [B, (H/p)(W/p), hidden] by a stride-p convolution."""

    def __init__(self, in_channels: int, hidden: int, patch: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_channels, hidden, kernel_size=patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def patch_grid(size: tuple[int, int], patch: int) -> tuple[int, int]:
    """Token grid of an input of `size` cut into patch x patch pieces."""
    if size[0] % patch or size[1] % patch:
        raise ValueError(f"input size {size} is not divisible by the patch size {patch}")
    return size[0] // patch, size[1] // patch


def sincos_pos_embed_at(hidden: int, ys: np.ndarray, xs: np.ndarray) -> Tensor:
    """Fixed 2D sin-cos codes [n, hidden] (MAE/DiT) of n positions given as float64 row (ys) and column (xs)
    coordinates, which may be fractional (LapFlow's aligned positions); computed in float64 then cast."""
    assert hidden % 4 == 0, "hidden width must be divisible by 4 for 2D sin-cos positions"

    def one_axis(pos: np.ndarray, dim: int) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    # DiT puts the width coordinate first in the embedding (its meshgrid order).
    emb = np.concatenate([one_axis(xs, hidden // 2), one_axis(ys, hidden // 2)], axis=1)
    return torch.from_numpy(emb).float()


def sincos_pos_embed_2d(hidden: int, grid_h: int, grid_w: int) -> Tensor:
    """Fixed 2D sin-cos positions [grid_h * grid_w, hidden] (MAE/DiT) of the integer cells of a grid, row-major."""
    gy, gx = np.meshgrid(np.arange(grid_h, dtype=np.float64), np.arange(grid_w, dtype=np.float64), indexing="ij")
    return sincos_pos_embed_at(hidden, gy, gx)


class Mlp(nn.Module):
    def __init__(self, hidden: int, mlp_hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden, mlp_hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(mlp_hidden, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def split_heads(qkv: Tensor, heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """qkv [B, N, 3D] -> q, k, v [B, heads, N, D/heads] (views; the head dimension stays contiguous for SDPA)."""
    b, n, d3 = qkv.shape
    q, k, v = qkv.reshape(b, n, 3, heads, d3 // (3 * heads)).permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block, split around attention so experts can share one global attention.

    forward(x, c) = post_attention(x, attend(*pre_attention(x, c)), state).
    """

    def __init__(self, hidden: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def project_qkv(self, x: Tensor, c: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """x [B, N, D], c [B, D] -> the token-major projection qkv [B, N, 3D] and the modulation state."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        return self.qkv(modulate(self.norm1(x), shift_msa, scale_msa)), (gate_msa, shift_mlp, scale_mlp, gate_mlp)

    def pre_attention(self, x: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor, tuple[Tensor, ...]]:
        """x [B, N, D], c [B, D] -> q, k, v [B, heads, N, D/heads] and the modulation state."""
        qkv, state = self.project_qkv(x, c)
        return (*split_heads(qkv, self.heads), state)

    def post_attention(self, x: Tensor, attn: Tensor, state: tuple[Tensor, ...]) -> Tensor:
        """attn [B, heads, N, D/heads] -> residual update of x [B, N, D]."""
        gate_msa, shift_mlp, scale_mlp, gate_mlp = state
        b, _, n, _ = attn.shape
        x = x + gate_msa.unsqueeze(1) * self.proj(attn.transpose(1, 2).reshape(b, n, -1))
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        q, k, v, state = self.pre_attention(x, c)
        return self.post_attention(x, F.scaled_dot_product_attention(q, k, v), state)


class FinalLayer(nn.Module):
    """adaLN-modulated norm + linear to patch pixels (patch * patch * out_channels per token)."""

    def __init__(self, hidden: int, patch: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch * patch * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


def unpatchify(x: Tensor, patch: int, channels: int, grid_h: int, grid_w: int) -> Tensor:
    """[B, gh*gw, p*p*C] -> [B, C, gh*p, gw*p]."""
    b = x.shape[0]
    x = x.reshape(b, grid_h, grid_w, patch, patch, channels)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(b, channels, grid_h * patch, grid_w * patch)


def init_dit_weights(module: nn.Module) -> None:
    """DiT initialisation: xavier linears, zero biases; callers then zero the adaLN and output layers."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, PatchEmbed):
            w = m.proj.weight.data
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
            nn.init.zeros_(m.proj.bias)
        elif isinstance(m, LabelEmbedder):
            nn.init.normal_(m.table.weight, std=0.02)
        elif isinstance(m, TimestepEmbedder):
            nn.init.normal_(m.mlp[0].weight, std=0.02)
            nn.init.normal_(m.mlp[2].weight, std=0.02)
    for m in module.modules():
        if isinstance(m, DiTBlock | FinalLayer):
            nn.init.zeros_(m.adaLN_modulation[-1].weight)
            nn.init.zeros_(m.adaLN_modulation[-1].bias)
        if isinstance(m, FinalLayer):
            nn.init.zeros_(m.linear.weight)
            nn.init.zeros_(m.linear.bias)


def register_time_scale(module: nn.Module, time_scale: float) -> None:
    """`module.time_scale`, the factor t is multiplied by before the sinusoidal embedding, as a float32 buffer: t *
    buffer is t * float (one float32 multiply either way), but as an input of a compiled graph rather than a
    constant in it, so a time-scale ablation compiles to its base run's graph (bench.compiling). Not saved."""
    module.register_buffer("time_scale", torch.tensor(float(time_scale)), persistent=False)


class DiT(nn.Module):
    """The single-scale DiT network: (x [B,C,H,W], t [B], y [B] or None) -> [B, out_channels, H, W].

    `time_scale` multiplies t before the sinusoidal embedding (diffusion passes integer steps with 1.0;
    flows on [0, 1] pass their choice, recorded in their config).
    """

    def __init__(
        self,
        backbone: BackboneConfig,
        in_channels: int,
        input_size: tuple[int, int],
        out_channels: int | None = None,
        num_classes: int = 0,
        class_dropout: float = 0.1,
        time_scale: float = 1.0,
    ) -> None:
        super().__init__()
        depth, hidden, heads = backbone.dims()
        p = backbone.patch
        self.grid = patch_grid(input_size, p)
        self.patch, self.in_channels = p, in_channels
        self.out_channels = out_channels or in_channels
        register_time_scale(self, time_scale)
        self.x_embedder = PatchEmbed(in_channels, hidden, p)
        self.t_embedder = TimestepEmbedder(hidden)
        self.y_embedder = LabelEmbedder(num_classes, hidden, class_dropout)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(hidden, *self.grid)[None], persistent=False)
        self.blocks = nn.ModuleList(DiTBlock(hidden, heads, backbone.mlp_ratio) for _ in range(depth))
        self.final_layer = FinalLayer(hidden, p, self.out_channels)
        init_dit_weights(self)

    def positions(self, gh: int, gw: int, like: Tensor) -> Tensor:
        """Fixed 2D sin-cos positions of a gh x gw patch grid, in the input's dtype: under autocast the residual
        stream stays float32 (bf16 patch embedding + float32 positions), the same for every family."""
        if (gh, gw) != self.grid:
            raise ValueError(f"this DiT was built for a {self.grid} patch grid, got {(gh, gw)}")
        return self.pos_embed.to(like.dtype)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        gh, gw = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        h = self.x_embedder(x) + self.positions(gh, gw, x)  # [B, gh*gw, D]
        c = self.t_embedder(t * self.time_scale) + self.y_embedder(y, x.shape[0], x.device)  # [B, D]
        for block in self.blocks:
            h = block(h, c)
        h = self.final_layer(h, c)  # [B, gh*gw, p*p*C_out]
        return unpatchify(h, self.patch, self.out_channels, gh, gw)
