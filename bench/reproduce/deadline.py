"""How long a run of `bench reproduce mini` will take to score, for `--deadline-s`: a run is skipped when it would
not fit, and a started run stops training in time to score the points it reaches."""

from __future__ import annotations

from bench.config import RunConfig
from bench.reproduce.classes import ClassScoring
from bench.reproduce.clean import CLEAN_GUESS_S
from bench.reproduce.samplers import Sampler, expected_nfe

# Wall seconds to sample (NFE 50, eager bf16) and score 5,000 samples of a B/2 model at one point on an H200:
# measured 14.6-17.3 s per point, 20 s at the last (bootstrap), session 5 logs (results/mini/*/provenance/logs).
SCORE_GUESS_S = 20.0
SCORE_FIXED_SHARE = 0.3  # of a set's seconds, what does not scale with its NFE (last point: scoring 5.2 of 17.4 s)
CFG_COST = 1.25  # guided sampling doubles the network's batch; decoding and scoring stay (a guess: not yet measured)
MIN_TRAIN_S = 30.0  # a run with less training time left before the deadline is skipped
# Seconds a compiled training path spends compiling before its steps run at speed; every start pays it, a resume too
# (measured on an H200, session 6, cold caches: the first 50 steps took 53 s for DiT, 81 s for Pyramidal Flow, 95 s
# for LapFlow T1 = 0.7 and 244 s for 3-scale LapFlow, against ~2 s at speed; stats.jsonl under
# results/mini/celebahq128/provenance/runs*). A run started with less time wasted it without reaching a point.
COMPILE_GUESS_S = 90.0


def score_guess(
    points: list[int],
    cfg: RunConfig,
    classes: ClassScoring | None,
    clean: bool = False,
    samplers: tuple[Sampler, ...] = (),
) -> float:
    """Seconds of sampling and scoring a run will take: one sample set per point, plus the sweep's other weights,
    plus the last point's set per --samplers entry the run takes, by its NFE (`clean`: plus clean-fid's features of
    each set at the last point). `points`: those still to score (none: 0 s)."""
    if not points:
        return 0.0
    if classes is None:
        extra = extra_set_seconds(cfg, samplers)
        clean_sets = 1 + sum(s.supports(cfg) for s in samplers)
        return len(points) * SCORE_GUESS_S + extra + (clean_sets * CLEAN_GUESS_S if clean else 0.0)
    sets = len(points) - 1 + len({cfg.sample.guidance, *classes.sweep})
    return sets * SCORE_GUESS_S * CFG_COST


def start_guess(
    todo: list[int],
    cfg: RunConfig,
    classes: ClassScoring | None,
    clean: bool = False,
    samplers: tuple[Sampler, ...] = (),
) -> float:
    """Seconds a run needs before the deadline to be worth starting: its compile (compiled paths), some training,
    and the scoring of the points it has left; 0 when none are left."""
    if not todo:
        return 0.0
    compiling = COMPILE_GUESS_S if cfg.train.compile else 0.0
    return compiling + MIN_TRAIN_S + score_guess(todo, cfg, classes, clean, samplers)


def extra_set_seconds(cfg: RunConfig, samplers: tuple[Sampler, ...]) -> float:
    """Seconds the run's --samplers sets add to its last point: each costs a set of the preset's sampler with its
    sampling part scaled by its NFE over the preset's (dopri5: a guess of its NFE, samplers.DOPRI5_NFE_GUESS)."""
    base = expected_nfe(cfg)
    ratios = [s.nfe_guess(cfg) / base for s in samplers if s.supports(cfg)]
    return sum(SCORE_GUESS_S * (SCORE_FIXED_SHARE + (1 - SCORE_FIXED_SHARE) * r) for r in ratios)
