"""`python -m bench.gpu_decode`: our decode on CUDA graphs vs our eager loop vs HF generate, eager and static+compiled.

Same weights, images and device. Per model, batch and beam width, ours (graphs), ours (eager) and HF eager run in
rotation in this process; HF `generate` with `cache_implementation="static"` (which transformers compiles with
torch.compile on CUDA) runs in a child process under a timeout after each beam width's cases, since its compile can
take minutes or fail for a family. Tokens are compared with HF eager and graphs with eager; images/s, and the cost
per 1,000 images at on-demand prices of the fleet's instance types (at this machine's speed, which is not theirs).
Each case records what ran (the decode path, the bucket, graph replays), CUDA-event timings (encoder, decode per
step, peak memory) and the kernels of one replay; a run that asked for graphs and did not replay them fails.
`--device cpu --quick` runs every code path on the tests' tiny model: the graphs column then calls the step
directly.
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
from bench.cases import append_case
from bench.model import _until_eos, bench_images, export_artifact, machine, write_section
from bench.timing import interleaved
from stacks.prices import INSTANCE_PRICES, PRICES_READ_ON, price_note

PRICED = ("g5.xlarge", "g6.xlarge")
QUICK = {"models": ["tiny"], "batches": [1, 3], "runs": 2}
FULL = {"models": ["vit-gpt2-base"], "batches": [1, 64], "runs": 5}  # the targets' batches first
MODEL_MIN_S = 150  # a real-size model is not started with less time left than an export and one pass


def cost_per_1000(images_per_s: float) -> dict:
    """USD per 1,000 images at each priced instance type's on-demand rate, at `images_per_s`."""
    return {name: round(INSTANCE_PRICES[name] / 3600 / images_per_s * 1000, 5) for name in PRICED}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def hf_static(
    folder: Path,
    pixels: torch.Tensor,
    gen: dict,
    cases: list,
    args,
    workdir: Path,
    timeout_s: float | None = None,
    name: str = "",
) -> dict:
    """bench.hf_static in a child process, killed after `timeout_s` (default `args.hf_static_timeout_s`; 0: not
    run); what it finished is kept, and each case it finishes is also a line of `args.cases_jsonl` at once."""
    timeout_s = args.hf_static_timeout_s if timeout_s is None else min(timeout_s, args.hf_static_timeout_s)
    if timeout_s <= 0:
        why = "--hf-static-timeout-s 0" if args.hf_static_timeout_s <= 0 else "no time left in the budget"
        return {"cases": {}, "status": f"not run ({why})"}
    pixels_file, out = workdir / "hf-static-pixels.pt", workdir / "hf-static.json"
    torch.save(pixels, pixels_file)
    out.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "bench.hf_static",
        "--folder",
        str(folder),
        "--pixels",
        str(pixels_file),
        "--device",
        args.device,
        "--generation",
        json.dumps(gen),
        "--cases",
        json.dumps(cases),
        "--runs",
        str(args.runs),
        "--out",
        str(out),
    ]
    if args.cases_jsonl:
        cmd += ["--cases-jsonl", str(args.cases_jsonl), "--label", json.dumps({**args.label, "model": name})]
    started, status = time.perf_counter(), "ok"
    try:
        repo = Path(__file__).resolve().parent.parent
        code = subprocess.run(cmd, timeout=timeout_s, cwd=repo).returncode
        status = "ok" if code == 0 else f"exit {code}"
    except subprocess.TimeoutExpired:
        status = f"timed out after {timeout_s:.0f} s"
    try:
        result = json.loads(out.read_text()) if out.exists() else {"cases": {}}
    except json.JSONDecodeError:
        result = {"cases": {}}
    return {**result, "status": status, "wall_s": round(time.perf_counter() - started, 1)}


def case_name(beams: int, batch: int) -> str:
    return f"{'greedy' if beams == 1 else f'beam{beams}'}@batch{batch}"


class Clock:
    """Elapsed milliseconds between two marks: CUDA events on the GPU (its own timeline), the host clock elsewhere."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def ms(self, start, end) -> float:
        if not self.cuda:
            return (end - start) * 1000
        end.synchronize()
        return start.elapsed_time(end)


def device_timings(ours, graphs, px: torch.Tensor, beams: int, device: str) -> dict:
    """One more call of the static path, instrumented: encoder ms, decode ms and ms per replayed step, and the peak
    device memory (CUDA only) since the case started."""
    from runtime.decode.state import DecodeSettings

    clock, settings = Clock(device), DecodeSettings(**{**ours.settings.__dict__, "num_beams": beams})
    ticks = graphs.stats.replays + graphs.stats.direct
    with torch.inference_mode():
        chunk = px.to(device, ours.dtype)
        start = clock.mark()
        cross_k, cross_v = ours.encoder(chunk)
        encoded = clock.mark()
        graphs.decode(cross_k, cross_v, settings)
        end = clock.mark()
    steps = graphs.stats.replays + graphs.stats.direct - ticks
    decode_ms = clock.ms(encoded, end)
    return {
        "encoder_ms": round(clock.ms(start, encoded), 3),
        "decode_ms": round(decode_ms, 3),
        "steps": steps,
        "ms_per_step": round(decode_ms / steps, 4) if steps else None,
        "peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None,
    }


def ops_per_tick(tick, device: str) -> dict:
    """torch.profiler over one tick (a replay on CUDA): the kernels it launched on the GPU; elsewhere the aten ops
    the direct call ran (nested ones included), which only rehearses the code."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch.inference_mode(), profile(activities=activities) as prof:
        tick()
        if device == "cuda":
            torch.cuda.synchronize()
    events = prof.events()
    if device == "cuda":
        return {
            "kernels": sum(1 for e in events if e.device_type == DeviceType.CUDA),
            "graph_launches": sum(1 for e in events if e.name == "cudaGraphLaunch"),
        }
    return {"aten_ops": sum(1 for e in events if e.name.startswith("aten::"))}


