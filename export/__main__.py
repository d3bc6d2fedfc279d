"""Entry point: `python -m export --model ... --out ...`."""
import sys

from export.cli import main

sys.exit(main())
