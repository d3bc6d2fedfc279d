"""Random-weight HF checkpoints of each supported family, built on the spot for the tests and the benchmarks."""
