"""torch.compile's state for one training run: dynamo's caches reset, the suite's on-disk compile cache, and what
the run compiled (graphs, seconds, cache hits) for its records.

Why every compiled run resets dynamo: THE loss module's forward is one code object for every run of a process, and
dynamo keeps at most torch._dynamo.config.recompile_limit (8) compiled entries per code object; past them it runs
the frame eagerly after one warning. A `bench reproduce mini` command compiles one entry per stage of each run that
differs in its graph (lapflow 2, lfm 1, pyramidal-flow 1, dit 1, each mask ablation 2, ...), so its later runs
trained eagerly while their records said compiled. Reset, each run compiles as in a fresh process; the on-disk caches
(inductor's FX graphs, AOT autograd's compiled forward and backward, Triton's kernels and autotuned configs) keep a
repeated graph cheap: a seed, a learning rate, or a scalar the model holds as a buffer (LapFlow's critical times,
the time scale) compiles to the same graph and hits them.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

COUNTED = {  # counters[group][key] -> record field: what decides whether a run compiled from scratch
    ("stats", "unique_graphs"): "graphs",
    ("inductor", "fxgraph_cache_hit"): "fx_graph_cache_hits",
    ("inductor", "fxgraph_cache_miss"): "fx_graph_cache_misses",
    ("inductor", "fxgraph_cache_bypass"): "fx_graph_cache_bypasses",
    ("aot_autograd", "autograd_cache_hit"): "aot_autograd_cache_hits",
    ("aot_autograd", "autograd_cache_miss"): "aot_autograd_cache_misses",
    ("aot_autograd", "autograd_cache_bypass"): "aot_autograd_cache_bypasses",
}


def use_compile_cache(cache: Path | None = None) -> Path:
    """Points inductor's on-disk caches (TORCHINDUCTOR_CACHE_DIR; Triton's kernels live under it unless
    TRITON_CACHE_DIR says otherwise) at the suite's folder (bench.paths.compile_cache_dir), so every run and command
    with the same cache folder shares them, and the folder can travel to a later machine. Inductor reads the
    variable whenever it opens a cache entry; it is set before each compile, so it follows BENCH_CACHE_DIR."""
    from bench.paths import compile_cache_dir

    path = compile_cache_dir(cache).expanduser().absolute()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    return path


def _counted() -> Counter[str]:
    from torch._dynamo.utils import counters

    return Counter({field: counters[group][key] for (group, key), field in COUNTED.items()})


class CompileMeter:
    """What torch.compile does from here on in this process (a fresh dynamo state, see the module docstring).

    Seconds come from dynamo's compile callbacks: each frame's capture with its forward compile, each backward
    compiled lazily at its first call, and CUDA graph recordings apart. Triton's runtime autotuning at a kernel's
    first launch has no callback (torch disables it), so it shows only in the first steps' images/s."""

    def __init__(self, cache: Path | None = None) -> None:
        import torch._dynamo

        torch._dynamo.reset()  # also drops dynamo's compile callbacks: ours are registered after it
        self.cache_dir = use_compile_cache(cache)
        self.base = _counted()
        self.breaks = self._graph_breaks()
        self.seconds: Counter[str] = Counter()
        self._started: dict[str, float] = {}
        self._reported: dict[str, Any] = {}
        handler = torch._dynamo.callback_handler
        handler.register_start_callback(self._start)
        handler.register_end_callback(self._end)

    @staticmethod
    def _graph_breaks() -> int:
        from torch._dynamo.utils import counters

        return sum(counters["graph_break"].values())

    @staticmethod
    def _kind(args: Any) -> str:
        return "cudagraph_record_seconds" if args.callback_trigger.name == "CUDAGRAPH_RECORDING" else "compile_seconds"

    def _start(self, args: Any) -> None:
        self._started[self._kind(args)] = time.perf_counter()

    def _end(self, args: Any) -> None:
        kind = self._kind(args)
        if kind in self._started:
            self.seconds[kind] += time.perf_counter() - self._started.pop(kind)

    def summary(self) -> dict[str, Any]:
        """The record's `compile` entry: graphs dynamo captured (one per stage shape), graph breaks, compile and
        CUDA graph recording seconds, FX graph and AOT autograd cache hits and misses, the cache folder."""
        counted = _counted()
        out: dict[str, Any] = {field: counted[field] - self.base[field] for field in COUNTED.values()}
        out["graph_breaks"] = self._graph_breaks() - self.breaks
        out |= {k: round(self.seconds[k], 3) for k in ("compile_seconds", "cudagraph_record_seconds")}
        out["cache_dir"] = str(self.cache_dir)
        return out

    def report(self, event: Callable[..., None]) -> None:
        """Writes the summary as a `compile` event (stats.jsonl) when something compiled since the last one."""
        summary = self.summary()
        if summary != self._reported:
            event("compile", **summary)
            self._reported = summary

    def close(self, event: Callable[..., None] | None = None) -> None:
        """The last report (given `event`), then the callbacks are removed."""
        import torch._dynamo

        if event is not None:
            self.report(event)
        handler = torch._dynamo.callback_handler
        for callbacks, fn in ((handler.start_callbacks, self._start), (handler.end_callbacks, self._end)):
            if fn in callbacks:
                callbacks.remove(fn)
