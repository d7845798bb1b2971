"""LapFlow's stage times (issue #14 item 8): `model.stage_times=active` (METHODS.md, the default) trains stage s at
t ~ U[T_{s+1}, 1], unchanged; `segment` (the ablation) trains it on its own sampler segment U[T_{s+1}, T_s] with
stages drawn in proportion to the segments' lengths, so that t is uniform on [0, 1] overall, as LFM's is."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.interface import SampleSpec
from bench.registry import mini_ablations, mini_models
from bench.train_step import LossModule, draw_stage, make_optimizer, train_step
from models.lapflow.pyramid import stage_time_table, stage_times, start_table
from tests.test_stage_sampling import CPU, LATENT, UNIFORM_DRAWS, lapflow

N = 100_000
KS_BOUND = 1.63 / np.sqrt(N)  # the Kolmogorov-Smirnov statistic's 1% critical value


def drawn_times(model: torch.nn.Module, n: int = N) -> np.ndarray:
    """t of n loss calls as the loss computes it: the stage draw_stage gives, its table row, a uniform draw."""
    torch.manual_seed(0)
    stages = torch.tensor([draw_stage(model) for _ in range(n)])
    return stage_times(model.time_table[stages].T, torch.rand(n)).double().numpy()


def ks_uniform(t: np.ndarray) -> float:
    t = np.sort(t)
    grid = np.arange(1, len(t) + 1) / len(t)
    return float(max(np.abs(grid - t).max(), np.abs(grid - 1 / len(t) - t).max()))


def test_the_tables_active_rows_are_start_tables_spans_and_segment_rows_the_sampler_segments() -> None:
    for starts in ((0.5, 0.0), (2 / 3, 1 / 3, 0.0), (0.7, 0.0)):
        assert torch.equal(stage_time_table(starts, segment=False), start_table(starts)[:, :2])
    torch.testing.assert_close(stage_time_table((0.5, 0.0), segment=True), torch.tensor([[0.5, 0.5], [0.0, 0.5]]))
    _, model = lapflow(3, stage_times="segment", critical_times=[0.2, 0.7])
    # the sampler's segments in time order, [T_{j+1}, T_j] for j = S-1 ... 0: stage j's row, reversed
    rows = [float(v) for lo, width in model.time_table.flip(0) for v in (lo, lo + width)]
    assert rows == pytest.approx([v for segment in model.segments(SampleSpec()) for v in segment])
    assert model.stage_weights == pytest.approx([0.3, 0.5, 0.2])  # T_s - T_{s+1}, finest first


@pytest.mark.parametrize("num_scales", [2, 3])
def test_the_default_draws_stages_and_times_as_before(num_scales: int) -> None:
    _, model = lapflow(num_scales)
    torch.manual_seed(0)
    assert "".join(str(draw_stage(model)) for _ in range(32)) == UNIFORM_DRAWS[num_scales]
    assert torch.equal(model.time_table, model.start_table[:, :2])


@pytest.mark.parametrize(("num_scales", "critical_times"), [(2, ()), (2, (0.3,)), (3, ()), (3, (0.2, 0.7))])
def test_segment_times_are_uniform_on_zero_one_and_each_stage_stays_in_its_segment(
    num_scales: int, critical_times: tuple[float, ...]
) -> None:
    _, model = lapflow(num_scales, stage_times="segment", critical_times=list(critical_times))
    t = drawn_times(model)
    assert ks_uniform(t) < KS_BOUND
    ends = (1.0, *model.starts[:-1])
    for s in range(num_scales):
        u = torch.linspace(0, 1, 101)
        ts = stage_times(model.time_table[s], u)
        assert ts.min() >= model.starts[s] - 1e-7 and ts.max() <= ends[s] + 1e-7


def test_the_default_times_put_a_quarter_of_the_draws_in_the_coarse_only_segment() -> None:
    """METHODS.md's t ~ U[T_{s+1}, 1], two scales, T1 = 0.5: P(t < T1) = P(stage 1) x 1/2 = 1/4, LFM's 1/2."""
    _, model = lapflow(2)
    t = drawn_times(model)
    assert abs((t < 0.5).mean() - 0.25) < 4 * np.sqrt(0.25 * 0.75 / N)
    assert ks_uniform(t) > 10 * KS_BOUND


def test_segment_times_refuse_stratified_stages_and_a_curriculum_in_one_sentence() -> None:
    for option in ({"stage_sampling": "stratified"}, {"curriculum_images": 64}):
        with pytest.raises(BenchError, match=r"stage_times=segment draws every stage in proportion") as err:
            lapflow(2, stage_times="segment", **option)
        assert str(err.value).count(". ") == 0 and str(err.value).endswith(".")
    with pytest.raises(BenchError, match="Unknown LapFlow stage_times 'end'; choose one of active, segment"):
        lapflow(2, stage_times="end")


def test_segment_training_steps_train_every_stage_and_the_loss_reads_the_segment_row() -> None:
    cfg, model = lapflow(2, stage_times="segment")
    x = torch.randn(4, *LATENT)
    draws = model.loss_draws(x, None)
    draws["u"] = torch.ones(4)  # the segment's top: stage 1 ends at T1, where its coarse scale is not yet clean
    coarse_end = model.loss(x, None, stage=1, draws=draws)
    assert torch.isfinite(coarse_end).all()
    ema, opt = copy.deepcopy(model), make_optimizer(model, cfg.train, CPU)
    stages: list[int] = []
    torch.manual_seed(4)
    for step in range(8):
        loss, _, finite = train_step(
            LossModule(model), model, ema, opt, [(x, None)], 1, cfg.train, step, CPU, stages=stages
        )
        assert finite and torch.isfinite(loss)
    assert set(stages) == {0, 1}


def test_the_preset_its_ablation_axis_and_its_report_table(tmp_path) -> None:
    from bench.config import resolve
    from tests.test_report_mini import ablation_rows, variant_axes_of

    cfg, base = (resolve(preset=mini_models()[r]) for r in ("lapflow-segment", "lapflow"))
    assert cfg.model == dataclasses.replace(base.model, stage_times="segment")
    assert (cfg.data, cfg.train, cfg.sample) == (base.data, base.train, base.sample)
    assert mini_ablations()["stage_times"][1] == ("lapflow-segment", "t ~ U[T_{s+1}, T_s], stages by segment length")
    title, rows = ablation_rows(tmp_path, "mini-celebahq128-ablation-stage-times")
    assert "training times" in title
    assert rows == [
        ("t ~ U[T_{s+1}, 1] (METHODS.md)", "lapflow", "2"),
        ("t ~ U[T_{s+1}, T_s], stages by segment length", "lapflow-segment", "not run"),
    ]
    assert variant_axes_of("lapflow-segment") == {"stage_times"} and variant_axes_of("lapflow") == set()
