"""Entry point: `python -m export --model ... --out ...`."""

import sys

from export.cli import main
from runtime.cli_errors import run

sys.exit(run(main, None, "export"))
