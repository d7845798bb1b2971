"""train.compile_mode: THE training step compiled in an inductor mode, with CUDA graphs in `reduce-overhead`.

On the CPU CUDA graphs do not apply: a graph mode compiles as plain inductor (`compile_mode="default"`'s options)
and says so in a note; its losses and random draws equal eager's within float32 rounding. The `gpu` tests run the
graphed step on the device (`pytest -m gpu tests/test_train_compile_modes.py`): replays match eager's losses, the
RNG states agree afterwards, no graph is skipped, and accumulated micro-batches sum their gradients as eager does.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.config import parse_set, resolve
from bench.dist import DistInfo
from bench.errors import BenchError
from bench.perf.harness import build, make_train_step, rng_digest
from bench.train_step import (
    GraphedLoss,
    LossModule,
    check_graph_layout,
    compile_loss,
    compile_note,
    draw_stage,
    make_optimizer,
    train_step,
)
from bench.validate import check_train

CPU = torch.device("cpu")
TINY = {"size": "S", "depth": 1, "hidden": 64, "heads": 4}
PRESETS = ("lapflow-tiny", "pyramidal-flow-tiny", "lfm-tiny", "dit-tiny")
# float32: inductor fuses and reorders reductions (~1e-6 per op); over a few AdamW steps the losses stay within these.
ATOL, RTOL = 1e-5, 1e-4


def _nontrivial(module: nn.Module) -> nn.Module:
    """adaLN-Zero init predicts zeros (every comparison would be vacuous): all parameters get random values."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return module.train()


