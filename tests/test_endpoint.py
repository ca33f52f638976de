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
from manifests.errors import UserError
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


# ------------------------------------------------------------------------------ steps


def _metrics(steps_per_epoch: int, epochs: int, best: int) -> dict:
    history = [{"epoch": e, "num_updates": steps_per_epoch * (e + 1)} for e in range(epochs)]
    return {"history": history, "best_epoch": best, "epochs_run": epochs}


def _with_metrics(run, metrics: dict):
    doc = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**doc, **metrics}))
    return run


def _matched_runs(tmp_path, control_steps: int) -> list:
    truth = _truth()
    runs = []
    for seed in range(2):
        runs.append(fake_run(tmp_path, "real", seed, _scores(truth, 1.0, seed), truth=truth))
        mixed = fake_run(tmp_path, "mix0.5", seed, _scores(truth, 0.5, 5 + seed), truth=truth)
        runs.append(_with_metrics(mixed, _metrics(6, 4, best=2 + seed)))
        control = fake_run(
            tmp_path,
            "real-steps-mix0.5",
            seed,
            _scores(truth, 0.8, 9 + seed),
            truth=truth,
            config={"matched_to": "mix0.5"},
        )
        runs.append(_with_metrics(control, _metrics(control_steps, 4, best=3)))
    return runs


def test_realised_steps_and_scored_epoch_per_run_and_arm(tmp_path):
    report = summarize_arms(collect_runs(_matched_runs(tmp_path, control_steps=6)), n_boot=50)
    assert report.per_arm["mix0.5"] == {
        "seeds": [0, 1],
        "steps": {
            "optimizer_steps": [24, 24],
            "epochs_run": [4, 4],
            "scored_epoch": [3, 4],  # 1-based: best_epoch 2 and 3
            "steps_at_scored_epoch": [18, 24],
        },
    }
    assert report.per_arm["real"]["steps"]["optimizer_steps"] == [None, None]  # not recorded
    runs = report.runs.set_index(["arm", "seed"])
    assert runs.loc[("real-steps-mix0.5", 1), "optimizer_steps"] == 24
    assert runs.loc[("real-steps-mix0.5", 1), "scored_epoch"] == 4

    paths = write_report(report, tmp_path / "out")
    doc = json.loads(paths["report.json"].read_text())
    assert doc["per_arm"]["mix0.5"]["steps"]["scored_epoch"] == [3, 4]
    run = next(r for r in doc["runs"] if r["arm"] == "mix0.5" and r["seed"] == 0)
    assert (run["optimizer_steps"], run["scored_epoch"]) == (24, 3)
    md = paths["report.md"].read_text()
    assert "| optimizer steps | scored epoch |" in md and "| 24 | 3 of 4 |" in md
    assert "optimizer steps" in paths["report.html"].read_text()


def test_a_control_whose_steps_differ_from_its_arm_is_refused(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    runs = _matched_runs(tmp_path, control_steps=5)  # 20 steps against the arm's 24
    with pytest.raises(UserError, match="took 20 optimizer steps, its arm 'mix0.5'"):
        summarize_arms(collect_runs(runs), n_boot=50)
    result = CliRunner().invoke(app, ["report", *map(str, runs), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "real-steps-mix0.5-seed0" in lines[0] and "24" in lines[0]
    assert not (tmp_path / "r" / "report.json").exists()
