"""Terminal output: plain progress lines off a terminal, tables that never break a word,
labels a source lacks shown as "not labelled"."""

from __future__ import annotations

import io
import os
import re

import numpy as np
import pandas as pd
from rich.console import Console

from classifier.tables import print_frame
from manifests.progress import Progress, progress
from manifests.schema import CHEXPERT_LABELS
from manifests.summary import NOT_LABELLED, summarize
from tests.helpers import make_manifest

# ------------------------------------------------------------------ progress


def test_progress_off_a_terminal_writes_a_few_plain_lines():
    stream = io.StringIO()  # not a TTY, like `> log`
    bar = progress(total=10_000, desc="finetune", unit="step", stream=stream, every_s=3600)
    for i in range(10_000):
        bar.update(1)
        if i % 100 == 0:
            bar.set_postfix(loss=f"{1 / (i + 1):.4f}")
    bar.close()
    text = stream.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    assert 3 <= len(lines) <= 12  # every 10% plus the last line, not 10,000 updates
    assert lines[-1].startswith("finetune: 10000/10000 (100%)")
    assert "step/s" in lines[-1] and "elapsed" in lines[-1]
    assert re.search(r"ETA \d+:\d\d:\d\d", lines[len(lines) // 2])
    assert "loss=" in lines[-1]


def test_progress_iterates_and_time_bounds_lines():
    stream = io.StringIO()
    seen = list(Progress(range(50), desc="fit", stream=stream, every_s=0.0, every_pct=0))
    assert seen == list(range(50))
    assert len(stream.getvalue().splitlines()) == 50  # every_s=0: a line per update
    quiet = io.StringIO()
    assert list(Progress(range(5), stream=quiet, disable=True)) == list(range(5))
    assert quiet.getvalue() == ""


# ------------------------------------------------------------------ summary


def test_summary_shows_labels_the_source_lacks_as_not_labelled(tmp_path):
    m = make_manifest(tmp_path, n=30, patients=10)
    m.rows["Pneumothorax"] = np.nan  # the source never labels it
    m.rows.loc[:9, "Fracture"] = np.float32(np.nan)
    m.rows["Fracture"] = m.rows["Fracture"].astype(np.float32)
    m.rows.loc[10:, "Fracture"] = 0.0  # labelled, all negative: 0.0% is right here
    s = summarize(m)
    assert s.not_labelled == ["Pneumothorax"]
    row = s.prevalence.set_index("label")
    assert (row.loc["Pneumothorax"] == NOT_LABELLED).all()
    assert row.loc["Fracture", "train/real"] == "0.0% (0.0%)"
    assert "%" in row.loc["Edema", "train/real"]


# ------------------------------------------------------------------ tables


def _words_intact(text: str, words: list[str]) -> None:
    tokens = set(re.split(r"[\s│┃|:]+", text))
    for word in (w for phrase in words for w in phrase.split()):
        assert word in tokens, f"{word!r} was broken or dropped:\n{text}"
    for line in text.splitlines()[1:]:  # the title is one plain line the terminal may wrap
        assert len(line) <= _WIDTH[0], line


_WIDTH = [80]


def _prevalence_frame() -> pd.DataFrame:
    columns = ["test/real", "train/real", "train/synthetic", "val/real"]
    frame = pd.DataFrame(
        {c: ["12.5% (3.1%)"] * len(CHEXPERT_LABELS) for c in columns},
    )
    frame.insert(0, "label", list(CHEXPERT_LABELS))
    frame.loc[3, "train/synthetic"] = NOT_LABELLED
    return frame


def test_tables_never_break_a_label_at_80_and_60_columns():
    for width in (80, 70, 60, 40):
        _WIDTH[0] = width
        out = Console(width=width, file=io.StringIO(), record=True, soft_wrap=True)
        print_frame(_prevalence_frame(), "label prevalence (positive / uncertain share)", out)
        text = out.export_text()
        _words_intact(text, [*CHEXPERT_LABELS, "train/synthetic", NOT_LABELLED])
        if width == 40:
            assert "  train/synthetic: 12.5% (3.1%)" in text  # vertical layout


def test_report_table_never_breaks_a_label(monkeypatch):
    from classifier import report_render as report_mod

    labels = ["Cardiomegaly", "Pleural Effusion", "Pneumothorax", "macro"]
    arms = ["real", "synthetic", "mix0.5"]
    headers = ["arm", "label", "AUROC mean ± sd", "Δ vs real [95% CI]", "rel. %"]
    rows = [
        [arm, label, "0.812 ± 0.010", "+0.012 [-0.003, +0.027]", "+1.5%"]
        for arm in arms
        for label in labels
    ]
    monkeypatch.setattr(report_mod, "display_rows", lambda report, compact: (headers, rows))
    monkeypatch.setattr(report_mod, "primary_text", lambda report: "")

    class _Report:
        notes = ["a note"]

    for width in (80, 72, 60):
        _WIDTH[0] = width
        out = Console(width=width, file=io.StringIO(), record=True, soft_wrap=True)
        report_mod.print_report(_Report(), "study 'demo': AUROC per arm", out=out)
        text = out.export_text()
        _words_intact(text, [*labels, "Pleural Effusion", "+0.012 [-0.003, +0.027]"])


def test_quiet_library_bars_only_off_a_terminal(monkeypatch):
    import sys
    import types

    from manifests.progress import quiet_library_bars

    calls = []
    fake = types.SimpleNamespace(disable_progress_bar=lambda: calls.append("off"))
    monkeypatch.setitem(sys.modules, "diffusers.utils.logging", fake)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)

    class Tty(io.StringIO):
        def isatty(self):
            return True

    quiet_library_bars(Tty())
    assert calls == [] and "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    quiet_library_bars(io.StringIO())
    assert calls == ["off"] and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
