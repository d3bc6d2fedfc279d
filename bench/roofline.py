"""`python -m bench.roofline`: how near this CPU's limit a caption runs, per dtype and batch.

The limit is measured, not looked up: the median GFLOP/s of one large `torch.mm` in the dtype (what MKL/oneDNN
reach on these cores), printed beside the arithmetic ceiling the CPU's flags imply (cores x clock x vector lanes x
2 for a fused multiply-add x FMA units). The caption's work is counted, not estimated: `FlopCounterMode` counts
every matmul, convolution and attention the exported programs dispatch (the encoder alone, then the whole
caption), and the time is the median of the same calls in rotation with the reference matmul and copy.
Decode = whole caption minus the encoder.

A decode step at a small batch reads every weight once for a few rows, so its limit is memory, not arithmetic:
the bytes its matmuls read (operands counted as dispatched) per second are set against two measured bandwidths:
a large tensor copy (read plus write, both counted) and a sum over the same tensor (read only, what streaming a
weight through a matrix product can at most reach).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch  # bench/__init__.py sets OMP_WAIT_POLICY first
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from bench.timing import interleaved

LANES = {"float32": 16, "bfloat16": 32}  # AVX-512 lanes per vector; avx512_bf16's dot product takes pairs


def cpu_flags() -> set[str]:
    line = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "flags:")
    return set(line.split(":", 1)[1].split())


def ceiling(dtype: str, fma_units: int = 2) -> dict:
    """The arithmetic ceiling the flags imply, with its factors (the clock is /proc/cpuinfo's, not the turbo)."""
    mhz = next((float(line.split(":")[1]) for line in open("/proc/cpuinfo") if line.startswith("cpu MHz")), 0.0)
    cores = torch.get_num_threads()
    lanes = LANES[dtype] if "avx512f" in cpu_flags() else LANES[dtype] // 2
    if dtype == "bfloat16" and "avx512_bf16" not in cpu_flags():
        lanes = 0  # emulated: no bfloat16 dot product
    return {
        "cores": cores,
        "ghz": round(mhz / 1000, 3),
        "lanes": lanes,
        "fma_units": fma_units,
        "gflops": round(cores * mhz / 1000 * lanes * 2 * fma_units, 1),
        "amx": "amx_bf16" in cpu_flags(),
    }


COPY_MIB = 1024
MM_N = 4096


def limits(dtype: str, mm_n: int = MM_N, copy_mib: int = COPY_MIB) -> dict:
    """The two reference calls timed in every case's rotation, so they see the same machine load as the caption:
    an mm_n^3 `torch.mm` in `dtype` (2 * mm_n^3 FLOPs), a copy_mib MiB copy (read plus write) and a sum over the
    same copy_mib MiB (read only)."""
    a = torch.randn(mm_n, mm_n).to(getattr(torch, dtype))
    b = torch.randn(mm_n, mm_n).to(getattr(torch, dtype))
    src = torch.ones(copy_mib * 2**18)
    dst = torch.empty_like(src)
    return {"mm": lambda: torch.mm(a, b), "copy": lambda: dst.copy_(src), "read": lambda: src.sum()}


class _MatmulBytes(TorchDispatchMode):
    """Bytes of every tensor operand the matmuls read (weights, activations, caches), as dispatched."""

    OPS = (
        "aten.mm",
        "aten.addmm",
        "aten.bmm",
        "aten.linear",
        "aten.matmul",
        "aten.baddbmm",
        "mkldnn._linear_pointwise",
    )

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func).startswith(self.OPS):
            self.bytes += sum(a.numel() * a.element_size() for a in args if isinstance(a, torch.Tensor))
        return func(*args, **(kwargs or {}))


def significant(value: float, digits: int = 3) -> float:
    """`value` to `digits` significant figures: a rate of 0.6 GFLOP/s and one of 1800 keep the same precision."""
    return float(f"{value:.{digits}g}")


def _packed_linear_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """oneDNN's packed linear (the CPU decode layout's several rows): x [..., in] times a packed [out, in] weight."""
    rows = 1
    for size in x_shape[:-1]:
        rows *= size
    return 2 * rows * x_shape[-1] * w_shape[0]


PACKED = {torch.ops.mkldnn._linear_pointwise: _packed_linear_flops}  # FlopCounterMode has no formula for it


def counted(fn) -> tuple[int, int]:
    """(FLOPs, matmul operand bytes) of one call."""
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=PACKED) as counter:
        fn()
    with torch.inference_mode(), _MatmulBytes() as reads:
        fn()
    return counter.get_total_flops(), reads.bytes


