"""`python -m bench [--quick]` (make bench): model level, cold start, load and whole process, agent level, the fault
soak, then BENCHMARKS.md's appendix of per-run tables."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    from bench import agent, coldstart, load_phases, model, process, report, soak

    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny + demo models only (minutes, a smoke test)")
    p.add_argument("--workdir", default="/tmp/captionkit-bench")
    args = p.parse_args(argv)
    work = Path(args.workdir)
    plan = model.QUICK if args.quick else model.FULL
    main_model = "tiny" if args.quick else "vit-gpt2-base"
    # 1. model level, one section per model (exports and compiles what it needs)
    for name in plan["models"]:
        model.main(
            [
                "--workdir",
                str(work),
                "--models",
                name,
                "--runs",
                str(plan["runs"]),
                "--section",
                f"model_cpu_{name.replace('-', '_')}",
            ]
        )
    # 2. cold start: pointer, download from a local S3, load, first caption
    coldstart.main(
        [
            "--artifact",
            str(work / f"{main_model}-float32-b8.pt2"),
            "--folder",
            str(work / main_model),
            "--cache",
            str(work / "aoti-cache"),
            "--section",
            f"cold_start_{main_model.replace('-', '_')}",
        ]
    )
    # 2b. the load phase by phase against from_pretrained, and the whole CLI process against a plain HF script
    if not args.quick:
        base = ["--artifact", str(work / "vit-gpt2-base-float32-b8.pt2"), "--folder", str(work / "vit-gpt2-base")]
        load_phases.main(base + ["--section", "load_phases_vit_gpt2_base"])
        process.main(base + ["--section", "process_vit_gpt2_base"])
    # 3. agent on the local AWS: compute-bound on the real-size model (best CPU setting and plain float32)
    if not args.quick:
        base = [
            "--artifact",
            str(work / "vit-gpt2-base-float32-b8.pt2"),
            "--folder",
            str(work / "vit-gpt2-base"),
            "--images",
            "16",
            "--naive-images",
            "6",
        ]
        agent.main(base + ["--quantize", "int8", "--section", "agent_vit_gpt2_base"])
        agent.main(base + ["--section", "agent_vit_gpt2_base_float32"])
    if (model.models.REPO / "demo-model" / "config.json").exists():
        agent.main(
            [
                "--artifact",
                str(work / "demo-float32-b8.pt2"),
                "--folder",
                str(model.models.REPO / "demo-model"),
                "--section",
                "agent_demo",
            ]
        )
    else:
        print("skipping the demo agent benchmark: demo-model/ is missing (make demo-model)", file=sys.stderr)
    # 4. the soak: two agents through injected S3/SQS faults, one killed and restarted; lost/duplicated/memory
    soak.main(["--images", "300" if args.quick else "3000"])
    return report.main([])


if __name__ == "__main__":
    sys.exit(main())
