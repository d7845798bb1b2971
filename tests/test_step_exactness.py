"""The training-step fast paths of issue 15 compute the same maths as the code they replaced.

Each test compares the new path with the previous implementation (kept here as a reference) under a fixed seed:
float32 on the CPU, so equal within float rounding (tolerances below; most comparisons are bitwise). The compile
tests count dynamo graphs and graph breaks of THE training step (bench.train_step) with the 'eager' backend.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._dynamo.utils import counters

from bench.perf.harness import build, make_train_step
from bench.train_step import LossModule, draw_stage
from models.lapflow.attention import attend
from models.lapflow.mot import MoTDiT
from models.sizes import BackboneConfig

CPU = torch.device("cpu")
TINY = {"size": "S", "depth": 1, "hidden": 64, "heads": 4}
ATOL, RTOL = 1e-6, 1e-5  # float32: the packed MoT forward reorders no reduction, only memory layouts


def _nontrivial(module: nn.Module, seed: int = 0) -> nn.Module:
    """adaLN-Zero init predicts zeros (every comparison would be vacuous): all parameters get random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return module


def _reference_mot_forward(net: MoTDiT, xs: list[Tensor], t: Tensor) -> list[Tensor]:
    """MoTDiT.forward before issue 15: per-expert q/k/v and the list attention (strided k/v concatenated)."""
    experts = [net.experts[net.num_scales - 1 - i] for i in range(len(xs))]
    hs = [e.embed(x) for e, x in zip(experts, xs, strict=True)]
    c = net.t_embedder(t * net.time_scale) + net.y_embedder(None, xs[0].shape[0], xs[0].device)
    for layer in range(net.depth):
        blocks = [e.blocks[layer] for e in experts]
        pre = [b.pre_attention(h, c) for b, h in zip(blocks, hs, strict=True)]
        outs = attend([p[0] for p in pre], [p[1] for p in pre], [p[2] for p in pre], net.mask, net.attention)
        hs = [b.post_attention(h, o, p[3]) for b, h, o, p in zip(blocks, hs, outs, pre, strict=True)]
    return [e.output(h, c) for e, h in zip(experts, hs, strict=True)]


def _grads(module: nn.Module) -> list[Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in module.parameters()]


@pytest.mark.parametrize("mask", ["causal", "none", "self"])
@pytest.mark.parametrize("attention", ["prefix", "masked"])
@pytest.mark.parametrize("active", [1, 2, 3])
def test_packed_mot_forward_equals_the_per_scale_forward(mask: str, attention: str, active: int) -> None:
    backbone = BackboneConfig(size="S", patch=2, depth=2, hidden=64, heads=4)
    net = _nontrivial(MoTDiT(backbone, 4, (16, 16), 3, mask=mask, attention=attention)).train()
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(3, 4, 16 >> k, 16 >> k, generator=g) for k in range(2, 2 - active, -1)]  # coarsest first
    t = torch.rand(3, generator=g)
    results = []
    for forward in (lambda: net(xs, t), lambda: _reference_mot_forward(net, xs, t)):
        net.zero_grad(set_to_none=True)
        outs = forward()
        sum((o * (i + 1)).square().mean() for i, o in enumerate(outs)).backward()
        results.append(([o.detach() for o in outs], _grads(net)))
    (outs, grads), (ref_outs, ref_grads) = results
    for a, b in zip(outs + grads, ref_outs + ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)


def _reference_pyramidal_loss(model: nn.Module, x: Tensor, y: Tensor | None) -> Tensor:
    """PyramidalFlow.loss before issue 15: stage rows found by `nonzero()` (a host sync per stage), gathered."""
    from baselines.pyramidal_flow.schedule import data_pyramid, noise_pyramid

    k_stages, b = model.cfg.stages, x.shape[0]
    clean = data_pyramid(x, k_stages)
    noise = noise_pyramid(torch.randn_like(x), k_stages)
    u = model.schedule.train_times(torch.rand(b, device=x.device))
    stage_of = torch.arange(b, device=x.device) % k_stages
    losses = torch.zeros(b, device=x.device, dtype=torch.float32)
    for k in range(min(k_stages, b)):
        idx = (stage_of == k).nonzero().squeeze(1)
        coarser = clean[k - 1][idx] if k > 0 else None
        start, end = model.schedule.endpoints(k, noise[k][idx], clean[k][idx], coarser)
        uk = u[idx].view(-1, 1, 1, 1)
        x_u = (1 - uk) * start + uk * end
        v = model.net(x_u, model.schedule.global_time(k, u[idx]), y[idx] if y is not None else None)
        losses = losses.index_copy(0, idx, (v.float() - (end - start).float()).pow(2).mean(dim=(1, 2, 3)))
    return losses


