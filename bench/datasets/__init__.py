"""Data set sources, image preparation and the prepared-data cache behind `bench.data` (torch-free except cache)."""
