"""Table cells, Markdown tables and HTML tables for the reports (classifier and generator).

One place for how a number is printed in a report, so `report.md`, `report.html` and the
generator evaluation section read alike.
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Sequence


def fmt(value, digits: int = 3) -> str:
    """A table cell: a float to `digits` decimals, None/NaN/inf as 'n/a', anything else str()."""
    is_float = isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)
    if value is None or (is_float and not math.isfinite(value)):
        return "n/a"
    if is_float:
        return f"{value:.{digits}f}"
    return str(value)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table of text cells ('|' in a cell is escaped), ending in a newline."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def html_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], cls: str | None = None
) -> str:
    """An HTML table of text cells (escaped); `cls` sets its class attribute when given."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    opening = "<table>" if cls is None else f"<table class='{cls}'>"
    return f"{opening}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
