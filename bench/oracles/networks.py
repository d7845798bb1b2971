"""The exact network of each flow family for x ~ N(mu, Sigma): drop-in replacements of `model.net` that return
E[target | state] on the family's own training path (METHODS.md sections 1-3, written out as matrices)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bench.errors import BenchError
from bench.interface import SampleSpec
from bench.oracles.gaussian import F64, Maps, down_matrix, one_time, posterior_affine, residual_maps, up_matrix

CACHED_TIMES = 4  # Heun's corrector and the next step's predictor evaluate at the same time: its gain once


class ExactNetwork(nn.Module):
    """The posterior mean of a linear training path: `maps(key)` gives (A, B, C, D) for one network call (its time,
    and for multi-stage families its stage); the gain of the last few keys is kept (a pseudo-inverse each)."""

    def __init__(self, mu: Tensor, sigma: Tensor) -> None:
        super().__init__()
        self.mu, self.sigma = mu, sigma
        self._gains: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}

    def maps(self, key: tuple) -> Maps:
        raise NotImplementedError

    def velocity(self, key: tuple, z: Tensor) -> Tensor:
        """E[u | z] for a batch z [N, dim z] of the call `key`."""
        if key not in self._gains:
            if len(self._gains) >= CACHED_TIMES:
                self._gains.pop(next(iter(self._gains)))
            self._gains[key] = posterior_affine(self.maps(key), self.mu, self.sigma)
        c_mu, a_mu, gain = self._gains[key]
        return c_mu[None] + (z.to(F64) - a_mu[None]) @ gain.T


class LFMOracle(ExactNetwork):
    """x_t = t x + (1 - (1 - s) t) eps, u = x - (1 - s) eps (s = sigma_min)."""

    def __init__(self, model: nn.Module, mu: Tensor, sigma: Tensor) -> None:
        super().__init__(mu, sigma)
        self.s = float(model.cfg.sigma_min)

    def maps(self, key: tuple) -> Maps:
        (t,), eye = key, torch.eye(self.mu.numel(), dtype=F64)
        return t * eye, (1 - (1 - self.s) * t) * eye, eye, -(1 - self.s) * eye

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        return self.velocity((one_time(t),), x.flatten(1)).reshape(x.shape).to(x.dtype)


def lapflow_coefficients(path: str, t: float, start: float) -> tuple[float, float, float, float]:
    """(a_k, sigma, da_k/dt, dsigma/dt) of METHODS.md section 1 for a scale active from `start` = T_{k+1}."""
    span = 1 - start
    if path == "linear":
        return (t - start) / span, 1 - t, 1 / span, -1.0
    tau, h = (t - start) / span, math.pi / 2
    return math.sin(h * tau), math.cos(h * t), h * math.cos(h * tau) / span, -h * math.sin(h * t)


class LapFlowOracle(ExactNetwork):
    """Every active scale's exact velocity (inputs coarsest first, as the MoT network takes them): scale k's state
    a_k(t) x^(k) + sigma(t) eps^(k) and target da_k x^(k) + dsigma eps^(k), with x^(k) = P_k x, eps^(k) = P_k eps."""

    def __init__(self, model: nn.Module, mu: Tensor, sigma: Tensor) -> None:
        super().__init__(mu, sigma)
        self.path, self.starts = model.cfg.path, model.starts
        self.p = residual_maps(*model.latent_shape, model.num_scales)

    def maps(self, key: tuple) -> Maps:
        t, active = key
        scales = len(self.p)
        rows: list[list[Tensor]] = [[], [], [], []]
        for k in range(scales - 1, scales - 1 - active, -1):
            for row, factor in zip(rows, lapflow_coefficients(self.path, t, self.starts[k]), strict=True):
                row.append(factor * self.p[k])
        return tuple(torch.cat(row) for row in rows)  # type: ignore[return-value]

    def forward(self, xs: list[Tensor], t: Tensor, y: Tensor | None = None) -> list[Tensor]:
        z = torch.cat([x.flatten(1) for x in xs], dim=1)
        parts = self.velocity((one_time(t), len(xs)), z).split([x[0].numel() for x in xs], dim=1)
        return [p.reshape(x.shape).to(x.dtype) for p, x in zip(parts, xs, strict=True)]


class PyramidalOracle(ExactNetwork):
    """Stage k (coarsest first) trains on x_u = (1 - u) start_k + u end_k with target end_k - start_k, where with
    n_{K-1} = eps, n_{k-1} = 2 Down(n_k), x_k = Down^{K-1-k}(x): start_0 = n_0, start_k = s n_k + (1 - s) Up(x_{k-1})
    and end_k = e n_k + (1 - e) x_k (end = x on the last stage); the network sees the global time of its window."""

    def __init__(self, model: nn.Module, mu: Tensor, sigma: Tensor) -> None:
        super().__init__(mu, sigma)
        self.sched = model.schedule
        c, h, w = model.latent_shape
        stages = model.cfg.stages
        to_stage = [torch.eye(c * h * w, dtype=F64)]  # Down^j, j = 0 .. K-1 (full size first)
        for j in range(stages - 1):
            to_stage.append(down_matrix(c, h >> j, w >> j) @ to_stage[-1])
        self.clean = [to_stage[stages - 1 - k] for k in range(stages)]
        self.noise = [2.0 ** (stages - 1 - k) * to_stage[stages - 1 - k] for k in range(stages)]
        self.up = [up_matrix(c, h >> (stages - k), w >> (stages - k)) for k in range(1, stages)]
        self.widths = [w >> (stages - 1 - k) for k in range(stages)]

    def endpoints(self, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(start's data map, start's noise map, end's data map, end's noise map) of stage k."""
        s, e, last = self.sched.start[k], self.sched.end[k], k == len(self.widths) - 1
        start_x = torch.zeros_like(self.clean[k]) if k == 0 else (1 - s) * self.up[k - 1] @ self.clean[k - 1]
        start_e = self.noise[k] if k == 0 else s * self.noise[k]
        end_x = self.clean[k] if last else (1 - e) * self.clean[k]
        end_e = torch.zeros_like(self.noise[k]) if last else e * self.noise[k]
        return start_x, start_e, end_x, end_e

    def maps(self, key: tuple) -> Maps:
        t, k = key
        lo, hi = self.sched.windows[k]
        u = (t - lo) / (hi - lo)
        sx, se, ex, ee = self.endpoints(k)
        return (1 - u) * sx + u * ex, (1 - u) * se + u * ee, ex - sx, ee - se

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        key = (one_time(t), self.widths.index(x.shape[-1]))
        return self.velocity(key, x.flatten(1)).reshape(x.shape).to(x.dtype)


