"""Gaussian diffusion math of the DiT baseline against closed forms (float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from baselines.dit.diffusion import (
    GaussianDiffusion,
    approx_standard_normal_cdf,
    discretized_gaussian_log_likelihood,
    linear_betas,
    space_timesteps,
)

T = 1000
F64 = torch.float64
TANH_CDF_MAX_ERROR = 1.8e-4  # measured max |approx - Phi| of the tanh normal-CDF approximation on [-8, 8]


@pytest.fixture(scope="module")
def diffusion() -> GaussianDiffusion:
    return GaussianDiffusion(linear_betas(T))


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def test_linear_schedule_is_ho_et_al() -> None:
    betas = linear_betas(T)
    assert betas.dtype == np.float64 and betas.shape == (T,)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    assert np.allclose(np.diff(betas), (0.02 - 1e-4) / (T - 1), rtol=1e-9, atol=0)
    assert np.allclose(linear_betas(500), 2 * np.linspace(1e-4, 0.02, 500))  # rescaled like upstream


def test_q_moments_match_stepwise_forward_process(diffusion: GaussianDiffusion) -> None:
    # Compose q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t) one step at a time from x_0.
    x0 = rand(3, 2, 4, 4)
    t = torch.tensor([0, 1, 499, 999])
    scale, var, expected = 1.0, 0.0, {}
    for step, beta in enumerate(diffusion.betas):
        scale, var = math.sqrt(1 - beta) * scale, (1 - beta) * var + beta
        expected[step] = (scale, var)
    for i in t.tolist():
        ti = torch.full((3,), i)
        mean, variance, log_variance = diffusion.q_mean_variance(x0, ti)
        assert mean.dtype == F64
        torch.testing.assert_close(mean, expected[i][0] * x0, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(variance, torch.full_like(variance, expected[i][1]), rtol=1e-12, atol=0)
        torch.testing.assert_close(log_variance, variance.log(), rtol=1e-12, atol=1e-14)
        eps = rand(3, 2, 4, 4, seed=i + 1)
        x_t = diffusion.q_sample(x0, ti, eps)
        torch.testing.assert_close(x_t, mean + variance.sqrt() * eps, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(diffusion.predict_x0(x_t, ti, eps), x0, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(diffusion.predict_eps(x_t, ti, x0), eps, rtol=1e-9, atol=1e-9)


def test_posterior_is_bayes_rule(diffusion: GaussianDiffusion) -> None:
    # q(x_{t-1} | x_t, x_0) ∝ N(x_t; sqrt(a_t) x_{t-1}, b_t) N(x_{t-1}; sqrt(abar_{t-1}) x_0, 1 - abar_{t-1}).
    x0, xt = rand(4, 2, 3, 3, seed=1), rand(4, 2, 3, 3, seed=2)
    t = torch.tensor([1, 2, 400, 999])
    mean, var, log_var = diffusion.q_posterior(x0, xt, t)
    betas, acp = diffusion.betas, diffusion.alphas_cumprod
    for row, i in enumerate(t.tolist()):
        alpha, prev = 1 - betas[i], acp[i - 1]
        precision = alpha / betas[i] + 1 / (1 - prev)
        want_mean = (math.sqrt(alpha) / betas[i] * xt[row] + math.sqrt(prev) / (1 - prev) * x0[row]) / precision
        torch.testing.assert_close(mean[row], want_mean, rtol=1e-10, atol=1e-12)
        assert var[row].item() == pytest.approx(1 / precision, rel=1e-12)
        assert log_var[row].item() == pytest.approx(math.log(1 / precision), rel=1e-12)
    # t = 0: the posterior is the point mass at x_0; its log variance is clipped to the t = 1 value.
    zero = torch.zeros(4, dtype=torch.long)
    mean0, var0, log_var0 = diffusion.q_posterior(x0, xt, zero)
    torch.testing.assert_close(mean0, x0, rtol=1e-12, atol=1e-12)
    assert var0.abs().max().item() == 0.0
    assert torch.allclose(log_var0, torch.full_like(log_var0, math.log(diffusion.posterior_variance[1])))


def test_learned_range_interpolates_log_variance(diffusion: GaussianDiffusion) -> None:
    like = torch.zeros(3, 1, 2, 2, dtype=F64)
    t = torch.tensor([1, 300, 999])
    lo = torch.from_numpy(np.log(diffusion.posterior_variance[[1, 300, 999]])).view(-1, 1, 1, 1)
    hi = torch.from_numpy(np.log(diffusion.betas[[1, 300, 999]])).view(-1, 1, 1, 1)
    for v, want in [(-1.0, lo), (1.0, hi), (0.0, (lo + hi) / 2)]:
        got = diffusion.model_log_variance(torch.full_like(like, v), t, like)
        torch.testing.assert_close(got, want.expand_as(got), rtol=1e-12, atol=1e-12)


def test_vlb_kl_term_matches_gaussian_kl(diffusion: GaussianDiffusion) -> None:
    x0, xt = rand(3, 2, 4, 4, seed=3), rand(3, 2, 4, 4, seed=4)
    t = torch.tensor([1, 50, 999])
    mean, log_var = rand(3, 2, 4, 4, seed=5), -3 + 0.5 * rand(3, 2, 4, 4, seed=6)
    true_mean, _, true_log_var = diffusion.q_posterior(x0, xt, t)
    kl = kl_divergence(Normal(true_mean, (0.5 * true_log_var).exp()), Normal(mean, (0.5 * log_var).exp()))
    want = kl.mean(dim=(1, 2, 3)) / math.log(2.0)
    torch.testing.assert_close(diffusion.vlb_bits(x0, xt, t, mean, log_var), want, rtol=1e-10, atol=1e-12)


def test_vlb_vanishes_for_the_true_reverse_step(diffusion: GaussianDiffusion) -> None:
    # True eps and variance values -1 (the posterior variance) make p(x_{t-1}|x_t) equal the posterior: KL = 0.
    x0, eps = rand(2, 2, 4, 4, seed=7), rand(2, 2, 4, 4, seed=8)
    t = torch.tensor([5, 700])
    xt = diffusion.q_sample(x0, t, eps)
    out = torch.cat([eps, -torch.ones_like(eps)], dim=1)
    terms = diffusion.training_losses(out, x0, xt, t, eps)
    assert terms["mse"].abs().max().item() == 0.0
    assert terms["vb"].abs().max().item() < 1e-9
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"])


def test_decoder_nll_at_t0_is_the_discretised_gaussian() -> None:
    # Exact bin probabilities with the normal CDF; the upstream tanh CDF differs by at most 2 x its max error.
    x = torch.tensor([-1.0, -0.5, 0.0, 0.3, 1.0], dtype=F64).view(1, 5, 1, 1)
    mean, log_scale = torch.full_like(x, 0.1), torch.full_like(x, math.log(0.2))
    std = log_scale.exp()
    upper, lower = torch.special.ndtr((x - mean + 1 / 255) / std), torch.special.ndtr((x - mean - 1 / 255) / std)
    exact = torch.where(x < -0.999, upper, torch.where(x > 0.999, 1 - lower, upper - lower))
    got = discretized_gaussian_log_likelihood(x, mean, log_scale).exp()
    assert (got - exact).abs().max().item() < 2 * TANH_CDF_MAX_ERROR
    grid = torch.linspace(-8, 8, 10_001, dtype=F64)
    assert (approx_standard_normal_cdf(grid) - torch.special.ndtr(grid)).abs().max().item() < TANH_CDF_MAX_ERROR


def test_vlb_uses_decoder_nll_at_t0(diffusion: GaussianDiffusion) -> None:
    x0, xt = rand(2, 1, 2, 2, seed=9).clamp(-0.9, 0.9), rand(2, 1, 2, 2, seed=10)
    mean, log_var = torch.zeros_like(x0), torch.full_like(x0, math.log(0.04))
    t = torch.tensor([0, 0])
    want = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var).mean(dim=(1, 2, 3)) / math.log(2.0)
    torch.testing.assert_close(diffusion.vlb_bits(x0, xt, t, mean, log_var), want)


def test_hybrid_loss_stops_the_vlb_gradient_at_the_mean(diffusion: GaussianDiffusion) -> None:
    x0, eps = rand(2, 2, 4, 4, seed=11), rand(2, 2, 4, 4, seed=12)
    t = torch.tensor([3, 600])
    xt = diffusion.q_sample(x0, t, eps)
    out = (0.3 * rand(2, 4, 4, 4, seed=13)).requires_grad_()
    terms = diffusion.training_losses(out, x0, xt, t, eps)
    (grad_vb,) = torch.autograd.grad(terms["vb"].sum(), out, retain_graph=True)
    (grad_mse,) = torch.autograd.grad(terms["mse"].sum(), out)
    assert grad_vb[:, :2].abs().max().item() == 0.0 and grad_vb[:, 2:].abs().max().item() > 0
    assert grad_mse[:, 2:].abs().max().item() == 0.0 and grad_mse[:, :2].abs().max().item() > 0


def test_space_timesteps_known_values() -> None:
    assert space_timesteps(1000, 10) == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    assert space_timesteps(1000, 1) == [0]
    assert space_timesteps(1000, 1000) == list(range(1000))
    for count in (25, 250):
        kept = space_timesteps(1000, count)
        assert len(set(kept)) == count and kept[0] == 0 and kept[-1] == 999 and kept == sorted(kept)
    with pytest.raises(ValueError):
        space_timesteps(1000, 1001)


@pytest.mark.parametrize("count", [1, 25, 250, 1000])
def test_respacing_keeps_alpha_bar_at_kept_steps(count: int) -> None:
    betas = linear_betas(T)
    kept = space_timesteps(T, count)
    spaced = GaussianDiffusion.respaced(betas, kept)
    assert spaced.num_timesteps == count and spaced.timestep_map == kept
    base = np.cumprod(1 - betas)
    np.testing.assert_allclose(np.cumprod(1 - spaced.betas), base[kept], rtol=1e-12, atol=0)
    np.testing.assert_allclose(spaced.alphas_cumprod, base[kept], rtol=1e-12, atol=0)
    t = torch.arange(count)
    assert spaced.model_timesteps(t).tolist() == kept
    if count == T:
        np.testing.assert_allclose(spaced.betas, betas, rtol=1e-9)


# ----------------------------------------------------------------------------------------------------------------
# device tables: made once at construction, only indexed by the lookups (a compiled loss may not create them)


def _ops_of(fn) -> list[str]:
    """The aten ops that `fn()` runs (TorchDispatchMode sees every op, wherever it is called from)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: list[str] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func.overloadpacket.__name__))
            return func(*args, **(kwargs or {}))

    with Record():
        fn()
    return seen


