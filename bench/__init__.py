"""Benchmarks: CaptionKit's runtime against what users would run instead, measured side by side."""

import os

# On this shared, loaded CPU, OpenMP's default spin-waiting made every contender ~60x slower (2 threads,
# load average 4 on 2 cores: 1988 ms vs 34 ms per demo batch of 8). PASSIVE applies to all sides alike
# (and is inherited by the agent and cold-start subprocesses); set OMP_WAIT_POLICY to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
