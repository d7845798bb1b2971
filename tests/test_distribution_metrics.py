"""KID, precision/recall, memorisation and the FID bootstrap (bench.metrics.distribution) against references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.metrics import distribution as dm
from bench.metrics.fid import FeatureStats, frechet_distance


def _features(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g).abs() + shift  # pool features are non-negative


def test_kid_equals_torch_fidelity_on_the_same_subsets() -> None:
    from torch_fidelity.metric_kid import kid_features_to_metric

    fake, real = _features(400, 32, 0, 0.3), _features(500, 32, 1)
    ours = dm.kid(fake, real, subsets=7, subset_size=120, seed=11)
    theirs = kid_features_to_metric(fake, real, kid_subsets=7, kid_subset_size=120, rng_seed=11, verbose=False)
    assert ours[0] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-5)
    assert ours[1] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-4)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_a_shift() -> None:
    a, b = _features(1200, 16, 2), _features(1200, 16, 3)
    same, _ = dm.kid(a, b, subsets=10, subset_size=500)
    shifted, _ = dm.kid(a, b + 0.5, subsets=10, subset_size=500)
    assert abs(same) < 0.01 < shifted


def test_kid_refuses_subsets_larger_than_the_samples() -> None:
    with pytest.raises(BenchError, match="at least"):
        dm.kid(_features(50, 8, 0), _features(50, 8, 1), subset_size=100)


def test_precision_and_recall_of_a_set_against_itself_are_one_and_fall_for_a_collapsed_set() -> None:
    real = _features(300, 8, 4)
    assert dm.precision_recall(real, real) == (1.0, 1.0)
    collapsed = real[:1].repeat(300, 1)  # every sample is one real image: precise, no recall
    precision, recall = dm.precision_recall(collapsed, real)
    assert precision == 1.0 and recall < 0.05


def test_memorisation_is_near_its_quantile_for_fresh_samples_and_one_for_copies() -> None:
    real = _features(2000, 8, 5)
    fresh = dm.memorisation(_features(2000, 8, 6), real, quantile=0.05)
    copies = dm.memorisation(real[:500] + 1e-6, real, quantile=0.05)
    assert 0.01 < fresh.fraction < 0.12 and 0.8 < fresh.median_ratio < 1.25
    assert copies.fraction == 1.0 and copies.median_ratio < 1e-3


def test_bootstrap_centres_on_the_fid_and_is_reproducible() -> None:
    fake, real = _features(600, 6, 7, 0.2), _features(3000, 6, 8)
    stats = FeatureStats.of(real.double().numpy())
    mu, sigma = stats.mean_cov()
    fs = FeatureStats.of(fake.double().numpy())
    point = frechet_distance(*fs.mean_cov(), mu, sigma)
    boot = dm.bootstrap_fid(fake, torch.from_numpy(mu), torch.from_numpy(sigma), reps=200, seed=3)
    again = dm.bootstrap_fid(fake, torch.from_numpy(mu), torch.from_numpy(sigma), reps=200, seed=3)
    assert boot == again
    assert boot.std > 0 and boot.p05 < boot.mean < boot.p95
    assert boot.mean > point  # repeated samples raise FID: the bootstrap sits above the point estimate
    # the bootstrap spread matches the spread of FID over independent sample sets of the same size
    independent = [
        frechet_distance(*FeatureStats.of(_features(600, 6, 100 + k, 0.2).double().numpy()).mean_cov(), mu, sigma)
        for k in range(40)
    ]
    assert 0.5 < boot.std / np.std(independent) < 2.0


def test_ema_initial_weight_has_its_closed_forms_and_warns_for_a_young_ema() -> None:
    import math

    from bench.config import parse_set, resolve
    from bench.ema import ema_initial_weight, young_ema_warning

    assert ema_initial_weight(0.999, False, 700) == pytest.approx(0.999**700, rel=1e-12)  # the FID-500 runs: 0.50
    n = 50  # warm-up decay (1 + t) / (10 + t) for every step: the product telescopes to 9! n! / (n + 9)!
    assert ema_initial_weight(0.999, True, n) == pytest.approx(
        math.factorial(9) * math.factorial(n) / math.factorial(n + 9)
    )
    cold = resolve(
        preset="lfm-tiny", overrides=[parse_set("train.ema_warmup=false"), parse_set("train.ema_decay=0.999")]
    )
    message = young_ema_warning(cold, 700)
    assert message is not None and "50%" in message and "ema_warmup=true" in message
    assert young_ema_warning(cold, 5000) is None  # 0.999^5000 = 0.7%
    assert young_ema_warning(resolve(preset="lfm-celebahq128-mini"), 100) is None  # every short preset warms up