def bench_model(name: str, args, workdir: Path, section: dict, write, deadline: float | None = None) -> None:
    """Every (beams, batch) case of one model, written into `section["models"][name]` after each case, and each
    case one line of `args.cases_jsonl` at once; HF static + compile right after each beam width's cases."""
    from export.load import load
    from export.settings import hf_generate_kwargs
    from runtime.captioner import load_captioner
    from runtime.decode.cuda_graphs import StaticDecoder, StaticOptions
    from runtime.errors import CaptureFailed

    folder = models.checkpoint(name, workdir)
    max_batch = max(args.batches)
    artifact = export_artifact(folder, workdir / f"{name}-float32-b{max_batch}.pt2", "float32", max_batch)
    loaded = load(str(folder), None, "float32")
    hf = loaded.model.to(args.device)
    ours = load_captioner(artifact, args.device)
    capture = args.device == "cuda" if args.capture == "auto" else args.capture == "on"
    options = StaticOptions(capture=capture, eos_every=args.eos_every)
    graphs = StaticDecoder(ours.step, ours.max_batch, options, encoder=ours._checked_encoder)  # as the runtime does
    gen = ours.manifest["generation"]
    eos = gen["eos_token_id"]
    pixels = loaded.processor(images=bench_images(name, max_batch), return_tensors="pt")["pixel_values"]
    result = section["models"][name] = {
        "eos_every": args.eos_every,
        "capture_requested": options.capture,
        "prepared": {},
        "cases": {},
        "hf_static_compiled": {"cases": {}, "status": "not run yet"},
    }
    beam_widths = sorted({1, min(4, ours.max_beams)})
    for beams in beam_widths:
        ours.static = graphs
        started = time.perf_counter()
        try:
            prepared = ours.prepare(beams)  # every bucket of this width, captured on this thread before timing
        except CaptureFailed:
            prepared = ours.decode_status()
        result["prepared"][f"beams{beams}"] = {**prepared, "wall_s": round(time.perf_counter() - started, 3)}
        print(f"  {name} beams {beams}: {prepared}", file=sys.stderr, flush=True)
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

            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            replays, direct = graphs.stats.replays, graphs.stats.direct
            started = time.perf_counter()
            ours_with(graphs, "ours_graphs")()
            first_s = time.perf_counter() - started
            times = interleaved(
                {
                    "hf_eager": run_hf,
                    "ours_eager": ours_with(None, "ours_eager"),
                    "ours_graphs": ours_with(graphs, "ours_graphs"),
                },
                args.runs,
            )
            ran = {
                "decode": ours.decode_status()["decode"],
                "encoder": ours.decode_status().get("encoder"),
                "replays": graphs.stats.replays - replays,
                "direct_steps": graphs.stats.direct - direct,
                "bucket": f"{graphs.bucket_size(batch)}x{beams}" if graphs.ready else None,
            }
            ran["capture_s"] = graphs.stats.capture_s.get(ran["bucket"])
            measured = {}
            if graphs.ready:
                measured = device_timings(ours, graphs, px, beams, args.device)
                with torch.inference_mode():
                    cross_k, cross_v = ours.encoder(px.to(args.device, ours.dtype))
                    sample = graphs._sample or (cross_k, None)  # the prepared buckets (with their encoder)
                    bucket = graphs.bucket(batch, ours.decode_settings(beams), *sample)
                    bucket.load(cross_k, cross_v)  # position 0: a replay past the last step would write out of range
                measured.update(ops_per_tick(bucket.tick, args.device))
                if bucket.encode is not None:  # the bucket's encoder graph alone, one replay
                    clock = Clock(args.device)
                    start = clock.mark()
                    with torch.inference_mode():
                        bucket.encode()
                    measured["encoder_graph_ms"] = round(clock.ms(start, clock.mark()), 3)
            case = case_name(beams, batch)
            record = result["cases"][case] = {
                "images": batch,
                "times": times,
                "tokens": tokens,
                "first_graphs_call_s": round(first_s, 3),
                "graphs": ran,
                "device": measured,
                "graphs_equal_eager": tokens["ours_graphs"] == tokens["ours_eager"],
                "identical_to_hf_eager": {
                    k: sum(a == b for a, b in zip(tokens["hf_eager"], v)) for k, v in tokens.items() if k != "hf_eager"
                },
                **throughput(batch, times),
            }
            append_case(
                args.cases_jsonl,
                {**args.label, "model": name, "case": case, **{k: v for k, v in record.items() if k != "tokens"}},
            )
            print(
                f"  {name} {case}: "
                + " ".join(f"{k} {t['median_s']:.4f}s" for k, t in times.items())
                + f"; graphs == eager: {record['graphs_equal_eager']}; {ran['decode']}, {ran['replays']} replays",
                file=sys.stderr,
                flush=True,
            )
            write()
        ours.static = None
        left = None if deadline is None else deadline - time.monotonic() - 15
        static = hf_static(folder, pixels, gen, [[beams, batch] for batch in args.batches], args, workdir, left, name)
        _merge_hf_static(result, static, beams)
        write()


