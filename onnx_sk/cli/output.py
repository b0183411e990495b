"""Printing helpers shared by the commands: JSON documents and rich tables.

- JSON, one convention for every command: ``--json`` prints the command's JSON document to
  stdout (and nothing else there); ``--json-out FILE`` (optimize: ``--report FILE``) writes it to
  a file, atomically, where ``-`` means stdout. Output files are checked (``check_json_out``)
  before anything is computed.
- Tables take the terminal's width (``$COLUMNS`` when set; ``PIPE_WIDTH`` when stdout is not a
  terminal), fold long cells, and drop their optional columns, least useful first, when they
  would not fit, saying so in the caption; titles are short, the method goes in the caption.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from onnx_sk.graph.output_path import check_writable
from onnx_sk.graph.save import json_default, save_json

#: the width of tables written to a pipe or a file (no terminal to ask)
PIPE_WIDTH = 160


def _width() -> int | None:
    """$COLUMNS when set, None (rich asks the terminal) on a terminal, else PIPE_WIDTH."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return None if sys.stdout.isatty() else PIPE_WIDTH
    except (AttributeError, ValueError):  # stdout replaced or closed
        return PIPE_WIDTH


console = Console(highlight=False, soft_wrap=True, width=_width())


def print_json(doc: object) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, default=json_default) + "\n")


def check_json_out(path: str | os.PathLike | None, flag: str) -> None:
    """Refuse, before anything is computed, a JSON output file that cannot be written (missing or
    read-only folder, a folder or special file); ``-`` (stdout) and None pass."""
    if path is not None and str(path) != "-":
        check_writable(path, flag)


def emit_json(doc: object, to_stdout: bool, path: str | os.PathLike | None, flag: str) -> bool:
    """Write ``doc`` to the file ``path`` (atomically) when given, and print it once when
    ``to_stdout`` (``--json``) or ``path`` is ``-``. Returns whether stdout got the JSON (then
    the command prints nothing else there)."""
    if path is not None and str(path) != "-":
        save_json(doc, Path(path), flag)
    if to_stdout or (path is not None and str(path) == "-"):
        print_json(doc)
        return True
    return False


def fmt_count(value: int | float | None) -> str:
    """12_345_678 → '12.35M'; None → 'unknown'."""
    if value is None:
        return "unknown"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def macs_basis(totals: dict) -> str:
    """' per sample (batch 1 for x)' when inputs whose only symbolic dim is the batch were
    counted at batch 1; '' otherwise."""
    names = totals.get("per_sample") or []
    return f" per sample (batch 1 for {', '.join(names)})" if names else ""


class FoldingTable:
    """A table whose ``optional`` columns are dropped, in the order given, while its natural
    width exceeds the console's; the caption names what was dropped. The first column (names)
    keeps its width up to a third of the console's; the others fold."""

    def __init__(
        self,
        title: str,
        columns: list[str],
        optional: Sequence[str] = (),
        caption: str | None = None,
    ) -> None:
        self.title, self.columns, self.caption = title, columns, caption
        self.optional = [c for c in optional if c in columns]
        self.rows: list[tuple[str, ...]] = []

    def add_row(self, *cells: str) -> None:
        self.rows.append(tuple(cells))

    def _natural_width(self, keep: list[int]) -> int:
        widths = [
            max([cell_len(self.columns[i])] + [cell_len(r[i]) for r in self.rows]) for i in keep
        ]
        return sum(widths) + 3 * len(keep) + 1  # padding and borders

    def __rich__(self) -> Table:
        keep = list(range(len(self.columns)))
        dropped = []
        for name in self.optional:
            if self._natural_width(keep) <= console.width:
                break
            keep.remove(self.columns.index(name))
            dropped.append(name)
        notes = [self.caption] if self.caption else []
        if dropped:
            notes.append(f"not shown at this width: {', '.join(dropped)} (see --json)")
        t = table(self.title, [self.columns[i] for i in keep], "; ".join(notes) or None)
        first = t.columns[0]  # names stay whole (copied, grepped) where they fit
        first.min_width = min(self._natural_width([0]) - 4, console.width // 3)
        for r in self.rows:
            t.add_row(*(r[i] for i in keep))
        return t


def table(title: str, columns: list[str], caption: str | None = None) -> Table:
    t = Table(
        title=title, title_justify="left", header_style="bold", caption=caption,
        caption_justify="left",
    )  # fmt: skip
    for c in columns:
        t.add_column(c, overflow="fold")
    return t