@pytest.mark.parametrize(("batch", "stages"), [(6, 2), (7, 3), (2, 3)])
def test_pyramidal_strided_stage_rows_equal_the_nonzero_gather(batch: int, stages: int) -> None:
    _, model = build("pyramidal-flow-tiny", 32, CPU, TINY, stages=stages)
    _nontrivial(model).train()
    x = torch.randn(batch, *model.latent_shape, generator=torch.Generator().manual_seed(2))
    results = []
    for loss_fn in (model.loss, lambda a, b: _reference_pyramidal_loss(model, a, b)):
        torch.manual_seed(3)
        model.zero_grad(set_to_none=True)
        loss = loss_fn(x, None)
        loss.mean().backward()
        results.append((loss.detach(), _grads(model)))
    (loss, grads), (ref_loss, ref_grads) = results
    assert torch.equal(loss, ref_loss)  # the same ops on the same values: bitwise
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)


def test_lapflow_stage_drawn_before_the_loss_module_equals_the_loss_drawing_it() -> None:
    """THE step draws LapFlow's stage outside the loss (and outside torch.compile) with the same RNG call."""
    _, model = build("lapflow-tiny", 32, CPU, TINY)
    _nontrivial(model).train()
    module = LossModule(model)
    x = torch.randn(4, *model.latent_shape, generator=torch.Generator().manual_seed(4))
    for seed in range(6):  # both stages occur
        results = []
        for loss_fn in (lambda: module(x, None, stage=draw_stage(model)), lambda: model.loss(x, None)):
            torch.manual_seed(seed)
            model.zero_grad(set_to_none=True)
            loss = loss_fn()
            loss.mean().backward()
            results.append((loss.detach(), _grads(model), torch.rand(())))  # the RNG afterwards, too
        (a, ga, ra), (b, gb, rb) = results
        assert torch.equal(a, b) and torch.equal(ra, rb)
        assert all(torch.equal(p, q) for p, q in zip(ga, gb, strict=True))


def _compiled_steps(preset: str, steps: int, backend: str = "eager") -> tuple[list[float], list[int]]:
    """Losses of `steps` compiled training steps on fixed data and the stages drawn; dynamo counters reset first."""
    import torch._dynamo

    torch._dynamo.reset()
    counters.clear()
    cfg, model = build(preset, 32, CPU, TINY)
    _nontrivial(model).train()
    stages: list[int] = []
    step = make_train_step(model, cfg, CPU, backend, "fp32", stages=stages)
    data = torch.randn(steps, 4, *model.latent_shape, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(6)
    return [float(step(x)) for x in data], stages


@pytest.mark.parametrize(("preset", "graphs"), [("lapflow-tiny", 2), ("pyramidal-flow-tiny", 1), ("lfm-tiny", 1)])
def test_compiled_training_step_has_one_graph_per_stage_and_no_graph_break(preset: str, graphs: int) -> None:
    _, stages = _compiled_steps(preset, 8)
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == graphs
    if preset == "lapflow-tiny":
        assert set(stages) == {0, 1}  # both stage shapes ran: 2 graphs, not one per step


def test_lapflow_inductor_step_follows_the_eager_step() -> None:
    """Inductor on the CPU (fallback_random): the same stages and the losses of eager within float rounding."""
    eager, eager_stages = _compiled_steps("lapflow-tiny", 4, backend="eager")
    compiled, stages = _compiled_steps("lapflow-tiny", 4, backend="inductor")
    assert stages == eager_stages
    assert counters["stats"]["unique_graphs"] == len(set(stages))
    torch.testing.assert_close(torch.tensor(compiled), torch.tensor(eager), atol=1e-5, rtol=1e-4)


def test_packed_attention_refuses_unknown_options() -> None:
    from models.lapflow.attention import packed_attention

    q = torch.randn(1, 2, 5, 8)
    with pytest.raises(ValueError, match="mask"):
        packed_attention(q, q, q, [1, 4], mode="diagonal")
    with pytest.raises(ValueError, match="implementation"):
        packed_attention(q, q, q, [1, 4], impl="flex")
    assert torch.equal(packed_attention(q, q, q, [5])[0], F.scaled_dot_product_attention(q, q, q))
