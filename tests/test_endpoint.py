"""What a referee needs from a report: which labels the macro averages, the realised steps
of each arm, the primary endpoint and Holm-adjusted secondary comparisons, and what each arm
saw (its information budget)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from classifier.report import TABLE_COLUMNS, summarize_arms
from classifier.report_render import write_report
from classifier.runset import collect_runs
from manifests import provenance
from manifests.errors import UserError
from tests.test_report import N_IMAGES, N_PATIENTS, fake_run

LABELS = ("Pleural Effusion", "Pneumothorax")
V2_COLUMNS = [  # report.csv's columns before this report version, in their order
    "arm", "label", "n_runs", "seeds", "auroc_mean", "auroc_lo", "auroc_hi", "auroc_std",
    "auroc_min", "auroc_max", "baseline", "delta", "delta_lo", "delta_hi", "relative_pct",
    "paired_by_seed", "n_positive", "n_negative", "note", "n_valid", "matched_arm",
    "delta_vs_matched", "delta_vs_matched_lo", "delta_vs_matched_hi",
    "relative_vs_matched_pct",
]  # fmt: skip


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
    assert report.per_arm["mix0.5"]["seeds"] == [0, 1]
    assert report.per_arm["mix0.5"]["steps"] == {
        "optimizer_steps": [24, 24],
        "epochs_run": [4, 4],
        "scored_epoch": [3, 4],  # 1-based: best_epoch 2 and 3
        "steps_at_scored_epoch": [18, 24],
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


# ------------------------------------------------------------------------------ endpoints


def test_holm_levels_and_adjusted_p_values_by_hand():
    from classifier.stats import holm

    # Sorted: 0.005 (d), 0.01 (a), 0.03 (c), 0.04 (b); m = 4, alpha 0.05.
    # 0.005 <= 0.05/4 and 0.01 <= 0.05/3: rejected; 0.03 > 0.05/2: Holm stops there, so c and
    # every later one (b) get the level of that step, 1 - 0.05/2. NaN is in no family.
    levels, adjusted = holm([0.01, 0.04, 0.03, 0.005, float("nan")], alpha=0.05)
    assert levels[:4] == pytest.approx([1 - 0.05 / 3, 1 - 0.05 / 2, 1 - 0.05 / 2, 1 - 0.05 / 4])
    # max over j <= i of (m - j + 1) p_(j): 0.02, 0.03, 0.06, max(0.06, 0.04)
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(levels[4]) and np.isnan(adjusted[4])
    levels, adjusted = holm([0.001, 0.002], alpha=0.05)  # all rejected: 1 - 0.05/2, 1 - 0.05
    assert levels == pytest.approx([0.975, 0.95]) and adjusted == pytest.approx([0.002, 0.002])


def _one_seed_arms(tmp_path) -> tuple[list, np.ndarray, dict]:
    truth = _truth()
    probs = {
        "real": _scores(truth, 1.0, 1),
        "real-steps-mix0.5": _scores(truth, 0.8, 2),
        "mix0.5": _scores(truth, 0.6, 3),
    }
    runs = [
        fake_run(tmp_path, arm, 0, prob, truth=truth, config={"matched_to": "mix0.5"})
        if arm.startswith("real-steps")
        else fake_run(tmp_path, arm, 0, prob, truth=truth)
        for arm, prob in probs.items()
    ]
    return runs, truth, probs


def test_secondary_deltas_get_holm_intervals_from_the_bootstrap_p_values(tmp_path):
    """One seed per arm: every interval is the patient bootstrap's percentile interval, so
    the p-values, Holm's levels and the adjusted intervals can be recomputed by hand."""
    from classifier.stats import (
        fixed_macro,
        paired_bootstrap_delta,
        patient_resample_weights,
        resampled_auroc,
    )

    runs, truth, probs = _one_seed_arms(tmp_path)
    n_boot, seed = 300, 4
    report = summarize_arms(collect_runs(runs), n_boot=n_boot, seed=seed)
    # The default rule: the mixed arm against its step-matched control, macro.
    assert report.primary["comparison"] == "mix0.5 vs real-steps-mix0.5, macro"
    assert not report.primary["declared"]

    patients = np.array([f"p{i % N_PATIENTS:03d}" for i in range(N_IMAGES)])
    weights, codes = patient_resample_weights(patients, n_boot, seed)
    keep = np.ones(len(LABELS), dtype=bool)

    def resampled(arm: str) -> np.ndarray:
        per_label = resampled_auroc(truth, probs[arm], weights, codes)
        return np.column_stack([per_label, fixed_macro(per_label, keep)])

    cells = []  # (arm, other, column prefix, label index) of every delta shown
    for arm, other, prefix in (
        ("real-steps-mix0.5", "real", "delta"),
        ("mix0.5", "real", "delta"),
        ("mix0.5", "real-steps-mix0.5", "delta_vs_matched"),
    ):
        for k in range(3):
            cells.append((arm, other, prefix, k))
    names = [*LABELS, "macro"]
    secondary = [c for c in cells if c != ("mix0.5", "real-steps-mix0.5", "delta_vs_matched", 2)]
    p = []
    for arm, other, _, k in secondary:
        d = resampled(arm)[:, k] - resampled(other)[:, k]
        p.append(min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0))))
    # Holm by hand: ascending, the i-th (1-based) at 0.05 / (m - i + 1) until one fails.
    m, order = len(p), np.argsort(p, kind="stable")
    level, stopped = {}, None
    for i, j in enumerate(order):
        alpha_i = 0.05 / (m - i)
        if stopped is None and p[j] > alpha_i:
            stopped = alpha_i
        level[j] = 1 - (stopped if stopped is not None else alpha_i)
    assert report.n_secondary == m == 8
    for j, (arm, other, prefix, k) in enumerate(secondary):
        row = _row(report, arm, names[k])
        assert row[f"{prefix}_role"] == "secondary"
        assert row[f"{prefix}_p"] == pytest.approx(p[j])
        assert row[f"{prefix}_holm_level"] == pytest.approx(level[j])
        y = truth if k == 2 else truth[:, k]
        a, b = (probs[other], probs[arm]) if k == 2 else (probs[other][:, k], probs[arm][:, k])
        _, lo, hi = paired_bootstrap_delta(y, a, b, patients, n_boot, seed, level=level[j])
        assert (row[f"{prefix}_holm_lo"], row[f"{prefix}_holm_hi"]) == pytest.approx((lo, hi))
        assert row[f"{prefix}_holm_lo"] <= row[f"{prefix}_lo"] <= row[f"{prefix}_hi"]
        assert row[f"{prefix}_hi"] <= row[f"{prefix}_holm_hi"]  # wider than unadjusted
    first = _row(report, "mix0.5", "macro")
    assert first.delta_vs_matched_role == "primary" and np.isnan(first.delta_vs_matched_holm_lo)

    paths = write_report(report, tmp_path / "out")
    csv = pd.read_csv(paths["report.csv"])
    assert list(csv.columns) == TABLE_COLUMNS  # the report's columns, new ones appended
    assert list(csv.columns[:25]) == V2_COLUMNS and csv.delta_p.notna().any()
    doc = json.loads(paths["report.json"].read_text())
    assert doc["primary"]["comparison"] == "mix0.5 vs real-steps-mix0.5, macro"
    assert doc["n_secondary"] == 8 and len(doc["comparisons"]) == 9
    assert doc["comparisons"][0]["role"] == "primary"
    assert {c["role"] for c in doc["comparisons"][1:]} == {"secondary"}
    md = paths["report.md"].read_text()
    assert "Primary endpoint (by the default rule" in md and "## Comparisons" in md
    assert "Holm-adjusted CI (level)" in md and "Holm's step-down" in md
    assert "Primary endpoint" in paths["report.html"].read_text()


