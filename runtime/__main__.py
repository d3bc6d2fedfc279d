"""`python -m runtime caption|agent|submit|gpu-check ...`."""

from __future__ import annotations

import sys

COMMANDS = {
    "caption": "runtime.caption_cli",
    "agent": "runtime.agent",
    "submit": "runtime.agent.submit",
    "gpu-check": "runtime.gpu_check",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print("usage: python -m runtime {caption|agent|submit|gpu-check} ...", file=sys.stderr)
        return 2
    import importlib

    from runtime.cli_errors import run

    module = importlib.import_module(COMMANDS[argv[0]])
    if argv[0] == "agent":  # a service: its failures are JSON log lines with their traceback, for the operator
        return module.main(argv[1:])
    return run(module.main, argv[1:], argv[0])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
