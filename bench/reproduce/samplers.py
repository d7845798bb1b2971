"""`bench reproduce mini --samplers`: other samplers scored at each run's last point, beside the preset's.

Every point is scored with the preset's sampler (Euler, 50 steps; DiT: DDPM respaced to 50). With `--samplers
euler:100,heun:50,dopri5` the last point is also sampled with each entry, from the same EMA and seeds 0..N-1, and
scored the same way (bench.reproduce.scorer: the extra sample sets of the last point, like the guidance sweep).
Each entry is `solver[:steps]`: steps left out means the preset's; dopri5 adapts its steps (the spec's atol and
rtol, 1e-5 by default: the LFM reference) and takes none. A run skips an entry of the other kind of solver (flow
families: euler, heun, dopri5; DiT: ddpm, ddim). Records: the entry's spec in config.sample and sampling, and
`extra.sampler` (e.g. "dopri5", "euler:100") with the NFE measured per sample (dopri5 adapts per batch).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bench.config import RunConfig
from bench.errors import BenchError

# What the families' sample() accept: LFM, LapFlow and Pyramidal Flow integrate an ODE, DiT runs its diffusion
# (baselines/dit/model.py SOLVERS). A run takes the entries of the kind of its preset's solver.
SOLVER_KINDS = {"flow": ("euler", "heun", "dopri5"), "diffusion": ("ddpm", "ddim")}
SOLVERS = tuple(s for kind in SOLVER_KINDS.values() for s in kind)
ADAPTIVE = "dopri5"
# NFE per sample assumed for dopri5 before it is measured, for the deadline: ~2x the mini sampler's 50 (the paper's
# dopri5 takes 80-89 at 256 px, METHODS.md section 5; bf16 autocast raises it: on this CPU at random init, fp32 vs
# bf16 took 20 vs 44 (LFM) and 28 vs 64 (LapFlow)). Measured on trained mini models (H200, bf16, 524k images,
# session 8): 104 (LFM), 118 (LapFlow), 154 (Pyramidal Flow); their sets took 36-39 s with scoring, above the
# deadline's 34 s for a 100-NFE set (deadline.py), while its 20 s base over-counts the Euler/Heun sets: for the
# three extra sets of `heun:25,euler:100,dopri5` it guessed 88 s against 78-91 s measured.
DOPRI5_NFE_GUESS = 100.0


@dataclass(frozen=True)
class Sampler:
    """One --samplers entry: a solver and its steps (None: the preset's; dopri5: always None)."""

    solver: str
    steps: int | None = None

    @property
    def text(self) -> str:
        return self.solver if self.steps is None else f"{self.solver}:{self.steps}"

    def kind(self) -> str:
        return next(k for k, solvers in SOLVER_KINDS.items() if self.solver in solvers)

    def supports(self, cfg: RunConfig) -> bool:
        """Whether the run's family samples with this solver (the kind of its preset's solver)."""
        return cfg.sample.solver in SOLVER_KINDS[self.kind()]

    def config(self, cfg: RunConfig) -> RunConfig:
        """The run's config sampling with this entry (given steps replace the preset's split over stages)."""
        sample = dataclasses.replace(cfg.sample, solver=self.solver)
        if self.steps is not None:
            sample = dataclasses.replace(sample, steps=self.steps, stage_steps=None)
        return dataclasses.replace(cfg, sample=sample)

    def name(self, cfg: RunConfig) -> str:
        """extra.sampler of its records: 'dopri5', or solver:steps with the steps it samples with."""
        return self.solver if self.solver == ADAPTIVE else f"{self.solver}:{self.config(cfg).sample.steps}"

    def nfe_guess(self, cfg: RunConfig) -> float:
        return DOPRI5_NFE_GUESS if self.solver == ADAPTIVE else float(expected_nfe(self.config(cfg)))


def expected_nfe(cfg: RunConfig) -> float:
    """NFE per sample of a fixed-step sampler (Heun: two per step); dopri5's guess."""
    spec = cfg.sample
    if spec.solver == ADAPTIVE:
        return DOPRI5_NFE_GUESS
    steps = sum(spec.stage_steps) if spec.stage_steps else spec.steps
    return float(steps * (2 if spec.solver == "heun" else 1))


def default_name(cfg: RunConfig) -> str:
    """The preset's sampler named as an entry ('euler:50', 'ddpm:50', 'dopri5')."""
    return Sampler(cfg.sample.solver).name(cfg)


def parse_samplers(text: str) -> tuple[Sampler, ...]:
    """'euler:100,heun:50,dopri5' -> the entries in order; '' -> none. One sentence for a bad entry."""
    out: list[Sampler] = []
    for entry in (p.strip() for p in text.split(",") if p.strip()):
        solver, _, steps_text = entry.partition(":")
        solver = solver.strip().lower()
        if solver not in SOLVERS:
            raise BenchError(
                f"--samplers: unknown solver '{solver}' in '{entry}'; give solver[:steps] with a solver of "
                f"{', '.join(SOLVER_KINDS['flow'])} (flow families) or {', '.join(SOLVER_KINDS['diffusion'])} (DiT)."
            )
        steps = None
        if steps_text or entry.endswith(":"):
            if solver == ADAPTIVE:
                raise BenchError(
                    f"--samplers: dopri5 adapts its steps to its tolerances (atol, rtol); give it as 'dopri5', "
                    f"not '{entry}'."
                )
            try:
                steps = int(steps_text)
            except ValueError:
                raise BenchError(f"--samplers: the steps of '{entry}' must be a whole number like euler:100.") from None
            if steps < 1:
                raise BenchError(f"--samplers: '{entry}' needs at least one step.")
        if Sampler(solver, steps) in out:
            raise BenchError(f"--samplers: '{entry}' is listed twice.")
        out.append(Sampler(solver, steps))
    return tuple(out)


def check_samplers(samplers: tuple[Sampler, ...], jobs: list[tuple[str, int, RunConfig]]) -> list[str]:
    """Refuse, before training, an entry that repeats another or a run's own sampler; returns the log lines that
    name the runs skipping an entry of the other kind of solver (one per entry)."""
    notes, runs = [], [(name, cfg) for name, _, cfg in jobs]
    for sampler in samplers:
        for name, cfg in runs:
            if not sampler.supports(cfg):
                continue
            if sampler.config(cfg).sample == cfg.sample:
                raise BenchError(
                    f"--samplers: '{sampler.text}' is the sampler every point of '{name}' is scored with "
                    f"({default_name(cfg)}); leave it out."
                )
            twins = [s.text for s in samplers if s != sampler and s.config(cfg).sample == sampler.config(cfg).sample]
            if twins:
                raise BenchError(
                    f"--samplers: '{sampler.text}' and '{twins[0]}' sample '{name}' the same way; give it once."
                )
        skipped = list(dict.fromkeys(name for name, cfg in runs if not sampler.supports(cfg)))
        if skipped:
            kind = SOLVER_KINDS[sampler.kind()]
            notes.append(
                f"--samplers: {', '.join(skipped)} skip '{sampler.text}' (a {sampler.kind()} solver: "
                f"{', '.join(kind)}; not theirs)."
            )
    return notes
