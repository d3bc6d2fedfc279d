"""`python -m bench.datasets`: a dataset job of shards against the per-image path, on the same images, local AWS.

One moto server on localhost, one counting proxy in front of it (tools.fault_proxy with no faults: it counts every
call by billing class), one agent process per path (`python -m runtime agent --burst`, as the instance runs it):
- per-image: the images as objects under the images prefix, a prefix job (`make submit PREFIX=`): one JSON result
  each, collected by `make collect JOB=`;
- webdataset: the same images in `.tar` shards (`make submit SHARDS=`), one Parquet output per shard;
- parquet: the same images inside Parquet shards in the HF datasets layout (an `image` struct of bytes and path).
About 1% of the samples are bad (truncated JPEG bytes; in the tars also a sample with no image member).
Measured: planning (submit's checks + the agent's expansion), images/s of the agent from its first message to its
exit, requests per image by billing class, the cost of those requests per 10 million images at list prices, and
the resident memory of the agent (sampled through the run, so "flat as shards grow" is visible) and of collect.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench.dataset_data import SIZE
from bench.dataset_runs import run_all
from bench.model import machine, write_section


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.datasets", description=__doc__.split("\n")[0])
    p.add_argument("--shards", type=int, default=100)
    p.add_argument("--per-shard", type=int, default=100)
    p.add_argument("--artifact", help="the .pt2 the agent serves (default: the tiny test model, exported here)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", default="bench/results.json")
    p.add_argument("--section", default="datasets")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        section = run_all(args, Path(tmp))
    section.update({"machine": machine(), "images_size": list(SIZE)})
    print(json.dumps(section, indent=1))
    write_section(Path(args.out), args.section, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
