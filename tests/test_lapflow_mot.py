"""LapFlow's Mixture-of-Transformers: block-causal information flow, exact fast attention, DiT equivalence."""

from __future__ import annotations

import math

import pytest
import torch

from models.lapflow.attention import block_mask, masked_attention, prefix_attention
from models.lapflow.mot import MoTDiT, SeparateNetworks, dit_to_expert_state
from models.layers import DiT
from models.sizes import BackboneConfig

TINY = BackboneConfig("S", patch=2, depth=2, hidden=64, heads=4)
SIZE = (16, 16)  # scales 16, 8, 4 -> 64, 16, 4 tokens with patch 2


def randomize(module: torch.nn.Module, seed: int = 0, std: float = 0.1) -> None:
    """Random weights everywhere (adaLN-Zero init would make every block the identity and outputs zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


def make_mot(mask: str = "causal", attention: str = "prefix", num_scales: int = 3, num_classes: int = 0) -> MoTDiT:
    torch.manual_seed(0)
    net = MoTDiT(TINY, 2, SIZE, num_scales, num_classes=num_classes, mask=mask, attention=attention).double().eval()
    randomize(net)
    return net


def inputs(num_scales: int = 3, batch: int = 2, seed: int = 1) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xs = [
        torch.randn(batch, 2, SIZE[0] >> k, SIZE[1] >> k, generator=g, dtype=torch.float64) for k in range(num_scales)
    ]
    return xs[::-1], torch.rand(batch, generator=g, dtype=torch.float64)  # coarsest first


def test_block_mask_closed_form() -> None:
    causal = block_mask([1, 2], "causal")
    assert causal.tolist() == [[True, False, False], [True, True, True], [True, True, True]]
    assert block_mask([1, 2], "self").tolist() == [[True, False, False], [False, True, True], [False, True, True]]
    assert block_mask([1, 2], "none") is None


@pytest.mark.parametrize("mode", ["causal", "self", "none"])
def test_prefix_attention_equals_masked_and_softmax(mode: str) -> None:
    g = torch.Generator().manual_seed(0)
    lengths, b, h, d = [3, 5, 9], 2, 2, 4
    qs, ks, vs = ([torch.randn(b, h, n, d, generator=g, dtype=torch.float64) for n in lengths] for _ in range(3))
    fast, ref = prefix_attention(qs, ks, vs, mode), masked_attention(qs, ks, vs, mode)
    q, k, v = torch.cat(qs, 2), torch.cat(ks, 2), torch.cat(vs, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    mask = block_mask(lengths, mode)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    explicit = torch.softmax(scores, -1) @ v
    for a, r, e in zip(fast, ref, explicit.split(lengths, 2), strict=True):
        assert torch.allclose(a, r, rtol=1e-12, atol=1e-13)
        assert torch.allclose(a, e, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("mask", ["causal", "self", "none"])
def test_prefix_and_masked_networks_agree(mask: str) -> None:
    fast, ref = make_mot(mask, "prefix"), make_mot(mask, "masked")
    xs, t = inputs()
    for a, r in zip(fast(xs, t), ref(xs, t), strict=True):
        assert torch.allclose(a, r, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("attention", ["prefix", "masked"])
def test_causal_mask_coarse_outputs_ignore_finer_scales(attention: str) -> None:
    net = make_mot("causal", attention)
    xs, t = inputs()
    base = net(xs, t)
    for finer in (1, 2):  # perturb scale S-1-finer; every coarser list position must be bitwise unchanged
        xs2 = [x.clone() for x in xs]
        xs2[finer] += torch.randn_like(xs2[finer])
        out = net(xs2, t)
        for i in range(finer):
            assert torch.equal(out[i], base[i])
        assert not torch.allclose(out[finer], base[finer])


def test_mask_none_lets_fine_scales_change_coarse_outputs() -> None:
    net = make_mot("none")
    xs, t = inputs()
    base = net(xs, t)
    xs[2] = xs[2] + 1.0  # finest
    out = net(xs, t)
    assert not torch.allclose(out[0], base[0]) and not torch.allclose(out[1], base[1])


@pytest.mark.parametrize("attention", ["prefix", "masked"])
def test_mask_self_isolates_every_scale(attention: str) -> None:
    net = make_mot("self", attention)
    xs, t = inputs()
    base = net(xs, t)
    for perturbed in range(3):
        xs2 = [x.clone() for x in xs]
        xs2[perturbed] += 1.0
        out = net(xs2, t)
        for i in range(3):
            assert torch.equal(out[i], base[i]) == (i != perturbed)


def test_fewer_active_scales_use_the_coarsest_experts() -> None:
    net = make_mot()
    xs, t = inputs()
    # Coarse outputs of the full (causal) run equal a run with only those scales active.
    for active in (1, 2):
        partial = net(xs[:active], t)
        for a, b in zip(partial, net(xs, t)[:active], strict=True):
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-13)
    assert net.tokens(1) == 4 and net.tokens(2) == 20 and net.tokens(3) == 84


@pytest.mark.parametrize("num_classes", [0, 10])
def test_single_scale_mot_is_dit(num_classes: int) -> None:
    torch.manual_seed(0)
    dit = DiT(TINY, 2, SIZE, num_classes=num_classes).double().eval()
    randomize(dit, seed=3)
    mot = MoTDiT(TINY, 2, SIZE, 1, num_classes=num_classes).double().eval()
    mot.load_state_dict(dit_to_expert_state(dit.state_dict()), strict=True)
    x, t = inputs(1)
    y = torch.tensor([3, 7]) if num_classes else None
    assert torch.equal(mot([x[0]], t, y)[0], dit(x[0], t, y))


def test_separate_networks_are_causal_and_unshared() -> None:
    torch.manual_seed(0)
    net = SeparateNetworks(TINY, 2, SIZE, 3).double().eval()
    randomize(net)
    xs, t = inputs()
    base = net(xs, t)
    assert [o.shape[-1] for o in base] == [4, 8, 16]
    xs[2] = xs[2] + 1.0
    out = net(xs, t)
    assert torch.equal(out[0], base[0]) and torch.equal(out[1], base[1]) and not torch.equal(out[2], base[2])
    assert net.tokens(2) == 20 + 4 and net.tokens(3) == 84 + 20 + 4
    names = {n.split(".")[1] for n, _ in net.named_parameters()}
    assert names == {"0", "1", "2"}  # every parameter lives in one scale's network
