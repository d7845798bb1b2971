"""LapFlow's stage sampling (issue #14 item 8): `model.stage_sampling=uniform` (METHODS.md, the default) draws one
stage per micro-batch exactly as before; `stratified` (the ablation) plans each optimizer step so that its
micro-batches hold every available stage equally often, refuses layouts that cannot, trains, resumes and compiles
with the stage still a Python int drawn outside the compiled loss."""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections import Counter

import pytest
import torch
from torch import nn

from bench.config import RunConfig, resolve
from bench.errors import BenchError
from bench.perf.harness import rng_digest
from bench.registry import MODELS, mini_ablations, mini_models
from bench.results import run_record
from bench.train_step import LossModule, compile_loss, draw_stage, make_optimizer, plan_stages, train_step
from bench.validate import check_run
from models.lapflow.model import LapFlow
from tests.test_train import checkpoint_tensors, run, tiny_cfg

CPU = torch.device("cpu")
LATENT = (3, 16, 16)
# What the implementation before the option drew (captured at its commit d711594): draw_stage() x 32 after
# torch.manual_seed(0), and THE step's stages over 6 steps of 2 micro-batches (the _train_step_stages procedure).
UNIFORM_DRAWS = {2: "01101111111001000001011001111010", 3: "20201011102200120020222222120010"}
UNIFORM_STEP_STAGES = {2: "111011110011", 3: "212001010201"}


def lapflow(num_scales: int = 2, **model: object) -> tuple[RunConfig, LapFlow]:
    cfg = resolve(
        preset="lapflow-tiny", overrides=[{"data": {"res": 16}, "model": {"num_scales": num_scales, **model}}]
    )
    torch.manual_seed(0)
    return cfg, MODELS.load("lapflow")(cfg.model, LATENT, 0)


def _train_step_stages(
    cfg: RunConfig, model: LapFlow, steps: int = 6, accum: int = 2, module: nn.Module | None = None
) -> tuple[str, list[float]]:
    """THE step's drawn stages (and losses) over `steps` steps of `accum` micro-batches of 2 random latents."""
    ema, opt = copy.deepcopy(model), make_optimizer(model, cfg.train, CPU)
    module = LossModule(model) if module is None else module
    stages: list[int] = []
    losses: list[float] = []
    torch.manual_seed(3)
    for step in range(steps):
        mbs = [(torch.randn(2, *LATENT), None) for _ in range(accum)]
        loss, _, _ = train_step(module, model, ema, opt, mbs, accum, cfg.train, step, CPU, stages=stages)
        losses.append(float(loss))
    return "".join(map(str, stages)), losses


@pytest.mark.parametrize("num_scales", [2, 3])
def test_uniform_default_draws_exactly_what_it_drew_before(num_scales: int) -> None:
    cfg, model = lapflow(num_scales)
    assert cfg.model.stage_sampling == "uniform"  # the default (METHODS.md)
    torch.manual_seed(0)
    assert "".join(str(model.draw_stage()) for _ in range(32)) == UNIFORM_DRAWS[num_scales]
    state = torch.get_rng_state()
    plan_stages(model, 2)  # THE step's per-step hook: uniform sampling draws nothing there
    assert torch.equal(state, torch.get_rng_state()) and model.planned_stages == []
    assert _train_step_stages(cfg, model)[0] == UNIFORM_STEP_STAGES[num_scales]


@pytest.mark.parametrize(("num_scales", "groups"), [(2, 1), (2, 3), (3, 1), (3, 2)])
def test_stratified_steps_hold_every_stage_equally_often_and_every_order(num_scales: int, groups: int) -> None:
    _, model = lapflow(num_scales, stage_sampling="stratified")
    accum = groups * num_scales
    orders: Counter[tuple[int, ...]] = Counter()
    torch.manual_seed(0)
    for _ in range(200):
        plan_stages(model, accum)
        step = [draw_stage(model) for _ in range(accum)]
        assert all(type(s) is int for s in step) and model.planned_stages == []  # nothing left past the step
        assert Counter(step) == {s: groups for s in range(num_scales)}
        orders.update(tuple(step[i : i + num_scales]) for i in range(0, accum, num_scales))
    assert set(orders) == set(itertools.permutations(range(num_scales)))  # each group a random permutation


def test_stratified_through_the_step_alternates_stages_per_step() -> None:
    cfg, model = lapflow(2, stage_sampling="stratified")
    stages, _ = _train_step_stages(cfg, model, steps=20)
    pairs = [stages[i : i + 2] for i in range(0, len(stages), 2)]
    assert all(sorted(p) == ["0", "1"] for p in pairs) and {"01", "10"} == set(pairs)
    # a loss call outside THE step (no plan) draws from a group of its own, still over every stage
    assert sorted(str(model.draw_stage()) for _ in range(2)) == ["0", "1"]


