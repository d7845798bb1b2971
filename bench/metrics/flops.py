"""GFLOPs with fvcore, DiT convention: one multiply-add = one FLOP, counting matmuls, convolutions and attention.

fvcore counts no attention by default, so scaled_dot_product_attention gets a handle: B*H*Lq*Lk*(D+Dv)
multiply-adds (Q K^T and P V). With a causal or boolean mask the count is the full product, i.e. what a dense
kernel computes; block-sparse savings are not credited. Flex attention cannot be traced by torch.jit (fvcore's
tracer), so a model that calls it is refused with a clear sentence; a handle is still registered for its aten name
should a future tracer record it. Normalisation, pooling, resampling and elementwise ops are not counted (this
reproduces DiT's table: S/2 6.06, B/2 23.01, L/2 80.70, XL/2 118.6 GFLOPs at 256 px); any other uncounted op that
looks like a matmul or convolution is an error.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bench.errors import BenchError

log = logging.getLogger(__name__)

GIGA = 1e9

# Ops left uncounted by convention (DiT counts multiply-adds of matmuls, convolutions and attention only).
_CHEAP_GROUPS = {
    "elementwise": "add add_ sub sub_ rsub mul mul_ div div_ neg pow sqrt rsqrt exp log log1p sin cos tanh sigmoid "
    "silu gelu relu relu_ leaky_relu hardtanh softmax log_softmax abs sign square reciprocal erf floor round clamp "
    "clamp_min clamp_max minimum maximum where lerp addcmul addcdiv fill_ zero_ lt le ne eq gt ge logical_and "
    "logical_or logical_not bitwise_and bitwise_or",
    "random and constants": "zeros_like ones_like empty_like randn randn_like rand rand_like normal bernoulli arange "
    "linspace scalar_tensor new_ones new_zeros full full_like zeros ones empty meshgrid",
    "reductions": "mean sum var std norm amax amin argmax argmin cumsum cumprod cummax",
    "pooling and resampling": "avg_pool1d avg_pool2d avg_pool3d max_pool2d adaptive_avg_pool1d adaptive_avg_pool2d "
    "upsample_nearest1d upsample_nearest2d upsample_nearest3d upsample_bilinear2d upsample_bicubic2d pixel_shuffle "
    "pixel_unshuffle grid_sampler",
    "normalisation": "layer_norm group_norm batch_norm instance_norm rms_norm",
    "indexing and layout": "embedding index_select scatter scatter_add gather masked_fill masked_fill_ tril triu roll "
    "flip repeat repeat_interleave expand_as broadcast_to clone alias lift_fresh detach dropout type_as to split "
    "split_with_sizes unsafe_split unsafe_chunk unbind stack cat view reshape unsqueeze squeeze select slice t "
    "transpose permute contiguous flatten unflatten movedim chunk numpy_T copy_",
}
CHEAP_OPS = frozenset("aten::" + name for names in _CHEAP_GROUPS.values() for name in names.split())
# Substrings that mark an op as matmul/conv-like: never left uncounted.
HEAVY_MARKERS = (
    "mm",
    "matmul",
    "conv",
    "linear",
    "einsum",
    "attention",
    "flex",
    "bilinear",
    "tensordot",
    "cdist",
    "lstm",
    "gru",
    "rnn",
    "fft",
    "kron",
    "outer",
    "dot",
)
SDPA_NOTE = "SDPA counted as B*H*Lq*Lk*(D+Dv) multiply-adds; with a mask, the full (dense) product."


def _shape(value: Any) -> list[int]:
    from fvcore.nn.jit_handles import get_shape

    shape = get_shape(value)
    if shape is None:
        raise BenchError("An attention input has no static shape during FLOP tracing.")
    return list(shape)


def attention_flops(q_shape: list[int], k_shape: list[int], v_shape: list[int]) -> int:
    """Multiply-adds of softmax(Q K^T) V: B*H*Lq*Lk*D (scores) + B*H*Lq*Lk*Dv (values); batch dims from Q."""
    *batch, lq, d = q_shape
    lk, dv = k_shape[-2], v_shape[-1]
    return math.prod(batch) * lq * lk * (d + dv)


def sdpa_flop_jit(inputs: list, outputs: list) -> int:
    return attention_flops(_shape(inputs[0]), _shape(inputs[1]), _shape(inputs[2]))


def baddbmm_flop_jit(inputs: list, outputs: list) -> int:
    b, n, m = _shape(inputs[1])
    p = _shape(inputs[2])[-1]
    return b * n * m * p


def _uncounted(inputs: list, outputs: list) -> int:
    return 0


def _handles() -> dict[str, Any]:
    handles: dict[str, Any] = {
        "aten::scaled_dot_product_attention": sdpa_flop_jit,
        "aten::_scaled_dot_product_flash_attention": sdpa_flop_jit,
        "aten::_scaled_dot_product_efficient_attention": sdpa_flop_jit,
        "aten::_scaled_dot_product_cudnn_attention": sdpa_flop_jit,
        "aten::flex_attention": sdpa_flop_jit,
        "aten::baddbmm": baddbmm_flop_jit,
    }
    # fvcore counts these by default; by convention they are cheap and left out.
    for name in (
        "batch_norm",
        "group_norm",
        "layer_norm",
        "instance_norm",
        "upsample_nearest2d",
        "upsample_bilinear2d",
        "adaptive_avg_pool2d",
        "grid_sampler",
    ):
        handles["aten::" + name] = _uncounted
    return handles


def check_uncounted(unsupported: Counter) -> dict[str, int]:
    """BenchError for any uncounted matmul/conv-like op; returns unknown cheap-looking ops (logged)."""
    heavy = sorted(op for op in unsupported if op not in CHEAP_OPS and any(m in op for m in HEAVY_MARKERS))
    if heavy:
        raise BenchError(f"FLOP counting left heavy op(s) uncounted: {', '.join(heavy)}; register a handle for them.")
    unknown = {op: int(n) for op, n in unsupported.items() if op not in CHEAP_OPS}
    if unknown:
        log.warning("Uncounted ops assumed cheap: %s", ", ".join(sorted(unknown)))
    return unknown


class _Bound(nn.Module):
    """`module(*inputs)` with the non-tensor inputs (None, numbers) fixed, so jit tracing sees tensors only."""

    def __init__(self, module: nn.Module | Any, inputs: tuple) -> None:
        super().__init__()
        self.inner = module
        self.template = inputs

    def forward(self, *tensors: Tensor) -> Any:
        it = iter(tensors)
        args = [next(it) if isinstance(a, Tensor) else a for a in self.template]
        return self.inner(*args)


def analyse(module: nn.Module | Any, inputs: tuple) -> tuple[float, dict[str, float], dict[str, int]]:
    """(GFLOPs, GFLOPs by operator, uncounted cheap-looking ops) of one call `module(*inputs)`, traced in eval."""
    from fvcore.nn import FlopCountAnalysis

    was_training = getattr(module, "training", False)
    if isinstance(module, nn.Module):
        module.eval()
    bound = _Bound(module, tuple(inputs))
    tensors = tuple(a for a in inputs if isinstance(a, Tensor))
    fca = FlopCountAnalysis(bound, tensors).set_op_handle(**_handles())
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    try:
        with torch.no_grad():
            total = fca.total()
            by_op = {op: n / GIGA for op, n in fca.by_operator().items()}
            unsupported = fca.unsupported_ops()
    except RuntimeError as exc:
        if "dynamo" in str(exc) or "vmap" in str(exc) or "Unsupported value kind" in str(exc):
            raise BenchError(
                "FLOP tracing failed inside a compiled or flex-attention call, which torch.jit cannot trace; "
                "use scaled_dot_product_attention (with a mask) in the module given to flop_trace."
            ) from None
        raise
    finally:
        if isinstance(module, nn.Module):
            module.train(was_training)
    return total / GIGA, by_op, check_uncounted(unsupported)


def count_flops(module: nn.Module | Any, inputs: tuple) -> float:
    """GFLOPs (multiply-adds / 1e9) of one call `module(*inputs)`."""
    return analyse(module, inputs)[0]


@dataclass
class CallFlops:
    name: str
    gflops: float  # one forward at the call's inputs (batch 1; batch 2 = one CFG evaluation of one sample)
    count: float  # times per generated sample (includes NFE)
    tokens: int
    batch: int
    note: str = ""


@dataclass
class FlopReport:
    per_call: list[CallFlops]
    per_sample_gflops: float  # sum over calls of gflops * count
    time_avg_gflops_per_forward: float  # per_sample / nfe
    nfe: float  # sum of counts
    uncounted: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "per_call": [vars(c) for c in self.per_call],
            "per_sample_gflops": self.per_sample_gflops,
            "time_avg_gflops_per_forward": self.time_avg_gflops_per_forward,
            "nfe": self.nfe,
            "uncounted_cheap_ops": self.uncounted,
        }


def trace_flops(model: Any, spec: Any, nfe_by_call: dict[str, int] | None = None) -> FlopReport:
    """Per-forward GFLOPs of every call in `model.flop_trace(spec)` and per-sample GFLOPs (times NFE)."""
    calls = model.flop_trace(spec, nfe_by_call)
    if not calls:
        raise BenchError(f"{type(model).__name__}.flop_trace returned no network call.")
    per_call, uncounted = [], {}
    for call in calls:
        gflops, _, unknown = analyse(call.module, call.inputs)
        uncounted.update(unknown)
        batch = next((int(a.shape[0]) for a in call.inputs if isinstance(a, Tensor) and a.dim() > 0), 1)
        per_call.append(CallFlops(call.name, gflops, float(call.count), int(call.tokens), batch, call.note))
    per_sample = sum(c.gflops * c.count for c in per_call)
    nfe = sum(c.count for c in per_call)
    return FlopReport(per_call, per_sample, per_sample / nfe if nfe else float("nan"), nfe, uncounted)


class _Decode(nn.Module):
    def __init__(self, autoencoder: Any) -> None:
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, z: Tensor) -> Tensor:
        return self.autoencoder.decode(z)


def decode_flops(autoencoder: Any, latent_shape: tuple[int, int, int]) -> float:
    """GFLOPs of decoding one latent of `latent_shape` (0 for the pixel identity)."""
    if getattr(autoencoder, "inner", True) is None:
        return 0.0
    params = list(autoencoder.parameters()) if isinstance(autoencoder, nn.Module) else []
    device = params[0].device if params else torch.device("cpu")
    z = torch.zeros(1, *latent_shape, device=device)
    return count_flops(_Decode(autoencoder), (z,))
