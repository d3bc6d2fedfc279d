"""Child of bench.gpu_decode: HF `generate` with a static cache (compiled by transformers on CUDA), result per case.

Run in its own process so that a compile which hangs, fails or takes the process down costs only this column;
the JSON is rewritten after each case, so a timeout keeps the cases that finished.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch  # bench/__init__.py sets OMP_WAIT_POLICY first

from bench.cases import append_case
from bench.model import _until_eos
from bench.timing import summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hf_static", description=__doc__)
    p.add_argument("--folder", required=True)
    p.add_argument("--pixels", required=True, help="a torch.save'd pixel batch (weights_only)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--generation", required=True, help="the manifest's generation block, JSON")
    p.add_argument("--cases", required=True, help="JSON list of [beams, batch]")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--out", required=True)
    p.add_argument("--cases-jsonl", default=None, help="append one JSON line per finished case here, flushed at once")
    p.add_argument("--label", default="{}", help="JSON fields every line of --cases-jsonl starts with")
    args = p.parse_args(argv)
    import transformers

    from export.load import load
    from export.settings import hf_generate_kwargs

    gen = json.loads(args.generation)
    loaded = load(args.folder, None, "float32")
    hf = loaded.model.to(args.device)
    pixels = torch.load(args.pixels, weights_only=True)
    result = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "compiled": args.device == "cuda",
        "cases": {},
    }
    out = Path(args.out)
    for beams, batch in json.loads(args.cases):
        case = f"{'greedy' if beams == 1 else f'beam{beams}'}@batch{batch}"
        px = pixels[:batch].to(args.device)
        kwargs = {**hf_generate_kwargs(gen, beams), "cache_implementation": "static"}
        tokens = []

        def run():
            with torch.inference_mode():
                seq = hf.generate(**loaded.family.hf_inputs(loaded, px), **kwargs)
            tokens[:] = _until_eos([r[1:].tolist() for r in seq], gen["eos_token_id"])
            if args.device == "cuda":
                torch.cuda.synchronize()

        try:
            started = time.perf_counter()
            run()  # the first call of a shape compiles
            first_s = time.perf_counter() - started
            times = []
            for _ in range(args.runs):
                started = time.perf_counter()
                run()
                times.append(time.perf_counter() - started)
            result["cases"][case] = {
                "images": batch,
                "first_call_s": round(first_s, 2),
                "times": summary(times),
                "tokens": list(tokens),
            }
        except Exception as exc:  # noqa: BLE001 - a family the static cache or the compile does not support
            result["cases"][case] = {"images": batch, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        print(
            f"  hf static {case}: {result['cases'][case].get('times', result['cases'][case].get('error'))}",
            file=sys.stderr,
            flush=True,
        )
        partial = out.with_name(out.name + ".partial")  # a kill mid-write leaves the last whole file
        partial.write_text(json.dumps(result, indent=1))
        partial.replace(out)
        append_case(
            args.cases_jsonl,
            {
                **json.loads(args.label),
                "case": case,
                "contender": "hf_static_compiled",
                "compiled": result["compiled"],
                **{k: v for k, v in result["cases"][case].items() if k != "tokens"},
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
