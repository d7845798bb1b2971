"""DiT adapter: presets, published sizes, training, sampling (oracle, determinism, CFG) and flop_trace."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from baselines.dit.config import PRESETS, DiTConfig
from baselines.dit.model import NETWORK_CALL, DiffusionTransformer, build
from bench.config import resolve
from bench.errors import BenchError
from bench.interface import SampleSpec
from bench.metrics.flops import trace_flops  # fvcore with an SDPA handle, DiT convention
from bench.runtime import per_sample_randn_like
from models.sizes import BackboneConfig

MICRO = BackboneConfig("S", 2, depth=1, hidden=32, heads=2)  # oracle/stub tests: the network is replaced
TINY = BackboneConfig("S", 4, depth=2, hidden=64, heads=4)
# DiT paper Table 1 / its train.py parameter log; GFLOPs per forward at 256 px (one multiply-add = one FLOP).
DIT_XL2_PARAMETERS = 675_129_632  # includes the frozen 256 x 1152 positional table upstream keeps as a Parameter
PUBLISHED_PARAMS_M = {"S": 33, "B": 130, "L": 458, "XL": 675}
PUBLISHED_GFLOPS = {"S": 6.06, "B": 23.01, "L": 80.70, "XL": 118.6}
PUBLISHED_ROUNDING = {"S": 0.005, "B": 0.005, "L": 0.005, "XL": 0.05}  # half a unit of the last published digit


def resolved(name: str):
    return resolve(family="dit", overrides=[PRESETS[name]])


def perturbed(model: nn.Module, seed: int = 0, std: float = 0.05) -> nn.Module:
    """Give the zero-initialised output layers non-zero weights so that outputs depend on inputs and labels."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))
    return model


# ----------------------------------------------------------------------------------------------------------------
# presets and sizes


def test_presets_resolve_to_the_dit_recipe() -> None:
    xl, b2 = resolved("dit-imagenet256-xl2"), resolved("dit-imagenet256-b2")
    for cfg, size, guidance in [(xl, "XL", 1.0), (b2, "B", 1.5)]:
        assert cfg.model.backbone.size == size and cfg.model.backbone.patch == 2
        assert cfg.model.diffusion_steps == 1000 and cfg.model.learn_sigma and cfg.model.class_dropout == 0.1
        assert (cfg.data.dataset, cfg.data.autoencoder, cfg.data.num_classes) == ("imagenet", "sd-vae-ft-ema", 1000)
        assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.batch_size, cfg.train.ema_decay) == (
            1e-4,
            0.0,
            256,
            0.9999,
        )
        assert (cfg.sample.solver, cfg.sample.steps, cfg.sample.guidance) == ("ddpm", 250, guidance)
    celeba, tiny = resolved("dit-celebahq256-l2"), resolved("dit-tiny")
    assert celeba.data.num_classes == 0 and celeba.model.backbone.size == "L"
    assert (tiny.data.dataset, tiny.data.res, tiny.data.autoencoder) == ("synthetic", 32, "pixel")
    assert (tiny.sample.solver, tiny.sample.steps) == ("ddpm", 25)


def test_parameter_counts_match_dit() -> None:
    for size, millions in PUBLISHED_PARAMS_M.items():
        with torch.device("meta"):
            model = build(DiTConfig(backbone=BackboneConfig(size, 2)), (4, 32, 32), 1000)
        params = sum(p.numel() for p in model.parameters())
        assert model.net.final_layer.linear.out_features == 2 * 2 * 8  # learn_sigma: 2 x 4 channels per pixel
        assert round(params / 1e6) == millions  # trainable parameters, rounded as in the paper
        if size == "XL":
            assert params + model.net.pos_embed.numel() == DIT_XL2_PARAMETERS