def test_a_declared_primary_endpoint_and_a_bad_one(tmp_path):
    runs, _, _ = _one_seed_arms(tmp_path)
    runset = collect_runs(runs)
    report = summarize_arms(runset, n_boot=100, primary="mix0.5 vs real, Pleural Effusion")
    assert report.primary["declared"] and report.primary["kind"] == "baseline"
    assert _row(report, "mix0.5", "Pleural Effusion").delta_role == "primary"
    assert _row(report, "mix0.5", "macro").delta_vs_matched_role == "secondary"
    paths = write_report(report, tmp_path / "out")
    text = paths["report.md"].read_text()
    assert "Primary endpoint (declared before the run): mix0.5 vs real, Pleural Effusion" in text
    with pytest.raises(UserError, match="not a comparison of this report; valid: .*mix0.5 vs"):
        summarize_arms(runset, n_boot=100, primary="mix0.5 vs synthetic, macro")
    with pytest.raises(UserError, match="no label 'Edema'"):
        summarize_arms(runset, n_boot=100, primary="mix0.5 vs real, Edema")
    with pytest.raises(UserError, match="is not a comparison; valid: 'ARM vs OTHER, LABEL'"):
        summarize_arms(runset, n_boot=100, primary="mix0.5 against real")


def test_the_p_value_is_the_one_the_interval_inverts():
    """With seeds: the interval at level 1 - p just reaches 0 (both with and without the
    guard's per-seed t interval deciding the width)."""
    from classifier.stats import SeedTerm, seed_interval, seed_p_value

    rng = np.random.default_rng(0)
    for spread in (0.002, 0.03):  # patient noise decides, then seed noise decides
        values = 0.02 + spread * rng.normal(size=(4, 3))
        resampled = values[:, None, :] + 0.01 * rng.normal(size=(4, 500, 3))
        term = [SeedTerm(values, resampled)]
        p = seed_p_value(term)
        for k in range(3):
            interval = seed_interval(term, 1 - p[k], delta=True)
            assert min(abs(interval.lo[k]), abs(interval.hi[k])) == pytest.approx(0, abs=1e-9)


