"""`python -m bench.coldstart`: a worker's cold start (pointer, download, load, first caption) vs `from_pretrained`.

Each measurement runs in a fresh process (peak memory is the process's VmHWM), the kinds in rotation.
Our kinds take the agent's own path: read the model pointer and download the .pt2 from S3 (a moto server
on localhost here, so the download time is this machine's, not a region's) into an empty cache, hash it
once, load it; `from_pretrained` reads the same weights from local disk.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.timing import summary, vm_hwm_mib

KINDS = ("exported", "aoti", "int8", "hf")


def fetch(bucket: str, workdir: str) -> tuple[Path, dict, dict]:
    """The agent's pointer read and download (with its one SHA-256) into an empty cache: (path, pointer, phases)."""
    from runtime import aws
    from runtime.agent.model.pointer import fetch_artifact
    from runtime.registry import read_pointer

    s3 = aws.client("s3")
    t = time.perf_counter()
    pointer = read_pointer(s3, bucket)
    phases = {"pointer_s": time.perf_counter() - t}
    t = time.perf_counter()
    path = fetch_artifact(s3, bucket, pointer, workdir)
    phases["download_s"] = time.perf_counter() - t
    return path, pointer, phases


def measure(kind: str, artifact: str, folder: str, cache: str, device: str, bucket: str = "") -> dict:
    """One cold start in this process: the timed phases and the peak memory."""
    t0 = time.perf_counter()
    import PIL.Image
    import torch

    phases = {"import_s": time.perf_counter() - t0}
    image = PIL.Image.new("RGB", (320, 240), (180, 90, 40))
    t = time.perf_counter()
    if kind == "hf":
        from export.load import load

        loaded = load(folder, None, "float32")
        phases["load_s"] = time.perf_counter() - t
        t = time.perf_counter()
        with torch.inference_mode():
            pixels = loaded.processor(images=[image], return_tensors="pt")["pixel_values"].to(device)
            loaded.model.to(device).generate(pixel_values=pixels, num_beams=1, max_new_tokens=20)
    else:
        import tempfile

        from runtime.captioner import LoadOptions, load_captioner

        options = {
            "options": LoadOptions(quantize="int8") if kind == "int8" else LoadOptions(backend=kind),
            "cache_dir": cache,
        }
        if bucket:
            with tempfile.TemporaryDirectory() as empty:
                path, pointer, fetched = fetch(bucket, empty)
                phases |= fetched
                t = time.perf_counter()
                captioner = load_captioner(
                    path, device, expected_sha256=pointer["sha256"], sha256_checked=True, **options
                )
        else:  # load_s: the whole file's SHA-256 and program checksums, then the programs
            captioner = load_captioner(artifact, device, **options)
        phases["load_s"] = time.perf_counter() - t
        phases["backend"] = captioner.backend
        t = time.perf_counter()
        captioner.caption([image], num_beams=1)
    phases["first_caption_s"] = time.perf_counter() - t
    phases["total_s"] = time.perf_counter() - t0
    phases["peak_rss_mib"] = round(vm_hwm_mib(), 1)
    return phases


def run(artifact: Path, folder: Path, cache: Path, device: str, runs: int) -> dict:
    """`runs` fresh processes per kind, in rotation, against a local S3 holding the artifact; medians of each phase."""
    import os
    import tempfile

    from bench.agent import LocalAws
    from runtime.registry import publish

    samples: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory() as state:
        s3 = LocalAws(Path(state))
        try:
            publish(s3.s3, s3.artifacts, artifact)
            for _ in range(runs):
                for kind in KINDS:
                    out = subprocess.run(
                        [
                            sys.executable,
                            "-m",
                            "bench.coldstart",
                            "--one",
                            kind,
                            "--artifact",
                            str(artifact),
                            "--folder",
                            str(folder),
                            "--cache",
                            str(cache),
                            "--device",
                            device,
                            "--bucket",
                            s3.artifacts,
                        ],
                        env={**os.environ, **s3.env},
                        capture_output=True,
                        text=True,
                    )
                    if out.returncode != 0:
                        raise RuntimeError(f"cold start of {kind} failed:\n{out.stderr[-3000:]}")
                    samples[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
        finally:
            s3.stop()
    result = {}
    for kind, rows in samples.items():
        keys = [k for k in rows[0] if k.endswith("_s") or k.endswith("_mib")]
        result[kind] = {k: summary([r[k] for r in rows]) for k in keys}
        if "backend" in rows[0]:
            result[kind]["backend"] = rows[0]["backend"]
    hf_load = result["hf"]["load_s"]["median_s"]
    result["load_vs_from_pretrained"] = {
        k: round(result[k]["load_s"]["median_s"] / hf_load, 2) for k in KINDS if k != "hf"
    }
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.coldstart", description=__doc__)
    p.add_argument("--one", choices=KINDS, help="(internal) measure one cold start in this process")
    p.add_argument("--artifact", required=True)
    p.add_argument("--folder", required=True, help="the HF checkpoint folder the artifact was exported from")
    p.add_argument("--cache", required=True, help="compiled-package cache dir (warm it first: bench.model does)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bucket", default="", help="(internal) fetch the pointer's .pt2 from this bucket first")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", default="bench/results.json")
    p.add_argument("--section", default="cold_start")
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.artifact, args.folder, args.cache, args.device, args.bucket)))
        return 0
    from bench.model import machine, write_section

    result = run(Path(args.artifact), Path(args.folder), Path(args.cache), args.device, args.runs)
    write_section(Path(args.out), args.section, {"artifact": args.artifact, "machine": machine(), **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
