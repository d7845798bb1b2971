"""Shared DiT layers: published parameter counts, positions, shapes and the split block."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.layers import DiT, DiTBlock, sincos_pos_embed_2d, unpatchify
from models.sizes import BackboneConfig

# DiT paper Table 1 (ImageNet 256, latent 4x32x32, learned sigma, 1000 classes): parameters in millions.
PUBLISHED_PARAMS_M = {"S": 33, "B": 130, "L": 458, "XL": 675}


@pytest.mark.parametrize("size", ["S", "B", "L", "XL"])
def test_parameter_counts_match_dit_paper(size):
    with torch.device("meta"):
        net = DiT(BackboneConfig(size, 2), 4, (32, 32), out_channels=8, num_classes=1000)
    count = sum(p.numel() for p in net.parameters()) / 1e6
    assert count == pytest.approx(PUBLISHED_PARAMS_M[size], rel=0.01)


def test_sincos_positions_are_distinct_and_bounded():
    pos = sincos_pos_embed_2d(64, 4, 6)
    assert pos.shape == (24, 64) and pos.abs().max() <= 1.0
    assert torch.cdist(pos, pos).add(torch.eye(24)).min() > 1e-3


def test_unpatchify_inverts_patch_layout():
    x = torch.randn(2, 3, 8, 12)
    p = 2
    tokens = x.reshape(2, 3, 4, p, 6, p).permute(0, 2, 4, 3, 5, 1).reshape(2, 24, p * p * 3)
    assert torch.equal(unpatchify(tokens, p, 3, 4, 6), x)


def test_split_block_equals_forward():
    block = DiTBlock(32, 4).double()
    torch.nn.init.normal_(block.adaLN_modulation[-1].weight)
    x, c = torch.randn(2, 5, 32, dtype=torch.float64), torch.randn(2, 32, dtype=torch.float64)
    q, k, v, state = block.pre_attention(x, c)
    assert torch.equal(block.post_attention(x, F.scaled_dot_product_attention(q, k, v), state), block(x, c))


def test_zero_init_output_and_shapes():
    net = DiT(BackboneConfig("S", 4, depth=2, hidden=64, heads=4), 3, (16, 16), num_classes=10)
    out = net(torch.randn(2, 3, 16, 16), torch.rand(2), torch.tensor([1, 10]))
    assert out.shape == (2, 3, 16, 16) and torch.count_nonzero(out) == 0  # adaLN-Zero + zero final layer
