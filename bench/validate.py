"""Up-front checks of a resolved config and of measurement inputs: bad input fails in one sentence, before work.

`bench train` (with or without --dry-run) and `bench reproduce` run these before any data is read or any folder
is made: value ranges of the train and data sections, the run name, the resolution against the autoencoder and
the model (patch, pyramid factors), and the autoencoder's weights (naming an autoencoder that would run here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import BenchError

if TYPE_CHECKING:  # bench.config imports torch (SampleSpec); the CLI's start-up must not
    from bench.config import RunConfig, TrainConfig

# The paper's largest resolution is 1024 px; twice that still fits a GPU, while a typo such as 100000 px would
# try to allocate hundreds of GiB for the image cache before failing.
MAX_RES = 2048
PRECISIONS = ("auto", "fp32", "bf16")
LR_SCHEDULES = ("constant", "cosine", "linear")
# torch.compile's inductor modes THE training step offers; reduce-overhead adds CUDA graphs (bench.train_step).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")
NON_NEGATIVE_TRAIN_FIELDS = (
    "micro_batch", "weight_decay", "warmup_images", "grad_clip", "checkpoint_every", "log_every",
    "sample_every", "grid_size", "max_nonfinite", "max_seconds",
)  # fmt: skip
# Run names become one folder under the runs folder: no separators, no '..', no leading dot.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class RunCheck:
    """What validation learned on the way: the latent shape and the model's parameter count."""

    latent_shape: tuple[int, int, int]
    parameters: int


def check_run_name(name: str) -> str:
    """A run name is one folder name inside the runs folder (letters, digits, '.', '_', '-'; no '..')."""
    if not RUN_NAME.fullmatch(name) or ".." in name:
        raise BenchError(
            f"Run name '{name}' must be one folder name (letters, digits, '.', '_' or '-', starting with a letter "
            "or digit, no '..') so the run stays inside the runs folder."
        )
    return name


def check_precision(precision: str, key: str = "train.precision") -> str:
    if precision not in PRECISIONS:
        raise BenchError(f"Unknown precision '{precision}' ({key}); choose {', '.join(PRECISIONS)}.")
    return precision


def check_positive(value: float, what: str) -> None:
    if not value > 0:
        raise BenchError(f"{what} must be positive, got {value}.")


