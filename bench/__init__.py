"""bench: a reproducibility benchmark suite for multi-scale generative modelling.

Importing `bench` imports no model code: concrete families are reached only through `bench.registry`.
"""

__version__ = "0.1.0"