def test_every_preset_declares_a_primary_endpoint_its_plan_trains(tmp_path):
    from study.config import check_config, config_to_toml
    from study.planning import plan_runs
    from study.presets import PRESETS, load_study_config

    for name in PRESETS:
        cfg = load_study_config(name)
        primary = cfg.report.value("primary")
        arm, other, label = primary.replace(",", " vs ").split(" vs ")
        sizes = [None, *cfg.classifier.real_sizes]
        counts = {(size, s): 100 for size in sizes for s in cfg.classifier.seeds}
        names = {r.arm.name for r in plan_runs(cfg.classifier, tmp_path, 400, counts)}
        assert {arm, other} <= names and label.strip() == "macro", name
        assert f"primary = {json.dumps(primary)}" in config_to_toml(cfg)
    cfg = load_study_config("smoke")
    cfg.report = cfg.report.with_settings(primary="mix0.5 beats real")
    with pytest.raises(UserError, match="study: report.primary: 'mix0.5 beats real'"):
        check_config(cfg)


# ------------------------------------------------------------------------------ budget


def _synthetic_set(tmp_path, real_path, base: str = "tiny"):
    """4 synthetic rows prompted by 2 train reports (one a template), whose generator was
    fine-tuned on every train patient of `real_path`."""
    from manifests.io import Manifest, read_manifest, write_manifest
    from tests.helpers import set_synthesis_columns

    real = read_manifest(real_path)
    train = real.rows[real.rows.split == "train"]
    rows = train.head(4).copy()
    (tmp_path / "images").mkdir()
    for i, src in enumerate(real.with_rows(rows).image_paths()):  # the sample grid shows them
        shutil.copy(src, tmp_path / "images" / f"{i}.png")
    rows["image_path"] = [f"images/{i}.png" for i in range(4)]
    rows["source"], rows["split"] = "synthetic", "train"
    rows["patient_id"] = rows["study_id"] = [f"synthetic-{i}" for i in range(4)]
    set_synthesis_columns(rows, seed=range(4))
    prompted = train.drop_duplicates("patient_id").head(2)
    rows[provenance.PROMPT_PATIENT_COLUMN] = list(prompted.patient_id) * 2
    rows["prompt_study_id"] = list(prompted.study_id) * 2
    rows["prompt_source"] = ["report", "report", "report", "template"]
    record = provenance.synthetic_record(
        "abc", provenance.train_patients(real), real, generator_base=base
    )
    meta = {provenance.PROVENANCE_KEY: json.dumps(record)}
    path = tmp_path / "synthetic.parquet"
    write_manifest(Manifest(rows, real.labels, tmp_path, metadata=meta), path)
    return path


