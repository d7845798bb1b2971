"""Autoencoders: geometry, exact pixel identity, TAESD quality on real faces, KL scale factor, weights resolution."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.autoencoders import (
    AutoencoderSpec,
    latent_geometry,
    latent_shape,
    load_autoencoder,
    resolve_weights,
    weights_hash,
)
from bench.errors import BenchError

SHARED = Path(__file__).resolve().parents[2] / "shared"
WEIGHTS = Path(os.environ.get("BENCH_WEIGHTS_ROOT") or SHARED / "weights")
DATA = Path(os.environ.get("BENCH_DATA_ROOT") or SHARED / "data")
needs_taesd = pytest.mark.skipif(not (WEIGHTS / "taesd" / "config.json").is_file(), reason="no TAESD weights")


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hub look-ups see an empty cache and no network, whatever this machine has."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def tiny_kl_folder(folder: Path, blocks: int = 4, seed: int = 0) -> Path:
    """A random AutoencoderKL with 4 latent channels at 1/2^(blocks-1) resolution, saved in diffusers form."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=(8,) * blocks,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=32,
    )
    vae.save_pretrained(folder)
    return folder


def test_latent_geometry_of_every_autoencoder() -> None:
    expected = {
        "pixel": (3, 1),
        "taesd": (4, 8),
        "taesd3": (16, 8),
        "sd-vae-ft-mse": (4, 8),
        "sd-vae-ft-ema": (4, 8),
        "eq-vae": (4, 8),
    }
    for name, geometry in expected.items():
        assert latent_geometry(name) == geometry
    assert latent_shape("sd-vae-ft-mse", 256) == (4, 32, 32)
    assert latent_shape("taesd3", 512) == (16, 64, 64)
    assert latent_shape("pixel", 33) == (3, 33, 33)
    with pytest.raises(BenchError, match="not divisible by the downsampling factor 8"):
        latent_shape("taesd", 100)
    with pytest.raises(BenchError, match="Did you mean 'taesd'"):
        latent_geometry("tasd")


def test_pixel_round_trip_is_exact() -> None:
    ae = load_autoencoder("pixel")
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.equal(ae.encode(x), x)
    assert torch.equal(ae.decode(ae.encode(x)), x)
    assert ae.weights_hash == "identity"
    assert isinstance(ae.spec, AutoencoderSpec) and ae.spec.kind == "identity"


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.clamp(-1, 1) - b) / 2).pow(2).mean().item()  # on the [0, 1] scale
    return 10 * np.log10(1.0 / mse)


@needs_taesd
@pytest.mark.skipif(not (DATA / "celebahq-5k-512").is_dir(), reason="no CelebA-HQ subset")
def test_taesd_round_trip_on_real_faces(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.datasets.images import center_crop_resize, open_rgb

    monkeypatch.setenv("BENCH_WEIGHTS_ROOT", str(WEIGHTS))
    files = [DATA / "celebahq-5k-512" / f"{i}.jpg" for i in (0, 1, 2)]
    arr = np.stack([center_crop_resize(open_rgb(f), 128).transpose(2, 0, 1) for f in files])
    x = torch.from_numpy(arr).float() / 127.5 - 1
    ae = load_autoencoder("taesd")
    with torch.inference_mode():
        z = ae.encode(x)
        x_hat = ae.decode(z)
    assert z.shape == (3, 4, 16, 16) and z.dtype == torch.float32
    assert next(ae.inner.parameters()).dtype == torch.float32  # stored bfloat16, loaded float32
    assert _psnr(x_hat, x) > 20.0  # 21.4 dB on these three (one has fine hair: 17.7 dB)


@needs_taesd
def test_weights_hash_is_stable_and_content_based(tmp_path: Path) -> None:
    first = load_autoencoder("taesd", path=str(WEIGHTS / "taesd")).weights_hash
    assert first == load_autoencoder("taesd", path=str(WEIGHTS / "taesd")).weights_hash
    assert len(first) == 64 and int(first, 16) >= 0
    copy = shutil.copytree(WEIGHTS / "taesd", tmp_path / "copy")
    assert weights_hash(Path(copy)) == first  # names and bytes, not the location
    assert weights_hash(WEIGHTS / "taesd3") != first


def test_missing_sd_vae_gives_one_clear_sentence(no_hub: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BENCH_WEIGHTS_ROOT", raising=False)
    with pytest.raises(BenchError) as err:
        load_autoencoder("sd-vae-ft-mse")
    message = str(err.value)
    assert "$BENCH_WEIGHTS_ROOT/sd-vae-ft-mse" in message and "stabilityai/sd-vae-ft-mse" in message
    assert "\n" not in message and message.count(". ") == 0 and message.endswith(".")
    assert err.value.__cause__ is None and err.value.__context__ is None  # no hub traceback attached

    monkeypatch.setenv("BENCH_WEIGHTS_ROOT", str(tmp_path / "weights"))
    with pytest.raises(BenchError, match=str(tmp_path / "weights" / "eq-vae")):
        load_autoencoder("eq-vae")
    with pytest.raises(BenchError, match=r"holds no diffusers config\.json"):
        load_autoencoder("sd-vae-ft-ema", path=str(tmp_path))


def test_kl_scale_factor_and_posterior(no_hub: None, tmp_path: Path) -> None:
    from diffusers import AutoencoderKL

    folder = tiny_kl_folder(tmp_path / "vae")
    ae = load_autoencoder("sd-vae-ft-mse", path=str(folder))
    ref = AutoencoderKL.from_pretrained(folder).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = ae.encode(x)
        assert z.shape == (2, *latent_shape("sd-vae-ft-mse", 32))
        torch.testing.assert_close(z, 0.18215 * ref.encode(x).latent_dist.mean)
        torch.testing.assert_close(ae.decode(z), ref.decode(z / 0.18215).sample)
        s1 = ae.encode(x, sample=True, generator=torch.Generator().manual_seed(1))
        s2 = ae.encode(x, sample=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(s1, s2) and not torch.allclose(s1, z)
    assert ae.weights_hash == weights_hash(folder)
    assert not any(p.requires_grad for p in ae.parameters())


def test_weights_root_and_pipeline_subfolder(no_hub: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tiny_kl_folder(tmp_path / "weights" / "eq-vae")
    monkeypatch.setenv("BENCH_WEIGHTS_ROOT", str(tmp_path / "weights"))
    spec = load_autoencoder("eq-vae").spec
    assert (spec.kind, spec.scale) == ("kl", 0.18215)
    tiny_kl_folder(tmp_path / "pipeline" / "vae")  # a full pipeline folder: its vae/ is used
    assert resolve_weights(spec, str(tmp_path / "pipeline")) == tmp_path / "pipeline" / "vae"


def test_wrong_geometry_is_refused(tmp_path: Path) -> None:
    folder = tiny_kl_folder(tmp_path / "vae", blocks=2)  # 1/2 resolution, not SD-VAE's 1/8
    with pytest.raises(BenchError, match="expects 4 at 1/8"):
        load_autoencoder("sd-vae-ft-mse", path=str(folder))