def _merge_hf_static(result: dict, static: dict, beams: int) -> None:
    column = result["hf_static_compiled"]
    done = [] if column["status"] == "not run yet" else [column["status"]]
    column["status"] = "; ".join(done + [f"{'greedy' if beams == 1 else f'beam{beams}'}: {static['status']}"])
    for key in ("transformers", "torch", "compiled"):
        if key in static:
            column[key] = static[key]
    for case, other in static["cases"].items():
        if case in result["cases"] and "tokens" in other:
            ref = result["cases"][case]["tokens"]["hf_eager"]
            other["identical_to_hf_eager"] = sum(a == b for a, b in zip(ref, other["tokens"]))
            other.update(throughput(other["images"], {"hf_static_compiled": other["times"]}))
        column["cases"][case] = other


def not_replayed(section: dict) -> list[str]:
    """Cases of a run that asked for CUDA graphs whose static column did not replay one (a capture that failed, or
    a decode that fell back to the eager loop): its numbers are not graph numbers."""
    return [
        f"{name} {case} ({c['graphs']['decode']})"
        for name, m in section["models"].items()
        if m.get("capture_requested")
        for case, c in m["cases"].items()
        if not c["graphs"]["replays"] or c["graphs"]["direct_steps"]
    ]


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
    p.add_argument(
        "--capture",
        choices=["auto", "on", "off"],
        default="auto",
        help="CUDA graphs for the static column (auto: on CUDA); asked for and not replayed fails the run",
    )
    p.add_argument("--hf-static-timeout-s", type=int, default=150, help="0: leave that column out")
    p.add_argument("--budget-s", type=int, default=0, help="do not start a real-size model past this (0: no bound)")
    p.add_argument("--workdir", default=os.environ.get("CAPTIONKIT_BENCH_DIR", "/tmp/captionkit-bench"))
    p.add_argument("--out", default="bench/gpu-results.json")
    p.add_argument("--section", default=None, help="key in the results file (default: decode_<device>)")
    p.add_argument("--cases-jsonl", default=None, help="append one JSON line per finished case here, flushed at once")
    args = p.parse_args(argv)
    args.label = {"section": args.section or f"decode_{args.device}"}
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    args.batches, args.runs = args.batches or plan["batches"], args.runs or plan["runs"]
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    section = {
        "mode": "quick" if args.quick else "full",
        "runs": args.runs,
        "machine_before": machine(),
        "prices": {k: {"usd_per_hour": INSTANCE_PRICES[k], "note": price_note(k)} for k in PRICED},
        "prices_read_on": PRICES_READ_ON,
        "models": {},
        "skipped": {},
    }
    write = lambda: write_section(Path(args.out), args.section or f"decode_{args.device}", section)  # noqa: E731
    deadline = started + args.budget_s if args.budget_s else None
    for name in args.models or plan["models"]:
        left = args.budget_s - (time.monotonic() - started)
        if args.budget_s and name != "tiny" and left < MODEL_MIN_S:
            section["skipped"][name] = f"{left:.0f} s left of the budget, under {MODEL_MIN_S} s"
            continue
        print(f"{name} ...", file=sys.stderr, flush=True)
        bench_model(name, args, workdir, section, write, deadline)
        section["machine_after"] = machine()
        write()
    unequal = [
        f"{name} {case}"
        for name, m in section["models"].items()
        for case, c in m["cases"].items()
        if not c["graphs_equal_eager"]
    ]
    if unequal:
        print(f"static decode tokens differ from the eager loop's: {', '.join(unequal)}", file=sys.stderr)
    eager = not_replayed(section)
    if eager:
        print(f"CUDA graphs were asked for but not replayed: {', '.join(eager)}", file=sys.stderr)
    return 1 if unequal or eager else 0


if __name__ == "__main__":
    sys.exit(main())
