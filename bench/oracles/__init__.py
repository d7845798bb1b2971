"""Exact networks for Gaussian data: what each family's sampler does when its network is perfect (METHODS.md).

For latents x ~ N(mu, Sigma) every flow family's training state and target are linear in the data and the noise, so
the network a perfect training run converges to (the posterior mean of the target) is known in closed form. Driving
a family's own sampler with it separates what the sampler costs from what training costs: tests check that the
exact samplers return the data's law, and `bench reproduce mini-floor` measures each fixed-step sampler's floor on a
Gaussian fit of the benchmark's latents. The paths are written out again here from METHODS.md, as matrices, not
taken from the families' code.
"""
