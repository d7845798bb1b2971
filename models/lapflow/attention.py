"""The global attention of the Mixture-of-Transformers over all active scales (never imports `bench`).

Inputs are per-scale lists of q, k, v [B, heads, N_i, D], ordered coarsest first. Block masks (True = may attend):
- causal: a token of scale k attends to scales >= k (its own and coarser), i.e. list positions <= its own;
- none:   every token attends to every token;
- self:   a token attends to its own scale only (block diagonal).

Two exact implementations:
- masked: concatenate everything and run one SDPA with a boolean mask (the reference, any mask);
- prefix: with coarsest-first order, the keys a causal query may see are a prefix of the sequence, so each
  scale's queries attend to their key prefix with plain, unmasked SDPA. Flash kernels stay usable and only the
  allowed blocks are computed (and counted by FLOP counters); 'self' runs one SDPA per scale, 'none' one in all.
`packed_attention` is the same two implementations on q, k, v already laid out over all scales (the MoT forward
concatenates the experts' token-major QKV projections once per layer, instead of concatenating strided k and v).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor

MASK_MODES = ("causal", "none", "self")


def block_mask(lengths: list[int], mode: str, device: torch.device | None = None) -> Tensor | None:
    """Boolean [L, L] mask (rows = queries) over scales of the given token counts, coarsest first; None = all."""
    if mode not in MASK_MODES:
        raise ValueError(f"unknown attention mask '{mode}'; choose causal, none or self")
    if mode == "none":
        return None
    ids = torch.repeat_interleave(torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device))
    if mode == "causal":
        return ids[None, :] <= ids[:, None]
    return ids[None, :] == ids[:, None]


def masked_attention(qs: list[Tensor], ks: list[Tensor], vs: list[Tensor], mode: str = "causal") -> list[Tensor]:
    """Reference: one SDPA over the concatenated sequence with the block mask."""
    lengths = [q.shape[2] for q in qs]
    mask = block_mask(lengths, mode, qs[0].device)
    out = F.scaled_dot_product_attention(torch.cat(qs, 2), torch.cat(ks, 2), torch.cat(vs, 2), attn_mask=mask)
    return list(out.split(lengths, dim=2))


def prefix_attention(qs: list[Tensor], ks: list[Tensor], vs: list[Tensor], mode: str = "causal") -> list[Tensor]:
    """Fast exact path: unmasked SDPA of each scale's queries over the keys its mask allows."""
    if mode not in MASK_MODES:
        raise ValueError(f"unknown attention mask '{mode}'; choose causal, none or self")
    if len(qs) == 1 or mode == "self":
        return [F.scaled_dot_product_attention(q, k, v) for q, k, v in zip(qs, ks, vs, strict=True)]
    k_all, v_all = torch.cat(ks, 2), torch.cat(vs, 2)
    if mode == "none":
        lengths = [q.shape[2] for q in qs]
        return list(F.scaled_dot_product_attention(torch.cat(qs, 2), k_all, v_all).split(lengths, dim=2))
    ends = list(itertools.accumulate(k.shape[2] for k in ks))
    # Prefix slices along the sequence are views with a contiguous last dimension, as flash attention needs.
    return [
        F.scaled_dot_product_attention(q, k_all[:, :, :end], v_all[:, :, :end]) for q, end in zip(qs, ends, strict=True)
    ]


def packed_attention(
    q: Tensor, k: Tensor, v: Tensor, lengths: list[int], mode: str = "causal", impl: str = "prefix"
) -> list[Tensor]:
    """q, k, v [B, heads, N, D] over all scales (coarsest first, `lengths` tokens each) -> per-scale outputs
    [B, heads, N_i, D]; the same maths as `attend` on the per-scale lists, without concatenating anything."""
    if mode not in MASK_MODES:
        raise ValueError(f"unknown attention mask '{mode}'; choose causal, none or self")
    if impl == "masked":
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=block_mask(lengths, mode, q.device))
        return list(out.split(lengths, dim=2))
    if impl != "prefix":
        raise ValueError(f"unknown attention implementation '{impl}'; choose prefix or masked")
    if len(lengths) == 1 or mode == "none":
        return list(F.scaled_dot_product_attention(q, k, v).split(lengths, dim=2))
    ends = list(itertools.accumulate(lengths))
    spans = list(zip([0, *ends[:-1]], ends, strict=True))
    if mode == "self":
        return [F.scaled_dot_product_attention(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b]) for a, b in spans]
    return [F.scaled_dot_product_attention(q[:, :, a:b], k[:, :, :b], v[:, :, :b]) for a, b in spans]


def attend(qs: list[Tensor], ks: list[Tensor], vs: list[Tensor], mode: str = "causal", impl: str = "prefix") -> list:
    if impl == "prefix":
        return prefix_attention(qs, ks, vs, mode)
    if impl == "masked":
        return masked_attention(qs, ks, vs, mode)
    raise ValueError(f"unknown attention implementation '{impl}'; choose prefix or masked")
