"""Time a random-weight Qwen2-VL at Qwen2-VL-2B's widths (fewer layers) against HF generate, same weights and device.

`python -m bench.qwen_vl_widths [--device cuda --dtype bfloat16] [--out bench/results.json --section S]`: on this
CPU in float32 (the issue's same-dtype comparison), on the lent GPU in bfloat16 (bench/gpu.sh stage 5).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.cases import append_case

# Qwen2-VL-2B-Instruct's config.json widths; depths are arguments (32 vision and 28 text layers in the real one)
TEXT = dict(
    hidden_size=1536,
    intermediate_size=8960,
    num_attention_heads=12,
    num_key_value_heads=2,
    vocab_size=151936,
    rms_norm_eps=1e-6,
    max_position_embeddings=32768,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
)
VISION = dict(embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4, patch_size=14)


def build(folder: Path, vision_layers: int, text_layers: int) -> Path:
    """Save the random checkpoint with the tiny tokenizer and chat template (ids past its vocabulary never decode)."""
    import transformers

    from checkpoints.qwen_vl_tiny import QWEN2_TEMPLATE, _tokenizer

    tok = _tokenizer(QWEN2_TEMPLATE)
    ids = {
        k: tok.convert_tokens_to_ids(t)
        for k, t in (
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        )
    }
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    config = transformers.Qwen2VLConfig(
        text_config={**TEXT, "num_hidden_layers": text_layers, "eos_token_id": eos},
        vision_config={**VISION, "depth": vision_layers},
        tie_word_embeddings=True,
        **ids,
    )
    torch.manual_seed(0)
    model = transformers.Qwen2VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = eos, 0
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    transformers.models.qwen2_vl.image_processing_pil_qwen2_vl.Qwen2VLImageProcessorPil().save_pretrained(folder)
    return folder


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_initialized():
            torch.cuda.synchronize()  # HF's generate may return before the last kernels ran
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    from export import archive, load, settings, trace
    from export.cli import build_manifest, parity_images
    from export.settings import hf_generate_kwargs
    from runtime.captioner import load_captioner
    from runtime.errors import CaptureFailed

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--vision-layers", type=int, default=4)
    p.add_argument("--text-layers", type=int, default=4)
    p.add_argument("--new-tokens", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    p.add_argument("--out", help="merge the report into this results JSON (bench.model.write_section)")
    p.add_argument("--section", default="qwen_vl_widths")
    p.add_argument("--cases-jsonl", default=None, help="append one JSON line per batch here, flushed at once")
    args = p.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        folder = build(Path(tmp) / "ckpt", args.vision_layers, args.text_layers)
        loaded = load.load(str(folder), dtype=args.dtype, image_size=448)
        gen = settings.generation_settings(
            loaded.model, loaded.family, args.new_tokens, 1, start_token_id=loaded.extras["start_token_id"]
        )
        encoder, step, cache = loaded.family.wrap(loaded, gen["max_new_tokens"])
        started = time.perf_counter()
        programs = trace.export_programs(
            encoder, step, (448, 448), cache, gen["max_new_tokens"], max(args.batches), 1, dtype
        )
        export_s = time.perf_counter() - started
        out = Path(tmp) / "qwen.pt2"
        manifest = build_manifest(
            loaded,
            gen,
            loaded.family.preprocessing(loaded),
            cache,
            argparse.Namespace(dtype=args.dtype, max_batch=max(args.batches)),
            (448, 448),
            1,
        )
        tok_json = loaded.tokenizer.backend_tokenizer.to_str()
        archive.write_archive(out, programs, tok_json, manifest)
        archive.describe_programs(out, programs, tok_json, manifest)
        captioner = load_captioner(out, device=args.device)
        try:
            captioner.prepare()  # on CUDA: the decode graphs, captured on this thread before anything is timed
        except CaptureFailed as exc:
            print(f"  {exc}", file=sys.stderr, flush=True)
        hf_model = loaded.model.to(args.device)
        pixels = loaded.family.hf_pixels(loaded, parity_images([], max(args.batches)))
        prompt = loaded.family.hf_prompt_length(loaded)
        kwargs = hf_generate_kwargs(gen, 1, loaded.family)
        report = {
            "cpu": _cpu(),
            "threads": torch.get_num_threads(),
            "layers": [args.vision_layers, args.text_layers],
            "new_tokens": args.new_tokens,
            "export_s": round(export_s, 1),
            "image": "448x448 (256 tokens)",
            "device": args.device,
            "dtype": args.dtype,
            "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        }

        def hf_inputs(px):  # the prompt ids and grid HF's generate takes, on the device (pixels already there)
            return {
                k: v.to(args.device) if torch.is_tensor(v) else v
                for k, v in loaded.family.hf_inputs(loaded, px).items()
            }

        for batch in args.batches:
            px = pixels[:batch].to(args.device, dtype)
            with torch.inference_mode():
                hf = hf_model.generate(**hf_inputs(px), **kwargs)[:, prompt:].tolist()
                ours = captioner.generate_ids(px)
                report[f"same_tokens@{batch}"] = [r[: len(o)] for r, o in zip(hf, ours)] == ours
                report[f"tokens@{batch}"] = [len(o) for o in ours]
                report[f"hf_generate_s@{batch}"] = round(
                    _median(lambda: hf_model.generate(**hf_inputs(px), **kwargs), args.repeats), 2
                )
                report[f"runtime_s@{batch}"] = round(_median(lambda: captioner.generate_ids(px), args.repeats), 2)
            report["decode"] = captioner.decode_status()
            append_case(
                args.cases_jsonl,
                {
                    "section": args.section,
                    "stage": "qwen",
                    "dtype": args.dtype,
                    "batch": batch,
                    "hf_generate_s": report[f"hf_generate_s@{batch}"],
                    "runtime_s": report[f"runtime_s@{batch}"],
                    "same_tokens": report[f"same_tokens@{batch}"],
                    "decode": report["decode"]["decode"],
                },
            )
        print(json.dumps(report))
        if args.out:
            from bench.model import write_section

            write_section(Path(args.out), args.section, report)


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


if __name__ == "__main__":
    main()
