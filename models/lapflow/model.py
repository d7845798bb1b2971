"""LapFlow adapter: Laplacian multi-scale flow matching on a Mixture-of-Transformers DiT (METHODS.md section 1).

Training samples one stage per loss() call (active scales s..S-1, t ~ U[T_{s+1}, 1]) and feeds only the active
scales; uniformly per call (METHODS.md) or, as ablations, stratified over the micro-batches of an optimizer step, or
on the stage's own sampler segment t ~ U[T_{s+1}, T_s] with stages drawn by segment length.
Sampling runs S segments [T_{j+1}, T_j]; at each segment's start scale j joins with sigma(T_{j+1}) eps^(j) (no
renoising) and all active scales are integrated jointly as one packed tensor.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bench.errors import BenchError
from bench.interface import FlopCall, GenerativeModel, LossDraws, RandnLike, SampleOutput, SampleSpec
from bench.solvers import guided, integrate, split_steps
from models.lapflow.config import (
    ATTENTION_IMPLS,
    MASKS,
    MAX_SCALES,
    PATHS,
    POSITIONS,
    STAGE_SAMPLINGS,
    STAGE_TIMES,
    LapFlowConfig,
    resolve_critical_times,
    resolve_num_scales,
    stratified_multiple,
)
from models.lapflow.mot import MoTDiT, SeparateNetworks
from models.lapflow.pyramid import (
    activation_times,
    decompose,
    interpolate,
    noise_level,
    reconstruct,
    stage_time_table,
    stage_times,
    start_table,
)

Shape = tuple[int, ...]


def segment_name(i: int) -> str:
    """Segment i (time order) runs the i + 1 coarsest scales."""
    return f"segment{i}"


def pack(xs: list[Tensor]) -> Tensor:
    """Per-scale tensors -> one [B, sum of sizes] state for the ODE solver."""
    return torch.cat([x.flatten(1) for x in xs], dim=1)


def unpack(z: Tensor, shapes: list[Shape]) -> list[Tensor]:
    parts = z.split([math.prod(s) for s in shapes], dim=1)
    return [p.reshape(z.shape[0], *s) for p, s in zip(parts, shapes, strict=True)]


class SegmentCall(nn.Module):
    """One segment's network call for FLOP counting: (x^(S-1), ..., x^(j), t, y) -> outputs."""

    def __init__(self, net: nn.Module, active: int) -> None:
        super().__init__()
        self.net, self.active = net, active

    def forward(self, *args: Tensor | None) -> tuple[Tensor, ...]:
        xs, t, y = args[: self.active], args[self.active], args[self.active + 1]
        return tuple(self.net(list(xs), t, y))


