"""Autoencoders between images in [-1, 1] and the latents the models train on.

`pixel` is the identity; `taesd`/`taesd3` are diffusers AutoencoderTiny (their latents already live on the SD-VAE
scale, so s = 1); `sd-vae-ft-mse`, `sd-vae-ft-ema` and `eq-vae` are diffusers AutoencoderKL with z = 0.18215 * E(x).
Weights resolve from an explicit folder, else $BENCH_WEIGHTS_ROOT/<name>, else the hub id (local hub cache first,
a download only when online). A missing one is one BenchError sentence naming the folder to fill.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor, nn

from bench.errors import BenchError
from bench.paths import weights_root

SD_VAE_SCALE = 0.18215  # LDM (Rombach et al. 2022): rescales SD-VAE latents to about unit variance
WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class AutoencoderSpec:
    name: str
    kind: str  # "identity" | "tiny" | "kl"
    channels: int  # latent channels
    factor: int  # spatial downsampling factor
    scale: float  # z = scale * E(x)
    hub_id: str | None


PIXEL = AutoencoderSpec("pixel", "identity", 3, 1, 1.0, None)
TAESD = AutoencoderSpec("taesd", "tiny", 4, 8, 1.0, "madebyollin/taesd")
TAESD3 = AutoencoderSpec("taesd3", "tiny", 16, 8, 1.0, "madebyollin/taesd3")
SD_VAE_FT_MSE = AutoencoderSpec("sd-vae-ft-mse", "kl", 4, 8, SD_VAE_SCALE, "stabilityai/sd-vae-ft-mse")
SD_VAE_FT_EMA = AutoencoderSpec("sd-vae-ft-ema", "kl", 4, 8, SD_VAE_SCALE, "stabilityai/sd-vae-ft-ema")
EQ_VAE = AutoencoderSpec("eq-vae", "kl", 4, 8, SD_VAE_SCALE, "zelaki/eq-vae")


def get_spec(name: str) -> AutoencoderSpec:
    from bench.registry import AUTOENCODERS

    return AUTOENCODERS.load(name)


def latent_geometry(name: str) -> tuple[int, int]:
    """(latent channels, downsampling factor), without loading any weights."""
    spec = get_spec(name)
    return spec.channels, spec.factor


def latent_shape(name: str, res: int) -> tuple[int, int, int]:
    channels, factor = latent_geometry(name)
    if res <= 0 or res % factor:
        raise BenchError(
            f"Resolution {res} is not divisible by the downsampling factor {factor} of autoencoder '{name}'."
        )
    return channels, res // factor, res // factor


class Autoencoder(nn.Module):
    """Frozen wrapper with one convention for every kind: encode() gives scaled latents, decode() inverts it."""

    def __init__(self, spec: AutoencoderSpec, inner: nn.Module | None, weights_hash: str) -> None:
        super().__init__()
        self.spec, self.inner, self.weights_hash = spec, inner, weights_hash
        if inner is not None:
            inner.eval().requires_grad_(False)

    def _dtype(self) -> torch.dtype:
        assert self.inner is not None
        return next(self.inner.parameters()).dtype

    def encode(self, x: Tensor, sample: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """[B, 3, H, W] in [-1, 1] -> scaled latents [B, C, H/f, W/f]; KL: posterior mean unless `sample`."""
        if self.inner is None:
            return x
        h = x.to(self._dtype())
        if self.spec.kind == "tiny":
            z = self.inner.encode(h).latents
        else:
            dist = self.inner.encode(h).latent_dist
            z = dist.sample(generator) if sample else dist.mean
        return (z * self.spec.scale).to(x.dtype)

    def decode(self, z: Tensor) -> Tensor:
        """Scaled latents -> images in about [-1, 1] (not clamped: the harness quantises once)."""
        if self.inner is None:
            return z
        return self.inner.decode((z / self.spec.scale).to(self._dtype())).sample.to(z.dtype)


def load_autoencoder(
    name: str, device: torch.device | str = "cpu", path: str = "", dtype: torch.dtype = torch.float32
) -> Autoencoder:
    spec = get_spec(name)
    if spec.kind == "identity":
        return Autoencoder(spec, None, "identity").to(device)
    folder = resolve_weights(spec, path)
    inner = _from_pretrained(spec, folder, dtype)
    _check_geometry(spec, inner, folder)
    return Autoencoder(spec, inner, weights_hash(folder)).to(device)


# The SD VAE architecture (stabilityai/sd-vae-ft-mse config.json; EQ-VAE fine-tunes the same network).
SD_VAE_ARCHITECTURE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "block_out_channels": (128, 256, 512, 512), "act_fn": "silu", "sample_size": 256,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
}  # fmt: skip


def random_init_autoencoder(name: str, device: torch.device | str = "cpu") -> Autoencoder:
    """The autoencoder's architecture with random weights: valid for cost (GFLOPs, time), never for quality.

    Lets GPU timings include decoding where the pretrained weights cannot be brought (e.g. SD-VAE offline).
    """
    from diffusers import AutoencoderKL, AutoencoderTiny

    spec = get_spec(name)
    if spec.kind == "identity":
        return load_autoencoder(name, device)
    torch.manual_seed(0)
    if spec.kind == "tiny":
        inner = AutoencoderTiny(latent_channels=spec.channels)
    else:
        inner = AutoencoderKL(**SD_VAE_ARCHITECTURE)
    return Autoencoder(spec, inner, "random-init").to(device)


# ----------------------------------------------------------------------------------------------------------------
# weights


def resolve_weights(spec: AutoencoderSpec, path: str = "") -> Path:
    """The diffusers folder (config.json + weights) for `spec`; BenchError with the folder to fill if none."""
    if path:
        folder = _diffusers_folder(Path(path).expanduser())
        if folder is None:
            raise BenchError(
                f"Autoencoder folder '{path}' holds no diffusers config.json and weights for '{spec.name}'."
            )
        return folder
    root = weights_root()
    if root is not None and (folder := _diffusers_folder(root / spec.name)) is not None:
        return folder
    if spec.hub_id and (folder := _hub_folder(spec.hub_id)) is not None:
        return folder
    where = str(root / spec.name) if root is not None else f"$BENCH_WEIGHTS_ROOT/{spec.name}"
    raise BenchError(
        f"Weights for autoencoder '{spec.name}' were not found: put its diffusers folder (config.json and "
        f"diffusion_pytorch_model.safetensors, from hub id '{spec.hub_id}') in {where}, or pass a local path."
    )


def _diffusers_folder(folder: Path) -> Path | None:
    """`folder`, or its `vae/` sub-folder (a full pipeline), when it holds config.json and a weights file."""
    for candidate in (folder, folder / "vae"):
        if (candidate / "config.json").is_file() and _weight_files(candidate):
            return candidate
    return None


def _weight_files(folder: Path) -> list[Path]:
    """The weight files diffusers would load: safetensors if any, else .bin."""
    for suffix in WEIGHT_SUFFIXES:
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(suffix))
        if files:
            return files
    return []


def _hub_folder(hub_id: str) -> Path | None:
    """A hub snapshot from the local cache, else downloaded when online; None on any hub failure (offline here)."""
    try:
        import huggingface_hub
        import huggingface_hub.constants
    except ImportError:
        return None
    online = not huggingface_hub.constants.HF_HUB_OFFLINE
    for local_only in (True, False) if online else (True,):
        for patterns in (["config.json", "*.safetensors"], ["config.json", "*.bin"]):
            try:
                snapshot = huggingface_hub.snapshot_download(
                    hub_id, allow_patterns=patterns, local_files_only=local_only
                )
            except Exception:  # any hub/network error means "not available": the caller names the folder to fill
                break
            if (folder := _diffusers_folder(Path(snapshot))) is not None:
                return folder
    return None


def weights_hash(folder: Path) -> str:
    """sha256 over config.json and the weight files (names and bytes): identifies the autoencoder in caches."""
    files = [folder / "config.json", *_weight_files(folder)]
    stamp = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _hash_files(stamp)


@lru_cache(maxsize=16)
def _hash_files(stamp: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for path, _, _ in stamp:
        digest.update(Path(path).name.encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    """Silence diffusers' load-time chatter (missing accelerate, ignored config keys) for this call only."""
    logger = logging.getLogger("diffusers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _from_pretrained(spec: AutoencoderSpec, folder: Path, dtype: torch.dtype) -> nn.Module:
    from diffusers import AutoencoderKL, AutoencoderTiny

    cls = AutoencoderTiny if spec.kind == "tiny" else AutoencoderKL
    try:
        with _quiet_diffusers():
            return cls.from_pretrained(str(folder), torch_dtype=dtype)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BenchError(
            f"Autoencoder '{spec.name}' could not load from '{folder}' as {cls.__name__} ({first})."
        ) from None


def _check_geometry(spec: AutoencoderSpec, inner: nn.Module, folder: Path) -> None:
    config = inner.config
    channels = int(config.latent_channels)
    if spec.kind == "tiny":
        factor = 2 ** (len(config.encoder_block_out_channels) - 1)
    else:
        factor = 2 ** (len(config.block_out_channels) - 1)
    if (channels, factor) != (spec.channels, spec.factor):
        raise BenchError(
            f"Weights in '{folder}' give {channels} latent channels at 1/{factor} resolution, but autoencoder "
            f"'{spec.name}' expects {spec.channels} at 1/{spec.factor}."
        )
