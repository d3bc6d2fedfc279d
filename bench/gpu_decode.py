"""`python -m bench.gpu_decode`: our decode on CUDA graphs vs our eager loop vs HF generate, eager and static+compiled.

Same weights, images and device. Per model, batch and beam width, ours (graphs), ours (eager) and HF eager run in
rotation in this process; HF `generate` with `cache_implementation="static"` (which transformers compiles with
torch.compile on CUDA) runs in a child process under a timeout, since its compile can take minutes or fail for a
family. Tokens are compared with HF eager and graphs with eager; images/s, and the cost per 1,000 images at
on-demand prices of the fleet's instance types (at this machine's speed, which is not theirs). `--device cpu
--quick` runs every code path on the tests' tiny model: the graphs column then calls the step directly.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch  # bench/__init__.py sets OMP_WAIT_POLICY first

from bench import models
from bench.model import _until_eos, bench_images, export_artifact, machine, write_section
from bench.timing import interleaved
from stacks.prices import INSTANCE_PRICES, PRICES_READ_ON, price_note

PRICED = ("g5.xlarge", "g6.xlarge")
QUICK = {"models": ["tiny"], "batches": [1, 3], "runs": 2}
FULL = {"models": ["vit-gpt2-base"], "batches": [1, 8, 32, 64], "runs": 5}
MODEL_MIN_S = 150  # a real-size model is not started with less time left than an export and one pass


def cost_per_1000(images_per_s: float) -> dict:
    """USD per 1,000 images at each priced instance type's on-demand rate, at `images_per_s`."""
    return {name: round(INSTANCE_PRICES[name] / 3600 / images_per_s * 1000, 5) for name in PRICED}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def hf_static(folder: Path, pixels: torch.Tensor, gen: dict, cases: list, args, workdir: Path) -> dict:
    """bench.hf_static in a child process, killed after `args.hf_static_timeout_s` (0: not run); what it finished
    is kept."""
    if args.hf_static_timeout_s <= 0:
        return {"cases": {}, "status": "not run (--hf-static-timeout-s 0)"}
    pixels_file, out = workdir / "hf-static-pixels.pt", workdir / "hf-static.json"
    torch.save(pixels, pixels_file)
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bench.hf_static", "--folder", str(folder), "--pixels", str(pixels_file),
           "--device", args.device, "--generation", json.dumps(gen), "--cases", json.dumps(cases),
           "--runs", str(args.runs), "--out", str(out)]
    started, status = time.perf_counter(), "ok"
    try:
        repo = Path(__file__).resolve().parent.parent
        code = subprocess.run(cmd, timeout=args.hf_static_timeout_s, cwd=repo).returncode
        status = "ok" if code == 0 else f"exit {code}"
    except subprocess.TimeoutExpired:
        status = f"timed out after {args.hf_static_timeout_s} s"
    result = json.loads(out.read_text()) if out.exists() else {"cases": {}}
    return {**result, "status": status, "wall_s": round(time.perf_counter() - started, 1)}


