"""Closed forms for Gaussian data: pyramid operators as matrices, the posterior mean of a linear target, the law
of an affine sampler read off from basis inputs, and the Frechet distance between two Gaussians."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

F64 = torch.float64
Maps = tuple[Tensor, Tensor, Tensor, Tensor]  # (A, B, C, D): state z = A x + B eps, target u = C x + D eps


def down_matrix(c: int, h: int, w: int) -> Tensor:
    """2x2 average pooling of a [C, H, W] tensor flattened row-major, as a [C H W / 4, C H W] matrix."""

    def pool(n: int) -> Tensor:
        m = torch.zeros(n // 2, n, dtype=F64)
        idx = torch.arange(n // 2)
        m[idx, 2 * idx] = m[idx, 2 * idx + 1] = 0.5
        return m

    return torch.kron(torch.eye(c, dtype=F64), torch.kron(pool(h), pool(w)))


def up_matrix(c: int, h: int, w: int) -> Tensor:
    """Nearest-neighbour x2 of a [C, H, W] tensor (flattened), as a [4 C H W, C H W] matrix."""
    return 4 * down_matrix(c, 2 * h, 2 * w).T


def residual_maps(c: int, h: int, w: int, scales: int) -> list[Tensor]:
    """P_k with x^(k) = P_k x (METHODS.md section 1): residuals g_k - Up(g_{k+1}), then the coarsest g_{S-1};
    finest first."""
    gauss = [torch.eye(c * h * w, dtype=F64)]
    for k in range(scales - 1):
        gauss.append(down_matrix(c, h >> k, w >> k) @ gauss[-1])
    residuals = [g - up_matrix(c, h >> (k + 1), w >> (k + 1)) @ gauss[k + 1] for k, g in enumerate(gauss[:-1])]
    return [*residuals, gauss[-1]]


def fit_gaussian(samples: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (unbiased) covariance of [N, ...] samples, flattened, in float64."""
    x = samples.flatten(1).to(F64)
    mu = x.mean(0)
    centred = x - mu
    return mu, centred.T @ centred / (x.shape[0] - 1)


def posterior_affine(maps: Maps, mu: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """E[u | z] = c_mu + (z - a_mu) @ gain.T for z = A x + B eps, u = C x + D eps, x ~ N(mu, sigma), eps ~ N(0, I):
    returns (c_mu, a_mu, gain). Cov(z) is singular where z is redundant (a pyramid's residuals) or noiseless: the
    pseudo-inverse is exact there."""
    a, b, c, d = maps
    cov_z = a @ sigma @ a.T + b @ b.T
    gain = (c @ sigma @ a.T + d @ b.T) @ torch.linalg.pinv(cov_z, hermitian=True, rtol=1e-12)
    return c @ mu, a @ mu, gain


def one_time(t: Tensor) -> float:
    """The batch's time: the samplers call the network with one t for the whole batch."""
    if not bool(torch.all(t == t[0])):
        raise ValueError("an exact network expects one time for the whole batch")
    return float(t[0])


def law_of(run: Callable[[list[Tensor]], Tensor], dims: list[int]) -> tuple[Tensor, Tensor]:
    """Mean and covariance of an affine sampler `run(blocks)` whose inputs are independent N(0, I) blocks of the
    given sizes, exactly (no Monte Carlo): out = m + sum_j A_j z_j, so one batch per block, holding 0 and that
    block's unit vectors (the other blocks 0), gives m and A_j, and Cov = sum_j A_j A_j^T. Per block, not all at
    once: a sampler that draws fresh noise every step (DDPM) has steps x latent-size inputs."""
    mean, cov = None, None
    for j, dim in enumerate(dims):
        rows = 1 + dim
        # The other blocks are 0: broadcast views, materialised one at a time as the sampler draws them (a DDPM
        # chain's 50 noise blocks at once would not fit at 256 px).
        blocks = [torch.zeros(1, d, dtype=F64).expand(rows, d) for d in dims]
        blocks[j] = torch.cat([torch.zeros(1, dim, dtype=F64), torch.eye(dim, dtype=F64)])
        out = run(blocks).flatten(1).to(F64)
        columns = out[1:] - out[:1]
        mean = out[0] if mean is None else mean
        cov = columns.T @ columns if cov is None else cov + columns.T @ columns
    assert mean is not None and cov is not None, "law_of needs at least one input block"
    return mean, cov


class FixedNoise:
    """A randn_like that hands out prepared blocks in order (a sampler's renoising or ancestral draws)."""

    def __init__(self, blocks: list[Tensor]) -> None:
        self.blocks = list(blocks)

    def __call__(self, like: Tensor) -> Tensor:
        return self.blocks.pop(0).reshape(like.shape).to(like.dtype)


class ShapeRecorder:
    """A randn_like that returns zeros and records the per-sample size of every draw (to size the basis)."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, like: Tensor) -> Tensor:
        self.sizes.append(like[0].numel())
        return torch.zeros_like(like)


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), through symmetric eigendecompositions (float64)."""
    vals, vecs = torch.linalg.eigh(sigma1.to(F64))
    root = vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T
    inner = torch.linalg.eigvalsh(root @ sigma2.to(F64) @ root).clamp(min=0).sqrt().sum()
    return float(((mu1 - mu2) ** 2).sum() + sigma1.trace() + sigma2.trace() - 2 * inner)