def caption_work(
    artifact: Path, batches: list[int], beams: list[int], runs: int, mm_n: int = MM_N, copy_mib: int = COPY_MIB
) -> dict:
    """Per case (beams at batch): encoder and decode FLOPs and bytes, median times, GFLOP/s and GB/s."""
    from bench.model import bench_images
    from runtime.captioner import load_captioner

    captioner = load_captioner(artifact, device="cpu")
    references = limits(captioner.manifest["dtype"], mm_n, copy_mib)
    rows = {}
    for batch in batches:
        pixels = captioner.preprocess(bench_images("vit-gpt2-base", batch)).to(captioner.dtype)
        encoder_flops, encoder_bytes = counted(lambda: captioner.encoder(pixels))
        for beam in beams:
            ids = captioner.generate_ids(pixels, num_beams=beam)
            caption_flops, caption_bytes = counted(lambda: captioner.generate_ids(pixels, num_beams=beam))

            def encode():
                with torch.inference_mode():
                    captioner.encoder(pixels)

            def caption(beam=beam):
                with torch.inference_mode():
                    captioner.generate_ids(pixels, num_beams=beam)

            timing = interleaved({"encoder": encode, "caption": caption, **references}, runs)
            enc_s, cap_s = timing["encoder"]["median_s"], timing["caption"]["median_s"]
            peak = 2 * mm_n**3 / timing["mm"]["median_s"] / 1e9
            bandwidth = 2 * copy_mib * 2**20 / timing["copy"]["median_s"] / 1e9
            read = copy_mib * 2**20 / timing["read"]["median_s"] / 1e9
            steps = max(len(row) for row in ids)
            decode_flops, decode_s = caption_flops - encoder_flops, max(cap_s - enc_s, 1e-9)
            rates = {
                "encoder_gflops": encoder_flops / enc_s / 1e9,
                "decode_gflops": decode_flops / decode_s / 1e9,
                "caption_gflops": caption_flops / cap_s / 1e9,
                "decode_gb_s": (caption_bytes - encoder_bytes) / decode_s / 1e9,
            }
            row = {
                "batch": batch,
                "beams": beam,
                "tokens_per_image": sum(map(len, ids)) / batch,
                "steps": steps,
                "timing": timing,
                "encoder_flops": encoder_flops,
                "decode_flops": decode_flops,
                "encoder_gflop": round(encoder_flops / 1e9, 2),
                "decode_gflop": round(decode_flops / 1e9, 2),
                "caption_gflop_per_image": round(caption_flops / 1e9 / batch, 2),
                **{name: significant(value) for name, value in rates.items()},
                "decode_mib_per_step": round((caption_bytes - encoder_bytes) / steps / 2**20, 1),
                "decode_step_ms": round(decode_s / steps * 1000, 2),
                "images_per_s": round(batch / cap_s, 2),
                "peak_gflops": significant(peak),
                "copy_gb_s": significant(bandwidth),
                "read_gb_s": significant(read),
            }
            # shares come from the unrounded rates: a tiny reference (the tests' 128^3 matmul) rounds badly
            for part in ("encoder", "decode", "caption"):
                row[f"{part}_of_peak"] = round(rates[f"{part}_gflops"] / peak, 3)
            row["decode_of_bandwidth"] = round(rates["decode_gb_s"] / bandwidth, 3)
            row["decode_of_read"] = round(rates["decode_gb_s"] / read, 3)
            rows[f"{'greedy' if beam == 1 else f'beam{beam}'}@batch{batch}"] = row
    return rows


def run(artifacts: dict[str, Path], batches: list[int], beams: list[int], runs: int) -> dict:
    return {
        dtype: {
            "artifact": str(artifact),
            "ceiling": ceiling(dtype),
            "cases": caption_work(artifact, batches, beams, runs),
        }
        for dtype, artifact in artifacts.items()
    }


def table(section: dict) -> list[str]:
    """BENCHMARKS.md rows: one per dtype and batch."""
    lines = [
        "| dtype | case | mm peak GFLOP/s | encoder GFLOP/s (of peak) | decode GFLOP/s (of peak) | "
        "decode GB/s (of copy / read-only bandwidth) | decode step ms | whole caption GFLOP/s (of peak) | "
        "GFLOP per image | images/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dtype, d in section["dtypes"].items():
        for case, r in d["cases"].items():
            lines.append(
                f"| {dtype} | {case} | {r['peak_gflops']:.0f} | {r['encoder_gflops']:.0f} "
                f"({r['encoder_of_peak']:.0%}) | {r['decode_gflops']:.0f} ({r['decode_of_peak']:.0%}) | "
                f"{r['decode_gb_s']:.1f} ({r['decode_of_bandwidth']:.0%}"
                + (f" / {r['decode_of_read']:.0%}" if "decode_of_read" in r else "")
                + f") | {r['decode_step_ms']:.1f} | "
                f"{r['caption_gflops']:.0f} ({r['caption_of_peak']:.0%}) | "
                f"{r['caption_gflop_per_image']:.1f} | {r['images_per_s']:.2f} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.roofline", description=__doc__)
    p.add_argument("--workdir", default="bench/work", help="where the ViT-GPT2 base checkpoint and exports live")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=sorted(LANES))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--beams", nargs="+", type=int, default=[1, 4])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--out", default="bench/results.json")
    p.add_argument("--section", default="roofline_vit_gpt2_base")
    args = p.parse_args(argv)
    from bench import models
    from bench.model import export_artifact, machine, write_section

    workdir = Path(args.workdir)
    folder = models.checkpoint("vit-gpt2-base", workdir)
    artifacts = {
        dtype: export_artifact(folder, workdir / f"vit-gpt2-base-{dtype}-b8.pt2", dtype, 8) for dtype in args.dtypes
    }
    before = machine()
    section = {
        "model": "vit-gpt2-base",
        "runs": args.runs,
        "machine_before": before,
        "dtypes": run(artifacts, args.batches, args.beams, args.runs),
    }
    section["machine_after"] = machine()
    write_section(Path(args.out), args.section, section)
    print("\n".join(table(section)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
