"""Report table helpers: one cell format and one Markdown/HTML table for every report."""

from __future__ import annotations

import math

import numpy as np

from classifier.tables import fmt, html_table, md_table


def test_fmt_prints_floats_fixed_and_missing_values_as_na():
    assert fmt(0.12345) == "0.123" and fmt(np.float64(0.5)) == "0.500"
    assert fmt(np.float32(0.25)) == "0.250" and fmt(2.0, digits=1) == "2.0"
    assert fmt(None) == fmt(math.nan) == fmt(np.float32("nan")) == fmt(math.inf) == "n/a"
    assert fmt(16) == "16" and fmt(np.int64(3)) == "3" and fmt(True) == "True"
    assert fmt("images/0005.png") == "images/0005.png"


def test_md_and_html_tables_escape_their_cells():
    md = md_table(["arm", "Δ"], [["a|b", "0.1"], ["real", "(baseline)"]])
    assert md == "| arm | Δ |\n|---|---|\n| a\\|b | 0.1 |\n| real | (baseline) |\n"
    html = html_table(["a<b"], [["x & y"]], "runs")
    assert html == (
        "<table class='runs'><thead><tr><th>a&lt;b</th></tr></thead>"
        "<tbody><tr><td>x &amp; y</td></tr></tbody></table>"
    )
    assert html_table(["h"], []).startswith("<table><thead>")
