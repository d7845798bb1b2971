"""Random-init autoencoder architectures (for cost measurements where pretrained weights are absent)."""

from __future__ import annotations

import torch

from bench.autoencoders import random_init_autoencoder

SD_VAE_PARAMETERS = 83_653_863  # parameters of stabilityai/sd-vae-ft-mse (diffusers AutoencoderKL)


def test_sd_vae_architecture_matches_published_size_and_geometry():
    ae = random_init_autoencoder("sd-vae-ft-mse")
    assert sum(p.numel() for p in ae.inner.parameters()) == SD_VAE_PARAMETERS
    assert ae.weights_hash == "random-init"
    with torch.no_grad():
        assert ae.decode(torch.zeros(1, 4, 4, 4)).shape == (1, 3, 32, 32)


def test_tiny_architecture_latent_channels():
    with torch.no_grad():
        assert random_init_autoencoder("taesd3").decode(torch.zeros(1, 16, 2, 2)).shape == (1, 3, 16, 16)
