"""The laptop tools' tables, drawn by rich: plain text (no colour codes) when the output is not a terminal."""

from __future__ import annotations

import io
import shutil
import sys
from typing import Iterable, Sequence

from rich import box
from rich.console import Console
from rich.table import Table

WIDE = 200  # a file or a pipe has no width: wide enough that no row is cut


def _text(table: Table, tty: bool) -> str:
    width = shutil.get_terminal_size((WIDE, 24)).columns if tty else WIDE
    sink = io.StringIO()
    Console(file=sink, width=width, force_terminal=tty, color_system="auto" if tty else None, highlight=False).print(
        table
    )
    return "\n".join(line.rstrip() for line in sink.getvalue().rstrip("\n").splitlines())


def table(columns: Sequence[str], rows: Iterable[Sequence[object]], *, tty: bool | None = None) -> str:
    """A table with a header row, as text for print()."""
    tty = sys.stdout.isatty() if tty is None else tty
    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in columns:
        grid.add_column(name, overflow="fold")
    for row in rows:
        grid.add_row(*("" if cell is None else str(cell) for cell in row))
    return _text(grid, tty)


def fields(rows: Iterable[tuple[str, str]], *, tty: bool | None = None) -> str:
    """Label and value, one pair a line, labels aligned (a status screen)."""
    tty = sys.stdout.isatty() if tty is None else tty
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for label, value in rows:
        grid.add_row(label, value)
    return _text(grid, tty)
