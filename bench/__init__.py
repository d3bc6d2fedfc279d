"""Benchmarks: CaptionKit's runtime against what users would run instead, measured side by side."""

import os

# On this shared, loaded CPU, OpenMP's default spin-waiting made every contender ~60x slower (2 threads,
# load average 4 on 2 cores: 1988 ms vs 34 ms per demo batch of 8). PASSIVE applies to all sides alike
# (and is inherited by the agent and cold-start subprocesses); set OMP_WAIT_POLICY to override.
# OMP_WAIT_POLICY=default leaves libgomp's own default (spin a while, then sleep), what a dedicated worker
# runs: on a quiet machine PASSIVE's wake-up per parallel region costs a decode step of many small ops
# 10-15% (BENCHMARKS.md, "CPU against its limit").
WAIT_POLICY = os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if WAIT_POLICY == "default":
    del os.environ["OMP_WAIT_POLICY"]  # before torch loads libgomp, which reads it once