def test_tables_are_buffers_equal_to_the_numpy_tables() -> None:
    from baselines.dit.diffusion import TABLES

    diffusion = GaussianDiffusion(linear_betas(T))
    for row, name in enumerate(TABLES):
        table = torch.from_numpy(getattr(diffusion, name))
        assert torch.equal(diffusion.tables_f64[row], table)
        assert torch.equal(diffusion.tables_f32[row], table.to(torch.float32))  # rounded once, as lookups did
    buffers = dict(diffusion.named_buffers())
    assert set(buffers) == {"tables_f32", "tables_f64"} and not diffusion.state_dict()  # derived, never saved
    t = torch.tensor([0, 1, 500, 999])
    for dtype in (torch.float32, F64):
        got = diffusion._at("alphas_cumprod", t, torch.zeros(4, 2, 3, dtype=dtype))
        want = torch.from_numpy(diffusion.alphas_cumprod).to(dtype)[t].view(4, 1, 1)
        assert got.dtype == dtype and torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_lookups_create_no_table_tensor_from_the_first_call_on(dtype: torch.dtype) -> None:
    """The lazy cache this replaces copied each numpy table to the device on first use, inside the loss: under CUDA
    graphs that copy was a graph output, overwritten by the next replay. Now the first call only indexes buffers."""
    diffusion = GaussianDiffusion(linear_betas(T))
    g = torch.Generator().manual_seed(0)
    x0, eps = (torch.randn(4, 2, 4, 4, generator=g, dtype=dtype) for _ in range(2))
    out = torch.randn(4, 4, 4, 4, generator=g, dtype=dtype)
    t = torch.tensor([0, 3, 500, 999])

    def loss() -> None:
        xt = diffusion.q_sample(x0, t, eps)
        diffusion.training_losses(out, x0, xt, t, eps)

    ops = _ops_of(loss)
    assert "index" in ops  # the lookups: an index into a buffer
    assert not {"_to_copy", "copy_", "lift_fresh", "_copy_from"} & set(ops), sorted(set(ops))
    assert _ops_of(loss) == ops  # a repeated call runs the same ops
