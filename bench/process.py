"""`python -m bench.process`: `python -m runtime caption` on a folder of images against a plain HF script.

What a new user sees: each side is one fresh process from start to exit (imports, load, preprocessing,
generation, printing) on the same weights, images and batch size; the kinds run in rotation so machine load
hits each alike; medians over runs, with each process's peak RSS. A one-image run of each gives the time to
the first caption. The runtime uses a local cache that already holds the artifact's verified stamp (a second
run; `runtime_one_first_run` is the very first on this machine, which hashes the file and, for an artifact
without a description of its programs, loads it through torch and keeps one). Captions must be identical.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.timing import summary

HF_SCRIPT = Path(__file__).with_name("hf_caption.py")


def commands(kind: str, artifact: Path, folder: Path, images: list[str], batch: int, cache: str) -> list[str]:
    """The command line of one kind: runtime[_one][_first_run] or hf[_one]."""
    chosen = images[:1] if "_one" in kind else images
    if kind.startswith("hf"):
        return [sys.executable, str(HF_SCRIPT), str(folder), str(batch), *chosen]
    return [
        sys.executable,
        "-m",
        "runtime",
        "caption",
        "--artifact",
        str(artifact),
        "--device",
        "cpu",
        "--batch-size",
        str(batch),
        "--cache",
        cache,
        *chosen,
    ]


def run_once(argv: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of one whole process."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[:4]} exited {proc.returncode}:\n{err.read()[-3000:]}")
        return wall, usage.ru_maxrss / 1024, out.read()


def captions(kind: str, stdout: str) -> dict[str, str]:
    """image path -> caption, from the CLI's JSON lines or the HF script's tab-separated lines."""
    if kind.startswith("hf"):
        return dict(line.split("\t", 1) for line in stdout.splitlines())
    return {row["uri"]: row["caption"] for row in map(json.loads, stdout.splitlines()) if row["error"] is None}


def run(artifact: Path, folder: Path, images: list[str], batch: int, runs: int, kinds: list[str]) -> dict:
    samples: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
    seen: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as warm:
        run_once(commands("runtime_one", artifact, folder, images, batch, warm))  # stamps the artifact in `warm`
        for i in range(runs):
            for kind in kinds[i % len(kinds) :] + kinds[: i % len(kinds)]:
                with tempfile.TemporaryDirectory() as empty:
                    cache = empty if kind.endswith("first_run") else warm
                    wall, rss, stdout = run_once(commands(kind, artifact, folder, images, batch, cache))
                samples[kind].append((wall, rss))
                seen.setdefault(kind, captions(kind, stdout))
                print(f"{kind}: {wall:.1f} s", file=sys.stderr, flush=True)
    result = {
        kind: {"wall_s": summary([w for w, _ in rows]), "peak_rss_mib": round(max(r for _, r in rows), 1)}
        for kind, rows in samples.items()
    }
    pairs = [(a, b) for a, b in (("runtime", "hf"), ("runtime_one", "hf_one")) if a in seen and b in seen]
    for ours, theirs in pairs:
        speedup = result[theirs]["wall_s"]["median_s"] / result[ours]["wall_s"]["median_s"]
        result[f"{ours}_vs_{theirs}"] = round(speedup, 2)
        same = sum(seen[ours].get(path) == caption for path, caption in seen[theirs].items())
        result[f"{ours}_captions_equal"] = f"{same}/{len(seen[theirs])}"
    return result


def make_images(folder: Path, count: int) -> list[str]:
    """`count` PNGs of smooth noise (the parity images: captions differ per image), written once."""
    from export.cli import parity_images

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:03d}.png" for i in range(count)]
    if not all(p.exists() for p in paths):
        for path, image in zip(paths, parity_images([], count, seed=1)):
            image.save(path)
    return [str(p) for p in paths]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.process", description=__doc__)
    p.add_argument("--artifact", required=True)
    p.add_argument("--folder", required=True, help="the HF checkpoint folder the artifact was exported from")
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--kinds", nargs="*", default=["runtime", "hf", "runtime_one", "hf_one", "runtime_one_first_run"])
    p.add_argument("--out", default="bench/results.json")
    p.add_argument("--section", default="process_vit_gpt2_base")
    args = p.parse_args(argv)
    from bench.model import machine, write_section

    images = make_images(Path(args.artifact).parent / f"process-images-{args.images}", args.images)
    before = machine()
    result = run(Path(args.artifact), Path(args.folder), images, args.batch_size, args.runs, args.kinds)
    write_section(
        Path(args.out),
        args.section,
        {
            "artifact": args.artifact,
            "images": args.images,
            "batch_size": args.batch_size,
            "runs": args.runs,
            "machine_before": before,
            "machine_after": machine(),
            **result,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