class LapFlow(GenerativeModel):
    def __init__(self, cfg: LapFlowConfig, latent_shape: tuple[int, int, int], num_classes: int = 0) -> None:
        super().__init__()
        c, h, w = latent_shape
        self.cfg, self.latent_shape, self.num_classes = cfg, latent_shape, num_classes
        self.num_scales = s = resolve_num_scales(cfg, min(h, w))
        _check_options(cfg, s)
        factor = cfg.backbone.patch * 2 ** (s - 1)
        if h % factor or w % factor:
            raise BenchError(
                f"Latent size {h}x{w} is not divisible by {factor} (patch {cfg.backbone.patch} x 2^{s - 1} for "
                f"{s} scales)."
            )
        self.critical_times = resolve_critical_times(cfg, s)
        self.starts = self._starts(self.critical_times)
        # The loss reads the starts from this table (a graph input, not a constant: every T1 compiles to one graph).
        self.register_buffer("start_table", start_table(self.starts), persistent=False)
        segment = cfg.stage_times == "segment"
        self.register_buffer("time_table", stage_time_table(self.starts, segment), persistent=False)
        # stage_times=segment draws stages by their segments' lengths, the table's widths, kept as host floats (the
        # draw stays on the CPU generator: no device sync).
        self.stage_weights = self.time_table[:, 1].tolist() if segment else None
        kwargs = dict(
            num_classes=num_classes,
            class_dropout=cfg.class_dropout,
            time_scale=cfg.time_scale,
            mask=cfg.mask,
            attention=cfg.attention,
            positions=cfg.positions,
        )
        network = SeparateNetworks if cfg.separate_networks else MoTDiT
        self.net = network(cfg.backbone, c, (h, w), s, **kwargs)
        if cfg.curriculum_images > 0:  # images fed to loss() in training mode (saved with the weights)
            self.register_buffer("images_seen", torch.zeros((), dtype=torch.long))
        # Stratified stage sampling: the stages still to draw in this optimizer step (plan_stages). Never saved: THE
        # step plans every step whole, so nothing is left over at a step boundary (checkpoints, resumes).
        self.planned_stages: list[int] = []

    @property
    def may_skip_parameters(self) -> bool:
        """Stage sampling leaves the finer experts out of some loss() calls (DDP needs find_unused_parameters)."""
        return self.num_scales > 1

    def _starts(self, critical_times: tuple[float, ...]) -> tuple[float, ...]:
        try:
            return activation_times(critical_times, self.num_scales)
        except ValueError as exc:
            raise BenchError(f"Invalid LapFlow critical times: {exc}.") from None

    def scale_shapes(self) -> list[Shape]:
        c, h, w = self.latent_shape
        return [(c, h >> k, w >> k) for k in range(self.num_scales)]

    # ------------------------------------------------------------------------------------------------------------
    # training

    def available_stages(self) -> range:
        """Stages s (finest active scale) the loss may draw; the curriculum unlocks finer ones over time."""
        first = 0
        if self.cfg.curriculum_images > 0:
            unlocked = int(self.images_seen) // self.cfg.curriculum_images
            first = max(0, self.num_scales - 1 - unlocked)
        return range(first, self.num_scales)

    def draw_stage(self) -> int:
        """The stage of one loss call: uniform over the available ones, by segment length (stage_times=segment),
        or the next of the step's stratified plan. THE training step calls this before the loss module, outside
        torch.compile (a graph break here otherwise), and passes the stage to loss()."""
        stages = self.available_stages()
        if self.cfg.stage_sampling == "stratified":
            if not self.planned_stages:  # a loss call outside THE step (which plans each step): one group of its own
                self.planned_stages = self._stage_group(stages)
            return self.planned_stages.pop(0)
        if len(stages) == 1:  # no draw: S = 1 consumes the RNG exactly like LFM
            return stages[0]
        if self.stage_weights is not None:  # every stage is available (no curriculum: _check_options)
            return int(torch.multinomial(torch.tensor(self.stage_weights, dtype=torch.float64), 1).item())
        return stages[0] + int(torch.randint(len(stages), ()).item())

    def check_micro_batches(self, micro_batches: int) -> None:
        """Stratified sampling needs whole groups of stages in each optimizer step (micro-batches per process):
        refused in one sentence before training (bench.validate) and again when THE step plans a step."""
        multiple = stratified_multiple(self.cfg, self.num_scales)
        if micro_batches % multiple:
            why = (
                f"every stage count its curriculum passes through, 1 to {self.num_scales}"
                if self.cfg.curriculum_images > 0
                else f"one micro-batch per stage of its {self.num_scales}"
            )
            raise BenchError(
                f"LapFlow's model.stage_sampling=stratified needs the micro-batches of each optimizer step and process "
                f"to be a multiple of {multiple} ({why}), but this run has {micro_batches}; set train.micro_batch so "
                f"that train.batch_size / (processes x train.micro_batch) is a multiple of {multiple}, or use "
                "model.stage_sampling=uniform."
            )

    def plan_stages(self, micro_batches: int) -> None:
        """THE training step announces an optimizer step of `micro_batches` micro-batches (outside torch.compile).
        Uniform sampling draws nothing here (its RNG use is as before). Stratified: the step's stages now, from the
        global RNG, a random permutation of the stages available at the step's start per group of as many
        micro-batches, so the step holds each of them equally often. Under DDP each rank plans its own step, as
        each draws its own uniform stages."""
        if self.cfg.stage_sampling != "stratified":
            return
        self.check_micro_batches(micro_batches)
        stages = self.available_stages()
        self.planned_stages = [s for _ in range(micro_batches // len(stages)) for s in self._stage_group(stages)]

    @staticmethod
    def _stage_group(stages: range) -> list[int]:
        """Every available stage once, in random order (a single stage needs no draw)."""
        if len(stages) == 1:
            return [stages[0]]
        return [stages[0] + i for i in torch.randperm(len(stages)).tolist()]

    def loss_draws(self, x: Tensor, y: Tensor | None) -> LossDraws:
        """The full-resolution noise (decomposed like x), a uniform per sample that the stage maps into its time
        interval, and label dropout: the same draws whatever the stage."""
        eps = torch.randn_like(x)
        return {"eps": eps, "u": torch.rand(x.shape[0], device=x.device), **self.net.y_embedder.dropout_draws(y)}

    def loss(self, x: Tensor, y: Tensor | None, *, stage: int | None = None, draws: LossDraws | None = None) -> Tensor:
        """Per-sample sum over active scales of the MSE to the target velocity; one stage for the whole batch."""
        s = self.draw_stage() if stage is None else stage
        if not 0 <= s < self.num_scales:
            raise BenchError(f"Stage {s} does not exist for {self.num_scales} scales.")
        if self.cfg.curriculum_images > 0 and self.training:
            self.images_seen += x.shape[0]
        d = self.loss_draws(x, y) if draws is None else draws
        eps, y = d["eps"], self.net.y_embedder.drop_labels(y, d)
        t = stage_times(self.time_table[s], d["u"])
        xs, es = decompose(x, self.num_scales), decompose(eps, self.num_scales)
        active = range(self.num_scales - 1, s - 1, -1)  # coarsest first
        states, targets = zip(
            *(interpolate(xs[k], es[k], t, self.start_table[k], self.cfg.path) for k in active), strict=True
        )
        outs = self.net(list(states), t, y)
        per_scale = [(v.float() - u.float()).pow(2).mean(dim=(1, 2, 3)) for v, u in zip(outs, targets, strict=True)]
        return torch.stack(per_scale).sum(0)

    # ------------------------------------------------------------------------------------------------------------
    # sampling

    def sampling_starts(self, spec: SampleSpec) -> tuple[float, ...]:
        if spec.critical_times is None:
            return self.starts
        return self._starts(tuple(spec.critical_times))

    def segments(self, spec: SampleSpec) -> list[tuple[float, float]]:
        """[(T_{j+1}, T_j)] in time order (j = S-1 ... 0, T_0 = 1)."""
        starts = self.sampling_starts(spec)
        ends = (1.0, *starts[:-1])
        return [(starts[j], ends[j]) for j in range(self.num_scales - 1, -1, -1)]

    def segment_steps(self, spec: SampleSpec) -> list[int]:
        return split_steps(spec.steps, [b - a for a, b in self.segments(spec)])

    @torch.no_grad()
    def sample(self, noise: Tensor, y: Tensor | None, spec: SampleSpec, randn_like: RandnLike) -> SampleOutput:
        if spec.solver not in ("euler", "heun", "dopri5"):
            raise self.sample_unsupported(f"the '{spec.solver}' solver")
        path, shapes = self.cfg.path, self.scale_shapes()
        eps = decompose(noise, self.num_scales)
        steps = self.segment_steps(spec)
        state: list[Tensor] = []
        nfe_by_call: dict[str, int] = {}
        for i, (t_a, t_b) in enumerate(self.segments(spec)):
            j = self.num_scales - 1 - i  # scale joining now, at its start T_{j+1} = t_a
            state.append(noise_level(path, t_a) * eps[j])
            active = shapes[j:][::-1]  # coarsest first, like `state`

            def network(z: Tensor, t: Tensor, labels: Tensor | None, active: list[Shape] = active) -> Tensor:
                return pack(self.net(unpack(z, active), t, labels))

            velocity = guided(network, y, spec.guidance, self.num_classes)
            z, nfe = integrate(velocity, pack(state), t_a, t_b, spec.solver, steps[i], spec.atol, spec.rtol)
            state = unpack(z, active)
            nfe_by_call[segment_name(i)] = nfe
        latents = reconstruct(state[::-1])
        return SampleOutput(latents=latents, nfe=sum(nfe_by_call.values()), nfe_by_call=nfe_by_call)

    # ------------------------------------------------------------------------------------------------------------
    # cost

    def flop_trace(self, spec: SampleSpec, nfe_by_call: dict[str, int] | None = None) -> list[FlopCall]:
        if nfe_by_call is not None:
            counts = [nfe_by_call[segment_name(i)] for i in range(self.num_scales)]
        elif spec.solver == "dopri5":
            raise self.adaptive_needs_measurement()
        else:
            counts = [n * (2 if spec.solver == "heun" else 1) for n in self.segment_steps(spec)]
        cfg_batch = 2 if self.num_classes and spec.guidance not in (0.0, 1.0) else 1
        dev, shapes = self.device, self.scale_shapes()
        t = torch.zeros(cfg_batch, device=dev)
        y = torch.zeros(cfg_batch, dtype=torch.long, device=dev) if self.num_classes else None
        note = "CFG: conditional and unconditional halves in one batch-2 call" if cfg_batch == 2 else ""
        calls = []
        for i, count in enumerate(counts):
            active = shapes[self.num_scales - 1 - i :][::-1]
            xs = tuple(torch.zeros(cfg_batch, *shape, device=dev) for shape in active)
            call = SegmentCall(self.net, i + 1)
            tokens = self.net.tokens(i + 1)
            calls.append(FlopCall(segment_name(i), call, (*xs, t, y), float(count), tokens=tokens, note=note))
        return calls


def _check_options(cfg: LapFlowConfig, num_scales: int) -> None:
    if not 1 <= num_scales <= MAX_SCALES:
        raise BenchError(f"LapFlow supports 1 to {MAX_SCALES} scales, got num_scales={num_scales}.")
    for name, value, choices in (
        ("path", cfg.path, PATHS),
        ("mask", cfg.mask, MASKS),
        ("attention", cfg.attention, ATTENTION_IMPLS),
        ("stage_sampling", cfg.stage_sampling, STAGE_SAMPLINGS),
        ("stage_times", cfg.stage_times, STAGE_TIMES),
        ("positions", cfg.positions, POSITIONS),
    ):
        if value not in choices:
            raise BenchError(f"Unknown LapFlow {name} '{value}'; choose one of {', '.join(choices)}.")
    if cfg.stage_times == "segment" and (cfg.stage_sampling != "uniform" or cfg.curriculum_images > 0):
        raise BenchError(
            "LapFlow's model.stage_times=segment draws every stage in proportion to its segment's length, which "
            "model.stage_sampling=stratified (every stage equally often) and a curriculum (model.curriculum_images, "
            "finer stages held back) would change; use it with stage_sampling=uniform and curriculum_images=0."
        )


def build(cfg: LapFlowConfig, latent_shape: tuple[int, int, int], num_classes: int = 0) -> LapFlow:
    return LapFlow(cfg, latent_shape, num_classes)
