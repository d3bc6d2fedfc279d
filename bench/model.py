"""`python -m bench.model`: HF `generate` vs the runtime on exported and AOTInductor programs, same weights and images.

For each model, dtype, batch and beam width the three run in rotation in this one process; tokens are
compared (same dtype: identical expected; a mismatch at a near-tie is reported, not fatal). Then our best
setting is set against HF's default float32 pipeline, with how many captions agree.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch  # bench/__init__.py sets OMP_WAIT_POLICY first

from bench import models
from bench.cases import append_case
from bench.timing import interleaved, ratio
from runtime.load_policy import BACKENDS, QUANTIZE_MODES

QUANTIZE = QUANTIZE_MODES  # contenders, not same-dtype: their captions are compared, not asserted
QUICK = {"models": ["tiny", "demo"], "batches": [1, 8], "runs": 5}
FULL = {"models": ["vit-gpt2-base", "blip-base", "demo"], "batches": [1, 8], "runs": 3}
SMALL = ("tiny", "demo")  # cheap in every dtype


def native_bf16() -> bool:
    """Whether this CPU has bfloat16 dot products (AVX512-BF16 or AMX); without them bf16 runs emulated."""
    flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "")
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def default_dtypes(name: str, device: str) -> list[str]:
    """float32 and bfloat16, except bfloat16 for the real-size models on a CPU that can only emulate it."""
    if device == "cpu" and name not in SMALL and not native_bf16():
        return ["float32"]  # measured 4.5x slower than float32 on an AVX2 CPU; 25+ minutes for nothing
    return ["float32", "bfloat16"]


def export_artifact(folder: Path, out: Path, dtype: str, max_batch: int) -> Path:
    """The .pt2 for `folder` in `dtype` (exported once; the exporter proves parity with HF before writing)."""
    from export.cli import main as export_main

    if not out.exists():
        code = export_main(["--model", str(folder), "--out", str(out), "--dtype", dtype, "--max-batch", str(max_batch)])
        if code != 0:
            raise RuntimeError(f"export of {folder} in {dtype} failed (exit {code})")
    return out


def _until_eos(rows, eos):
    return [r[: r.index(eos) + 1] if eos in r else r for r in rows]


def bench_images(name: str, count: int) -> list:
    """The demo model sees its own kind of scene (captions of different lengths); others smooth noise."""
    from export.cli import parity_images

    if name == "demo":
        from demo.shapes import make_dataset

        return [image for image, _ in make_dataset(count, seed=7)]
    return parity_images([], count, seed=1)


def bench_dtype(
    name: str,
    folder: Path,
    dtype: str,
    workdir: Path,
    batches,
    runs: int,
    device: str,
    backends=BACKENDS,
    cases_jsonl=None,
    label: dict | None = None,
) -> dict:
    """Every (batch, beams) case for one model in one dtype: HF, exported, aoti timings and token agreement; each
    case also one line of `cases_jsonl` (bench.cases) as soon as it is measured."""
    from export.load import load
    from export.settings import hf_generate_kwargs
    from runtime.captioner import LoadOptions, load_captioner
    from runtime.errors import CaptureFailed

    max_batch = max(batches)
    artifact = export_artifact(folder, workdir / f"{name}-{dtype}-b{max_batch}.pt2", dtype, max_batch)
    loaded = load(str(folder), None, dtype)
    hf = loaded.model.to(device)
    exported = load_captioner(artifact, device)
    ours, aoti_s = {"exported": exported}, None
    if "aoti" in backends:
        started = time.perf_counter()
        ours["aoti"] = load_captioner(artifact, device, LoadOptions(backend="aoti"), cache_dir=workdir / "aoti-cache")
        aoti_s = time.perf_counter() - started
    if device == "cpu" and dtype == "float32":  # load-time CPU quantization of the same float artifact
        ours |= {mode: load_captioner(artifact, device, LoadOptions(quantize=mode)) for mode in QUANTIZE}
    gen = exported.manifest["generation"]
    beam_widths = sorted({1, min(4, exported.max_beams)})
    for beams in beam_widths:  # on CUDA: every bucket captured here, on the thread that decodes, before timing
        try:
            exported.prepare(beams)
        except CaptureFailed as exc:
            print(f"  {name} {dtype}: {exc}", file=sys.stderr, flush=True)
    images = bench_images(name, max_batch)
    pixels = loaded.processor(images=images, return_tensors="pt")["pixel_values"]
    out = {
        "artifact_mib": round(artifact.stat().st_size / 2**20, 1),
        "aoti_backend": ours["aoti"].backend if "aoti" in ours else None,
        "aoti_load_or_compile_s": aoti_s and round(aoti_s, 1),
        "decode": exported.decode_status(),
        "cases": {},
    }
    for beams in beam_widths:
        for batch in batches:
            px = pixels[:batch]
            hf_px = px.to(device, getattr(torch, dtype))
            kwargs = hf_generate_kwargs(gen, beams)
            tokens = {}

            def run_hf():
                with torch.inference_mode():
                    seq = hf.generate(**loaded.family.hf_inputs(loaded, hf_px), **kwargs)
                tokens["hf"] = _until_eos([r[1:].tolist() for r in seq], gen["eos_token_id"])

            def run(captioner, key):
                def go():
                    tokens[key] = _until_eos(captioner.generate_ids(px, num_beams=beams), gen["eos_token_id"])
                    if device == "cuda":
                        torch.cuda.synchronize()

                return go

            times = interleaved({"hf": run_hf, **{key: run(c, key) for key, c in ours.items()}}, runs)
            case = f"{'greedy' if beams == 1 else f'beam{beams}'}@batch{batch}"
            same = {k: sum(a == b for a, b in zip(tokens["hf"], tokens[k])) for k in ours}
            out["cases"][case] = {
                "times": times,
                "tokens": tokens,
                "images": batch,
                "mean_new_tokens": sum(map(len, tokens["hf"])) / batch,
                "identical_to_hf": same,
                "speedup_vs_hf": {k: round(ratio(times["hf"], times[k]), 3) for k in ours},
            }
            append_case(
                cases_jsonl,
                {
                    **(label or {}),
                    "stage": "model",
                    "model": name,
                    "dtype": dtype,
                    "case": case,
                    "images": batch,
                    "hf_s": times["hf"]["median_s"],
                    "ours_s": times["exported"]["median_s"],
                    "speedup_vs_hf": out["cases"][case]["speedup_vs_hf"]["exported"],
                    "identical_to_hf": same["exported"],
                    "decode": exported.decode_status()["decode"],
                },
            )
            print(
                f"  {name} {dtype} {case}: hf {times['hf']['median_s']:.3f}s "
                + " ".join(f"{k} {times[k]['median_s']:.3f}s ({same[k]}/{batch} same)" for k in ours),
                file=sys.stderr,
                flush=True,
            )
    hf = exported = loaded = ours = None  # the models go before the next dtype loads
    gc.collect()
    return out


def best_vs_hf_float32(per_dtype: dict) -> dict:
    """Per case: our fastest setting against HF float32 with how many captions match, and the fastest keeping all."""
    result = {}
    base = per_dtype.get("float32")
    if not base:
        return result
    for case, ref in base["cases"].items():
        options = []
        for dtype, d in per_dtype.items():
            for backend, times in d["cases"].get(case, {}).get("times", {}).items():
                if backend == "hf":
                    continue
                ours = d["cases"][case]["tokens"][backend]
                agree = sum(a == b for a, b in zip(ref["tokens"]["hf"], ours))
                label = f"exported {dtype} + {backend} quantization" if backend in QUANTIZE else f"{backend} {dtype}"
                options.append((times["median_s"], label, agree))
        fastest = min(options)
        keeping = min((o for o in options if o[2] == ref["images"]), default=None)
        speed = lambda seconds: round(ref["times"]["hf"]["median_s"] / seconds, 3)  # noqa: E731
        result[case] = {
            "best": fastest[1],
            "speedup": speed(fastest[0]),
            "captions_agree": fastest[2],
            "images": ref["images"],
            "best_all_captions_equal": keeping and {"best": keeping[1], "speedup": speed(keeping[0])},
        }
    return result


def machine() -> dict:
    """Where and under what load the numbers were taken."""
    load = os.getloadavg()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default (libgomp)"),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "loadavg_1_5_15": [round(x, 2) for x in load],
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.model", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny + demo models only (a smoke test, minutes)")
    p.add_argument("--models", nargs="*", help="override the model list (vit-gpt2-base blip-base tiny demo)")
    p.add_argument("--dtypes", nargs="*", default=None, help="default: float32 and bfloat16 (see default_dtypes)")
    p.add_argument("--batches", nargs="*", type=int, default=None)
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--backends", nargs="*", default=list(BACKENDS), help="runtime backends to time against HF")
    p.add_argument("--workdir", default=os.environ.get("CAPTIONKIT_BENCH_DIR", "/tmp/captionkit-bench"))
    p.add_argument("--out", default="bench/results.json", help="results JSON (merged: other sections kept)")
    p.add_argument("--section", default=None, help="key in the results file (default: model_cpu / model_cuda)")
    p.add_argument("--cases-jsonl", default=None, help="append one JSON line per finished case here, flushed at once")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    plan = dict(QUICK if args.quick else FULL)
    models_wanted = args.models or plan["models"]
    batches, runs = args.batches or plan["batches"], args.runs or plan["runs"]
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    section = {"mode": "quick" if args.quick else "full", "runs": runs, "machine_before": machine(), "models": {}}
    if args.device == "cuda" and "aoti" in args.backends:
        from runtime.load_policy import AOTI_ON_CUDA

        section["aoti_not_run"] = AOTI_ON_CUDA
        args.backends = [b for b in args.backends if b != "aoti"]
    for name in models_wanted:
        try:
            folder = models.checkpoint(name, workdir)
        except FileNotFoundError as exc:
            print(f"skipping {name}: {exc}", file=sys.stderr)
            continue
        per_dtype = {}
        for dtype in args.dtypes or default_dtypes(name, args.device):
            print(f"{name} {dtype} ...", file=sys.stderr, flush=True)
            per_dtype[dtype] = bench_dtype(
                name,
                folder,
                dtype,
                workdir,
                batches,
                runs,
                args.device,
                args.backends,
                args.cases_jsonl,
                {"section": args.section or f"model_{args.device}"},
            )
            section["models"][name] = {"dtypes": per_dtype, "best_vs_hf_float32": best_vs_hf_float32(per_dtype)}
            section["machine_after"] = machine()
            write_section(Path(args.out), args.section or f"model_{args.device}", section)  # after each dtype
    return 0


def write_section(path: Path, key: str, section: dict) -> None:
    """Merge `section` into the results JSON under `key`, keeping the other benchmarks' sections."""
    results = json.loads(path.read_text()) if path.exists() else {}
    results[key] = {"date": date.today().isoformat(), **section}  # the report gives each figure its date
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")  # a stage killed mid-write must not lose the earlier sections
    partial.write_text(json.dumps(results, indent=1))
    partial.replace(path)
    print(f"wrote {path} [{key}]", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
