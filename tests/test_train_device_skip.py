"""THE step's device path (issue 15): with fused AdamW the non-finite check stays on the device (found_inf for the
optimizer, a gated EMA weight) and the loop reads each step back one step late. It must compute what the
synchronous path computes, bit for bit: losses, gradient norms, parameters, optimizer state, EMA, the non-finite
count and the stop past train.max_nonfinite. Fused AdamW runs on the CPU too, so both paths run here on the same
optimizer kernel; the `gpu` test repeats the step comparison on CUDA (`pytest -m gpu`), under torch's deterministic
mode (see _deterministic).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from bench.config import TrainConfig
from bench.dist import DistInfo
from bench.errors import BenchError
from bench.perf.harness import build
from bench.train_step import LossModule, make_optimizer, skips_on_device, train_step
from tests.test_step_exactness import CPU, TINY, _nontrivial
from tests.test_train import checkpoint_tensors, tiny_cfg

STEPS = 7
NAN_BATCH, INF_GRAD = 2, 4  # a non-finite loss (a NaN latent) and, later, a finite loss with an infinite gradient

# torch reads CUBLAS_WORKSPACE_CONFIG once, at the process's first cuBLAS call (a static in ATen's Context), and
# refuses cuBLAS under deterministic mode unless it is one of these: set at import, i.e. at collection, before any
# test runs a GPU matmul. On an H200 (sm90) :4096:8 is PyTorch's default workspace anyway.
DETERMINISTIC_CUBLAS = (":4096:8", ":16:8")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", DETERMINISTIC_CUBLAS[0])


def _mode() -> tuple[bool, bool]:
    """torch's deterministic mode: (enabled, warn only)."""
    return torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()


@contextmanager
def _deterministic() -> Iterator[None]:
    """torch.use_deterministic_algorithms(True) for the CUDA comparison, restored afterwards. Needed by LapFlow: its
    fine queries attend to 80 keys (64 fine + 16 coarse tokens), and fp32 SDPA on CUDA runs the memory-efficient
    kernel, whose backward splits the keys into blocks of 64 (num_splits_key = ceil(80 / 64) = 2) that add their
    dQ parts under a lock in whichever order they get it (ATen attention_backward.cu, mem_eff_attention/
    kernel_backward.h): not bitwise reproducible. LFM and DiT attend to 64 keys, one split. Deterministic mode sets
    num_splits_key = 1, the same kernel otherwise."""
    config = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if config not in DETERMINISTIC_CUBLAS:
        pytest.fail(f"CUBLAS_WORKSPACE_CONFIG={config!r}: deterministic cuBLAS needs one of {DETERMINISTIC_CUBLAS}")
    enabled, warn_only = _mode()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def _bits(t: Tensor) -> Tensor:
    """The tensor's bytes: equal bits, not merely equal values (-0.0 != 0.0, NaN == the same NaN)."""
    return t.detach().reshape(-1).contiguous().view(torch.uint8).clone()


