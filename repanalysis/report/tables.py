"""Plain-text tables for the terminal and atomic JSON output."""
from __future__ import annotations

import math
import numbers
from typing import Mapping, Sequence

from repanalysis.outputs import write_csv_atomic, write_json_atomic  # noqa: F401  (re-exported: one writer)


def format_value(value, digits: int = 4) -> str:
    """A cell: None as "-", real numbers (numpy scalars and 0-d arrays or tensors included) with ``digits``
    decimals and no negative zero, anything else as its text."""
    if value is None:
        return "-"
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()                      # numpy scalar, 0-d array or tensor -> Python number
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        value = float(value)
        if math.isnan(value):
            return "nan"
        text = f"{value:.{digits}f}"
        return text[1:] if text.startswith("-") and float(text) == 0 else text     # -0.0000 -> 0.0000
    return str(value)


def format_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None, digits: int = 4,
                 headers: Mapping[str, str] | None = None) -> str:
    """Render rows (dicts) as an aligned text table; ``headers`` renames columns for display."""
    if not rows:
        return "(no rows)"
    if columns is None:              # every row's keys, in order of first appearance (rows may differ)
        columns = list(dict.fromkeys(key for r in rows for key in r))
    columns = list(columns)
    headers = dict(headers or {})
    cells = [[headers.get(c, c) for c in columns]]
    cells += [[format_value(r.get(c), digits) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = []
    for j, row in enumerate(cells):
        lines.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(row, widths))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None, digits: int = 4,
                   headers: Mapping[str, str] | None = None) -> str:
    """Rows (dicts) as a GitHub-flavoured Markdown table (cells as :func:`format_value`; ``|`` escaped)."""
    if not rows:
        return "(no rows)"
    if columns is None:
        columns = list(dict.fromkeys(key for r in rows for key in r))
    headers = dict(headers or {})

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(str(headers.get(c, c))) for c in columns) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i, _ in enumerate(columns)) + "|"]
    lines += ["| " + " | ".join(cell(format_value(r.get(c), digits)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