def test_stratified_with_a_curriculum_plans_the_stages_available_at_the_step_start() -> None:
    _, model = lapflow(3, stage_sampling="stratified", curriculum_images=4)
    model.train()
    with pytest.raises(BenchError, match=r"multiple of 6 \(every stage count its curriculum passes through, 1 to 3\)"):
        model.check_micro_batches(3)  # 3 stages at the end, but 2 of them in between: refused up front
    seen = []
    for _ in range(4):
        plan_stages(model, 6)
        step = [model.draw_stage() for _ in range(6)]
        for s in step:
            model.loss(torch.rand(1, *LATENT), None, stage=s)  # each micro-batch of 1 image advances the curriculum
        seen.append(Counter(step))
    assert seen[0] == {2: 6} and seen[1] == {1: 3, 2: 3} and seen[2] == seen[3] == {0: 2, 1: 2, 2: 2}


def test_a_layout_without_whole_stage_groups_is_refused_in_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = resolve(preset="lapflow-tiny", overrides=[{"model": {"stage_sampling": "stratified"}}])
    with pytest.raises(BenchError) as info:
        check_run(cfg)  # bench train / reproduce: before any data is read
    message = str(info.value)
    assert message.startswith("LapFlow's model.stage_sampling=stratified needs the micro-batches of each optimizer")
    assert "multiple of 2 (one micro-batch per stage of its 2), but this run has 1;" in message
    assert "\n" not in message and message.count(". ") == 0 and message.endswith("model.stage_sampling=uniform.")
    check_run(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, micro_batch=16)))  # 2 x 16
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun with 2 processes: 1 micro-batch of 16 each
    with pytest.raises(BenchError, match="but this run has 1;"):
        check_run(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, micro_batch=16)))
    with pytest.raises(BenchError, match="Unknown LapFlow stage_sampling 'random'; choose one of uniform, stratified"):
        check_run(resolve(preset="lapflow-tiny", overrides=[{"model": {"stage_sampling": "random"}}]))


