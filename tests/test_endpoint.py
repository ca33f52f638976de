"""What a referee needs from a report: which labels the macro averages, the realised steps
of each arm, the primary endpoint and Holm-adjusted secondary comparisons, and what each arm
saw (its information budget)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from classifier.report import summarize_arms
from classifier.report_render import write_report
from classifier.runset import collect_runs
from tests.test_report import N_IMAGES, N_PATIENTS, fake_run

LABELS = ("Pleural Effusion", "Pneumothorax")


def _truth(rare_patients: int | None = None, seed: int = 0) -> np.ndarray:
    """0/1 truth for the 120 test images of fake_run's 40 patients (image i: patient i % 40);
    with `rare_patients`, Pneumothorax is positive for that many patients only."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, size=(N_IMAGES, len(LABELS))).astype(np.float64)
    if rare_patients is not None:
        patient = np.arange(N_IMAGES) % N_PATIENTS
        truth[:, 1] = (patient < rare_patients).astype(np.float64)
    return truth


def _scores(truth: np.ndarray, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 1 / (1 + np.exp(-(truth * 2 - 1) / noise - rng.normal(size=truth.shape)))


def _row(report, arm: str, label: str) -> pd.Series:
    table = report.table
    return table[(table.arm == arm) & (table.label == label)].iloc[0]


# ------------------------------------------------------------------------------ macro


def test_a_label_with_few_positive_test_patients_is_left_out_of_the_macro(tmp_path):
    truth = _truth(rare_patients=3)  # Pneumothorax: 3 positive patients (9 images)
    runs = [
        fake_run(tmp_path, arm, seed, _scores(truth, noise, 10 * k + seed), truth=truth)
        for k, (arm, noise) in enumerate((("real", 1.0), ("mix0.5", 0.5)))
        for seed in range(2)
    ]
    report = summarize_arms(collect_runs(runs), n_boot=100)
    assert report.min_positive_patients == 10 and report.macro_labels == ("Pleural Effusion",)
    for arm in ("real", "mix0.5"):
        rare, macro = _row(report, arm, "Pneumothorax"), _row(report, arm, "macro")
        assert np.isfinite(rare.auroc_mean)  # still reported on its own row
        assert rare.n_positive_patients == 3 and not rare.in_macro
        assert "left out of the macro: 3 positive test patients (fewer than 10)" in rare.note
        assert macro.auroc_mean == pytest.approx(_row(report, arm, "Pleural Effusion").auroc_mean)
    assert any("left out: Pneumothorax" in n and "10 or more" in n for n in report.notes)

    paths = write_report(report, tmp_path / "out")
    doc = json.loads(paths["report.json"].read_text())
    assert doc["min_positive_patients"] == 10 and doc["macro_labels"] == ["Pleural Effusion"]
    assert "at least 10 positive patients" in paths["report.md"].read_text()

    # Configurable: with 3 the label is back in.
    report = summarize_arms(collect_runs(runs), n_boot=100, min_positive_patients=3)
    assert report.macro_labels == LABELS and bool(_row(report, "real", "Pneumothorax").in_macro)
    both = (_row(report, "real", label).auroc_mean for label in LABELS)
    assert _row(report, "real", "macro").auroc_mean == pytest.approx(np.mean(list(both)))
