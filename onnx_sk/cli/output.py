"""Printing helpers shared by the commands: JSON documents and rich tables."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.table import Table

from onnx_sk.graph.save import json_default

console = Console(highlight=False, soft_wrap=False, width=200)


def print_json(doc: object) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, default=json_default) + "\n")


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


def table(title: str, columns: list[str]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
    return t
