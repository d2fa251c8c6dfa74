"""Markdown and CSV tables of the command-line tools (``mssr compare``, ``mssr tune``)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """The lines of a Markdown table (cells already formatted as text)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    """Rows of dicts as CSV; the columns are every key, in order of first appearance."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with Path(path).open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