@pytest.mark.parametrize("size", ["S", "B"])
def test_gflops_match_dit_small(size: str) -> None:
    model = build(DiTConfig(backbone=BackboneConfig(size, 2)), (4, 32, 32), 1000)
    plain = trace_flops(model, SampleSpec(solver="ddpm", steps=250))
    (call,) = plain.per_call
    assert call.batch == 1 and call.count == 250
    assert call.gflops == pytest.approx(PUBLISHED_GFLOPS[size], abs=PUBLISHED_ROUNDING[size])
    assert plain.per_sample_gflops == pytest.approx(250 * call.gflops)


@pytest.mark.slow  # 2.7 GB of weights for XL/2; ~10 s each on an idle 2-core CPU
@pytest.mark.parametrize("size", ["L", "XL"])
def test_gflops_match_dit_large(size: str) -> None:
    model = build(DiTConfig(backbone=BackboneConfig(size, 2)), (4, 32, 32), 1000)
    (call,) = trace_flops(model, SampleSpec(solver="ddpm", steps=250)).per_call
    assert call.gflops == pytest.approx(PUBLISHED_GFLOPS[size], abs=PUBLISHED_ROUNDING[size])


# ----------------------------------------------------------------------------------------------------------------
# training


def test_tiny_model_overfits_one_batch() -> None:
    torch.manual_seed(0)
    model = build(DiTConfig(backbone=TINY), (3, 16, 16), 0)
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def held_out_loss() -> float:  # the same timesteps and noise before and after training
        torch.manual_seed(123)
        with torch.no_grad():
            return model.loss(x.repeat(64, 1, 1, 1), None).mean().item()

    before = held_out_loss()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(200):
        loss = model.loss(x.repeat(2, 1, 1, 1), None)
        assert loss.shape == (8,) and torch.isfinite(loss).all()
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
    after = held_out_loss()
    assert before > 0.9  # zero-initialised output: eps MSE starts at 1
    assert after < 0.25, (before, after)


def test_diffusion_tables_move_with_the_model_and_stay_out_of_its_state() -> None:
    """The coefficient tables are non-persistent buffers of the training process (a submodule): `.to(device)` moves
    them before anything is compiled, checkpoints keep only the network, and a sampling chain follows the model."""
    model = build(DiTConfig(backbone=MICRO), (1, 8, 8), 0)
    assert all(k.startswith("net.") for k in model.state_dict())
    assert {n for n, _ in model.named_buffers()} >= {"diffusion.tables_f32", "diffusion.tables_f64"}
    process = model.sampling_process(5)
    assert process.tables_f32.device.type == "cpu"
    model.to("meta")
    assert model.diffusion.tables_f32.device.type == model.diffusion.tables_f64.device.type == "meta"
    assert model.sampling_process(5) is process and process.tables_f64.device.type == "meta"
    assert process.tables_f64.dtype == torch.float64 and model.diffusion.tables_f32.dtype == torch.float32


def test_fixed_variance_option_and_training_after_inference_mode() -> None:
    model = build(DiTConfig(backbone=TINY, learn_sigma=False), (3, 16, 16), 0)
    assert model.net.out_channels == 3
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.inference_mode():  # device tables cached here must still serve autograd afterwards
        model.loss(x, None)
    loss = model.loss(x, None)
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    loss.mean().backward()
    randn_like = per_sample_randn_like([0, 1], "cpu")
    out = model.sample(randn_like(x), None, SampleSpec(solver="ddpm", steps=5), randn_like)
    assert torch.isfinite(out.latents).all() and out.nfe == 5


# ----------------------------------------------------------------------------------------------------------------
# sampling


GAUSS_MEAN, GAUSS_STD = 0.3, 0.5


