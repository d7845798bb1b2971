"""LapFlow's positional-code option: `model.positions=own` (METHODS.md, the default) puts each scale's sin-cos
positions on its own token grid exactly as before; `aligned` (the ablation) counts every scale's positions on the
finest grid, a coarse token at the mean position of the fine tokens it covers."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from bench.config import RunConfig, dump, resolve
from bench.errors import BenchError
from bench.interface import SampleSpec
from bench.registry import MODELS, mini_ablations, mini_models
from bench.results import run_record
from bench.runtime import per_sample_randn_like
from bench.train_step import LossModule, make_optimizer, train_step
from models.lapflow.model import LapFlow
from models.lapflow.mot import MoTDiT, scale_pos_embed
from models.layers import sincos_pos_embed_2d
from models.sizes import BackboneConfig

CPU = torch.device("cpu")
LATENT = (3, 16, 16)  # patch 4 (lapflow-tiny): 4x4 fine tokens, then 2x2 and 1x1
MOT = BackboneConfig("S", patch=2, depth=1, hidden=64, heads=4)  # 16 px: 8x8, 4x4, 2x2 token grids


def lapflow(num_scales: int = 2, **model: object) -> tuple[RunConfig, LapFlow]:
    cfg = resolve(
        preset="lapflow-tiny", overrides=[{"data": {"res": 16}, "model": {"num_scales": num_scales, **model}}]
    )
    torch.manual_seed(0)
    return cfg, MODELS.load("lapflow")(cfg.model, LATENT, 0)


def mot(num_scales: int, positions: str) -> MoTDiT:
    torch.manual_seed(0)
    return MoTDiT(MOT, 2, (16, 16), num_scales, positions=positions)


def codes(net: MoTDiT, k: int) -> torch.Tensor:
    """Scale k's positional codes as a [gh, gw, hidden] grid."""
    expert = net.experts[k]
    return expert.pos_embed[0].reshape(*expert.grid, -1)


