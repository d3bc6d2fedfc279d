"""`python -m bench.load_phases`: `load_captioner` phase by phase against `import transformers` + `from_pretrained`.

Each measurement is a fresh process (imports cold in the interpreter, files warm in the page cache), the
variants in rotation; medians over runs: a restart (the file stamped), a first load (hashed), int8 with and
without its cached weights, and transformers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.timing import summary, vm_hwm_mib

VARIANTS = {
    "runtime": "the file verified before (stamped), programs checked and rebuilt from their description (a restart)",
    "runtime_first_load": "first load of this file here: one read hashes it, then the same checks and rebuild",
    "runtime_int8": "quantize=int8 with its int8 weights cached",
    "runtime_int8_first_load": "quantize=int8, nothing cached yet (quantizes, then caches the int8 weights)",
    "hf": "import transformers + from_pretrained (model, image processor, tokenizer) + generate",
}


def measure(variant: str, artifact: str, folder: str, cache: str) -> dict:
    """One cold load in this process: seconds per phase and the peak RSS."""
    t0 = time.perf_counter()
    import PIL.Image
    import torch

    image = PIL.Image.new("RGB", (320, 240), (180, 90, 40))
    phases: dict = {}
    if variant == "hf":
        import transformers

        phases["import_s"] = time.perf_counter() - t0
        t = time.perf_counter()
        model = transformers.VisionEncoderDecoderModel.from_pretrained(folder).eval()
        processor = transformers.AutoImageProcessor.from_pretrained(folder)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        phases["from_pretrained_s"] = time.perf_counter() - t
        t = time.perf_counter()
        with torch.inference_mode():
            ids = model.generate(pixel_values=processor(images=[image], return_tensors="pt").pixel_values)
        tokenizer.batch_decode(ids, skip_special_tokens=True)
    else:
        from runtime.captioner import LoadOptions, load_captioner

        phases["import_s"] = time.perf_counter() - t0
        t = time.perf_counter()
        captioner = load_captioner(
            artifact, "cpu", LoadOptions(quantize="int8" if "int8" in variant else None), cache_dir=cache
        )
        timings = captioner.load_phases
        phases["load_captioner_s"] = time.perf_counter() - t
        phases["integrity_s"] = timings["integrity_s"]
        phases["weights_s"] = timings.get("weights_s", 0.0)
        phases["rebuild_s"] = timings["programs_s"] - phases["weights_s"]
        phases["graph_passes_s"] = timings["graph_passes_s"]
        t = time.perf_counter()
        captioner.caption([image])
    phases["first_caption_s"] = time.perf_counter() - t
    phases["total_s"] = time.perf_counter() - t0
    phases["peak_rss_mib"] = round(vm_hwm_mib(), 1)
    return phases


def run(artifact: Path, folder: Path, variants: list[str], runs: int) -> dict:
    """`runs` fresh processes per variant, in rotation; medians per phase."""
    samples: dict[str, list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as warm:
        for variant in ("runtime", "runtime_int8"):  # fill the warm cache once: stamps and the int8 pack
            if variant in variants:
                measure_in_child(variant, artifact, folder, warm)
        for i in range(runs):
            for variant in variants[i % len(variants) :] + variants[: i % len(variants)]:
                with tempfile.TemporaryDirectory() as empty:
                    cache = empty if variant.endswith("first_load") else warm
                    samples[variant].append(measure_in_child(variant, artifact, folder, cache))
    result = {}
    for variant, rows in samples.items():
        result[variant] = {k: summary([r[k] for r in rows]) for k in rows[0]}
        result[variant]["about"] = VARIANTS[variant]
    return result


def measure_in_child(variant: str, artifact: Path, folder: Path, cache: str) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.load_phases",
            "--one",
            variant,
            "--artifact",
            str(artifact),
            "--folder",
            str(folder),
            "--cache",
            cache,
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.load_phases", description=__doc__)
    p.add_argument("--one", choices=list(VARIANTS), help="(internal) measure one load in this process")
    p.add_argument("--artifact", required=True)
    p.add_argument("--folder", required=True, help="the HF checkpoint folder the artifact was exported from")
    p.add_argument("--cache", default="", help="(internal) the local cache dir")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", default="bench/results.json")
    p.add_argument("--section", default="load_phases")
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.artifact, args.folder, args.cache)))
        return 0
    from bench.model import machine, write_section

    before = machine()
    result = run(Path(args.artifact), Path(args.folder), args.variants, args.runs)
    write_section(
        Path(args.out),
        args.section,
        {"artifact": args.artifact, "machine_before": before, "machine_after": machine(), "runs": args.runs, **result},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
