"""GFLOPs: attention handle closed form, DiT's published counts, per-sample totals, refusal of uncounted heavy ops."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError
from bench.metrics import flops
from models.layers import DiT
from models.sizes import BackboneConfig


class Attention(nn.Module):
    def __init__(self, mask: torch.Tensor | None = None, causal: bool = False) -> None:
        super().__init__()
        self.mask, self.causal = mask, causal

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, is_causal=self.causal)


def test_attention_handle_counts_the_full_product() -> None:
    b, h, lq, lk, d, dv = 2, 3, 17, 13, 8, 5
    q, k, v = torch.randn(b, h, lq, d), torch.randn(b, h, lk, d), torch.randn(b, h, lk, dv)
    expected = b * h * lq * lk * (d + dv) / 1e9
    assert flops.count_flops(Attention(), (q, k, v)) == pytest.approx(expected, rel=1e-12)
    # A boolean (e.g. block-causal) mask or is_causal: the dense kernel still computes the full product.
    mask = torch.rand(lq, lk) > 0.5
    assert flops.count_flops(Attention(mask), (q, k, v)) == pytest.approx(expected, rel=1e-12)
    square = torch.randn(b, h, lq, d)
    causal = flops.count_flops(Attention(causal=True), (square, square, square))
    assert causal == pytest.approx(b * h * lq * lq * 2 * d / 1e9, rel=1e-12)


def test_linear_and_convolution_count_multiply_adds() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.LayerNorm(8 * 5 * 5), nn.Linear(200, 7))
    conv = 8 * 5 * 5 * 3 * 3 * 3  # outputs x (in channels x kernel)
    linear = 200 * 7
    assert flops.count_flops(net, (torch.randn(1, 3, 5, 5),)) == pytest.approx((conv + linear) / 1e9, rel=1e-12)


@pytest.mark.parametrize(("size", "expected"), [("S", 6.06), ("B", 23.01)])
def test_dit_counts_match_the_dit_paper(size: str, expected: float) -> None:
    # DiT Table 4 at 256 px (latent 4x32x32, 1000 classes, learned sigma: 8 output channels).
    net = DiT(BackboneConfig(size, 2), 4, (32, 32), out_channels=8, num_classes=1000)
    inputs = (torch.randn(1, 4, 32, 32), torch.rand(1), torch.zeros(1, dtype=torch.long))
    gflops, by_op, uncounted = flops.analyse(net, inputs)
    assert round(gflops, 2) == expected
    depth, hidden, _ = BackboneConfig(size, 2).dims()
    assert by_op["scaled_dot_product_attention"] == pytest.approx(depth * 256 * 256 * 2 * hidden / 1e9, rel=1e-12)
    assert uncounted == {}


@pytest.mark.slow
@pytest.mark.parametrize(("size", "expected", "tolerance"), [("L", 80.70, 0.005), ("XL", 118.6, 0.05)])
def test_large_dit_counts_match_the_dit_paper(size: str, expected: float, tolerance: float) -> None:
    net = DiT(BackboneConfig(size, 2), 4, (32, 32), out_channels=8, num_classes=1000)
    inputs = (torch.randn(1, 4, 32, 32), torch.rand(1), torch.zeros(1, dtype=torch.long))
    assert flops.count_flops(net, inputs) == pytest.approx(expected, abs=tolerance)


def test_uncounted_heavy_op_is_an_error() -> None:
    class Distances(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cdist(x, x)

    with pytest.raises(BenchError, match="heavy op"):
        flops.count_flops(Distances(), (torch.randn(4, 3),))


def test_cheap_ops_are_not_counted() -> None:
    class Cheap(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.silu(x) * 2 + F.gelu(x)
            return F.avg_pool2d(F.group_norm(y, 1), 2).softmax(-1)

    gflops, _, uncounted = flops.analyse(Cheap(), (torch.randn(1, 4, 8, 8),))
    assert gflops == 0 and uncounted == {}


def test_flex_attention_is_refused_with_a_clear_sentence() -> None:
    from torch.nn.attention.flex_attention import flex_attention

    class Flex(nn.Module):
        def forward(self, q: torch.Tensor) -> torch.Tensor:
            return flex_attention(q, q, q)

    with pytest.raises(BenchError, match="flex-attention"):
        flops.count_flops(Flex(), (torch.randn(1, 2, 16, 8),))


def tiny_lfm(num_classes: int = 0) -> tuple[object, object]:
    from bench.config import resolve
    from bench.registry import MODELS

    cfg = resolve(preset="lfm-tiny")
    return MODELS.load("lfm")(cfg.model, (3, 32, 32), num_classes), cfg


def test_trace_flops_sums_calls_times_nfe() -> None:
    model, cfg = tiny_lfm()
    report = flops.trace_flops(model, cfg.sample)
    (call,) = report.per_call
    assert call.count == cfg.sample.steps == report.nfe and call.batch == 1 and call.tokens == 64
    assert report.per_sample_gflops == pytest.approx(call.gflops * cfg.sample.steps, rel=1e-12)
    assert report.time_avg_gflops_per_forward == pytest.approx(call.gflops, rel=1e-12)
    measured = flops.trace_flops(model, cfg.sample, {"dit": 7})
    assert measured.nfe == 7 and measured.per_sample_gflops == pytest.approx(call.gflops * 7, rel=1e-12)
    heun = flops.trace_flops(model, dataclasses.replace(cfg.sample, solver="heun"))
    assert heun.nfe == 2 * cfg.sample.steps


def test_guidance_doubles_the_forward_batch() -> None:
    model, cfg = tiny_lfm(num_classes=10)
    plain = flops.trace_flops(model, cfg.sample)
    guided = flops.trace_flops(model, dataclasses.replace(cfg.sample, guidance=2.0))
    assert guided.per_call[0].batch == 2
    assert guided.per_sample_gflops == pytest.approx(2 * plain.per_sample_gflops, rel=1e-9)


def test_adaptive_solver_needs_measured_nfe() -> None:
    model, cfg = tiny_lfm()
    with pytest.raises(BenchError, match="measured"):
        flops.trace_flops(model, dataclasses.replace(cfg.sample, solver="dopri5"))


def test_decode_flops() -> None:
    class Pixel:
        inner = None

    class ConvDecoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 3, 1)

        def decode(self, z: torch.Tensor) -> torch.Tensor:
            return self.conv(F.interpolate(z, scale_factor=2))

    assert flops.decode_flops(Pixel(), (3, 32, 32)) == 0.0
    assert flops.decode_flops(ConvDecoder(), (4, 8, 8)) == pytest.approx(16 * 16 * 3 * 4 / 1e9, rel=1e-12)