def test_the_training_loop_refuses_the_layout_before_its_first_step(tmp_path) -> None:
    cfg = tiny_cfg(16, "model.stage_sampling=stratified", family="lapflow")  # bench.train called directly
    with pytest.raises(BenchError, match="but this run has 1;"):
        run(cfg, tmp_path / "r")
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_stratified_training_trains_resumes_and_records_its_setting(tmp_path, monkeypatch) -> None:
    drawn: list[int] = []
    original = LapFlow.draw_stage

    def recording(self: LapFlow) -> int:
        drawn.append(original(self))
        return drawn[-1]

    monkeypatch.setattr(LapFlow, "draw_stage", recording)
    layout = ("train.micro_batch=4", "model.stage_sampling=stratified")  # 2 x 4 per step of 8, as the mini's 2 x 128
    straight = run(tiny_cfg(64, *layout, family="lapflow"), tmp_path / "straight")
    straight_stages, drawn[:] = list(drawn), []
    run(tiny_cfg(32, *layout, family="lapflow"), tmp_path / "resumed")
    resumed = run(tiny_cfg(64, *layout, family="lapflow"), tmp_path / "resumed")  # resumes at step 4
    assert straight.state.step == resumed.state.step == 8 and drawn == straight_stages
    assert all(sorted(straight_stages[i : i + 2]) == [0, 1] for i in range(0, 16, 2))  # both experts every step
    a, b = checkpoint_tensors(tmp_path / "straight"), checkpoint_tensors(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "stage_sampling: stratified" in (tmp_path / "straight" / "config.yaml").read_text()
    cfg = tiny_cfg(64, *layout, family="lapflow")
    assert run_record(cfg, "fid", 1.0, "", {"name": "x"}).config["model"]["stage_sampling"] == "stratified"


def test_compiled_loss_gets_the_planned_stage_as_a_python_int_and_follows_eager() -> None:
    import torch._dynamo

    cfg, model = lapflow(2, stage_sampling="stratified")
    eager_stages, eager_losses = _train_step_stages(cfg, copy.deepcopy(model), steps=4)
    torch._dynamo.reset()
    graphs: list[torch.fx.GraphModule] = []

    def recorder(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(gm)
        return gm.forward

    module = torch.compile(LossModule(model), backend=recorder, dynamic=False)
    stages, losses = _train_step_stages(cfg, model, steps=4, module=module)
    assert stages == eager_stages and len(graphs) == 2  # one graph per stage, no graph break or recompilation
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(eager_losses), atol=1e-5, rtol=1e-4)
    torch._dynamo.reset()
    _, fresh = lapflow(2, stage_sampling="stratified")
    aot = compile_loss(LossModule(fresh), backend="aot_eager", device=CPU)
    assert _train_step_stages(cfg, fresh, steps=2, module=aot)[0] == eager_stages[:4]


def test_stage_sampling_presets_and_their_ablation_axis() -> None:
    base = resolve(preset=mini_models()["lapflow"])
    control, stratified = (resolve(preset=mini_models()[r]) for r in ("lapflow-mb128", "lapflow-stratified"))
    assert base.train.micro_batch == 0 and control.train.micro_batch == stratified.train.micro_batch == 128
    assert (
        dataclasses.replace(control.train, micro_batch=0)
        == base.train
        == dataclasses.replace(stratified.train, micro_batch=0)
    )
    assert control.model == base.model and stratified.model == dataclasses.replace(
        base.model, stage_sampling="stratified"
    )
    assert (control.data, control.sample) == (stratified.data, stratified.sample) == (base.data, base.sample)
    assert stratified.train.layout(1) == (128, 2)  # one micro-batch per stage on one GPU
    with torch.device("meta"):
        MODELS.load("lapflow")(stratified.model, (4, 16, 16), 0).check_micro_batches(2)
    assert mini_ablations()["stage_sampling"] == (
        ("lapflow", "uniform, 1 x 256"),
        ("lapflow-mb128", "uniform, 2 x 128"),
        ("lapflow-stratified", "stratified, 2 x 128"),
    )


def test_report_shows_the_stage_sampling_table_with_not_run_rows(tmp_path) -> None:
    from tests.test_report_mini import ablation_rows, variant_axes_of

    title, rows = ablation_rows(tmp_path, "mini-celebahq128-ablation-stage-sampling")
    assert "stage sampling" in title
    assert rows == [
        ("uniform, 1 x 256", "lapflow", "2"),
        ("uniform, 2 x 128", "lapflow-mb128", "not run"),
        ("stratified, 2 x 128", "lapflow-stratified", "not run"),
    ]
    assert variant_axes_of("lapflow-stratified") == {"stage_sampling"}  # outside the paper tables' default rows


@pytest.mark.gpu
def test_graphed_stratified_steps_follow_eager(cuda_device: torch.device) -> None:
    """The mini ablation's path on a GPU: CUDA graphs (reduce-overhead), 2 micro-batches a step, one per stage."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from bench.train_step import GraphedLoss

    runs = []
    for compiled in (False, True):
        torch._dynamo.reset()
        counters.clear()
        cfg = resolve(preset="lapflow-tiny", overrides=[{"model": {"stage_sampling": "stratified"}}])
        torch.manual_seed(0)
        model = MODELS.load("lapflow")(cfg.model, (3, 32, 32), 0).to(cuda_device)
        ema, opt = copy.deepcopy(model).requires_grad_(False), make_optimizer(model, cfg.train, cuda_device)
        module = LossModule(model)
        if compiled:
            module = compile_loss(module, mode="reduce-overhead", device=cuda_device)
            assert isinstance(module, GraphedLoss)
        t = dataclasses.replace(cfg.train, precision="fp32")
        g = torch.Generator().manual_seed(1)
        torch.manual_seed(2)
        stages: list[int] = []
        losses = []
        for step in range(8):
            batches = [(torch.randn(4, 3, 32, 32, generator=g), None) for _ in range(2)]
            losses.append(train_step(module, model, ema, opt, batches, 2, t, step, cuda_device, stages=stages)[0])
        assert all(sorted(stages[i : i + 2]) == [0, 1] for i in range(0, 16, 2))
        digest = rng_digest(cuda_device)
        runs.append((stages, digest, torch.stack(losses).cpu(), [p.detach().clone() for p in model.parameters()]))
    assert not counters["inductor"]["cudagraph_skips"], dict(counters["inductor"])
    (sa, ra, la, pa), (sb, rb, lb, pb) = runs
    # adaLN-Zero: the untrained network predicts zeros, so the first step's loss is set by the draws (t, noise)
    # alone; the RNG states after the steps say whether the two paths drew the same numbers.
    assert sa == sb and rb == ra, "the graphed path drew other random numbers than eager"
    torch.testing.assert_close(lb, la, atol=1e-5, rtol=1e-4)
    for p, q in zip(pb, pa, strict=True):
        torch.testing.assert_close(p, q, atol=8 * cfg.train.lr, rtol=0)  # AdamW: ~lr a step for tiny gradients
