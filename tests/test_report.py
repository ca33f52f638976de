"""cxraug report: fake run directories with known predictions, statistics, files, errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from classifier.arms import Arm
from classifier.report import summarize_arms
from classifier.report_render import write_report
from classifier.report_tables import display_rows
from classifier.runset import collect_runs
from classifier.stats import paired_bootstrap_delta
from cli import app
from manifests.errors import UserError

runner = CliRunner()
LABELS = ("Pleural Effusion", "Pneumothorax")
N_IMAGES, N_PATIENTS = 120, 40


def _test_set(seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """120 test images of 40 patients with 0/1 truth (plus a -1 and a NaN) per label."""
    rng = np.random.default_rng(seed)
    ids = pd.DataFrame(
        {
            "image_path": [f"/data/test/{i:04d}.png" for i in range(N_IMAGES)],
            "patient_id": [f"p{i % N_PATIENTS:03d}" for i in range(N_IMAGES)],
            "study_id": [f"s{i:04d}" for i in range(N_IMAGES)],
        }
    )
    truth = rng.integers(0, 2, size=(N_IMAGES, len(LABELS))).astype(np.float64)
    truth[0, 0], truth[1, 1] = -1.0, np.nan  # left out of AUROC for that label
    return ids, truth


def fake_run(
    root: Path,
    arm: str,
    seed: int,
    prob: np.ndarray,
    labels=LABELS,
    test_seed: int = 0,
    n_images: int = N_IMAGES,
    truth: np.ndarray | None = None,
    config: dict | None = None,
) -> Path:
    """A finished run directory (config.json, metrics.json, predictions.parquet)."""
    ids, default_truth = _test_set(test_seed)
    truth = default_truth if truth is None else truth
    run = root / f"{arm}-seed{seed}"
    run.mkdir(parents=True)
    frame = ids.iloc[:n_images].copy()
    for j, label in enumerate(labels):
        frame[f"true.{label}"] = truth[:n_images, j % truth.shape[1]].astype(np.float32)
        frame[f"prob.{label}"] = prob[:n_images, j % prob.shape[1]].astype(np.float32)
    frame.to_parquet(run / "predictions.parquet", index=False)
    mix = Arm.parse(arm).mix  # what train-classifier records beside the arm name
    cfg = {"arm": arm, "seed": seed, "labels": list(labels), "backbone": "resnet18", "mix": mix}
    cfg.update(config or {})
    (run / "config.json").write_text(json.dumps(cfg))
    (run / "metrics.json").write_text(json.dumps({"arm": arm, "labels": list(labels)}))
    return run


def _noisy(truth: np.ndarray, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    clean = np.nan_to_num(np.clip(truth, 0, 1))
    return 1 / (1 + np.exp(-(clean * 2 - 1) / noise - rng.normal(size=truth.shape)))


@pytest.fixture
def three_arms(tmp_path) -> list[Path]:
    """real (informative but noisy), perfect (prob = truth), random; five seeds each.

    Five, not two: with two seeds the seed spread is one number, so an honest interval is a
    t with 1 df (12.7 x its standard error) and shows nothing; the old interval drew 2 of
    2 runs with replacement, halving the seed variance, and looked decisive.
    """
    _, truth = _test_set()
    runs = []
    for seed in range(5):
        runs.append(fake_run(tmp_path, "real", seed, _noisy(truth, 1.0, seed)))
        runs.append(fake_run(tmp_path, "mix0.5", seed, np.nan_to_num(np.clip(truth, 0, 1))))
        rand = np.random.default_rng(100 + seed).random(truth.shape)
        runs.append(fake_run(tmp_path, "synthetic", seed, rand))
    return runs


def _row(report, arm: str, label: str) -> pd.Series:
    table = report.table
    return table[(table.arm == arm) & (table.label == label)].iloc[0]


def test_report_statistics_signs_and_spread(three_arms):
    report = summarize_arms(collect_runs(three_arms), n_boot=300, seed=0)
    assert report.arms == ["real", "mix0.5", "synthetic"]
    assert report.baseline == "real"
    assert len(report.table) == 3 * (len(LABELS) + 1)
    _, truth = _test_set()
    for j, label in enumerate(LABELS):
        ok = np.isin(truth[:, j], (0, 1))
        per_seed = [roc_auc_score(truth[ok, j], _noisy(truth, 1.0, s)[ok, j]) for s in range(5)]
        real = _row(report, "real", label)
        assert real.auroc_mean == pytest.approx(np.mean(per_seed))
        assert real.auroc_std == pytest.approx(np.std(per_seed, ddof=1))
        assert (real.auroc_min, real.auroc_max) == pytest.approx((min(per_seed), max(per_seed)))
        assert real.auroc_lo <= real.auroc_mean <= real.auroc_hi
        assert math.isnan(real.delta)  # the baseline has no delta

        perfect = _row(report, "mix0.5", label)
        assert perfect.auroc_mean == pytest.approx(1.0)
        assert perfect.delta == pytest.approx(1.0 - real.auroc_mean)
        assert 0 < perfect.delta_lo <= perfect.delta <= perfect.delta_hi
        assert perfect.relative_pct == pytest.approx(100 * perfect.delta / real.auroc_mean)
        assert bool(perfect.paired_by_seed)

        rand = _row(report, "synthetic", label)
        assert rand.delta_lo <= rand.delta <= rand.delta_hi < 0
    macro = _row(report, "mix0.5", "macro")
    assert macro.auroc_mean == pytest.approx(1.0)
    # Never a delta without its CI.
    finite = report.table.delta.notna()
    assert report.table[finite][["delta_lo", "delta_hi"]].notna().all().all()


def test_one_seed_per_arm_equals_paired_bootstrap_delta(tmp_path):
    _, truth = _test_set()
    prob_a, prob_b = _noisy(truth, 1.0, 0), _noisy(truth, 0.5, 1)
    runs = [fake_run(tmp_path, "real", 3, prob_a), fake_run(tmp_path, "mix0.5", 3, prob_b)]
    report = summarize_arms(collect_runs(runs), n_boot=200, seed=7)
    ids, _ = _test_set()
    groups = ids["patient_id"].to_numpy()
    for j, label in enumerate(LABELS):
        expected = paired_bootstrap_delta(truth[:, j], prob_a[:, j], prob_b[:, j], groups, 200, 7)
        row = _row(report, "mix0.5", label)
        assert (row.delta, row.delta_lo, row.delta_hi) == pytest.approx(expected)
    expected = paired_bootstrap_delta(truth, prob_a, prob_b, groups, 200, 7)
    row = _row(report, "mix0.5", "macro")
    assert (row.delta, row.delta_lo, row.delta_hi) == pytest.approx(expected)
    assert any("one seed" in note for note in report.notes)


def test_unpaired_seeds_are_noted_and_undefined_label_is_nan(tmp_path):
    _, truth = _test_set()
    truth = truth.copy()
    truth[:, 1] = 0.0  # Pneumothorax: one class in the test set
    runs = [
        fake_run(tmp_path, "real", 0, _noisy(truth, 1.0, 0), truth=truth),
        fake_run(tmp_path, "real", 1, _noisy(truth, 1.0, 1), truth=truth),
        fake_run(tmp_path, "synthetic", 5, _noisy(truth, 0.7, 5), truth=truth),
    ]
    report = summarize_arms(collect_runs(runs), n_boot=100)
    row = _row(report, "synthetic", "Pneumothorax")
    assert math.isnan(row.auroc_mean) and math.isnan(row.delta) and "one class" in row.note
    assert not bool(_row(report, "synthetic", "Pleural Effusion").paired_by_seed)
    assert any("do not share" in n for n in report.notes)
    # Macro is the mean over defined labels only.
    assert _row(report, "synthetic", "macro").auroc_mean == pytest.approx(
        _row(report, "synthetic", "Pleural Effusion").auroc_mean
    )


def test_no_baseline_means_no_deltas(tmp_path):
    _, truth = _test_set()
    runs = [fake_run(tmp_path, "synthetic", 0, _noisy(truth, 1.0, 0))]
    report = summarize_arms(collect_runs(runs), n_boot=50)
    assert report.baseline is None
    assert report.table.delta.isna().all()
    assert any("baseline" in note for note in report.notes)


def test_report_files_have_every_arm_and_label(three_arms, tmp_path):
    report = summarize_arms(collect_runs(three_arms), n_boot=100)
    paths = write_report(report, tmp_path / "report")
    assert sorted(paths) == [
        "fairness.csv",  # the Subgroups tables: headers only without demographics
        "fairness_gaps.csv",
        "report.csv",
        "report.html",
        "report.json",
        "report.md",
    ]
    csv = pd.read_csv(paths["report.csv"])
    assert set(zip(csv.arm, csv.label, strict=True)) == {
        (arm, label) for arm in ("real", "mix0.5", "synthetic") for label in (*LABELS, "macro")
    }
    doc = json.loads(paths["report.json"].read_text())
    assert doc["baseline"] == "real" and len(doc["rows"]) == len(csv)
    assert doc["n_test_patients"] == N_PATIENTS and len(doc["runs"]) == 15
    html = paths["report.html"].read_text()
    assert html.count("data:image/png;base64,") == len(LABELS)  # one ROC figure per label
    assert "<style>" in html and "mix0.5" in html and "http" not in html.replace("http-equiv", "")
    md = paths["report.md"].read_text()
    assert "| mix0.5 | macro |" in md and "Δ vs real" in md
    headers, rows = display_rows(report)
    assert len(rows) == len(csv) and headers[0] == "arm"
    with pytest.raises(UserError, match="already holds a report"):
        write_report(report, tmp_path / "report")


def test_sample_grid_from_synthetic_manifest(three_arms, tmp_path, phantom_manifest):
    from manifests.io import Manifest, read_manifest, write_manifest

    real = read_manifest(phantom_manifest)
    rows = real.rows.head(4).copy()
    (tmp_path / "images").mkdir()
    for i, src in enumerate(real.image_paths()[:4]):
        shutil.copy(src, tmp_path / "images" / f"{i}.png")
    rows["image_path"] = [f"images/{i}.png" for i in range(4)]
    rows["source"], rows["split"] = "synthetic", "train"
    rows["patient_id"] = [f"synthetic-{i}" for i in range(4)]
    rows["prompt"], rows["seed"] = "Right pleural effusion.", range(4)
    rows["guidance_scale"], rows["num_inference_steps"] = 4.0, 2
    rows["scheduler"], rows["generator"] = "pndm", "abc"
    rows["target_label"] = ["Pleural Effusion", "Pleural Effusion", "Pneumothorax", "No Finding"]
    synthetic = write_manifest(Manifest(rows, real.labels, tmp_path), tmp_path / "syn.parquet")
    report = summarize_arms(collect_runs(three_arms), n_boot=50)
    paths = write_report(report, tmp_path / "out", synthetic=synthetic)
    html = paths["report.html"].read_text()
    assert "Synthetic samples per label" in html
    assert html.count("data:image/png;base64,") == len(LABELS) + 1


def test_mismatched_label_set_test_set_and_duplicates_are_user_errors(three_arms, tmp_path):
    _, truth = _test_set()
    other = fake_run(tmp_path / "o", "real", 9, truth, labels=("Cardiomegaly", "Pneumothorax"))
    with pytest.raises(UserError, match=f"{other}: label set"):
        collect_runs([*three_arms, other])
    fewer = fake_run(tmp_path / "f", "mix1", 0, truth, n_images=90)
    with pytest.raises(UserError, match="different test set"):
        collect_runs([three_arms[0], fewer])
    relabelled = fake_run(tmp_path / "r", "mix1", 0, truth, truth=1 - np.nan_to_num(truth))
    with pytest.raises(UserError, match="test labels differ"):
        collect_runs([three_arms[0], relabelled])
    with pytest.raises(UserError, match="also"):
        collect_runs([three_arms[0], fake_run(tmp_path / "d", "real", 0, truth)])
    unfinished = fake_run(tmp_path / "u", "mix1", 0, truth)
    (unfinished / "metrics.json").unlink()
    with pytest.raises(UserError, match="not finished"):
        collect_runs([unfinished])


def test_cli_report_table_and_errors(three_arms, tmp_path):
    out = tmp_path / "rep"
    # A folder of run directories works as well as the runs themselves.
    result = runner.invoke(
        app, ["report", str(three_arms[0].parent), "--out", str(out)], env={"COLUMNS": "160"}
    )
    assert result.exit_code == 0, result.output
    assert "AUROC per arm" in result.output and "report.html" in result.output
    assert "(baseline)" in result.output
    assert (out / "report.html").is_file()

    _, truth = _test_set()
    other = fake_run(tmp_path / "o", "real", 9, truth, labels=("Cardiomegaly", "Edema"))
    result = runner.invoke(app, ["report", *map(str, three_arms), str(other), "--out", str(out)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(other) in lines[0] and "label set" in lines[0]
    result = runner.invoke(app, ["report", str(tmp_path / "nope"), "--out", str(out)])
    assert result.exit_code == 2 and "not a classifier run directory" in result.output


# ------------------------------------------------------------------------------ controls, seeds


def test_arm_order_puts_controls_and_larger_synthetic_sets_in_place():
    arms = ["pretrain-finetune", "synthetic-x4", "mix1", "real-steps-mix1", "synthetic",
            "mix0.5", "zzz", "real-steps-mix0.5", "synthetic-x2", "real"]  # fmt: skip
    assert sorted(arms, key=lambda a: Arm.parse(a).sort_key()) == [
        "real", "real-steps-mix0.5", "real-steps-mix1", "mix0.5", "mix1", "synthetic",
        "synthetic-x2", "synthetic-x4", "pretrain-finetune", "zzz",
    ]  # fmt: skip


def test_step_matched_control_delta_in_table_display_and_files(tmp_path):
    """real, mix0.5 and its step-matched real-only control, 3 seeds each."""
    _, truth = _test_set()
    runs = []
    for seed in range(3):
        runs.append(fake_run(tmp_path, "real", seed, _noisy(truth, 1.0, seed)))
        runs.append(fake_run(tmp_path, "mix0.5", seed, _noisy(truth, 0.4, 10 + seed)))
        control = {"matched_to": "mix0.5"}
        prob = _noisy(truth, 0.7, 20 + seed)
        runs.append(fake_run(tmp_path, "real-steps-mix0.5", seed, prob, config=control))
    report = summarize_arms(collect_runs(runs), n_boot=200)
    assert report.arms == ["real", "real-steps-mix0.5", "mix0.5"]
    assert report.matched == {"mix0.5": "real-steps-mix0.5"}
    for label in (*LABELS, "macro"):
        mix, control = _row(report, "mix0.5", label), _row(report, "real-steps-mix0.5", label)
        assert mix.matched_arm == "real-steps-mix0.5"
        assert mix.delta_vs_matched == pytest.approx(mix.auroc_mean - control.auroc_mean)
        assert mix.delta_vs_matched_lo <= mix.delta_vs_matched <= mix.delta_vs_matched_hi
        assert mix.relative_vs_matched_pct == pytest.approx(
            100 * mix.delta_vs_matched / control.auroc_mean
        )
        assert math.isfinite(control.delta) and math.isnan(control.delta_vs_matched)
    assert any("step-matched" in n and "longer training" in n for n in report.notes)
    assert any("fewer than 5 seeds" in n for n in report.notes)

    headers, rows = display_rows(report)
    assert headers[8] == "Δ vs step-matched [95% CI]" and headers[-1] == "valid resamples"
    by_arm = {(r[0], r[1]): r for r in rows}
    assert by_arm[("mix0.5", "macro")][8].endswith("vs real-steps-mix0.5")
    assert by_arm[("real-steps-mix0.5", "macro")][8] == "(control of mix0.5)"
    assert by_arm[("real", "macro")][-1] == "200/200"
    compact_headers, _ = display_rows(report, compact=True)
    assert "Δ vs step-matched [95% CI]" in compact_headers

    paths = write_report(report, tmp_path / "out")
    csv = pd.read_csv(paths["report.csv"])
    assert list(csv.columns[:19]) == [  # the old columns first, unchanged (additive)
        "arm", "label", "n_runs", "seeds", "auroc_mean", "auroc_lo", "auroc_hi", "auroc_std",
        "auroc_min", "auroc_max", "baseline", "delta", "delta_lo", "delta_hi", "relative_pct",
        "paired_by_seed", "n_positive", "n_negative", "note",
    ]  # fmt: skip
    assert {"n_valid", "matched_arm", "delta_vs_matched", "delta_vs_matched_lo"} <= set(csv)
    doc = json.loads(paths["report.json"].read_text())
    assert doc["matched"] == {"mix0.5": "real-steps-mix0.5"} and doc["report_version"] >= 2
    assert "Δ vs step-matched" in paths["report.md"].read_text()
    assert "Δ vs step-matched" in paths["report.html"].read_text()
    from classifier.report_render import load_report

    again = load_report(tmp_path / "out")
    assert again.matched == report.matched
    assert display_rows(again) == display_rows(report)


def test_few_seeds_are_warned_in_notes_terminal_and_files(tmp_path):
    _, truth = _test_set()
    runs = [fake_run(tmp_path, arm, s, _noisy(truth, 1.0, 3 * s + k))
            for k, arm in enumerate(("real", "mix0.5")) for s in range(3)]  # fmt: skip
    out = tmp_path / "rep"
    result = runner.invoke(app, ["report", *map(str, runs), "--out", str(out), "--n-boot", "50"])
    assert result.exit_code == 0, result.output
    assert "fewer than 5 seeds" in " ".join(result.output.split())
    for name in ("report.md", "report.html", "report.json"):
        assert "fewer than 5 seeds" in (out / name).read_text()


def test_seed_interval_is_wider_than_drawing_runs_with_replacement(tmp_path):
    """3 seeds that differ far more than test noise explains: the delta CI is the t(2)
    interval of the per-seed deltas, not a bootstrap over 3 of 3 runs."""
    from scipy.stats import t as student_t

    _, truth = _test_set()
    clean = np.nan_to_num(np.clip(truth, 0, 1))
    runs = []
    for seed, flip in enumerate((0.05, 0.15, 0.30)):  # mix0.5 seeds differ a lot
        runs.append(fake_run(tmp_path, "real", seed, _noisy(truth, 1.0, 7)))  # same model
        noisy = np.where(np.random.default_rng(seed).random(truth.shape) < flip, 1 - clean, clean)
        runs.append(fake_run(tmp_path, "mix0.5", seed, noisy + 0.01 * _noisy(truth, 1.0, 8)))
    report = summarize_arms(collect_runs(runs), n_boot=300)
    for label in (*LABELS, "macro"):
        row = _row(report, "mix0.5", label)
        # The real arm's seeds are one model, so the per-seed deltas spread as mix0.5's runs.
        t_half = student_t.ppf(0.975, 2) * row.auroc_std / math.sqrt(3)
        assert (row.delta_hi - row.delta_lo) / 2 >= t_half * (1 - 1e-9)
        assert row.auroc_std > 0.02  # the seeds do differ: this is the regime that matters


def test_report_refuses_unchecked_synthetic_runs_and_notes_foreign_ones(tmp_path):
    from classifier.config import ReportConfig
    from classifier.report_render import make_report

    _, truth = _test_set(0)
    prob = _noisy(truth, 0.5, 1)
    real = fake_run(tmp_path / "runs", "real", 0, prob)
    old = fake_run(tmp_path / "runs", "mix0.5", 0, prob, config={"n_synthetic_train": 40})
    with pytest.raises(UserError, match="never checked against the test patients"):
        make_report(ReportConfig([real, old], tmp_path / "r1"))
    report, _ = make_report(
        ReportConfig([real, old], tmp_path / "r2", allow_foreign_synthetic=True)
    )
    assert "could not be checked" in report.notes[0]
    checked = fake_run(
        tmp_path / "ok",
        "mix0.5",
        0,
        prob,
        config={"n_synthetic_train": 40, "synthetic_provenance": "checked"},
    )
    report, _ = make_report(ReportConfig([real, checked], tmp_path / "r3"))
    assert not any("could not be checked" in n for n in report.notes)


def test_tables_for_people_round_and_say_n_a():
    """Terminal and log tables: three decimals, 'n/a' for NaN, yes/no for booleans."""
    import pandas as pd

    from augmentor.generator_report import prompt_fidelity_text
    from classifier.tables import frame_text

    text = frame_text(pd.DataFrame({"a": [0.123456, float("nan")], "ok": [True, False]}))
    assert "0.123" in text and "0.1234" not in text
    assert "n/a" in text and "NaN" not in text and "yes" in text and "no" in text
    row = {
        "finding": "Cardiomegaly", "n_prompted": 80, "hit_rate": 0.45, "hit_rate_low": 0.35,
        "hit_rate_high": 0.56, "real_positive_rate": 1.0, "n_unprompted": 214,
        "false_finding_rate": 0.373832, "false_finding_rate_low": 0.31,
        "false_finding_rate_high": 0.44, "real_negative_rate": 0.008403,
        "matched_negative_rate": 0.041206, "n_sided": 0, "side_hit_rate": float("nan"),
        "side_hit_rate_low": None, "side_hit_rate_high": None,
        "real_side_hit_rate": float("nan"), "meets_targets": False,
    }  # fmt: skip
    text = prompt_fidelity_text(pd.DataFrame([row]))
    assert "n prompted" in text and "n_prompted" not in text
    assert "0.374" in text and "0.373832" not in text and "NaN" not in text
