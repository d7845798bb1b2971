"""The loss's random numbers are drawn in eager code (`loss_draws`) and handed to the loss, so a compiled training
loss holds no RNG op: inductor's scheduler may reorder independent RNG calls (pytorch/pytorch#181136), which gives
other numbers than eager's even under fallback_random. Checked on the aten graphs AOTAutograd hands a backend
(forward and backward), the graphs inductor would compile, for every family with label dropout on."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

from bench.config import resolve
from bench.interface import GenerativeModel
from bench.registry import MODELS
from bench.train_step import LossModule, make_optimizer, train_step
from models.layers import LabelEmbedder

FAMILIES = MODELS.names()
CPU = torch.device("cpu")


def conditional_model(family: str, **model: object) -> GenerativeModel:
    """The family's Imagenette tiny model (10 classes, label dropout 0.1), training mode."""
    from bench.autoencoders import latent_shape

    cfg = resolve(preset=f"{family}-imagenette-tiny", overrides=[{"model": model}] if model else [])
    torch.manual_seed(0)
    shape = latent_shape(cfg.data.autoencoder, cfg.data.res)
    return MODELS.load(family)(cfg.model, shape, cfg.data.num_classes).train()


def batch(model: GenerativeModel, b: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(b, *model.latent_shape, generator=g), torch.arange(b) % model.num_classes


def draws_random_numbers(node: torch.fx.Node) -> bool:
    """An aten op with inductor's own mark of RNG use (the nondeterministic_seeded tag), except attention: SDPA carries
    the tag for its dropout, which draws nothing at dropout_p = 0."""
    if node.op != "call_function" or torch.Tag.nondeterministic_seeded not in getattr(node.target, "tags", ()):
        return False
    if "scaled_dot_product" in str(node.target):
        at = [a.name for a in node.target._schema.arguments].index("dropout_p")
        return node.kwargs.get("dropout_p", node.args[at] if len(node.args) > at else 0.0) != 0.0
    return True


def seeded_ops(graphs: list[torch.fx.GraphModule]) -> list[str]:
    return [str(n.target) for gm in graphs for n in gm.graph.nodes if draws_random_numbers(n)]


def compiled_with_recorder(module: nn.Module) -> tuple[nn.Module, list[torch.fx.GraphModule]]:
    import torch._dynamo
    from torch._dynamo.backends.common import aot_autograd

    torch._dynamo.reset()
    graphs: list[torch.fx.GraphModule] = []

    def record(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        from functorch.compile import make_boxed_func

        graphs.append(gm)
        return make_boxed_func(gm.forward)

    return torch.compile(module, backend=aot_autograd(fw_compiler=record, bw_compiler=record), dynamic=False), graphs


@pytest.mark.parametrize("family", FAMILIES)
def test_the_training_steps_compiled_loss_holds_no_rng_op(family: str) -> None:
    model = conditional_model(family)
    compiled, graphs = compiled_with_recorder(LossModule(model))
    t = dataclasses.replace(resolve(preset="lfm-tiny").train, precision="fp32")
    ema, opt = copy.deepcopy(model).requires_grad_(False), make_optimizer(model, t, CPU)
    x, y = batch(model)
    for step in range(3):  # LapFlow: its stages (one graph each)
        train_step(compiled, model, ema, opt, [(x, y)], 1, t, step, CPU)
    assert graphs and not seeded_ops(graphs), seeded_ops(graphs)


def test_a_loss_that_draws_inside_the_graph_is_seen_there() -> None:
    """The check above can fail: the same loss called without its draws holds the family's RNG ops."""
    model = conditional_model("lfm")
    compiled, graphs = compiled_with_recorder(LossModule(model))
    x, y = batch(model)
    compiled(x, y).sum().backward()
    assert {"aten.randn.default", "aten.rand.default"} <= {op.replace("_like", "") for op in seeded_ops(graphs)}


@pytest.mark.parametrize("family", FAMILIES)
def test_loss_without_draws_draws_the_same_numbers_itself(family: str) -> None:
    model = conditional_model(family)
    x, y = batch(model, 8)
    stage = {"stage": 0} if family == "lapflow" else {}
    torch.manual_seed(5)
    inside = model.loss(x, y, **stage)
    torch.manual_seed(5)
    draws = model.loss_draws(x, y)
    assert "label_dropout" in draws and all(v.shape[0] == 8 for v in draws.values())
    assert torch.equal(model.loss(x, y, draws=draws, **stage), inside)
    assert not torch.equal(model.loss(x, y, draws=model.loss_draws(x, y), **stage), inside)  # fresh draws differ


@pytest.mark.parametrize("family", FAMILIES)
def test_no_label_dropout_draw_without_labels_or_out_of_training(family: str) -> None:
    model = conditional_model(family)
    x, y = batch(model)
    assert "label_dropout" not in model.loss_draws(x, None)
    assert "label_dropout" not in model.eval().loss_draws(x, y)


def test_label_dropout_nulls_the_labels_whose_draw_falls_below_the_rate() -> None:
    embedder = LabelEmbedder(10, 8, 0.1).train()
    y = torch.arange(20_000) % 10
    torch.manual_seed(0)
    draws = embedder.dropout_draws(y)
    dropped = embedder.drop_labels(y, draws)
    null = dropped == 10
    assert torch.equal(null, draws["label_dropout"] < 0.1) and torch.equal(dropped[~null], y[~null])
    # Binomial(20000, 0.1): std 42.4 samples; 5 std either side
    assert abs(int(null.sum()) - 2000) < 5 * 42.5
    assert embedder.drop_labels(None, draws) is None and torch.equal(embedder.drop_labels(y, {}), y)


def test_lapflow_draws_do_not_depend_on_the_stage_and_separate_networks_share_one_dropout() -> None:
    model = conditional_model("lapflow", separate_networks=True)
    x, y = batch(model)
    torch.manual_seed(1)
    draws = model.loss_draws(x, y)
    assert set(draws) == {"eps", "u", "label_dropout"} and draws["eps"].shape == x.shape
    for stage in range(model.num_scales):  # every stage reads the same draws (none left over, none missing)
        assert torch.isfinite(model.loss(x, y, stage=stage, draws=draws)).all()
    embedders = [m for m in model.modules() if isinstance(m, LabelEmbedder)]
    assert len(embedders) == model.num_scales and model.net.y_embedder is embedders[0]
