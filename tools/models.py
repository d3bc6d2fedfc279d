"""`python -m tools.models upload|list|rollback`: the stack's model registry (runtime.registry), from a laptop."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from runtime import registry
from runtime.errors import CaptionKitError
from runtime.progress import bar
from tools import target as targets
from tools.local_aws import aws_client
from tools.outputs import stack_outputs
from tools.tables import table


def _registry(target: targets.Target):
    outputs = stack_outputs(target.stack_name, target.region, target.endpoint_url)
    return (
        aws_client("s3", target.region, target.endpoint_url),
        outputs["ArtifactsBucket"],
        outputs.get("ModelPointerKey", registry.POINTER_KEY),
    )


def upload(s3, bucket: str, pointer_key: str, artifact: Path, progress: bool = True) -> dict:
    """Verify `artifact`, upload it and make it the current model, with a progress bar on stderr."""
    with bar(
        Path(artifact).stat().st_size, f"upload {Path(artifact).name}", unit="B", unit_scale=True, disable=not progress
    ) as shown:
        return registry.publish(s3, bucket, artifact, pointer_key, progress=shown.update)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.models", description=__doc__)
    parser.add_argument(
        "--target",
        choices=("local", "aws"),
        default=None,
        help="default: local after `make local-up`, else aws (or CAPTIONKIT_TARGET)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("upload", help="upload a .pt2 and make it the current model")
    up.add_argument("artifact", type=Path)
    commands.add_parser("list", help="uploaded models, newest first")
    commands.add_parser("rollback", help="make the previous model current again")
    args = parser.parse_args(argv)
    s3, bucket, pointer_key = _registry(targets.resolve(args.target))
    try:
        if args.command == "upload":
            if not args.artifact.is_file():
                raise SystemExit(f"{args.artifact}: no such file; export one first (make export)")
            pointer = upload(s3, bucket, pointer_key, args.artifact)
            print(f"s3://{bucket}/{pointer['key']} is now the current model ({pointer['model']})", file=sys.stderr)
            print(json.dumps(registry.entry(pointer)))
        elif args.command == "list":
            print(
                table(
                    ("", "key", "MiB", "uploaded"),
                    [
                        ("*" if row["current"] else "", row["key"], f"{row['bytes'] / 2**20:.1f}", row["uploaded"])
                        for row in registry.list_models(s3, bucket, pointer_key)
                    ],
                )
            )
        else:
            pointer = registry.rollback(s3, bucket, pointer_key)
            print(f"current model is back to s3://{bucket}/{pointer['key']}", file=sys.stderr)
    except CaptionKitError as exc:  # a refused artifact, a registry that cannot do it: one line, exit 1
        raise SystemExit(f"error: {exc}") from None
    return 0


if __name__ == "__main__":
    from runtime.cli_errors import run

    sys.exit(run(main, None, "models"))
