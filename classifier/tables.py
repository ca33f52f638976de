"""Table cells, Markdown, HTML and terminal tables for the reports (classifier and generator).

One place for how a number is printed in a report, so `report.md`, `report.html` and the
generator evaluation section read alike. The terminal tables (`cxraug` prints every table
through `print_table`) never break a word: boxed when they fit, else lighter, else one
block per row.
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Sequence

import numpy as np


def fmt(value, digits: int = 3) -> str:
    """A table cell: a float to `digits` decimals, None/NaN/inf as 'n/a', anything else str()."""
    is_float = isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)
    if value is None or (is_float and not math.isfinite(value)):
        return "n/a"
    if is_float:
        return f"{value:.{digits}f}"
    return str(value)


def cell(value, digits: int = 3) -> str:
    """A cell for people: `fmt`, with booleans as yes/no."""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    return fmt(value, digits)


def frame_text(frame, digits: int = 3) -> str:
    """A data frame as plain aligned text (a log line): `cell` for every value."""
    shown = frame.astype(object).map(lambda v: cell(v, digits))
    return shown.to_string(index=False)


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


# ------------------------------------------------------------------------------ terminal


def _column_widths(headers, rows, no_wrap, room: int) -> list[int] | None:
    """Widths (summing to at most `room`) that wrap cells only between words, a no-wrap
    column's data cells not at all (its header may wrap between words); None if none fit."""
    least, natural = [], []
    for i, header in enumerate(headers):
        cells = [str(row[i]) for row in rows]
        words = [w for c in [header, *cells] for w in c.split()] or [""]
        data = max((len(c) for c in cells), default=0)
        natural.append(max(len(header), data))
        least.append(max(max(map(len, words)), data if no_wrap[i] else 0))
    if sum(least) > room:
        return None
    widths = list(natural)
    while sum(widths) > room:  # narrow the column with the most room to spare by one
        i = max(range(len(widths)), key=lambda j: (widths[j] - least[j], widths[j]))
        widths[i] -= 1
    return widths


def _table_layout(headers, rows, no_wrap, width: int) -> tuple[dict, list[int]] | None:
    """A boxed table if it fits `width`, else a lighter one (no outer edge, one space between
    columns), else None (the caller prints one block per row)."""
    from rich import box

    n = len(headers)
    for style, overhead in (
        ({}, 3 * n + 1),  # borders and padding around every cell
        (
            {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False, "padding": (0, 0)},
            2 * (n - 1),  # a space and a divider between columns
        ),
    ):
        widths = _column_widths(headers, rows, no_wrap, width - overhead)
        if widths is not None:
            return style, widths
    return None


def print_table(
    headers, rows, title: str, right=(), no_wrap=(), keys: int = 1, styles=None, out=None
) -> None:
    """A table that never breaks a word: boxed when it fits, else lighter, else one block
    per row ("header: value" lines).

    `right`/`no_wrap`: column indices right-aligned / whose data never wraps; `keys`: leading
    columns that name a row in the vertical layout; `styles`: a rich style per row (or None).
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    out = out or Console(soft_wrap=True)
    headers = [str(h) for h in headers]
    rows = [[str(v) for v in row] for row in rows]
    styles = styles or [None] * len(rows)
    nowrap = [i in no_wrap for i in range(len(headers))]
    out.print(Text(title, style="italic"))  # a plain line: a long path is never folded
    layout = _table_layout(headers, rows, nowrap, out.width)
    if layout is not None:
        style, widths = layout
        table = Table(show_header=True, **style)
        for i, header in enumerate(headers):
            justify = "right" if i in right else "left"
            table.add_column(header, justify=justify, width=widths[i])
        for row, row_style in zip(rows, styles, strict=True):
            table.add_row(*map(Text, row), style=row_style)
        out.print(table)
        return
    for row, style in zip(rows, styles, strict=True):
        out.print(Text(" · ".join(v for v in row[:keys] if v), style=style or "bold"))
        for header, value in zip(headers[keys:], row[keys:], strict=True):
            if value:
                out.print(Text(f"  {header}: {value}"))


def print_frame(frame, title: str, out=None) -> None:
    numeric = {i for i, c in enumerate(frame.columns) if frame[c].dtype.kind in "fiu"}
    rows = [[cell(v) for v in row] for row in frame.itertuples(index=False)]
    print_table(list(frame.columns), rows, title, right=numeric, no_wrap=numeric, out=out)
