"""Inputs that used to escape as tracebacks or half-written outputs, each refused in one line
(or handled) where a user meets it: a degenerate report baseline, a corrupt Parquet page, a
broken generator folder, a full disk, a symlinked output folder, duplicate rows, JPEG
orientation and 16-bit PNG depth."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from tests.test_report import fake_run

runner = CliRunner()


def one_error_line(result, *fragments: str) -> str:
    """Assert exit 2 with exactly one `error:` line holding every fragment; return it."""
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------ report


def _two_image_runs(tmp_path):
    """Runs on a two-image test split: `real` ranks it backwards (AUROC 0), `mix0.5` right."""
    truth = np.array([[1.0], [0.0]])
    real = fake_run(tmp_path, "real", 0, 1 - truth, n_images=2, truth=truth)
    mix = fake_run(tmp_path, "mix0.5", 0, truth, n_images=2, truth=truth)
    return real, mix


def test_report_with_a_zero_auroc_baseline_writes_na_relative_change(tmp_path):
    import json

    runs = _two_image_runs(tmp_path / "runs")
    out = tmp_path / "rep"
    args = ["report", *map(str, runs), "--out", str(out), "--n-boot", "20"]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, (result.output, result.exception)
    doc = json.loads((out / "report.json").read_text())
    mix = [r for r in doc["rows"] if r["arm"] == "mix0.5" and r["label"] == "macro"][0]
    assert mix["delta"] == pytest.approx(1.0)
    assert mix["relative_pct"] is None or np.isnan(mix["relative_pct"])
    assert "n/a" in (out / "report.md").read_text()


def test_report_baseline_naming_no_run_is_refused_with_the_arms(tmp_path):
    runs = _two_image_runs(tmp_path / "runs")
    out = tmp_path / "rep"
    args = ["report", *map(str, runs), "--out", str(out), "--baseline", "nosuch"]
    one_error_line(runner.invoke(app, args), "--baseline nosuch", "real", "mix0.5")
    assert not out.exists()
