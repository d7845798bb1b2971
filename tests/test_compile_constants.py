"""Scalars of the ablations that used to be constants of THE compiled loss are graph inputs now: LapFlow's critical
times (its start table buffer) and the flows' time scale (a buffer of the network). An ablation of one of them
compiles to its base run's graph, so it finds that graph in the on-disk caches (bench.compiling) instead of compiling
its own, and computes what the floats computed, bitwise: on the CPU here, on CUDA in the gpu-marked test.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from bench.config import resolve
from bench.perf.harness import build
from bench.train_step import LossModule, draw_stage
from models.lapflow.config import PRESETS, resolve_critical_times, resolve_num_scales
from models.lapflow.pyramid import activation_times, interpolate, stage_times, start_table

CPU = torch.device("cpu")
TINY = {"size": "S", "depth": 1, "hidden": 32, "heads": 2}


def _graph_codes(preset: str, model: dict) -> list[str]:
    """The code of each dynamo graph THE loss module compiles to, one per stage, in stage order."""
    torch._dynamo.reset()
    graphs: dict[int | None, str] = {}
    stage: int | None = None

    def recorder(gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
        graphs[stage] = gm.code
        return gm.forward

    _, net = build(preset, 16, CPU, TINY, **model)
    loss_fn = torch.compile(LossModule(net.train()), backend=recorder, dynamic=False)
    x = torch.randn(4, *net.latent_shape, generator=torch.Generator().manual_seed(0))
    for _ in range(12):  # every stage of a 2-scale LapFlow is drawn in 12 steps (seeded)
        stage = draw_stage(net)
        loss_fn(x, None) if stage is None else loss_fn(x, None, stage=stage)
    return [graphs[k] for k in sorted(graphs, key=lambda k: -1 if k is None else k)]


@pytest.mark.parametrize(
    ("preset", "model"),
    [
        ("lapflow-tiny", {"critical_times": [0.7]}),
        ("lapflow-tiny", {"time_scale": 1000.0}),
        ("lfm-tiny", {"time_scale": 1000.0}),
        ("pyramidal-flow-tiny", {"time_scale": 1000.0}),
    ],
)
def test_an_ablated_scalar_compiles_to_the_graph_of_its_base_run(preset: str, model: dict) -> None:
    base, ablated = _graph_codes(preset, {}), _graph_codes(preset, model)
    assert len(base) == (2 if preset.startswith("lapflow") else 1)
    assert ablated == base


@pytest.mark.parametrize(
    ("preset", "model", "graphs"),
    [("lapflow-tiny", {"num_scales": 3}, 3), ("dit-tiny", {}, 1), ("pyramidal-flow-tiny", {"stages": 3}, 1)],
)
def test_the_loss_compiles_to_one_graph_per_stage_it_draws(preset: str, model: dict, graphs: int) -> None:
    """LapFlow draws one stage per step: one graph each. Pyramidal Flow trains every stage in every step (one graph
    holding a network call per stage, so its graph grows with the stages), DiT has one."""
    assert len(_graph_codes(preset, model)) == graphs


def _preset_starts() -> set[tuple[float, ...]]:
    """The start times of every LapFlow preset (its critical times at its latent size)."""
    out = set()
    for name in PRESETS:
        cfg = resolve(preset=name)
        side = cfg.data.res // (1 if cfg.data.autoencoder == "pixel" else 8)
        scales = resolve_num_scales(cfg.model, side)
        out.add(activation_times(resolve_critical_times(cfg.model, scales), scales))
    return out


def test_the_start_tables_reciprocal_is_eager_cudas_too() -> None:
    """On CUDA a float divisor becomes a multiplication by its reciprocal: inductor rounds 1 / span from float64
    (the table's third column), eager kernels divide 1 by the float32 span. For every preset's critical times the
    two are the same float32 number, so eager CUDA training computes what it computed with the floats as well."""
    for starts in _preset_starts():
        table = start_table(starts)
        assert torch.equal(table[:, 2], 1 / table[:, 1]), starts


def _terms(start: float | Tensor, u: Tensor, x: Tensor, eps: Tensor, path: str) -> tuple[Tensor, Tensor, Tensor]:
    t = stage_times(start, u)
    return (t, *interpolate(x, eps, t, start, path))


def _assert_rows_equal_floats(device: torch.device, backend: str | None) -> None:
    g = torch.Generator().manual_seed(0)
    u = torch.rand(512, generator=g).to(device)
    x, eps = (torch.randn(512, 4, 4, 4, generator=g).to(device) for _ in range(2))
    for starts in sorted(_preset_starts() | {activation_times((0.3,), 2), activation_times((0.7,), 2)}):
        table = start_table(starts).to(device)
        for path in ("linear", "gvp"):
            for k, start in enumerate(starts):
                torch._dynamo.reset()  # one entry per float: dynamo's recompile limit would run later ones eagerly
                fn = torch.compile(_terms, backend=backend, dynamic=False) if backend else _terms
                from_floats, from_rows = fn(start, u, x, eps, path), fn(table[k], u, x, eps, path)
                for a, b in zip(from_floats, from_rows, strict=True):
                    assert torch.equal(a, b), (starts, path, k)


@pytest.mark.parametrize("backend", [None, "inductor"])
def test_start_table_rows_compute_what_the_floats_computed_on_the_cpu(backend: str | None) -> None:
    _assert_rows_equal_floats(CPU, backend)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", [None, "inductor"])
def test_start_table_rows_compute_what_the_floats_computed_on_cuda(cuda_device: torch.device, backend: str) -> None:
    _assert_rows_equal_floats(cuda_device, backend)
