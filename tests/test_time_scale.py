"""The time-embedding ablation (issue #14): `<flow family>-celebahq128-mini-ts1000` differs from its mini preset only
in model.time_scale; the scale multiplies t before the sinusoidal embedding and nothing else; and what it is for:
over a flow's t in [0, 1], scale 1 moves few of the 256 sinusoidal features, scale 1000 moves most of them."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from bench.config import resolve
from bench.registry import MODELS, mini_ablations, mini_models
from models.layers import timestep_embedding
from models.presets_common import MINI_TIME_SCALE

FLOW_FAMILIES = ("lapflow", "lfm", "pyramidal-flow")
LATENT = (3, 16, 16)  # pixel space, 16 px: the tiny presets (patch 4, up to 2 scales) divide it


@pytest.mark.parametrize("run", FLOW_FAMILIES)
def test_ts1000_preset_is_its_mini_preset_with_another_time_scale(run: str) -> None:
    base, scaled = resolve(preset=mini_models()[run]), resolve(preset=mini_models()[f"{run}-ts1000"])
    assert base.model.time_scale == 1.0 and scaled.model.time_scale == MINI_TIME_SCALE == 1000.0
    assert dataclasses.replace(scaled.model, time_scale=1.0) == base.model
    assert (scaled.train, scaled.data, scaled.sample) == (base.train, base.data, base.sample)


def test_time_scale_axis_holds_every_flow_family_at_both_scales() -> None:
    runs = [run for run, _ in mini_ablations()["time_scale"]]
    assert sorted(runs) == sorted([*FLOW_FAMILIES, *(f"{f}-ts1000" for f in FLOW_FAMILIES)])


def _embedder_inputs(family: str, time_scale: float) -> list[torch.Tensor]:
    """The times the network's t-embedder receives during one loss call (fixed seeds, same weights)."""
    cfg = resolve(preset=f"{family}-tiny", overrides=[{"data": {"res": 16}, "model": {"time_scale": time_scale}}])
    torch.manual_seed(0)
    model = MODELS.load(family)(cfg.model, LATENT, 0)
    seen: list[torch.Tensor] = []
    embedders = [m for name, m in model.named_modules() if name.endswith("t_embedder")]
    assert len(embedders) == 1, f"{family}: expected one t-embedder, found {len(embedders)}"
    embedders[0].register_forward_hook(lambda _m, args, _out: seen.append(args[0].detach().clone()))
    torch.manual_seed(1)
    x = torch.randn(4, *LATENT)
    torch.manual_seed(2)
    model.loss(x, None)
    return seen


@pytest.mark.parametrize("family", FLOW_FAMILIES)
def test_the_network_embeds_scale_times_t_and_nothing_else_changes(family: str) -> None:
    plain, scaled = _embedder_inputs(family, 1.0), _embedder_inputs(family, 1000.0)
    assert len(plain) == len(scaled) >= 1
    for a, b in zip(plain, scaled, strict=True):
        assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0  # flow time in [0, 1] as drawn
        torch.testing.assert_close(b, a * 1000.0, rtol=1e-6, atol=0)


def _moving_features(scale: float, threshold: float = 0.1) -> int:
    """Sinusoidal features whose range over t in [0, 1] exceeds `threshold` (closed form: cos(f t) spans 1 - cos f
    for f <= pi, sin(f t) spans sin f for f <= pi/2; frequencies f_i = scale * 10^(-4 i / 128))."""
    count = 0
    for i in range(128):
        f = scale * 10 ** (-4 * i / 128)
        cos_span = 2.0 if f >= math.pi else 1 - math.cos(f)
        sin_span = (
            2.0
            if f >= 3 * math.pi / 2
            else (1 + abs(math.sin(f)) if f > math.pi else (1.0 if f >= math.pi / 2 else math.sin(f)))
        )
        count += (cos_span > threshold) + (sin_span > threshold)
    return count


def test_scale_1000_moves_most_sinusoidal_features_where_scale_1_moves_few() -> None:
    t = torch.linspace(0, 1, 20001)
    for scale, expected in ((1.0, _moving_features(1.0)), (1000.0, _moving_features(1000.0))):
        emb = timestep_embedding(t * scale, 256)
        measured = int(((emb.amax(0) - emb.amin(0)) > 0.1).sum())
        assert measured == expected
    assert (_moving_features(1.0), _moving_features(1000.0)) == (44, 236)  # of 256