def bench_model(name: str, args, workdir: Path, section: dict, write) -> None:
    """Every (beams, batch) case of one model, written into `section["models"][name]` after each case."""
    from export.load import load
    from export.settings import hf_generate_kwargs
    from runtime.captioner import load_captioner
    from runtime.decode.static import StaticDecoder, StaticOptions

    folder = models.checkpoint(name, workdir)
    max_batch = max(args.batches)
    artifact = export_artifact(folder, workdir / f"{name}-float32-b{max_batch}.pt2", "float32", max_batch)
    loaded = load(str(folder), None, "float32")
    hf = loaded.model.to(args.device)
    ours = load_captioner(artifact, args.device)
    options = StaticOptions(capture=args.device == "cuda", eos_every=args.eos_every)
    graphs = StaticDecoder(ours.step, ours.max_batch, options)
    gen = ours.manifest["generation"]
    eos = gen["eos_token_id"]
    pixels = loaded.processor(images=bench_images(name, max_batch), return_tensors="pt")["pixel_values"]
    result = section["models"][name] = {"eos_every": args.eos_every, "captured": options.capture, "cases": {}}
    beam_widths = sorted({1, min(4, ours.max_beams)})
    for beams in beam_widths:
        for batch in args.batches:
            px = pixels[:batch]
            hf_px = px.to(args.device)
            kwargs = hf_generate_kwargs(gen, beams)
            tokens = {}

            def run_hf():
                with torch.inference_mode():
                    seq = hf.generate(**loaded.family.hf_inputs(loaded, hf_px), **kwargs)
                tokens["hf_eager"] = _until_eos([r[1:].tolist() for r in seq], eos)

            def ours_with(static, key):
                def go():
                    ours.static = static
                    tokens[key] = _until_eos(ours.generate_ids(px, num_beams=beams), eos)
                    _sync(args.device)
                return go

            started = time.perf_counter()
            ours_with(graphs, "ours_graphs")()  # the first call makes (and captures) the bucket
            first_s = time.perf_counter() - started
            times = interleaved({"hf_eager": run_hf, "ours_eager": ours_with(None, "ours_eager"),
                                 "ours_graphs": ours_with(graphs, "ours_graphs")}, args.runs)
            case = f"{'greedy' if beams == 1 else f'beam{beams}'}@batch{batch}"
            result["cases"][case] = {
                "images": batch, "times": times, "tokens": tokens, "first_graphs_call_s": round(first_s, 3),
                "graphs_equal_eager": tokens["ours_graphs"] == tokens["ours_eager"],
                "identical_to_hf_eager": {k: sum(a == b for a, b in zip(tokens["hf_eager"], v))
                                          for k, v in tokens.items() if k != "hf_eager"},
                **throughput(batch, times)}
            print(f"  {name} {case}: " + " ".join(f"{k} {t['median_s']:.4f}s" for k, t in times.items())
                  + f"; graphs == eager: {tokens['ours_graphs'] == tokens['ours_eager']}", file=sys.stderr, flush=True)
            write()
    ours.static = None
    cases = [[beams, batch] for beams in beam_widths for batch in args.batches]
    result["hf_static_compiled"] = hf_static(folder, pixels, gen, cases, args, workdir)
    for case, static in result["hf_static_compiled"]["cases"].items():
        if case in result["cases"] and "tokens" in static:
            ref = result["cases"][case]["tokens"]["hf_eager"]
            static["identical_to_hf_eager"] = sum(a == b for a, b in zip(ref, static["tokens"]))
            static.update(throughput(static["images"], {"hf_static_compiled": static["times"]}))
    write()


def throughput(batch: int, times: dict) -> dict:
    """Images/s per contender (from the median) and what 1,000 images cost at that speed."""
    ips = {k: round(batch / t["median_s"], 2) for k, t in times.items()}
    return {"images_per_s": ips, "usd_per_1000_images": {k: cost_per_1000(v) for k, v in ips.items()}}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.gpu_decode", description=__doc__)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="the tiny model, batches 1 and 3, 2 runs (a smoke test)")
    p.add_argument("--models", nargs="*", help="vit-gpt2-base blip-base florence2-base tiny (in this order)")
    p.add_argument("--batches", nargs="*", type=int)
    p.add_argument("--runs", type=int)
    p.add_argument("--eos-every", type=int, default=4, help="steps between the host's all-done checks")
    p.add_argument("--hf-static-timeout-s", type=int, default=150, help="0: leave that column out")
    p.add_argument("--budget-s", type=int, default=0, help="do not start a real-size model past this (0: no bound)")
    p.add_argument("--workdir", default=os.environ.get("CAPTIONKIT_BENCH_DIR", "/tmp/captionkit-bench"))
    p.add_argument("--out", default="bench/gpu-results.json")
    p.add_argument("--section", default=None, help="key in the results file (default: decode_<device>)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    args.batches, args.runs = args.batches or plan["batches"], args.runs or plan["runs"]
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    section = {"mode": "quick" if args.quick else "full", "runs": args.runs, "machine_before": machine(),
               "prices": {k: {"usd_per_hour": INSTANCE_PRICES[k], "note": price_note(k)} for k in PRICED},
               "prices_read_on": PRICES_READ_ON, "models": {}, "skipped": {}}
    write = lambda: write_section(Path(args.out), args.section or f"decode_{args.device}", section)  # noqa: E731
    for name in args.models or plan["models"]:
        left = args.budget_s - (time.monotonic() - started)
        if args.budget_s and name != "tiny" and left < MODEL_MIN_S:
            section["skipped"][name] = f"{left:.0f} s left of the budget, under {MODEL_MIN_S} s"
            continue
        print(f"{name} ...", file=sys.stderr, flush=True)
        bench_model(name, args, workdir, section, write)
        section["machine_after"] = machine()
        write()
    unequal = [f"{name} {case}" for name, m in section["models"].items() for case, c in m["cases"].items()
               if not c["graphs_equal_eager"]]
    if unequal:
        print(f"static decode tokens differ from the eager loop's: {', '.join(unequal)}", file=sys.stderr)
    return 1 if unequal else 0


if __name__ == "__main__":
    sys.exit(main())