def closed_form(hidden: int, y: float, x: float) -> torch.Tensor:
    """DiT's 2D sin-cos code of one position, written out: [sin(x w), cos(x w), sin(y w), cos(y w)]."""
    w = 1.0 / 10000 ** (np.arange(hidden // 4, dtype=np.float64) / (hidden // 4))
    return torch.from_numpy(np.concatenate([np.sin(x * w), np.cos(x * w), np.sin(y * w), np.cos(y * w)])).float()


@pytest.mark.parametrize("num_scales", [1, 2, 3])
def test_own_is_the_previous_embedding_bit_for_bit(num_scales: int) -> None:
    assert resolve(preset="lapflow-tiny").model.positions == "own"  # the default (METHODS.md)
    net = mot(num_scales, "own")
    for expert in net.experts:
        assert torch.equal(expert.pos_embed[0], sincos_pos_embed_2d(64, *expert.grid))
    assert torch.equal(scale_pos_embed(64, (4, 6)), sincos_pos_embed_2d(64, 4, 6))
    # The misalignment the option addresses: coarse (i, j) and fine (i, j) share one code on their own grids.
    if num_scales > 1:
        assert torch.equal(codes(net, 1), codes(net, 0)[:4, :4])


@pytest.mark.parametrize("num_scales", [2, 3])
def test_aligned_codes_are_the_codes_of_the_mean_fine_position(num_scales: int) -> None:
    own, aligned = mot(num_scales, "own"), mot(num_scales, "aligned")
    assert torch.equal(codes(aligned, 0), codes(own, 0))  # the finest scale keeps DiT's integer cells
    fine_y, fine_x = np.meshgrid(np.arange(8.0), np.arange(8.0), indexing="ij")  # fine tokens' coordinates
    for k in range(1, num_scales):
        r = 2**k
        grid = codes(aligned, k)
        assert grid.shape[:2] == (8 // r, 8 // r)
        for i in range(8 // r):
            for j in range(8 // r):
                block = (slice(r * i, r * i + r), slice(r * j, r * j + r))  # the r x r fine tokens under (i, j)
                y, x = fine_y[block].mean(), fine_x[block].mean()
                assert (y, x) == (r * i + (r - 1) / 2, r * j + (r - 1) / 2)
                torch.testing.assert_close(grid[i, j], closed_form(64, y, x), atol=1e-6, rtol=0)
        assert not torch.equal(grid[0, 0], codes(own, k)[0, 0])


def test_one_scale_aligned_is_own_so_it_is_still_lfm() -> None:
    own, aligned = mot(1, "own"), mot(1, "aligned")
    a, b = own.state_dict(keep_vars=True), aligned.state_dict(keep_vars=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(own.experts[0].pos_embed, aligned.experts[0].pos_embed)


@pytest.mark.parametrize("num_scales", [2, 3])
def test_aligned_model_trains_a_step_and_samples(num_scales: int) -> None:
    cfg, model = lapflow(num_scales, positions="aligned")
    assert model.net.experts[-1].pos_embed.abs().sum() > 0 and not torch.equal(
        model.net.experts[1].pos_embed, lapflow(num_scales)[1].net.experts[1].pos_embed
    )
    ema, opt = copy.deepcopy(model), make_optimizer(model, cfg.train, CPU)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    mbs = [(torch.randn(2, *LATENT), None)]
    loss, _, _ = train_step(LossModule(model), model, ema, opt, mbs, 1, cfg.train, 0, CPU)
    assert torch.isfinite(torch.as_tensor(loss)) and any(
        not torch.equal(before[k], v) for k, v in model.state_dict().items()
    )
    model.eval()
    out = model.sample(torch.randn(2, *LATENT), None, SampleSpec(steps=4), per_sample_randn_like([0, 1], "cpu"))
    assert out.latents.shape == (2, *LATENT) and torch.isfinite(out.latents).all()


def test_bad_positions_fail_with_one_sentence() -> None:
    with pytest.raises(BenchError, match="Unknown LapFlow positions 'centred'; choose one of own, aligned"):
        lapflow(positions="centred")
    with pytest.raises(ValueError, match="unknown positions"):
        mot(2, "centred")


def test_the_option_reaches_the_resolved_config_and_records() -> None:
    cfg = resolve(preset=mini_models()["lapflow-aligned"])
    base = resolve(preset=mini_models()["lapflow"])
    assert cfg.model == dataclasses.replace(base.model, positions="aligned")
    assert (cfg.data, cfg.train, cfg.sample) == (base.data, base.train, base.sample)
    assert "positions: aligned" in dump(cfg) and "positions: own" in dump(base)
    assert run_record(cfg, "fid", 1.0, "", {"name": "x"}).config["model"]["positions"] == "aligned"
    with torch.device("meta"):  # the mini model (4x16x16 TAESD latents, B/2): 8x8 fine and 4x4 coarse tokens
        net = MODELS.load("lapflow")(cfg.model, (4, 16, 16), 0).net
    hidden = net.experts[0].pos_embed.shape[-1]
    assert torch.equal(net.experts[0].pos_embed[0], sincos_pos_embed_2d(hidden, 8, 8))
    assert torch.equal(net.experts[1].pos_embed[0], scale_pos_embed(hidden, (4, 4), 2))
    assert mini_ablations()["positions"] == (
        ("lapflow", "own grid (METHODS.md)"),
        ("lapflow-aligned", "aligned to the finest grid"),
    )


def test_report_shows_the_positions_table_with_a_not_run_row(tmp_path) -> None:
    from tests.test_report_mini import ablation_rows, variant_axes_of

    title, rows = ablation_rows(tmp_path, "mini-celebahq128-ablation-positions")
    assert "positional codes" in title
    assert rows == [
        ("own grid (METHODS.md)", "lapflow", "2"),
        ("aligned to the finest grid", "lapflow-aligned", "not run"),
    ]
    assert variant_axes_of("lapflow-aligned") == {"positions"}  # outside the paper tables' default rows
    assert variant_axes_of("lapflow") == set()
