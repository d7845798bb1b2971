"""Gaussian diffusion math of the DiT baseline (METHODS.md section 4).

DDPM with epsilon prediction and a learned variance ("learned range": the network interpolates, in log space,
between the posterior variance and beta_t), trained with the improved-DDPM hybrid loss (MSE on eps plus the
variational bound term on the variance with the mean frozen). Timesteps are indices t = 0..T-1 of the chain, t = 0
being one step of noise; a respaced process keeps a subset of the original steps and maps back to the original
indices for the network. Coefficient tables are float64 numpy; lookups give float64 for float64 inputs and float32
otherwise. The process is an nn.Module whose (non-persistent) buffers hold the tables as tensors in both dtypes, made
once at construction and moved by `.to(device)` with the model: a compiled loss only indexes them (a device copy
made and cached lazily inside torch.compile became a CUDA-graph output that the next replay overwrote). This module
never imports `bench`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

LN2 = math.log(2.0)  # the VLB is reported in bits, as upstream
PIXEL_BIN_HALF_WIDTH = 1.0 / 255.0  # half an 8-bit bin on [-1, 1] (discretised decoder likelihood)
REFERENCE_STEPS = 1000  # Ho et al.'s linear schedule is defined for 1000 steps; other lengths rescale it
TABLES = (  # the coefficient tables a lookup reads (numpy attributes; rows of the `tables_f32` / `tables_f64` buffers)
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "posterior_variance",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "posterior_log_variance_clipped",
    "fixed_large_log_variance",
    "log_betas",
)


def linear_betas(steps: int, start: float = 1e-4, end: float = 0.02) -> np.ndarray:
    """Ho et al.'s linear schedule, rescaled by 1000 / steps so that other chain lengths behave alike."""
    scale = REFERENCE_STEPS / steps
    return np.linspace(scale * start, scale * end, steps, dtype=np.float64)


def space_timesteps(num_timesteps: int, count: int) -> list[int]:
    """`count` indices evenly strided over 0..num_timesteps-1, both ends kept (upstream's single-section spacing)."""
    if not 1 <= count <= num_timesteps:
        raise ValueError(f"cannot take {count} steps out of a {num_timesteps}-step process")
    stride = 1.0 if count == 1 else (num_timesteps - 1) / (count - 1)
    kept, position = [], 0.0
    for _ in range(count):
        kept.append(round(position))
        position += stride  # accumulated as upstream does, so the rounding matches it exactly
    return kept


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: Tensor) -> Tensor:
    """The tanh approximation of the standard normal CDF used by the upstream decoder likelihood."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log P(x) of N(mean, e^(2 log_scale)) integrated over x's 8-bit bin on [-1, 1] (edge bins open), nats."""
    inv_std = torch.exp(-log_scale)
    cdf_plus = approx_standard_normal_cdf(inv_std * (x - mean + PIXEL_BIN_HALF_WIDTH))
    cdf_min = approx_standard_normal_cdf(inv_std * (x - mean - PIXEL_BIN_HALF_WIDTH))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def mean_flat(x: Tensor) -> Tensor:
    return x.mean(dim=tuple(range(1, x.dim())))


