"""`python -m bench.peers` (`make bench-peers`): the CPU caption against its peers, side by side in one process.

Runs in .peers-venv (bench/peers_env.sh), where optimum chooses its own transformers and the project's pins
stay: HF `generate` eager (and with a static cache), ONNX Runtime through optimum's `ORTModelForVision2Seq` in
float32 and with ORT's dynamic int8 quantization, OpenVINO through optimum-intel, and the runtime on the exported
programs (float32 and `--quantize int8`), all on the same weights and the same pixel batch, greedy, in rotation.
A peer that fails to export, load or run is recorded with its error, quoted, and left out of the timing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path

import torch  # bench/__init__.py sets OMP_WAIT_POLICY first

from bench.timing import interleaved, ratio

BASELINE = "hf_eager"
# contender -> what it is, in the report's words; the runtime's two are ours, the rest its peers
LABELS = {
    "hf_eager": "HF generate (eager)",
    "hf_static": "HF generate, static cache + torch.compile",
    "ort": "ONNX Runtime float32",
    "ort_int8": "ONNX Runtime dynamic int8",
    "openvino": "OpenVINO float32",
    "ours": "exported float32",
    "ours_int8": "exported + int8",
}
PACKAGES = ("torch", "transformers", "optimum", "optimum-onnx", "onnxruntime", "onnx", "optimum-intel", "openvino")


def versions() -> dict:
    """The installed version of every package a column depends on (None: not installed)."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def error_text(exc: BaseException) -> str:
    """An exception as one quotable line: its type, message (cut at 700 characters) and the innermost frame."""
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" (at {Path(frame.filename).name}:{frame.lineno} in {frame.name})" if frame else ""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:700]}{where}"


def until_eos(rows: list[list[int]], eos: int) -> list[list[int]]:
    """Each row cut after its first EOS, so a finished row's padding does not count as a difference."""
    return [r[: r.index(eos) + 1] if eos in r else r for r in rows]


def ort_session_options(spinning: bool):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same cores the torch contenders use
    # torch runs with OMP_WAIT_POLICY=PASSIVE here (bench/__init__.py); ORT's spin-waiting is the same knob
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


def ort_export(folder: Path, out: Path) -> Path:
    """optimum's ONNX export of the HF folder (encoder, decoder, decoder with past), once."""
    from optimum.onnxruntime import ORTModelForVision2Seq

    if not any(out.glob("*.onnx")):
        ORTModelForVision2Seq.from_pretrained(folder, export=True).save_pretrained(out)
    return out


def ort_quantize(source: Path, out: Path) -> Path:
    """ORT's dynamic int8 quantization of every ONNX file of `source`, under the same file names in `out`."""
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    if any(out.glob("*.onnx")):
        return out
    flags = next(
        (line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), ""
    ).split()
    make = AutoQuantizationConfig.avx512_vnni if "avx512_vnni" in flags else AutoQuantizationConfig.avx2
    config = make(is_static=False, per_channel=False)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns("*.onnx", "*.onnx_data"))
    for onnx in sorted(source.glob("*.onnx")):
        written = staging / "q"
        ORTQuantizer.from_pretrained(source, file_name=onnx.name).quantize(save_dir=written, quantization_config=config)
        (written / f"{onnx.stem}_quantized.onnx").rename(staging / onnx.name)
        shutil.rmtree(written)
    staging.rename(out)
    return out


def build(name: str, folder: Path, artifact: Path, workdir: Path, spinning: bool):
    """The loaded contender `name`: a callable from a pixel batch and greedy settings to token rows."""
    if name in ("hf_eager", "hf_static"):
        from transformers import VisionEncoderDecoderModel

        model = VisionEncoderDecoderModel.from_pretrained(folder).eval()
        extra = {}
        if name == "hf_static":
            from transformers import CompileConfig

            # transformers compiles a static-cache forward only on CUDA unless told to compile on every device
            compile_config = CompileConfig()
            compile_config._compile_all_devices = True
            extra = {"cache_implementation": "static", "compile_config": compile_config}

        def generate(px, kwargs):
            return model.generate(pixel_values=px, **kwargs, **extra)[:, 1:].tolist()

        generate.model = model  # whether transformers compiled it shows on the model after the first call
        return generate
    if name in ("ort", "ort_int8"):
        from optimum.onnxruntime import ORTModelForVision2Seq

        onnx = ort_export(folder, workdir / "onnx-float32")
        if name == "ort_int8":
            onnx = ort_quantize(onnx, workdir / "onnx-int8")
        model = ORTModelForVision2Seq.from_pretrained(onnx, session_options=ort_session_options(spinning))
        return lambda px, kwargs: model.generate(pixel_values=px, **kwargs)[:, 1:].tolist()
    if name == "openvino":
        from optimum.intel import OVModelForVision2Seq

        model = OVModelForVision2Seq.from_pretrained(folder, export=True)
        return lambda px, kwargs: model.generate(pixel_values=px, **kwargs)[:, 1:].tolist()
    from runtime.captioner import LoadOptions, load_captioner

    captioner = load_captioner(artifact, "cpu", LoadOptions(quantize="int8" if name == "ours_int8" else None))
    return lambda px, kwargs: captioner.generate_ids(px, num_beams=1)