def _fused_adamw(model: nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    """make_optimizer's AdamW with the fused kernel on any device (make_optimizer fuses on CUDA only)."""
    return torch.optim.AdamW(model.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay, fused=True)


def _snapshot(model: nn.Module, ema: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Tensor]:
    """Bits of the weights, the EMA's weights and buffers and AdamW's state. A parameter without state yet counts
    as holding what Adam's lazy initialisation gives it (zero moments, step 0): the device path runs the optimizer
    on a skipped step too, so a parameter whose first gradient comes on a skipped step gets that state there, where
    the synchronous path creates the same values at its first finite step."""
    out = {f"param.{n}": _bits(p) for n, p in model.named_parameters()}
    out |= {f"ema.{n}": _bits(p) for n, p in ema.named_parameters()}
    out |= {f"ema_buffer.{n}": _bits(b) for n, b in ema.named_buffers()}
    for i, p in enumerate(model.parameters()):
        zeros = torch.zeros_like(p)
        state = opt.state.get(p) or {"step": torch.zeros((), device=p.device), "exp_avg": zeros, "exp_avg_sq": zeros}
        out |= {f"opt.{i}.{k}": _bits(v) for k, v in state.items()}
    return out


# LapFlow's stage per step: the fine stage (1) trains 21 of lapflow-tiny's 37 tensors, the coarse one (0) all 37,
# so the NaN batch brings the other 16 their first gradient (see _snapshot) and the first finite one comes later.
LAPFLOW_STAGES = (1, 1, 0, 1, 0, 0, 1)


def _steps(preset: str, device: torch.device, on_device: bool) -> list[dict]:
    """STEPS training steps (2 micro-batches each, clipping, weight decay, EMA warm-up: both lerp branches) with a
    NaN batch at NAN_BATCH and an infinite gradient at INF_GRAD; per step the outcome and the state afterwards."""
    cfg, model = build(preset, 32, device, TINY)
    _nontrivial(model).train()
    ema = copy.deepcopy(model).requires_grad_(False)
    if preset.startswith("lapflow"):
        model.draw_stage = iter([s for s in LAPFLOW_STAGES for _ in range(2)]).__next__  # one per micro-batch
    t = dataclasses.replace(
        cfg.train, precision="fp32", lr=1e-3, grad_clip=0.05, weight_decay=0.01, ema_decay=0.999, ema_warmup=True
    )
    opt = make_optimizer(model, t, device) if device.type == "cuda" else _fused_adamw(model, t)
    module = LossModule(model)
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(2)
    records = [{"state": _snapshot(model, ema, opt)}]
    for step in range(STEPS):
        batches = [(torch.randn(2, *model.latent_shape, generator=g), None) for _ in range(2)]
        if step == NAN_BATCH:
            batches[1][0][0, 0, 0, 0] = float("nan")
        hook = next(model.parameters()).register_hook(lambda grad: grad * float("inf")) if step == INF_GRAD else None
        loss, norm, finite = train_step(module, model, ema, opt, batches, 2, t, step, device, on_device=on_device)
        if hook is not None:
            hook.remove()
        assert torch.is_tensor(finite) == on_device  # the device path hands back a tensor: nothing read yet
        records.append(
            {"loss": _bits(loss), "norm": _bits(norm), "finite": bool(finite), "state": _snapshot(model, ema, opt)}
        )
        records[-1]["with_state"] = len(opt.state)
    return records


def _assert_same(a: dict[str, Tensor], b: dict[str, Tensor], where: str) -> None:
    assert a.keys() == b.keys(), where
    for key in a:
        assert torch.equal(a[key], b[key]), f"{where}: {key}"


def _assert_same_steps(a: list[dict], b: list[dict], what: str) -> None:
    """Every step's outcome and state, bitwise; a failure names the key and the step."""
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        where = f"{what} after step {i - 1}" if i else f"{what}, initial state"
        _assert_same(x["state"], y["state"], where)
        if i:
            assert x["finite"] == y["finite"], f"{where}: finite"
            assert torch.equal(x["loss"], y["loss"]), f"{where}: loss"
            assert torch.equal(x["norm"], y["norm"]), f"{where}: norm"


def _compare_paths(preset: str, device: torch.device, check_reference: bool = False) -> None:
    """The device path against the synchronous one; `check_reference` first shows the synchronous path equal to a
    second run of itself, so a difference below is the device path's and not the kernels' run-to-run noise."""
    sync_path = _steps(preset, device, False)
    if check_reference:
        _assert_same_steps(_steps(preset, device, False), sync_path, f"{preset} synchronous path vs itself")
    device_path = _steps(preset, device, True)
    _assert_same_steps(device_path, sync_path, f"{preset} device vs synchronous path")
    skipped = [i - 1 for i, r in enumerate(device_path) if i and not r["finite"]]
    assert skipped == [NAN_BATCH, INF_GRAD]
    assert device_path[INF_GRAD + 1]["loss"].view(torch.float32).isfinite().all()  # only its gradient was not
    for step in skipped:  # nothing changed: weights, AdamW moments and step counts, EMA weights and buffers
        _assert_same(device_path[step + 1]["state"], device_path[step]["state"], f"{preset} skipped step {step}")
    if preset.startswith("lapflow"):  # the 16 tensors first trained by the NaN batch: their (zero) state came early
        assert [r["with_state"] for r in device_path[1:]] == [21, 21, 37, 37, 37, 37, 37]
        assert [r["with_state"] for r in sync_path[1:]] == [21, 21, 21, 21, 21, 37, 37]
    first, last = device_path[0]["state"], device_path[-1]["state"]
    assert any(not torch.equal(last[k], first[k]) for k in first)  # the finite steps did train


@pytest.mark.parametrize("preset", ["lfm-tiny", "lapflow-tiny", "pyramidal-flow-tiny", "dit-tiny"])
def test_device_path_steps_equal_the_synchronous_steps_bitwise(preset: str) -> None:
    _compare_paths(preset, CPU)


@pytest.mark.gpu
@pytest.mark.parametrize("preset", ["lfm-tiny", "lapflow-tiny", "dit-tiny"])
def test_device_path_steps_equal_the_synchronous_steps_on_cuda(preset: str, cuda_device: torch.device) -> None:
    """make_optimizer's fused CUDA AdamW and the tensor-weight EMA lerp against the scalar one, on the GPU, with
    deterministic kernels (LapFlow's attention backward is not reproducible otherwise: see _deterministic)."""
    with _deterministic():
        _compare_paths(preset, cuda_device, check_reference=True)


def test_the_cuda_comparison_runs_on_the_cpu_too() -> None:
    """The gpu test's code (deterministic mode, the synchronous reference run twice) on the CPU; a difference names
    its step and key; the mode comes back afterwards, also when a comparison fails."""
    before = _mode()
    with _deterministic():
        assert _mode() == (True, False)
        _compare_paths("lapflow-tiny", CPU, check_reference=True)
    assert _mode() == before
    records = _steps("lfm-tiny", CPU, False)
    flipped = copy.deepcopy(records)
    key = next(iter(flipped[3]["state"]))
    flipped[3]["state"][key][0] ^= 1  # one bit of the state after step 2
    with pytest.raises(AssertionError, match=f"lfm-tiny after step 2: {re.escape(key)}(\\n|$)"):
        _assert_same_steps(records, flipped, "lfm-tiny")
    with pytest.raises(ValueError), _deterministic():
        raise ValueError
    assert _mode() == before


def test_the_path_is_chosen_from_the_optimizer() -> None:
    model = nn.Linear(3, 2)
    assert skips_on_device(torch.optim.AdamW(model.parameters(), fused=True))
    assert skips_on_device(torch.optim.Adam(model.parameters(), fused=True))
    assert not skips_on_device(torch.optim.AdamW(model.parameters()))  # foreach / for-loop: found_inf refused
    assert not skips_on_device(torch.optim.SGD(model.parameters(), lr=0.1))
    assert not skips_on_device(make_optimizer(model, TrainConfig(), CPU))  # the CPU's optimizer: synchronous
    scaled = torch.optim.AdamW(model.parameters(), fused=True)
    scaled.found_inf = torch.zeros(())  # a GradScaler's own: left alone
    assert not skips_on_device(scaled)
    assert not skips_on_device(torch.optim.AdamW(nn.Linear(3, 2).double().parameters(), fused=True))


def _train(cfg, run_dir: Path, monkeypatch: pytest.MonkeyPatch, on_device: bool, nan_calls: tuple[int, ...]):
    """bench.train.train on the CPU with fused AdamW, THE step on the chosen path, NaN losses at `nan_calls`;
    returns the result (or the error) and how many loss calls ran."""
    import bench.train_step
    from baselines.lfm.model import LatentFlowMatching
    from bench.train import train

    original = LatentFlowMatching.loss
    calls = {"n": 0}

    def sometimes_nan(self, x, y, **kw):
        calls["n"] += 1
        loss = original(self, x, y, **kw)
        return loss * float("nan") if calls["n"] in nan_calls else loss

    monkeypatch.setattr(LatentFlowMatching, "loss", sometimes_nan)
    monkeypatch.setattr("bench.train.make_optimizer", lambda model, t, device: _fused_adamw(model, t))
    monkeypatch.setattr(bench.train_step, "skips_on_device", lambda optimizer: on_device)
    try:
        return train(cfg, run_dir, DistInfo(0, 1, 0, CPU), None, run_dir.parent / "cache", progress=False), calls["n"]
    except BenchError as exc:
        return exc, calls["n"]


def _stats(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in rows]


def test_training_on_the_device_path_equals_the_synchronous_loop(tmp_path: Path, monkeypatch) -> None:
    """The loop's rows, non-finite count, checkpoints and resume are the synchronous loop's; past the limit it
    stops with the same message, one step later (the lag of train.max_nonfinite)."""
    runs: dict[bool, tuple] = {}
    for on_device in (True, False):
        cfg = tiny_cfg(48, "train.checkpoint_every=24", "train.grid_size=0")
        runs[on_device] = _train(cfg, tmp_path / f"r{on_device}", monkeypatch, on_device, (2, 3))
        resumed = tmp_path / f"resumed{on_device}"
        _train(tiny_cfg(24, "train.checkpoint_every=24", "train.grid_size=0"), resumed, monkeypatch, on_device, (2, 3))
        _train(cfg, resumed, monkeypatch, on_device, ())  # steps 3..5 again, finite this time
    (device, device_calls), (sync, sync_calls) = runs[True], runs[False]
    assert device_calls == sync_calls == 6
    assert device.state.nonfinite_skipped == sync.state.nonfinite_skipped == 2 and device.state.step == 6
    assert device.last_loss == sync.last_loss and device.state.train_seconds > 0
    assert _stats(tmp_path / "rTrue") == _stats(tmp_path / "rFalse")
    _assert_same(checkpoint_tensors(tmp_path / "rTrue"), checkpoint_tensors(tmp_path / "rFalse"), "checkpoint")
    _assert_same(checkpoint_tensors(tmp_path / "resumedTrue"), checkpoint_tensors(tmp_path / "rTrue"), "resume")
    _assert_same(checkpoint_tensors(tmp_path / "resumedFalse"), checkpoint_tensors(tmp_path / "rFalse"), "resume")

    stops = {}
    for on_device in (True, False):
        cfg = tiny_cfg(80, "train.max_nonfinite=1", "train.grid_size=0", "train.log_every=80")
        stops[on_device] = _train(cfg, tmp_path / f"stop{on_device}", monkeypatch, on_device, (2, 4, 5))
    (device_error, device_calls), (sync_error, sync_calls) = stops[True], stops[False]
    assert isinstance(device_error, BenchError) and str(device_error) == str(sync_error)
    assert str(sync_error).startswith("Training stopped: 2 non-finite steps (limit train.max_nonfinite = 1)")
    assert (sync_calls, device_calls) == (4, 5)  # the step after the one past the limit has run: one step of lag


def _ddp_worker(rank: int, init: str, outs: list[str]) -> None:
    """One of two gloo processes, each path in turn: DDP's loss module, fused AdamW, and rank 1 alone sees a NaN
    batch at NAN_BATCH."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        saved = {}
        for on_device in (True, False):
            cfg, model = build("lfm-tiny", 32, CPU, TINY)
            _nontrivial(model).train()
            ema = copy.deepcopy(model).requires_grad_(False)
            t = dataclasses.replace(cfg.train, precision="fp32", lr=1e-3, ema_decay=0.9, grad_clip=1.0)
            opt = _fused_adamw(model, t)
            module = nn.parallel.DistributedDataParallel(LossModule(model))
            g = torch.Generator().manual_seed(10 + rank)
            torch.manual_seed(20 + rank)
            flags = []
            for step in range(4):
                x = torch.randn(2, *model.latent_shape, generator=g)
                if step == NAN_BATCH and rank == 1:
                    x[0, 0, 0, 0] = float("nan")
                _, _, ok = train_step(module, model, ema, opt, [(x, None)], 1, t, step, CPU, 2, on_device=on_device)
                flags.append(bool(ok))
            saved[on_device] = {"flags": flags, "state": _snapshot(model, ema, opt)}
        torch.save(saved, outs[rank])
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_agree_on_a_step_only_one_rank_saw_non_finite(tmp_path: Path) -> None:
    """The flag is all-reduced before the optimizer reads it: both ranks skip the step, on both paths alike."""
    import torch.multiprocessing as mp

    outs = [str(tmp_path / f"rank{r}.pt") for r in range(2)]
    mp.start_processes(_ddp_worker, args=(f"file://{tmp_path / 'init'}", outs), nprocs=2, start_method="spawn")
    ranks = [torch.load(o, weights_only=True) for o in outs]
    for on_device in (True, False):
        assert [r[on_device]["flags"] for r in ranks] == [[True, True, False, True]] * 2
        _assert_same(ranks[0][on_device]["state"], ranks[1][on_device]["state"], "rank 0 vs 1")  # DDP: equal replicas
    _assert_same(ranks[0][True]["state"], ranks[0][False]["state"], "device vs synchronous path")