class GaussianDiffusion(nn.Module):
    """One discrete Gaussian diffusion process (the 1000-step training chain, or a respaced sampling chain).

    The float64 numpy tables stay the reference (and what tests read); `tables_f32` and `tables_f64` [len(TABLES), T]
    are their tensor copies (float64 -> float32 rounded once, as the lookups always did), built here, eagerly.
    """

    def __init__(self, betas: np.ndarray, timestep_map: Sequence[int] | None = None, learn_sigma: bool = True) -> None:
        super().__init__()
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas must be a 1-D array with values in (0, 1]")
        self.betas, self.num_timesteps, self.learn_sigma = betas, len(betas), learn_sigma
        self.timestep_map = list(timestep_map) if timestep_map is not None else list(range(len(betas)))
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        acp, prev = self.alphas_cumprod, self.alphas_cumprod_prev
        self.posterior_variance = betas * (1.0 - prev) / (1.0 - acp)
        self.posterior_mean_coef1 = betas * np.sqrt(prev) / (1.0 - acp)
        self.posterior_mean_coef2 = (1.0 - prev) * np.sqrt(alphas) / (1.0 - acp)
        if len(betas) > 1:
            # The posterior variance is 0 at t = 0: its log is clipped to the t = 1 value (upstream).
            pv = self.posterior_variance
            self.posterior_log_variance_clipped = np.log(np.append(pv[1], pv[1:]))
            self.fixed_large_log_variance = np.log(np.append(pv[1], betas[1:]))
        else:  # a one-step chain never adds noise; any finite log variance keeps the formulas defined
            self.posterior_log_variance_clipped = self.fixed_large_log_variance = np.log(betas)
        self.log_betas = np.log(betas)
        stacked = torch.from_numpy(np.stack([getattr(self, name) for name in TABLES]))
        # Not in the state dict (derived from the config, like the positional tables); `.to(device)` moves them.
        self.register_buffer("tables_f64", stacked, persistent=False)
        self.register_buffer("tables_f32", stacked.to(torch.float32), persistent=False)
        self._rows = {name: i for i, name in enumerate(TABLES)}

    @classmethod
    def respaced(cls, betas: np.ndarray, use_timesteps: Sequence[int], learn_sigma: bool = True) -> GaussianDiffusion:
        """The process that visits only `use_timesteps` of the chain with `betas` and the same alpha-bar there."""
        kept = sorted(set(use_timesteps))
        alpha_bar = np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))[kept]
        return cls(1.0 - alpha_bar / np.append(1.0, alpha_bar[:-1]), kept, learn_sigma)

    # ------------------------------------------------------------------------------------------------------------
    # lookups

    def _at(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """Table `name` at t, broadcast against `like` [B, ...]: an index into a buffer, no new table tensor."""
        f64 = like.dtype == torch.float64
        table = (self.tables_f64 if f64 else self.tables_f32)[self._rows[name]]
        # No-ops for a process on t's device in its own dtypes; otherwise (a process not moved with its model, or
        # cast by `.double()`) a per-call copy, never cached, so nothing made inside a compiled region outlives it.
        table = table.to(device=t.device, dtype=torch.float64 if f64 else torch.float32)
        return table[t].view(-1, *([1] * (like.dim() - 1)))

    def model_timesteps(self, t: Tensor) -> Tensor:
        """Indices of this process -> indices of the original chain (what the network is conditioned on)."""
        return torch.tensor(self.timestep_map, device=t.device, dtype=torch.long)[t]

    # ------------------------------------------------------------------------------------------------------------
    # forward process and posterior

    def q_mean_variance(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and log variance of q(x_t | x_0)."""
        alpha_bar = self._at("alphas_cumprod", t, x0)
        return alpha_bar.sqrt() * x0, 1.0 - alpha_bar, torch.log1p(-alpha_bar)

    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        alpha_bar = self._at("alphas_cumprod", t, x0)
        return alpha_bar.sqrt() * x0 + (1.0 - alpha_bar).sqrt() * eps

    def q_posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x_0)."""
        mean = self._at("posterior_mean_coef1", t, xt) * x0 + self._at("posterior_mean_coef2", t, xt) * xt
        return mean, self._at("posterior_variance", t, xt), self._at("posterior_log_variance_clipped", t, xt)

    def predict_x0(self, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        alpha_bar = self._at("alphas_cumprod", t, xt)
        return (xt - (1.0 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()

    def predict_eps(self, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        alpha_bar = self._at("alphas_cumprod", t, xt)
        return (xt - alpha_bar.sqrt() * x0) / (1.0 - alpha_bar).sqrt()

    # ------------------------------------------------------------------------------------------------------------
    # reverse process from a network output

    def split_output(self, out: Tensor, channels: int) -> tuple[Tensor, Tensor | None]:
        """Network output [B, 2C | C, ...] -> (eps, variance values in [-1, 1] or None)."""
        if not self.learn_sigma:
            return out, None
        eps, values = out.split(channels, dim=1)
        return eps, values

    def model_log_variance(self, values: Tensor | None, t: Tensor, like: Tensor) -> Tensor:
        """Learned range: values -1 .. 1 interpolate log variance from the posterior's to log beta_t."""
        if values is None:
            return self._at("fixed_large_log_variance", t, like).expand_as(like)
        frac = (values + 1) / 2
        min_log = self._at("posterior_log_variance_clipped", t, like)
        max_log = self._at("log_betas", t, like)
        return frac * max_log + (1 - frac) * min_log

    def p_mean_variance(self, out: Tensor, xt: Tensor, t: Tensor, clip: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Mean and log variance of p(x_{t-1} | x_t), and the x_0 prediction, from the network output."""
        eps, values = self.split_output(out, xt.shape[1])
        log_variance = self.model_log_variance(values, t, xt)
        x0 = self.predict_x0(xt, t, eps)
        if clip:
            x0 = x0.clamp(-1, 1)
        mean, _, _ = self.q_posterior(x0, xt, t)
        return mean, log_variance, x0

    def vlb_bits(self, x0: Tensor, xt: Tensor, t: Tensor, mean: Tensor, log_variance: Tensor) -> Tensor:
        """One VLB term per sample [B] in bits: KL(q(x_{t-1}|x_t,x_0) || p) for t > 0, decoder NLL at t = 0."""
        true_mean, _, true_log_variance = self.q_posterior(x0, xt, t)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, mean, log_variance)) / LN2
        nll = -mean_flat(discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_variance)) / LN2
        return torch.where(t == 0, nll, kl)

    def training_losses(self, out: Tensor, x0: Tensor, xt: Tensor, t: Tensor, eps: Tensor) -> dict[str, Tensor]:
        """Hybrid loss per sample: MSE on eps + (learned variance) the VLB term with the mean frozen."""
        eps_pred, values = self.split_output(out, x0.shape[1])
        terms = {"mse": mean_flat((eps - eps_pred) ** 2)}
        if values is not None:
            # Learn the variance through the bound only; the eps head is trained by the MSE alone.
            frozen = torch.cat([eps_pred.detach(), values], dim=1)
            mean, log_variance, _ = self.p_mean_variance(frozen, xt, t, clip=False)
            terms["vb"] = self.vlb_bits(x0, xt, t, mean, log_variance)
        terms["loss"] = terms["mse"] + terms["vb"] if "vb" in terms else terms["mse"]
        return terms

    # ------------------------------------------------------------------------------------------------------------
    # sampling steps

    def p_sample(self, out: Tensor, xt: Tensor, t: Tensor, noise: Tensor | None, clip: bool = False) -> Tensor:
        """Ancestral DDPM step x_t -> x_{t-1}; no noise is added at t = 0 (`noise` may then be None)."""
        mean, log_variance, _ = self.p_mean_variance(out, xt, t, clip)
        if noise is None:
            return mean
        nonzero = (t != 0).to(mean.dtype).view(-1, *([1] * (xt.dim() - 1)))
        return mean + nonzero * torch.exp(0.5 * log_variance) * noise

    def ddim_sample(
        self, out: Tensor, xt: Tensor, t: Tensor, noise: Tensor | None, eta: float = 0.0, clip: bool = False
    ) -> Tensor:
        """DDIM step (Song et al. eq. 12); eta = 0 is deterministic and needs no noise."""
        _, _, x0 = self.p_mean_variance(out, xt, t, clip)
        eps = self.predict_eps(xt, t, x0)  # re-derived so that clipping of x_0 is respected
        alpha_bar = self._at("alphas_cumprod", t, xt)
        alpha_bar_prev = self._at("alphas_cumprod_prev", t, xt)
        sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar)).sqrt() * (1 - alpha_bar / alpha_bar_prev).sqrt()
        mean = x0 * alpha_bar_prev.sqrt() + (1 - alpha_bar_prev - sigma**2).sqrt() * eps
        if noise is None or eta == 0.0:
            return mean
        nonzero = (t != 0).to(mean.dtype).view(-1, *([1] * (xt.dim() - 1)))
        return mean + nonzero * sigma * noise
