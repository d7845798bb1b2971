"""DiT baseline: DDPM with learned variance on the shared DiT backbone (facebookresearch/DiT; see ORIGIN.md)."""