def run(
    folder: Path, artifact: Path, workdir: Path, contenders: list[str], batches: list[int], runs: int, spinning: bool
) -> dict:
    """Load each contender (its error recorded if it fails), then per batch time them in rotation on one pixel
    batch and compare every contender's tokens with HF eager's."""
    from bench.model import bench_images
    from runtime.captioner import load_captioner

    reference = load_captioner(artifact, "cpu")
    gen = reference.manifest["generation"]
    kwargs = {"max_new_tokens": gen["max_new_tokens"], "num_beams": 1, "do_sample": False}
    pixels = reference.preprocess(bench_images("vit-gpt2-base", max(batches)))
    del reference
    loaded, errors, load_s = {}, {}, {}
    for name in contenders:
        started = time.perf_counter()
        try:
            fn = build(name, folder, artifact, workdir, spinning)
            with torch.inference_mode():
                fn(pixels[:1], kwargs)  # the first call: a peer that cannot run this family fails here
            loaded[name] = fn
        except Exception as exc:  # noqa: BLE001 - a peer's failure is a result, quoted once
            errors[name] = error_text(exc)
        load_s[name] = round(time.perf_counter() - started, 1)
        print(
            f"  {name}: {'ready' if name in loaded else errors[name]} ({load_s[name]} s)", file=sys.stderr, flush=True
        )
    cases = {}
    for batch in batches:
        px, tokens, failed = pixels[:batch], {}, {}

        def timed(name, px=px, tokens=tokens):
            def go():
                with torch.inference_mode():
                    tokens[name] = until_eos(loaded[name](px, kwargs), gen["eos_token_id"])

            return go

        running = {}
        for name in loaded:  # the warm-up call: a peer that fails at this batch is recorded and left out
            try:
                timed(name)()
                running[name] = timed(name)
            except Exception as exc:  # noqa: BLE001
                failed[name] = error_text(exc)
                print(f"  {name} at batch {batch}: {failed[name]}", file=sys.stderr, flush=True)
        times = interleaved(running, runs, warmup=0)
        base = tokens.get(BASELINE)
        cases[f"greedy@batch{batch}"] = {
            "images": batch,
            "times": times,
            "tokens": tokens,
            "errors": failed,
            "mean_new_tokens": base and sum(map(len, base)) / batch,
            "identical_to_hf": {n: sum(a == b for a, b in zip(base, t)) for n, t in tokens.items()} if base else {},
            "speedup_vs_hf": {n: round(ratio(times[BASELINE], t), 3) for n, t in times.items()} if base else {},
        }
        print(
            f"  batch {batch}: " + ", ".join(f"{n} {t['median_s']:.3f}s" for n, t in times.items()),
            file=sys.stderr,
            flush=True,
        )
    compiled = {name: hasattr(fn.model, "_compiled_call") for name, fn in loaded.items() if hasattr(fn, "model")}
    return {"cases": cases, "errors": errors, "load_and_first_call_s": load_s, "hf_compiled": compiled}


def prepare(workdir: Path) -> tuple[Path, Path]:
    """The ViT-GPT2 base folder and its float32 .pt2 under `workdir`, built once: in the project's venv, whose
    transformers the exporter needs (the peers' venv has optimum's)."""
    from bench import models
    from bench.model import export_artifact

    folder = models.checkpoint("vit-gpt2-base", workdir)
    return folder, export_artifact(folder, workdir / "vit-gpt2-base-float32-b8.pt2", "float32", 8)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    p.add_argument("--workdir", default="/tmp/captionkit-peers", help="the checkpoint, its .pt2 and the ONNX exports")
    p.add_argument("--prepare", action="store_true", help="only build the checkpoint and its .pt2 (project venv)")
    p.add_argument("--folder", help="the HF folder (default: WORKDIR/vit-gpt2-base, made by --prepare)")
    p.add_argument("--artifact", help="its .pt2 (default: WORKDIR/vit-gpt2-base-float32-b8.pt2)")
    p.add_argument("--contenders", nargs="+", default=list(LABELS), choices=list(LABELS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--ort-spinning", action="store_true", help="let ORT's threads spin-wait (default: off)")
    p.add_argument("--out", default="bench/results.json")
    p.add_argument("--section", default="peers_cpu_vit_gpt2_base")
    p.add_argument("--title", default="ViT-GPT2 base against its CPU peers")
    args = p.parse_args(argv)
    from bench.model import machine, write_section

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.prepare:
        print("\n".join(map(str, prepare(workdir))))
        return 0
    folder = Path(args.folder or workdir / "vit-gpt2-base")
    artifact = Path(args.artifact or workdir / "vit-gpt2-base-float32-b8.pt2")
    if not (folder / "config.json").exists() or not artifact.exists():
        print(
            f"no {folder} or {artifact}: run `python -m bench.peers --prepare --workdir {workdir}` in the "
            "project's venv first (`make bench-peers` does)",
            file=sys.stderr,
        )
        return 2
    section = {
        "title": args.title,
        "model": folder.name,
        "artifact": str(artifact),
        "runs": args.runs,
        "versions": versions(),
        "ort_spinning": args.ort_spinning,
        "labels": LABELS,
        "nice": os.nice(0),
        "machine_before": machine(),
    }
    section |= run(folder, artifact, workdir, args.contenders, args.batches, args.runs, args.ort_spinning)
    section["machine_after"] = machine()
    write_section(Path(args.out), args.section, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