def gaussian_oracle(model: DiffusionTransformer, steps: int):
    """Exact eps and exact reverse-step variance for data N(0.3, 0.5^2) per element, as a network output.

    The variance is fed through the learned-range values, so the chain is exact only if the respaced
    coefficients, the timestep map and the value -> log variance mapping are all right.
    """
    base = torch.from_numpy(model.diffusion.alphas_cumprod)
    process = model.sampling_process(steps)

    def output(x: Tensor, t_model: Tensor, y: Tensor | None, guidance: float) -> Tensor:
        ab = base[t_model].float().view(-1, 1, 1, 1)
        denom = ab * GAUSS_STD**2 + 1 - ab
        eps = (1 - ab).sqrt() * (x - ab.sqrt() * GAUSS_MEAN) / denom
        var_x0 = (GAUSS_STD**2 * (1 - ab) / denom)[0].item()  # Var[x_0 | x_t]
        i = process.timestep_map.index(int(t_model[0]))
        lo, hi = process.posterior_log_variance_clipped[i], math.log(process.betas[i])
        if i == 0:
            return torch.cat([eps, -torch.ones_like(x)], dim=1)
        true = math.log(process.posterior_variance[i] + process.posterior_mean_coef1[i] ** 2 * var_x0)
        return torch.cat([eps, torch.full_like(x, 2 * (true - lo) / (hi - lo) - 1)], dim=1)

    return output


@pytest.mark.parametrize(("solver", "steps"), [("ddpm", 25), ("ddim", 250)])
def test_sampler_reproduces_gaussian_data_with_the_oracle(solver: str, steps: int) -> None:
    model = build(DiTConfig(backbone=MICRO), (1, 8, 8), 0)
    model.network_output = gaussian_oracle(model, steps)
    g = torch.Generator().manual_seed(0)

    def randn_like(like: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=g)

    out = model.sample(randn_like(torch.empty(256, 1, 8, 8)), None, SampleSpec(solver=solver, steps=steps), randn_like)
    assert out.nfe == steps and out.nfe_by_call == {NETWORK_CALL: steps}
    # 16384 values: standard errors ~0.004 (mean) and ~0.003 (std)
    assert out.latents.mean().item() == pytest.approx(GAUSS_MEAN, abs=0.02)
    assert out.latents.std().item() == pytest.approx(GAUSS_STD, abs=0.02)


@pytest.mark.parametrize("steps", [25, 250])
def test_sampling_runs_with_respaced_steps(steps: int) -> None:
    torch.manual_seed(0)
    model = perturbed(build(DiTConfig(backbone=TINY), (3, 32, 32), 0)).eval()
    randn_like = per_sample_randn_like([0, 1], "cpu")
    noise = randn_like(torch.empty(2, 3, 32, 32))
    out = model.sample(noise, None, SampleSpec(solver="ddpm", steps=steps), randn_like)
    assert out.latents.shape == (2, 3, 32, 32) and torch.isfinite(out.latents).all()
    assert out.nfe == steps and out.nfe_by_call == {NETWORK_CALL: steps}


@pytest.mark.parametrize("solver", ["ddpm", "ddim"])
def test_samples_are_deterministic_per_seed_and_batch_independent(solver: str) -> None:
    torch.manual_seed(0)
    model = perturbed(build(DiTConfig(backbone=TINY), (3, 16, 16), 5)).eval()
    spec = SampleSpec(solver=solver, steps=10, guidance=1.5)

    def run(seeds: list[int]) -> Tensor:
        randn_like = per_sample_randn_like(seeds, "cpu")
        noise = randn_like(torch.empty(len(seeds), 3, 16, 16))
        return model.sample(noise, torch.tensor([s % 5 for s in seeds]), spec, randn_like).latents

    pair = run([3, 7])
    torch.testing.assert_close(run([3, 7]), pair, rtol=0, atol=0)
    # Batch size changes float32 matmul blocking only (sqrt(1/alpha_bar) ~ 150 amplifies it at the first steps).
    tol = {"rtol": 1e-4, "atol": 1e-4}
    torch.testing.assert_close(run([7]), pair[1:], **tol)
    torch.testing.assert_close(run([11, 3, 5]), torch.cat([run([11]), pair[:1], run([5])]), **tol)
    assert not torch.allclose(pair[0], pair[1])


