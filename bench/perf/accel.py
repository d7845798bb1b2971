"""Fast inference paths around a model's network: CUDA graphs, torch.compile, or both.

Every family calls its network as `model.net(...)` with fixed shapes per sampling segment/stage, so one wrapper
serves all of them:
- eager:          the network as written (the reference);
- graph:          each distinct call signature (shapes, dtypes, autocast and inference state) is captured once into
                  a CUDA graph of the eager kernels and replayed afterwards: no Python or kernel-launch overhead
                  per step, the same kernels, so the same numbers as eager;
- compile:        torch.compile (static shapes) fuses the elementwise work; equal to eager within bf16 tolerance;
- compile-graph:  the compiled network, captured into CUDA graphs.
Graphs are for inference only: with gradients enabled, on the CPU or in training mode the wrapper runs the
network directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import Tensor, nn

from bench.errors import BenchError

FAST_PATHS = ("eager", "graph", "compile", "compile-graph")
GRAPH_WARMUP_CALLS = 2  # cuBLAS workspaces and compiled kernels must exist before capture


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    static_inputs: list[Tensor]
    outputs: Any  # pytree of tensors the graph writes on every replay


class GraphedNetwork(nn.Module):
    """Replays one CUDA graph per call signature of `net`; returns fresh copies of the outputs.

    Outputs are cloned because solvers keep earlier velocities (Heun, dopri5) while the next replay overwrites the
    graph's buffers. Each graph has its own memory pool, so segments may be replayed in any order.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.inner = net
        self._graphs: dict[tuple, _Captured] = {}
        self.captures = 0

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    def forward(self, *args: Any) -> Any:
        leaves, spec = pytree.tree_flatten(args)
        tensors = [x for x in leaves if isinstance(x, Tensor)]
        if torch.is_grad_enabled() or self.inner.training or not tensors or tensors[0].device.type != "cuda":
            return self.inner(*args)
        key = (spec, tuple(_signature(x) for x in leaves), _autocast_state(), torch.is_inference_mode_enabled())
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._graphs[key] = self._capture(leaves, spec)
            self.captures += 1
        for static, x in zip(entry.static_inputs, tensors, strict=True):
            static.copy_(x)
        entry.graph.replay()
        return pytree.tree_map(lambda t: t.clone() if isinstance(t, Tensor) else t, entry.outputs)

    def _capture(self, leaves: list[Any], spec: pytree.TreeSpec) -> _Captured:
        static = [x.clone() if isinstance(x, Tensor) else x for x in leaves]
        args = pytree.tree_unflatten(static, spec)
        enabled, dtype = _autocast_state()

        def cast_in_graph() -> torch.autocast:
            # Autocast's weight-cast cache would keep tensors of the graph's pool alive past capture: cast in-graph.
            # Warm-ups use the same setting, so a compiled network's guards match and nothing compiles in capture.
            return torch.autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=False)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), cast_in_graph():
            for _ in range(GRAPH_WARMUP_CALLS):
                self.inner(*args)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with cast_in_graph(), torch.cuda.graph(graph):
            outputs = self.inner(*args)
        return _Captured(graph, [x for x in static if isinstance(x, Tensor)], outputs)


def _signature(x: Any) -> Any:
    if isinstance(x, Tensor):
        return (tuple(x.shape), x.dtype, x.device)
    return ("const", x)


def _autocast_state() -> tuple[bool, torch.dtype]:
    return torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")


def check_fast_path(fast: str, device: torch.device | None = None) -> None:
    """A known fast path, and (given the device) one that can run there."""
    if fast not in FAST_PATHS:
        raise BenchError(f"Unknown fast path '{fast}'; choose one of {', '.join(FAST_PATHS)}.")
    if "graph" in fast and device is not None and device.type != "cuda":
        raise BenchError(f"The '{fast}' fast path replays CUDA graphs and needs a CUDA device, not {device.type}.")


@contextmanager
def accelerated(model: nn.Module, fast: str, compile_backend: str = "inductor") -> Iterator[nn.Module]:
    """Within the block `model.net` runs on the chosen fast path; the original module is always put back."""
    if fast == "eager":
        yield model
        return
    net: nn.Module = model.net
    check_fast_path(fast, next(net.parameters()).device)
    fn: nn.Module = net
    if "compile" in fast:
        from bench.compiling import use_compile_cache

        use_compile_cache()
        fn = torch.compile(net, dynamic=False, backend=compile_backend)  # type: ignore[assignment]
    if "graph" in fast:
        fn = GraphedNetwork(fn)
    model.net = fn
    try:
        yield model
    finally:
        model.net = net