def test_what_each_arm_saw_and_which_comparisons_differ_in_it(tmp_path, phantom_manifest):
    from manifests.io import absolutize, read_manifest
    from manifests.mixing import subset_real_train

    synthetic = _synthetic_set(tmp_path, phantom_manifest)
    real = read_manifest(phantom_manifest)
    truth = _truth()
    size, runs = 10, []
    common = {"real": str(phantom_manifest), "real_size": size, "n_val": 1}
    for seed in range(2):
        n_sub = len(subset_real_train(real, size, seed).rows.query("split == 'train'"))
        for arm, config in (
            ("real-n10", {}),
            ("real-steps-mix0.5-n10", {"matched_to": "mix0.5-n10", "train_size": 2 * n_sub}),
            ("mix0.5-n10", {"synthetic": str(synthetic), "n_synthetic_train": n_sub}),
        ):
            prob = _scores(truth, 1.0, len(runs))
            runs.append(
                fake_run(tmp_path, arm, seed, prob, truth=truth, config={**common, **config})
            )
    report = summarize_arms(collect_runs(runs), n_boot=50)

    train = absolutize(real).rows.query("split == 'train'")
    val = real.rows.query("split == 'val'")
    subsets = [subset_real_train(real, size, s).rows.query("split == 'train'") for s in (0, 1)]
    mixed = report.per_arm["mix0.5-n10"]["information"]
    assert mixed["classifier_real_train_images"] == [len(s) for s in subsets]
    assert mixed["classifier_real_train_patients"] == [s.patient_id.nunique() for s in subsets]
    assert mixed["classifier_val_images"] == [len(val)] * 2
    assert mixed["classifier_val_patients"] == [val.patient_id.nunique()] * 2
    assert mixed["generator_used"] == [True, True]
    assert mixed["generator_real_images"] == [len(train)] * 2  # every train image, with report
    assert mixed["generator_patients"] == [train.patient_id.nunique()] * 2
    assert mixed["generator_base"] == ["tiny", "tiny"]
    assert mixed["prompt_reports"] == [2, 2] and mixed["prompt_patients"] == [2, 2]
    assert mixed["prompt_splits"] == [{"train": 2}] * 2 and mixed["template_prompts"] == [1, 1]
    assert mixed["real_images_seen"] == [len(train)] * 2
    control = report.per_arm["real-steps-mix0.5-n10"]["information"]
    assert control["generator_used"] == [False, False]
    assert control["real_images_seen"] == [len(s) for s in subsets]  # repeats count once

    # The delta against the control credits what only the generator saw; it says so.
    extra = [len(train) - len(s) for s in subsets]
    patients = [train.patient_id.nunique() - s.patient_id.nunique() for s in subsets]
    span = lambda v: str(v[0]) if v[0] == v[1] else f"{min(v)}–{max(v)}"  # noqa: E731
    expected = (
        f"mix0.5-n10's generator saw {span(extra)} real images ({span(patients)} patients) "
        "and their reports that real-steps-mix0.5-n10 did not"
    )
    row = _row(report, "mix0.5-n10", "macro")
    assert row.information_vs_matched == expected
    assert row.information_vs_baseline == expected.replace("real-steps-mix0.5-n10", "real-n10")
    same = _row(report, "real-steps-mix0.5-n10", "macro").information_vs_baseline
    assert same == f"equal: both saw the same {span([len(s) for s in subsets])} real images"
    assert report.primary["information"] == expected

    paths = write_report(report, tmp_path / "out")
    doc = json.loads(paths["report.json"].read_text())
    assert doc["per_arm"]["mix0.5-n10"]["information"]["generator_real_images"] == [len(train)] * 2
    assert doc["comparisons"][0]["information"] == expected
    md = paths["report.md"].read_text()
    assert "## What each arm saw" in md and expected in md
    assert f"| {len(train)} ({train.patient_id.nunique()}) | tiny |" in md
    assert "2 reports of 2 patients (train 2); 1 of its images from template prompts" in md
    assert "What each arm saw" in paths["report.html"].read_text()


def test_an_arm_whose_manifests_cannot_be_read_says_not_known(tmp_path):
    truth = _truth()
    gone = {"real": str(tmp_path / "gone.parquet"), "n_val": 7}
    runs = [
        fake_run(tmp_path, "real", 0, _scores(truth, 1.0, 0), truth=truth, config=gone),
        fake_run(tmp_path, "mix0.5", 0, _scores(truth, 0.5, 1), truth=truth, config=gone),
    ]
    report = summarize_arms(collect_runs(runs), n_boot=50)
    info = report.per_arm["mix0.5"]["information"]
    assert info["classifier_val_images"] == [7] and info["real_images_seen"] == [None]
    assert _row(report, "mix0.5", "macro").information_vs_baseline.startswith("not known")


def test_a_study_refuses_a_primary_endpoint_it_does_not_train_before_it_runs(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    config = tmp_path / "study.toml"
    config.write_text('[report]\nprimary = "mix0.5-n80 vs real-steps-mix0.5-n80, macro"\n')
    out = tmp_path / "s"
    result = CliRunner().invoke(
        app, ["study", "--preset", "smoke", "--config", str(config), "--out", str(out)]
    )
    assert result.exit_code == 2
    line = " ".join(result.output.split())
    assert "names arm 'mix0.5-n80', which this study does not train" in line
    assert not out.exists()  # refused before anything was written