class DiTOracle(ExactNetwork):
    """DDPM's exact network for x ~ N(mu, Sigma) on the chain it samples (a respaced one): eps_hat = E[eps | x_t] and,
    as the variance output, per coordinate the interpolation value whose variance is the diagonal of the true
    Cov(x_{t-1} | x_t), the optimum of the VLB for a per-coordinate variance. In Sigma's eigenbasis (eigenvalues l)
    every chain marginal is diagonal: s_t = abar_t l + 1 - abar_t, and Cov(x_{t-1} | x_t) has eigenvalues
    s_{t-1} beta'_t / s_t. The network is conditioned on the original chain's timestep; `process` maps it back."""

    def __init__(self, model: nn.Module, mu: Tensor, sigma: Tensor, process: object) -> None:
        super().__init__(mu, sigma)
        self.timesteps = list(process.timestep_map)
        self.abar = torch.tensor(process.alphas_cumprod, dtype=F64)
        self.beta = torch.tensor(process.betas, dtype=F64)
        self.min_log = torch.tensor(process.posterior_log_variance_clipped, dtype=F64)
        self.eigvals, self.eigvecs = torch.linalg.eigh(sigma)
        self.shape = tuple(model.latent_shape)
        self.anchor = nn.Parameter(torch.zeros(()))  # the model reads its device from its parameters

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        i = self.timesteps.index(int(one_time(t)))
        abar, u, lam = self.abar[i], self.eigvecs, self.eigvals
        s_t = abar * lam + 1 - abar
        z = x.flatten(1).to(F64) - abar.sqrt() * self.mu
        eps = (1 - abar).sqrt() * ((z @ u) / s_t) @ u.T
        if i == 0:  # no noise follows the last step: any variance value
            values = torch.zeros_like(eps)
        else:
            prev = self.abar[i - 1]
            s_prev = prev * lam + 1 - prev
            variance = (u**2) @ (s_prev * self.beta[i] / s_t)  # diag of U diag(c) U^T
            frac = (variance.log() - self.min_log[i]) / (self.beta[i].log() - self.min_log[i])
            values = (2 * frac - 1).expand_as(eps)
        out = torch.cat([eps.reshape(-1, *self.shape), values.reshape(-1, *self.shape)], dim=1)
        return out.to(x.dtype)


ORACLES: dict[str, type[ExactNetwork]] = {
    "lfm": LFMOracle,
    "lapflow": LapFlowOracle,
    "pyramidal-flow": PyramidalOracle,
    "dit": DiTOracle,
}


def install_exact_network(
    family: str, model: nn.Module, mu: Tensor, sigma: Tensor, spec: SampleSpec | None = None
) -> nn.Module:
    """Replace model.net by the family's exact network for N(mu, Sigma) (flattened latents); returns the model.
    DiT's depends on the chain it samples, hence on the sampling spec's steps."""
    if family not in ORACLES:
        raise BenchError(f"No exact network for the family '{family}'; these have one: {', '.join(ORACLES)}.")
    if getattr(model, "num_classes", 0):
        raise BenchError("The exact networks are for unconditional models; this one is class-conditional.")
    mu, sigma = mu.to(F64), sigma.to(F64)
    if family == "dit":
        if spec is None:
            raise BenchError("DiT's exact network needs the sampling spec (its respaced chain).")
        model.net = DiTOracle(model, mu, sigma, model.sampling_process(spec.steps))
    else:
        model.net = ORACLES[family](model, mu, sigma)
    return model.eval()