def _check_non_negative(t: TrainConfig, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(t, name)
        if value < 0:
            raise BenchError(f"train.{name} must be 0 or positive, got {value}.")


def check_train(t: TrainConfig) -> None:
    """Ranges of the train section (a batch of 0 or -4, an unknown precision, ... each one sentence)."""
    for name in ("batch_size", "total_images", "lr"):
        check_positive(getattr(t, name), f"train.{name}")
    _check_non_negative(t, NON_NEGATIVE_TRAIN_FIELDS)
    if t.keep_checkpoints < 1:
        raise BenchError(f"train.keep_checkpoints must be at least 1, got {t.keep_checkpoints}.")
    if t.micro_batch and t.batch_size % t.micro_batch:
        raise BenchError(f"train.batch_size {t.batch_size} is not divisible by train.micro_batch {t.micro_batch}.")
    if not 0.0 <= t.ema_decay < 1.0:
        raise BenchError(f"train.ema_decay must lie in [0, 1), got {t.ema_decay}.")
    if not all(0.0 <= b < 1.0 for b in t.betas):
        raise BenchError(f"train.betas must lie in [0, 1), got {list(t.betas)}.")
    if t.lr_schedule not in LR_SCHEDULES:
        raise BenchError(f"Unknown train.lr_schedule '{t.lr_schedule}'; choose {', '.join(LR_SCHEDULES)}.")
    check_precision(t.precision)
    check_compile_mode(t.compile_mode, t.compile)


def check_compile_mode(mode: str, compile_: bool = True) -> str:
    """A known inductor mode, and only with train.compile on (a mode without compilation would be recorded but
    never run)."""
    if mode not in COMPILE_MODES:
        raise BenchError(f"Unknown train.compile_mode '{mode}'; choose {', '.join(COMPILE_MODES)}.")
    if mode != "default" and not compile_:
        raise BenchError(f"train.compile_mode '{mode}' needs train.compile=true (add --set train.compile=true).")
    return mode


def check_resolution(res: int, key: str = "data.res") -> None:
    if not 0 < res <= MAX_RES:
        raise BenchError(f"Resolution {res} px ({key}) must lie between 1 and {MAX_RES} px.")


def validate_run_config(cfg: RunConfig) -> tuple[int, int, int]:
    """Check the whole config (see check_run); return the latent shape."""
    return check_run(cfg).latent_shape


def check_run(cfg: RunConfig) -> RunCheck:
    """Names, value ranges, the resolution against the autoencoder and the model, the autoencoder's weights.

    The model is built on the meta device: its constructor's checks run without allocating weights."""
    import torch

    from bench.autoencoders import get_spec, latent_shape
    from bench.registry import AUTOENCODERS, DATASETS, MODELS

    DATASETS.check(cfg.data.dataset)
    spec = get_spec(AUTOENCODERS.check(cfg.data.autoencoder))
    check_resolution(cfg.data.res)
    check_run_name(cfg.run_name)
    check_train(cfg.train)
    if cfg.data.num_classes < 0:
        raise BenchError(f"data.num_classes must be 0 (unconditional) or positive, got {cfg.data.num_classes}.")
    if cfg.data.synthetic_size <= 0:
        raise BenchError(f"data.synthetic_size must be positive, got {cfg.data.synthetic_size}.")
    shape = latent_shape(cfg.data.autoencoder, cfg.data.res)
    build = MODELS.load(cfg.family)
    try:
        with torch.device("meta"):
            model = build(cfg.model, shape, cfg.data.num_classes)
    except (ValueError, AssertionError) as exc:
        raise BenchError(f"Model '{cfg.family}' cannot be built at {cfg.data.res} px: {exc}.") from None
    check_layout = getattr(model, "check_micro_batches", None)  # e.g. LapFlow's stratified stage sampling
    if callable(check_layout):
        from bench.dist import world_size

        check_layout(cfg.train.layout(world_size())[1])
    if spec.kind != "identity":
        check_weights(cfg.data.autoencoder, cfg.data.autoencoder_path, cfg.data.res)
    return RunCheck(shape, sum(p.numel() for p in model.parameters()))


def weights_present(name: str) -> bool:
    """Whether `name`'s weights are on this machine (a BENCH_WEIGHTS_ROOT folder or the local hub cache)."""
    from bench.autoencoders import get_spec, resolve_weights

    spec = get_spec(name)
    if spec.kind == "identity":
        return True
    try:
        resolve_weights(spec)
    except BenchError:
        return False
    return True


def runnable_alternatives(name: str, res: int) -> list[str]:
    """Autoencoders whose weights are here and that fit `res`; same latent channels first, pixel last."""
    from bench.autoencoders import get_spec
    from bench.registry import AUTOENCODERS

    channels = get_spec(name).channels
    found = [
        n
        for n in AUTOENCODERS.names()
        if n not in (name, "pixel") and res % get_spec(n).factor == 0 and weights_present(n)
    ]
    return sorted(found, key=lambda n: get_spec(n).channels != channels)


def check_weights(name: str, path: str, res: int) -> None:
    """Missing weights: the sentence names the folder to fill AND an autoencoder whose weights are here."""
    from bench.autoencoders import get_spec, resolve_weights

    try:
        resolve_weights(get_spec(name), path)
    except BenchError as exc:
        others = runnable_alternatives(name, res)
        hint = (
            f"; available here: {', '.join(others)} (e.g. --autoencoder {others[0]})"
            if others
            else "; no other autoencoder's weights are here (`bench ls autoencoders`)"
        )
        raise BenchError(str(exc).rstrip(".") + hint + ".") from None


def check_counts(**values: int | None) -> None:
    """Batch sizes, sample counts and the like: positive integers (one sentence naming the option)."""
    for name, value in values.items():
        if value is not None and value <= 0:
            raise BenchError(f"--{name.replace('_', '-')} must be positive, got {value}.")


def check_reference(ref: str, backends: list[str], res: int | None, dataset: str | None = None) -> None:
    """The reference exists for every backend and matches the samples' resolution (and data set): before work."""
    from bench.metrics.fid import resolve_ref

    for backend in backends:
        meta = resolve_ref(ref, backend).meta
        ref_res, ref_data = meta.get("res"), meta.get("dataset")
        if res is not None and ref_res is not None and int(ref_res) != res:
            raise BenchError(
                f"Reference '{ref}' holds {ref_res} px statistics but the samples are {res} px; "
                f"score against a {res} px reference (e.g. `bench eval ref-stats {ref_data or 'DATASET'} --res {res}`)."
            )
        if dataset and ref_data and ref_data != dataset:
            raise BenchError(f"Reference '{ref}' is of data set '{ref_data}' but the samples model '{dataset}'.")


def folder_resolution(folder: Path) -> int | None:
    """Side of the first PNG in `folder` (read from its header), None when there is none to read."""
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in Path(folder).glob("*.png") if not p.name.startswith(".")) if folder.is_dir() else []
    if not files:
        return None
    try:
        with Image.open(files[0]) as img:
            width, height = img.size
    except (OSError, UnidentifiedImageError):
        return None
    return width if width == height else None
