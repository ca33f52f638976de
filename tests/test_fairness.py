"""The Subgroups section: subgroup AUROC, too-small cells, val thresholds, underdiagnosis
gaps and their paired deltas, on fake runs with known predictions; the run files it reads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from classifier.arms import Arm
from classifier.config import ReportConfig, TrainConfig
from classifier.evaluate import predictions_frame
from classifier.fairness import (
    FNR,
    NO_FINDING_FPR,
    error_rate,
    references,
    subgroup_auroc,
    subgroups,
    summarize_fairness,
    youden_threshold,
)
from classifier.report import summarize_arms
from classifier.report_render import load_report, make_report, write_report
from classifier.report_tables import gap_rows, gap_summary, subgroup_rows
from classifier.runset import collect_runs
from classifier.stats import patient_resample_weights
from cli import app

runner = CliRunner()
LABELS = ("Pleural Effusion", "No Finding")
N_PATIENTS = 300  # two test images each
MISS = {"F": 0.1, "M": 0.3}  # share of positive images a run scores low: M underdiagnosed


def _test_set(young: int = 60, seed: int = 0) -> pd.DataFrame:
    """600 test images of 300 patients: 3 in 5 women, `young` patients under 40; Pleural
    Effusion positive in 40% of images, No Finding its complement."""
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(N_PATIENTS), 2)
    sex = np.where(patient % 5 < 3, "F", "M").astype(object)
    ages = np.where(np.arange(N_PATIENTS) < young, 30.0, rng.uniform(41, 90, N_PATIENTS))
    effusion = (rng.random(len(patient)) < 0.4).astype(np.float64)
    return pd.DataFrame(
        {
            "image_path": [f"/data/test/{i:04d}.png" for i in range(len(patient))],
            "patient_id": [f"p{p:03d}" for p in patient],
            "study_id": [f"s{i:04d}" for i in range(len(patient))],
            "sex": sex,
            "age": ages[patient] + np.tile([0.0, 0.5], N_PATIENTS),
            "true.Pleural Effusion": effusion,
            "true.No Finding": 1.0 - effusion,
        }
    )


def _probs(test: pd.DataFrame, seed: int) -> np.ndarray:
    """Effusion: negatives below 0.5, positives 0.8 except a share MISS[sex] at 0.2;
    No Finding: one minus it (so its false positives are the effusion's misses)."""
    rng = np.random.default_rng(100 + seed)
    positive = test["true.Pleural Effusion"].to_numpy() == 1
    miss = rng.random(len(test)) < test["sex"].map(MISS).to_numpy()
    effusion = np.where(positive, np.where(miss, 0.2, 0.8), rng.uniform(0.01, 0.45, len(test)))
    return np.stack([effusion, 1.0 - effusion], axis=1)


def _val(effusion_positive: float = 0.8) -> pd.DataFrame:
    """Val predictions whose Youden thresholds are `effusion_positive` (effusion) and 0.5
    (No Finding)."""
    negatives = np.linspace(0.1, 0.5, 20)
    prob = np.r_[negatives, np.full(20, effusion_positive)]
    truth = np.r_[np.zeros(20), np.ones(20)]
    return pd.DataFrame(
        {
            "image_path": [f"/data/val/{i}.png" for i in range(40)],
            "patient_id": [f"v{i}" for i in range(40)],
            "study_id": [f"vs{i}" for i in range(40)],
            "sex": ["F"] * 40,
            "age": [50.0] * 40,
            "true.Pleural Effusion": truth,
            "prob.Pleural Effusion": prob,
            "true.No Finding": 1 - truth,
            "prob.No Finding": 1 - prob,
        }
    )


def fake_run(
    root: Path,
    arm: str,
    seed: int,
    test: pd.DataFrame,
    prob: np.ndarray,
    val: pd.DataFrame | None = None,
    demographics: bool = True,
    config: dict | None = None,
) -> Path:
    """A finished run folder: config, metrics, predictions (with sex and age unless not
    `demographics`) and, given `val`, val predictions."""
    run = root / f"{arm}-seed{seed}"
    run.mkdir(parents=True)
    frame = test.copy()
    for j, label in enumerate(LABELS):
        frame[f"prob.{label}"] = prob[:, j]
    if not demographics:
        frame = frame.drop(columns=["sex", "age"])
    frame.to_parquet(run / "predictions.parquet", index=False)
    if val is not None:
        val.to_parquet(run / "val_predictions.parquet", index=False)
    cfg = {"arm": arm, "seed": seed, "labels": list(LABELS), "backbone": "resnet18"}
    cfg |= {"mix": Arm.parse(arm).mix, **(config or {})}
    (run / "config.json").write_text(json.dumps(cfg))
    (run / "metrics.json").write_text(json.dumps({"arm": arm, "labels": list(LABELS)}))
    return run


def _fairness(runs, n_boot: int = 200, edges=(40, 65), **kw):
    runset = collect_runs(runs)
    report = summarize_arms(runset, n_boot=n_boot, **kw)
    return report, summarize_fairness(runset, report, edges)


def _gap(fairness, arm: str, label: str, subgroup: str, measure: str = FNR) -> pd.Series:
    g = fairness.gaps
    rows = g[
        (g.arm == arm) & (g.label == label) & (g.subgroup == subgroup) & (g.measure == measure)
    ]
    assert len(rows) == 1
    return rows.iloc[0]


def _cell(fairness, arm: str, label: str, subgroup: str) -> pd.Series:
    s = fairness.subgroups
    return s[(s.arm == arm) & (s.label == label) & (s.subgroup == subgroup)].iloc[0]


# ------------------------------------------------------------------------------ pure functions


def test_subgroup_auroc_equals_sklearn_on_the_subset():
    test = _test_set()
    prob = _probs(test, 0) + np.random.default_rng(1).normal(0, 0.2, (len(test), 2))
    truth = test[["true.Pleural Effusion", "true.No Finding"]].to_numpy().copy()
    truth[0, 0] = -1.0  # uncertain: left out, as in the report
    groups = subgroups(test["sex"], test["age"])
    weights, codes = patient_resample_weights(test["patient_id"], 20, seed=0)
    for g in groups:
        point, resampled = subgroup_auroc(truth, prob, g.mask, weights, codes)
        for j in range(2):
            keep = g.mask & np.isin(truth[:, j], (0, 1))
            assert point[j] == pytest.approx(roc_auc_score(truth[keep, j], prob[keep, j]))
        assert resampled.shape == (20, 2) and np.isfinite(resampled).all()
    ones = np.ones((1, N_PATIENTS), dtype=np.int32)
    point, again = subgroup_auroc(truth, prob, groups[0].mask, ones, codes)
    assert again[0] == pytest.approx(point)  # all patients once: the point estimate


def test_subgroups_unknown_demographics_and_the_largest_reference():
    sex = ["F", "M", None, "X", "F", "F"]
    age = [30.0, 45.0, 70.0, np.nan, 64.9, 65.0]
    groups = {g.name: g.mask.tolist() for g in subgroups(sex, age)}
    assert groups["sex=F"] == [True, False, False, False, True, True]
    assert groups["sex=M"] == [False, True, False, False, False, False]  # None, 'X': no sex
    assert groups["age_group=40-64"] == [False, True, False, False, True, False]
    assert groups["age_group=65+"] == [False, False, True, False, False, True]
    assert groups["sex=F & age_group=65+"] == [False, False, False, False, False, True]
    assert "sex=M & age_group=<40" not in groups  # no image: not listed
    assert list(groups)[:2] == ["sex=F", "sex=M"]
    patients = np.array(["a", "b", "c", "d", "a", "e"])
    refs = references(subgroups(sex, age), patients)
    assert refs == {"sex": "sex=F", "age_group": "age_group=40-64"}  # 2 patients; first of equals
    edges = {g.name for g in subgroups(sex, age, (50,))}
    assert "age_group=<50" in edges and "age_group=50+" in edges


def test_youden_threshold_and_error_rates():
    assert youden_threshold([0, 0, 1, 1], [0.2, 0.3, 0.6, 0.7]) == pytest.approx(0.6)
    assert youden_threshold([0, 0, 1, -1, np.nan], [0.1, 0.9, 0.5, 0.0, 1.0]) == pytest.approx(0.5)
    assert math.isnan(youden_threshold([1, 1, -1], [0.2, 0.3, 0.4]))
    truth = np.array([1, 1, 1, 1, 0, 0])
    prob = np.array([0.9, 0.4, 0.6, 0.1, 0.7, 0.2])
    mask = np.ones(6, bool)
    weights, codes = np.ones((3, 6), dtype=np.int32), np.arange(6)
    fnr, res = error_rate(truth, prob, 0.5, mask, weights, codes, among=1)
    assert fnr == 0.5 and np.allclose(res, 0.5)  # 0.4 and 0.1 missed
    fpr, _ = error_rate(truth, prob, 0.5, mask, weights, codes, among=0)
    assert fpr == 0.5  # 0.7 called positive
    fnr, res = error_rate(truth, prob, math.nan, mask, weights, codes)
    assert math.isnan(fnr) and np.isnan(res).all()


# ------------------------------------------------------------------------------ on runs


def test_known_fnr_gap_is_recovered_and_its_interval_covers_it(tmp_path):
    test = _test_set()
    run = fake_run(tmp_path, "real", 0, test, _probs(test, 0), val=_val())
    _, fairness = _fairness([run], n_boot=500)
    assert fairness.references["sex"] == "sex=F"  # 180 of the 300 patients
    gap = _gap(fairness, "real", "Pleural Effusion", "sex=M")
    # exact on this test set: the share of missed positives, M minus F, at the val threshold
    positive = test["true.Pleural Effusion"] == 1
    prob = _probs(test, 0)[:, 0]
    fnr = {s: float((prob[positive & (test.sex == s)] < 0.8).mean()) for s in "FM"}
    assert gap.gap == pytest.approx(fnr["M"] - fnr["F"])
    assert _cell(fairness, "real", "Pleural Effusion", "sex=M").fnr == pytest.approx(fnr["M"])
    truth = MISS["M"] - MISS["F"]  # the population gap
    assert gap.gap_lo < truth < gap.gap_hi and gap.gap_lo > 0  # M underdiagnosed
    assert gap.reference == "sex=F" and gap.n_valid == 500
    # No Finding's false positives are the effusion's misses: the same gap, same resamples.
    nf = _gap(fairness, "real", "No Finding", "sex=M", NO_FINDING_FPR)
    assert (nf.gap, nf.gap_lo, nf.gap_hi) == pytest.approx((gap.gap, gap.gap_lo, gap.gap_hi))


def test_the_threshold_comes_from_val_not_test(tmp_path):
    test = _test_set()
    prob = _probs(test, 0)
    # Val's Youden threshold 0.9 lies above every test positive (0.8 or 0.2): all are
    # missed. A threshold fixed on test would sit at 0.8 and miss only the 0.2s.
    run = fake_run(tmp_path, "real", 0, test, prob, val=_val(effusion_positive=0.9))
    _, fairness = _fairness([run])
    for subgroup in ("sex=F", "sex=M", "age_group=65+"):
        assert _cell(fairness, "real", "Pleural Effusion", subgroup).fnr == 1.0
    assert _gap(fairness, "real", "Pleural Effusion", "sex=M").gap == 0.0


def test_too_small_cells_show_no_number(tmp_path):
    test = _test_set(young=6)  # 6 patients under 40: fewer than 10 positive patients
    run = fake_run(tmp_path, "real", 0, test, _probs(test, 0), val=_val())
    report, fairness = _fairness([run])
    young = _cell(fairness, "real", "Pleural Effusion", "age_group=<40")
    assert young.too_small and young.n_positive_patients < 10
    assert math.isnan(young.auroc_mean) and math.isnan(young.fnr) and "too small" in young.note
    gap = _gap(fairness, "real", "Pleural Effusion", "age_group=<40")
    assert gap.too_small and math.isnan(gap.gap)
    assert not _cell(fairness, "real", "Pleural Effusion", "sex=F").too_small
    report.fairness = fairness
    _, rows = subgroup_rows(report)
    shown = [r for r in rows if r[2] == "age_group=<40"]
    assert shown and all(r[4] == "too small" and r[5] == "too small" for r in shown)
    _, rows = gap_rows(report)
    assert any(r[3].startswith("age_group=<40") and r[4] == "too small" for r in rows)
    # A higher minimum makes more cells too small.
    _, strict = _fairness([run], min_positive_patients=1000)
    assert strict.subgroups.too_small.all() and strict.gaps.too_small.all()


def test_identical_arms_give_zero_gap_deltas_paired_by_seed(tmp_path):
    test = _test_set()
    runs = []
    for seed in range(3):
        prob = _probs(test, seed)
        runs.append(fake_run(tmp_path, "real", seed, test, prob, val=_val()))
        runs.append(fake_run(tmp_path, "mix0.5", seed, test, prob, val=_val()))
        control = {"matched_to": "mix0.5"}
        runs.append(
            fake_run(tmp_path, "real-steps-mix0.5", seed, test, prob, _val(), config=control)
        )
    report, fairness = _fairness(runs)
    gap = _gap(fairness, "mix0.5", "Pleural Effusion", "sex=M")
    assert gap.baseline == "real" and gap.matched_arm == "real-steps-mix0.5"
    for prefix in ("delta_vs_baseline", "delta_vs_matched"):
        assert gap[prefix] == 0.0
        assert abs(gap[f"{prefix}_lo"]) < 1e-12 and abs(gap[f"{prefix}_hi"]) < 1e-12
    assert gap.excludes_0_vs_baseline is False
    assert math.isfinite(gap.gap) and gap.gap_lo < gap.gap < gap.gap_hi  # seeds differ
    base = _gap(fairness, "real", "Pleural Effusion", "sex=M")
    assert pd.isna(base.baseline) and math.isnan(base.delta_vs_baseline)
    report.fairness = fairness
    assert "0 of" in gap_summary(report) and "include 0" in gap_summary(report)


def test_a_better_arm_closes_the_gap_and_the_text_says_its_interval_excludes_0(tmp_path):
    test = _test_set()
    runs = []
    for seed in range(3):
        runs.append(fake_run(tmp_path, "real", seed, test, _probs(test, seed), val=_val()))
        fair = _probs(test, seed)
        fair[:, 0] = np.where(fair[:, 0] == 0.2, 0.8, fair[:, 0])  # misses nobody
        fair[:, 1] = 1 - fair[:, 0]
        runs.append(fake_run(tmp_path, "mix0.5", seed, test, fair, val=_val()))
    report, fairness = _fairness(runs)
    gap = _gap(fairness, "mix0.5", "Pleural Effusion", "sex=M")
    assert gap.gap == 0.0
    assert gap.delta_vs_baseline < 0 and gap.delta_vs_baseline_hi < 0
    assert gap.excludes_0_vs_baseline is True
    report.fairness = fairness
    text = gap_summary(report)
    assert "mix0.5 vs real, Pleural Effusion FNR, sex=M − sex=F" in text


def test_runs_without_val_predictions_or_demographics_do_not_crash(tmp_path):
    test = _test_set()
    old = fake_run(tmp_path, "real", 0, test, _probs(test, 0))  # no val predictions
    new = fake_run(tmp_path, "mix0.5", 0, test, _probs(test, 0), val=_val())
    report, fairness = _fairness([old, new])
    assert fairness.runs_without_threshold == [str(old)]
    assert any("thresholds are unavailable" in n and str(old) in n for n in fairness.notes)
    cell = _cell(fairness, "real", "Pleural Effusion", "sex=F")
    assert (
        math.isfinite(cell.auroc_mean) and math.isnan(cell.fnr) and "no val threshold" in cell.note
    )
    assert math.isnan(_gap(fairness, "real", "Pleural Effusion", "sex=M").gap)
    assert math.isfinite(_gap(fairness, "mix0.5", "Pleural Effusion", "sex=M").gap)
    assert math.isnan(_gap(fairness, "mix0.5", "Pleural Effusion", "sex=M").delta_vs_baseline)
    report.fairness = fairness
    write_report(report, tmp_path / "out")

    bare = [fake_run(tmp_path / "bare", "real", 0, test, _probs(test, 0), demographics=False)]
    report, fairness = _fairness(bare)
    assert fairness.unavailable and "no sex or age" in fairness.unavailable
    report.fairness = fairness
    paths = write_report(report, tmp_path / "bare-out")
    assert "No subgroup analysis" in paths["report.md"].read_text()
    assert pd.read_csv(paths["fairness.csv"]).empty


# ------------------------------------------------------------------------------ files, CLI


def test_report_files_json_csv_and_cli_show_the_subgroups(tmp_path):
    test = _test_set()
    runs = []
    for seed in range(2):
        runs.append(fake_run(tmp_path / "runs", "real", seed, test, _probs(test, seed), _val()))
        runs.append(
            fake_run(tmp_path / "runs", "mix0.5", seed, test, _probs(test, 9 + seed), _val())
        )
    cfg = ReportConfig(runs=runs, out=tmp_path / "rep", n_boot=100)
    report, paths = make_report(cfg, age_edges=(50,))
    doc = json.loads(paths["report.json"].read_text())
    assert doc["report_version"] == 5
    f = doc["fairness"]
    assert f["available"] and f["age_groups"] == ["<50", "50+"] and f["min_positive_patients"] == 10
    assert "Youden" in f["threshold_rule"] and f["references"]["sex"] == "sex=F"
    assert {r["subgroup"] for r in f["subgroups"]} >= {
        "sex=F",
        "age_group=50+",
        "sex=M & age_group=50+",
    }
    assert all(isinstance(r["too_small"], bool) for r in f["subgroups"] + f["gaps"])
    csv = pd.read_csv(paths["fairness.csv"])
    assert len(csv) == len(f["subgroups"]) == 2 * len(LABELS) * 8  # arms x labels x subgroups
    assert {"auroc_mean", "auroc_lo", "auroc_hi", "fnr", "n_positive_patients"} <= set(csv)
    gaps = pd.read_csv(paths["fairness_gaps.csv"])
    assert {"gap", "delta_vs_baseline_lo", "excludes_0_vs_matched"} <= set(gaps)
    md = paths["report.md"].read_text()
    assert "## Subgroups" in md and "### Underdiagnosis gaps" in md and "Gap deltas" in md
    assert "| mix0.5 | Pleural Effusion | sex=M |" in md
    assert "<h2>Subgroups</h2>" in paths["report.html"].read_text()
    again = load_report(tmp_path / "rep")
    assert gap_rows(again) == gap_rows(report) and subgroup_rows(again) == subgroup_rows(report)

    out = tmp_path / "cli"
    args = ["report", str(tmp_path / "runs"), "--out", str(out), "--n-boot", "50"]
    result = runner.invoke(app, [*args, "--age-groups", "50"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "AUROC per subgroup" in result.output and "underdiagnosis gap" in result.output
    assert "age_group=50+" in result.output and "Gap deltas" in result.output
    assert "sex=M & age_group" not in result.output  # intersections: in the files only
    result = runner.invoke(app, [*args, "--age-groups", "65,40", "--overwrite"])
    assert result.exit_code == 2 and "--age-groups" in result.output


# ------------------------------------------------------------------------------ run files


def test_predictions_frame_carries_sex_and_age():
    rows = pd.DataFrame(
        {
            "image_path": ["a.png", "b.png"],
            "patient_id": ["p1", "p2"],
            "study_id": ["s1", "s2"],
            "sex": ["F", None],
            "age": [71.5, np.nan],
            "Edema": [1.0, 0.0],
        }
    )
    frame = predictions_frame(rows, ["Edema"], np.array([[0.7], [0.2]]))
    assert list(frame.columns) == ["image_path", "patient_id", "study_id", "sex", "age"] + [
        "true.Edema",
        "prob.Edema",
    ]
    assert frame.sex[0] == "F" and frame.age[0] == 71.5
    assert frame.sex.isna()[1] and np.isnan(frame.age[1])  # unknown: null
    bare = predictions_frame(rows.drop(columns=["sex", "age"]), ["Edema"], np.zeros((2, 1)))
    assert bare.sex.isna().all() and bare.age.isna().all()


def test_training_writes_demographics_and_val_predictions(phantom_manifest, tmp_path):
    from classifier.run import read_predictions, read_val_predictions
    from classifier.train import train_classifier
    from manifests.io import read_manifest

    cfg = TrainConfig(
        real=phantom_manifest,
        out=tmp_path / "run",
        backbone="test_resnet",
        labels=("Support Devices", "Pleural Effusion"),
        image_size=32,
        epochs=1,
        batch_size=8,
        n_boot=20,
        patience=0,
    )
    out = train_classifier(cfg)
    rows = read_manifest(phantom_manifest).rows.set_index("study_id")
    test, _ = read_predictions(out)
    val = read_val_predictions(out)
    assert val is not None and list(val.columns) == list(test.columns)
    for frame, split in ((test, "test"), (val, "val")):
        expected = rows.loc[frame.study_id]
        assert (expected.split == split).all()
        assert frame.sex.tolist() == expected.sex.tolist()
        assert np.allclose(frame.age, expected.age.astype(float), equal_nan=True)
    assert read_val_predictions(tmp_path) is None  # a run from before: no table, no error


def test_a_balanced_arm_is_compared_with_its_prevalence_matched_twin(tmp_path):
    """mix0.5-balanced against mix0.5 (same seeds): a twin that misses men's effusions and
    a balanced arm that misses nobody narrow the gap, and the report says so."""
    from classifier.report_tables import balance_summary

    test = _test_set()
    runs = []
    for seed in range(3):
        runs.append(fake_run(tmp_path, "real", seed, test, _probs(test, seed), val=_val()))
        runs.append(fake_run(tmp_path, "mix0.5", seed, test, _probs(test, seed), val=_val()))
        fair = _probs(test, seed)
        fair[:, 0] = np.where(fair[:, 0] == 0.2, 0.8, fair[:, 0])
        fair[:, 1] = 1 - fair[:, 0]
        runs.append(fake_run(tmp_path, "mix0.5-balanced", seed, test, fair, val=_val()))
        control = {"matched_to": "mix0.5"}
        runs.append(
            fake_run(tmp_path, "real-steps-mix0.5", seed, test, _probs(test, seed), _val(), control)
        )
    report, fairness = _fairness(runs)
    gap = _gap(fairness, "mix0.5-balanced", "Pleural Effusion", "sex=M")
    assert gap.twin_arm == "mix0.5" and gap.matched_arm == "real-steps-mix0.5"
    assert gap.delta_vs_twin < 0 and gap.delta_vs_twin_hi < 0 and gap.excludes_0_vs_twin
    assert pd.isna(_gap(fairness, "mix0.5", "Pleural Effusion", "sex=M").twin_arm)
    report.fairness = fairness
    text = balance_summary(report)
    assert "narrowed: " in text and "mix0.5-balanced, Pleural Effusion FNR, sex=M" in text
    headers, rows = gap_rows(report)
    assert any("prevalence-matched twin" in h for h in headers)
    assert all(len(r) == len(headers) for r in rows)
    # AUROC: the balanced arm against its twin, a secondary comparison paired by seed
    from classifier.endpoints import comparisons_table
    from classifier.report_tables import display_rows

    assert report.twins == {"mix0.5-balanced": "mix0.5"}
    macro = report.table.set_index(["arm", "label"]).loc[("mix0.5-balanced", "macro")]
    assert macro.twin_arm == "mix0.5" and macro.delta_vs_twin > 0 and macro.delta_vs_twin_lo > 0
    assert macro.delta_vs_twin_role == "secondary"
    twin_rows = [c for c in comparisons_table(report.table) if c["kind"] == "twin"]
    assert {c["arm"] for c in twin_rows} == {"mix0.5-balanced"} and twin_rows[0]["vs"] == "mix0.5"
    headers, rows = display_rows(report)
    assert "Δ vs prevalence-matched twin [95% CI]" in headers
    column = headers.index("Δ vs prevalence-matched twin [95% CI]")
    assert any(r[0] == "mix0.5-balanced" and r[column].endswith("vs mix0.5") for r in rows)