class LabelScaledStub(nn.Module):
    """Stub network: output = [x, x + 1] * (y + 1), so conditional and null outputs are known in closed form."""

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        return torch.cat([x, x + 1], dim=1) * (y.float() + 1).view(-1, 1, 1, 1)


@pytest.mark.parametrize("channels", [0, 3])
def test_classifier_free_guidance_channels(channels: int) -> None:
    num_classes, w = 9, 1.5
    model = build(DiTConfig(backbone=MICRO, guidance_channels=channels), (4, 4, 4), num_classes)
    model.net = LabelScaledStub()
    x, t, y = torch.randn(2, 4, 4, 4), torch.tensor([10, 10]), torch.tensor([2, 5])
    scale_c, scale_u = (y.float() + 1).view(-1, 1, 1, 1), float(num_classes + 1)
    raw = torch.cat([x, x + 1], dim=1)
    cond, uncond = raw * scale_c, raw * scale_u
    guided = uncond + w * (cond - uncond)
    k = channels or 4
    want = torch.cat([guided[:, :k], cond[:, k:]], dim=1)  # unguided channels and variance from the cond half
    torch.testing.assert_close(model.network_output(x, t, y, w), want)
    torch.testing.assert_close(model.network_output(x, t, y, 1.0), cond)  # w = 1: one conditional call


# ----------------------------------------------------------------------------------------------------------------
# flop_trace and errors


def test_flop_trace_counts_one_call_per_respaced_step() -> None:
    model = build(DiTConfig(backbone=TINY), (3, 16, 16), 5)
    (plain,) = model.flop_trace(SampleSpec(solver="ddpm", steps=25))
    assert plain.count == 25 and plain.inputs[0].shape[0] == 1 and plain.tokens == 16
    (cfg,) = model.flop_trace(SampleSpec(solver="ddim", steps=50, guidance=1.5))
    assert cfg.count == 50 and cfg.inputs[0].shape[0] == 2 and "CFG" in cfg.note
    assert cfg.inputs[2].tolist() == [0, 0]
    (measured,) = model.flop_trace(SampleSpec(solver="ddpm", steps=25), nfe_by_call={NETWORK_CALL: 7})
    assert measured.count == 7
    single = trace_flops(model, SampleSpec(solver="ddpm", steps=25)).per_call[0].gflops
    doubled = trace_flops(model, SampleSpec(solver="ddpm", steps=25, guidance=1.5)).per_call[0].gflops
    assert doubled == pytest.approx(2 * single, rel=1e-6)  # CFG: one batch-2 call per step
    unconditional = build(DiTConfig(backbone=TINY), (3, 16, 16), 0)
    (call,) = unconditional.flop_trace(SampleSpec(solver="ddpm", steps=25, guidance=4.0))
    assert call.inputs[0].shape[0] == 1 and call.inputs[2] is None


def test_bad_input_gets_one_clear_error() -> None:
    model = build(DiTConfig(backbone=TINY), (3, 16, 16), 0)
    noise = torch.zeros(1, 3, 16, 16)
    with pytest.raises(BenchError, match="euler"):
        model.sample(noise, None, SampleSpec(solver="euler", steps=5), torch.randn_like)
    with pytest.raises(BenchError, match="between 1 and 1000"):
        model.sample(noise, None, SampleSpec(solver="ddpm", steps=1001), torch.randn_like)
    with pytest.raises(BenchError, match="dopri5"):
        model.flop_trace(SampleSpec(solver="dopri5"))
    with pytest.raises(BenchError, match="patch"):
        build(DiTConfig(backbone=TINY), (3, 18, 18), 0)
    with pytest.raises(BenchError, match="guidance_channels"):
        build(DiTConfig(backbone=TINY, guidance_channels=5), (4, 16, 16), 0)