def _steps(
    preset: str, device: torch.device, backend: str | None, mode: str, steps: int = 4
) -> tuple[list[float], list[int], str, nn.Module]:
    """Losses of `steps` training steps on fixed data, the drawn stages, the RNG digest afterwards and the model."""
    import torch._dynamo

    torch._dynamo.reset()
    cfg, model = build(preset, 32, device, TINY)
    _nontrivial(model)
    stages: list[int] = []
    step = make_train_step(model, cfg, device, backend, "fp32", stages, mode)
    data = torch.randn(steps, 4, *model.latent_shape, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(6)
    losses = [float(step(x.to(device))) for x in data]
    return losses, stages, rng_digest(device), model


def _assert_follows_eager(preset: str, device: torch.device, mode: str, steps: int = 4) -> None:
    eager, eager_stages, eager_rng, eager_model = _steps(preset, device, None, "default", steps)
    fast, stages, rng, model = _steps(preset, device, "inductor", mode, steps)
    assert stages == eager_stages and rng == eager_rng  # the same stage draws and the same random numbers
    torch.testing.assert_close(torch.tensor(fast), torch.tensor(eager), atol=ATOL, rtol=RTOL)
    # AdamW's first steps move a weight by ~lr whatever its gradient's size: a near-zero gradient that rounds
    # differently may move it by up to lr per step, so weights agree to steps * lr, not to float rounding.
    lr = resolve(preset=preset).train.lr
    for p, q in zip(model.parameters(), eager_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=steps * lr, rtol=0)


@pytest.mark.parametrize("preset", PRESETS)
def test_graph_mode_on_the_cpu_compiles_without_graphs_and_follows_eager(preset: str) -> None:
    module = compile_loss(LossModule(nn.Linear(2, 2)), mode="reduce-overhead", device=CPU)
    assert not isinstance(module, GraphedLoss)
    assert "need a CUDA device" in (compile_note("reduce-overhead", CPU) or "")
    assert compile_note("default", CPU) is None and compile_note("reduce-overhead", torch.device("cuda")) is None
    _assert_follows_eager(preset, CPU, "reduce-overhead")


@pytest.mark.parametrize("preset", PRESETS)
def test_compiled_loss_is_one_graph_whose_only_output_is_the_loss(preset: str) -> None:
    """What CUDA graph trees need of THE loss, checked on dynamo's graph on the CPU: nothing the loss creates
    outlives a call. DiT's diffusion once copied its numpy tables to the device lazily, inside the loss: dynamo made
    those copies outputs of the first graph (stored in a cache, then read by a recompiled second graph), and under
    reduce-overhead the next replay overwrote them ("accessing tensor output of CUDAGraphs that has been
    overwritten"). Each stage shape gets one graph, compiled once, returning the per-sample loss alone."""
    import torch._dynamo

    torch._dynamo.reset()
    graphs: list[torch.fx.GraphModule] = []

    def recorder(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(gm)
        return gm.forward

    _, model = build(preset, 32, CPU, TINY)
    loss_fn = torch.compile(LossModule(_nontrivial(model)), backend=recorder, dynamic=False)
    x = torch.randn(4, *model.latent_shape, generator=torch.Generator().manual_seed(0))
    stages = set()
    for _ in range(6):
        stage = draw_stage(model)
        stages.add(stage)
        (loss_fn(x, None) if stage is None else loss_fn(x, None, stage=stage)).sum().backward()
    assert len(graphs) == len(stages), [g.code for g in graphs]  # no recompilation after the first call
    for gm in graphs:
        (output,) = [n for n in gm.graph.nodes if n.op == "output"]
        results = output.args[0] if isinstance(output.args[0], tuple | list) else (output.args[0],)
        assert len(results) == 1, gm.code


def test_graph_modes_are_refused_with_several_processes_and_bad_modes_in_one_sentence() -> None:
    with pytest.raises(BenchError, match="one process only"):
        check_graph_layout("reduce-overhead", torch.device("cuda"), 2)
    check_graph_layout("default", torch.device("cuda"), 2)  # DDP + plain compile stays supported
    check_graph_layout("reduce-overhead", CPU, 2)  # no graphs on the CPU: nothing to refuse
    cfg = resolve(preset="lfm-tiny")
    with pytest.raises(BenchError, match=r"^Unknown train\.compile_mode 'fast'; choose default, reduce-overhead"):
        check_train(dataclasses.replace(cfg.train, compile=True, compile_mode="fast"))
    with pytest.raises(BenchError, match=r"needs train\.compile=true"):
        check_train(dataclasses.replace(cfg.train, compile_mode="reduce-overhead"))
    check_train(dataclasses.replace(cfg.train, compile=True, compile_mode="max-autotune-no-cudagraphs"))


def test_accumulated_micro_batches_of_a_graphed_loss_sum_gradients_like_eager() -> None:
    """The graphed path copies the first micro-batches' gradients out of the graph pool; the sum stays eager's
    (bitwise here: on the CPU GraphedLoss wraps the eager module, so only the step's own handling differs)."""
    results = []
    for graphed in (False, True):
        torch.manual_seed(0)
        cfg, model = build("lapflow-tiny", 32, CPU, TINY)
        _nontrivial(model)
        ema = copy.deepcopy(model).requires_grad_(False)
        opt = make_optimizer(model, cfg.train, CPU)
        module: nn.Module = LossModule(model)
        module = GraphedLoss(module) if graphed else module
        g = torch.Generator().manual_seed(1)
        batches = [(torch.randn(2, *model.latent_shape, generator=g), None) for _ in range(3)]
        t = dataclasses.replace(cfg.train, precision="fp32")
        torch.manual_seed(2)
        loss, norm, _ = train_step(module, model, ema, opt, batches, 3, t, 0, CPU)
        results.append((loss, norm, [p.detach().clone() for p in model.parameters()]))
    (la, na, pa), (lb, nb, pb) = results
    assert torch.equal(la, lb) and torch.equal(na, nb)
    assert all(torch.equal(p, q) for p, q in zip(pa, pb, strict=True))


def test_training_records_the_mode_and_the_cpu_note(tmp_path: Path) -> None:
    from bench.train import train

    sets = ["data.res=16", "data.synthetic_size=16", "train.batch_size=8", "train.total_images=16"]
    sets += ["train.grid_size=0", "model.backbone.depth=1", "model.backbone.hidden=32", "model.backbone.heads=2"]
    sets += ["train.checkpoint_every=0", "train.compile=true", "train.compile_mode=reduce-overhead"]
    cfg = resolve(preset="lfm-tiny", overrides=[parse_set(s) for s in sets])
    run = tmp_path / "run"
    result = train(cfg, run, DistInfo(0, 1, 0, CPU), None, tmp_path / "cache", progress=False)
    assert result.state.step == 2
    assert "compile_mode: reduce-overhead" in (run / "config.yaml").read_text()
    events = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    notes = [e for e in events if e.get("event") == "compile_note"]
    assert len(notes) == 1 and "need a CUDA device" in notes[0]["reason"]
    assert not [e for e in events if e.get("event") == "compile_fallback"]


def test_perf_training_modes_record_each_mode_and_its_loss_match(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bench.cli.app import app
    from bench.results import load_records

    args = ["--device", "cpu", "perf", "training", "--presets", "lfm-celebahq128-mini", "--batch", "2", "--tiny"]
    args += ["--modes", "eager,compile-graphs", "--warmup", "1", "--steps", "2", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    records = {(r.metric, r.protocol_name): r for r in load_records(tmp_path)}
    assert set(records) == {
        ("train_throughput", "train-b2-bf16-cpu"),
        ("train_throughput", "train-b2-bf16-compile-graphs-cpu"),
        ("train_loss_match", "train-b2-bf16-compile-graphs-vs-eager-cpu"),
    }
    graphs = records[("train_throughput", "train-b2-bf16-compile-graphs-cpu")]
    assert graphs.protocol["compile_mode"] == "reduce-overhead" and "need a CUDA device" in graphs.extra["compile_note"]
    assert graphs.extra["nonfinite_check"] == "host"  # the CPU's AdamW is not fused: THE step reads it on the host
    assert graphs.extra["compile"]["graphs"] == 1 and graphs.extra["compile"]["compile_seconds"] > 0
    assert "compile" not in records[("train_throughput", "train-b2-bf16-cpu")].extra  # eager compiles nothing
    match = records[("train_loss_match", "train-b2-bf16-compile-graphs-vs-eager-cpu")]
    assert match.extra["rng_match"] is True and match.extra["met"] is True
    bad = CliRunner().invoke(app, [*args[:-6], "--modes", "turbo", "--out", str(tmp_path)])
    assert bad.exit_code != 0 and "Unknown mode 'turbo'" in bad.output


def test_perf_training_records_a_failed_mode_and_goes_on_with_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One preset failing in one mode (as DiT did under CUDA graphs on the H200) is recorded as n/a with the reason;
    every other preset and mode is measured and compared, and the command exits 1 at the end, naming the failure."""
    from typer.testing import CliRunner

    from bench.cli.app import app
    from bench.perf import suites
    from bench.results import load_records

    real = suites.make_train_step
    overwritten = "Error: accessing tensor output of CUDAGraphs that has been overwritten by a subsequent run."

    def make_train_step(model, cfg, device, compile_backend, *args, **kwargs):  # type: ignore[no-untyped-def]
        step = real(model, cfg, device, compile_backend, *args, **kwargs)
        if cfg.family != "dit" or compile_backend is None:
            return step

        def failing(x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError(f"{overwritten} Stack trace: File ...\n  line 2 of the message\n  line 3")

        return failing

    monkeypatch.setattr(suites, "make_train_step", make_train_step)
    presets = "lfm-celebahq128-mini,dit-celebahq128-mini"
    args = ["--device", "cpu", "perf", "training", "--presets", presets, "--batch", "2", "--tiny"]
    args += ["--modes", "eager,compile-graphs", "--warmup", "1", "--steps", "2", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    sentence = (
        "compile-graphs training of dit-celebahq128-mini failed while running the warm-up and timed steps "
        f"(RuntimeError: {overwritten} Stack trace: File ...)"
    )
    summary = f"error: 1 training measurement(s) failed, the others are recorded in {tmp_path}: {sentence}"
    assert summary in result.output
    assert "line 2 of the message" not in result.output
    records = {(r.metric, r.preset, r.protocol_name): r for r in load_records(tmp_path)}
    lfm, dit = "lfm-celebahq128-mini", "dit-celebahq128-mini"
    assert set(records) == {
        ("train_throughput", lfm, "train-b2-bf16-cpu"),
        ("train_throughput", dit, "train-b2-bf16-cpu"),
        ("train_throughput", lfm, "train-b2-bf16-compile-graphs-cpu"),
        ("train_throughput", dit, "train-b2-bf16-compile-graphs-cpu"),
        ("train_loss_match", lfm, "train-b2-bf16-compile-graphs-vs-eager-cpu"),
        ("train_loss_match", dit, "train-b2-bf16-compile-graphs-vs-eager-cpu"),
    }
    failed = records[("train_throughput", dit, "train-b2-bf16-compile-graphs-cpu")]
    assert failed.value is None and failed.note == sentence
    assert failed.extra["failure"] == {
        "preset": dit,
        "mode": "compile-graphs",
        "phase": "running the warm-up and timed steps",
        "error": f"RuntimeError: {overwritten} Stack trace: File ...",
    }
    assert records[("train_throughput", dit, "train-b2-bf16-cpu")].value > 0  # eager DiT is measured
    match = records[("train_loss_match", lfm, "train-b2-bf16-compile-graphs-vs-eager-cpu")]
    assert match.value is not None and match.extra["met"] is True and match.extra["rng_match"] is True
    missing = records[("train_loss_match", dit, "train-b2-bf16-compile-graphs-vs-eager-cpu")]
    assert missing.value is None and missing.extra["met"] is None and missing.note == f"not compared: {sentence}"
    assert f"= n/a images/s ({sentence})" in result.output  # the command's own line for the failed measurement


@pytest.mark.gpu
@pytest.mark.parametrize("preset", PRESETS)
def test_graphed_training_step_replays_and_follows_eager(preset: str, cuda_device: torch.device) -> None:
    """8 steps: LapFlow draws both stages (a graph each, recorded on its second call, then replayed)."""
    from torch._dynamo.utils import counters

    device = cuda_device
    counters.clear()
    _assert_follows_eager(preset, device, "reduce-overhead", steps=8)
    assert not counters["inductor"]["cudagraph_skips"], dict(counters["inductor"])


@pytest.mark.gpu
def test_graphed_accumulation_sums_micro_batches_like_eager(cuda_device: torch.device) -> None:
    import torch._dynamo

    device = cuda_device
    results = []
    for compiled in (False, True):
        torch._dynamo.reset()
        cfg, model = build("lapflow-tiny", 32, device, TINY)
        _nontrivial(model)
        ema = copy.deepcopy(model).requires_grad_(False)
        opt = make_optimizer(model, cfg.train, device)
        module = (
            compile_loss(LossModule(model), mode="reduce-overhead", device=device) if compiled else LossModule(model)
        )
        assert isinstance(module, GraphedLoss) == compiled
        t = dataclasses.replace(cfg.train, precision="fp32")
        g = torch.Generator().manual_seed(1)
        torch.manual_seed(2)
        losses = []
        for step in range(6):
            batches = [(torch.randn(2, *model.latent_shape, generator=g), None) for _ in range(3)]
            losses.append(train_step(module, model, ema, opt, batches, 3, t, step, device)[0].item())
        results.append((losses, [p.detach().clone() for p in model.parameters()]))
    (la, pa), (lb, pb) = results
    torch.testing.assert_close(torch.tensor(lb), torch.tensor(la), atol=ATOL, rtol=RTOL)
    for p, q in zip(pb, pa, strict=True):
        torch.testing.assert_close(p, q, atol=ATOL, rtol=RTOL)
