"""Several generators per arm, the positives-matched control, and the report's data-efficiency
numbers end to end: fake run folders with known predictions (tests/test_report.py's)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from classifier.endpoints import OVERSAMPLE, comparisons_table
from classifier.report import summarize_arms
from classifier.report_render import write_report
from classifier.report_tables import display_rows
from classifier.runset import collect_runs
from classifier.stats import SeedTerm, seed_interval, unit_means
from manifests.errors import UserError
from tests.test_report import _noisy, _row, _test_set, fake_run


def _generator_runs(tmp_path, generators=3, seeds=2, spread=1.0):
    """real (5 seeds) and mix0.5 from `generators` generators x `seeds` seeds each; a
    generator sets the mixed runs' noise (its quality), a seed adds a little."""
    _, truth = _test_set()
    runs = [fake_run(tmp_path / "real", "real", s, _noisy(truth, 1.0, s)) for s in range(5)]
    for g in range(generators):
        noise = 0.6 + spread * 0.3 * g
        for s in range(seeds):
            runs.append(
                fake_run(
                    tmp_path / f"g{g}",
                    "mix0.5",
                    s,
                    _noisy(truth, noise, 100 + 10 * g + s),
                    config={"synthetic_digest": f"digest{g}"},
                )
            )
    return runs


def test_same_arm_and_seed_with_another_generator_is_a_run_a_true_duplicate_is_not(tmp_path):
    runs = _generator_runs(tmp_path, generators=2, seeds=1)
    runset = collect_runs(runs)
    mixed = [r for r in runset.runs if r.arm == "mix0.5"]
    assert sorted((r.generator, r.seed) for r in mixed) == [("digest0", 0), ("digest1", 0)]
    _, truth = _test_set()
    again = fake_run(tmp_path / "copy", "mix0.5", 0, _noisy(truth, 0.6, 1),
                     config={"synthetic_digest": "digest1"})  # fmt: skip
    with pytest.raises(UserError, match="seed 0 is also"):
        collect_runs([*runs, again])
    real_again = fake_run(tmp_path / "copy", "real", 0, _noisy(truth, 1.0, 0))
    with pytest.raises(UserError, match="arm 'real' seed 0 is also"):
        collect_runs([*runs, real_again])


def test_unit_means_average_within_generators():
    values = np.array([[0.7], [0.8], [0.9], [0.6]])
    resampled = np.arange(8, dtype=float).reshape(4, 2, 1)
    unit_values, unit_resampled, keys = unit_means(values, resampled, ["a", "b", "a", "b"])
    assert keys == ["a", "b"]
    assert unit_values[:, 0] == pytest.approx([0.8, 0.7])
    assert unit_resampled[0, :, 0] == pytest.approx([2.0, 3.0])  # runs 0 and 2


def test_generator_units_widen_the_interval_when_generators_differ(tmp_path):
    report = summarize_arms(collect_runs(_generator_runs(tmp_path)), n_boot=200)
    runset = collect_runs(_generator_runs(tmp_path / "again"))
    assert report.per_arm["mix0.5"]["generators"] == 3
    assert report.per_arm["mix0.5"]["seeds_per_generator"] == [2, 2, 2]
    assert report.per_arm["mix0.5"]["interval_units"] == "generators"
    assert report.per_arm["real"]["generators"] == 0
    row = _row(report, "mix0.5", "macro")
    assert row.n_generators == 3 and row.interval_units == "generators"
    assert _row(report, "real", "macro").interval_units == "seeds"
    # The same six runs taken as six independent seeds give a narrower interval.
    full = summarize_arms(runset, n_boot=200)  # the same resamples (same seed)
    assert _row(full, "mix0.5", "macro").auroc_lo == pytest.approx(row.auroc_lo)
    for r in runset.runs:
        r.config.pop("synthetic_digest", None)
    as_seeds = summarize_arms(runset, n_boot=200)
    flat = _row(as_seeds, "mix0.5", "macro")
    assert flat.auroc_mean == pytest.approx(row.auroc_mean)  # balanced: the same mean
    assert row.auroc_hi - row.auroc_lo > flat.auroc_hi - flat.auroc_lo
    # Its delta against real: two terms, not paired by seed, on the same resamples.
    assert not bool(row.paired_by_seed)
    assert row.delta_hi - row.delta_lo > flat.delta_hi - flat.delta_lo
    assert any("3 generators (2, 2, 2 seeds each" in n for n in report.notes)
    paths = write_report(report, tmp_path / "out")
    doc = json.loads(paths["report.json"].read_text())
    assert doc["per_arm"]["mix0.5"]["generators"] == 3
    assert "mix0.5: 3 generators × 2 seeds each (units: generators)" in doc["method"]
    assert "3 generators × 2 seeds each" in paths["report.md"].read_text()


def test_the_interval_over_generator_units_is_seed_interval_of_their_means(tmp_path):
    runset = collect_runs(_generator_runs(tmp_path))
    report = summarize_arms(runset, n_boot=100, seed=3)
    from classifier.report import _ArmData, arm_interval
    from classifier.stats import patient_resample_weights, point_auroc, resampled_auroc

    weights, codes = patient_resample_weights(runset.patients, 100, 3)
    mixed = [r for r in runset.runs if r.arm == "mix0.5"]
    label = 0  # Pleural Effusion
    vals = np.array([[point_auroc(runset.truth, r.prob)[0][label]] for r in mixed])
    res = np.stack(
        [resampled_auroc(runset.truth, r.prob, weights, codes)[:, [label]] for r in mixed]
    )
    unit_values, unit_resampled, _ = unit_means(vals, res, [r.generator for r in mixed])
    expected = seed_interval([SeedTerm(unit_values, unit_resampled)])
    row = _row(report, "mix0.5", "Pleural Effusion")
    assert (row.auroc_lo, row.auroc_hi) == pytest.approx((expected.lo[0], expected.hi[0]))
    data = _ArmData([r.seed for r in mixed], vals, res, [r.generator for r in mixed])
    assert arm_interval(data).lo == pytest.approx(expected.lo)


def test_unbalanced_generators_count_once_in_the_mean(tmp_path):
    runs = _generator_runs(tmp_path, generators=2, seeds=1)
    _, truth = _test_set()
    runs.append(fake_run(tmp_path / "g1b", "mix0.5", 1, _noisy(truth, 0.9, 7),
                         config={"synthetic_digest": "digest1"}))  # fmt: skip
    runset = collect_runs(runs)
    report = summarize_arms(runset, n_boot=50)
    per_run = report.runs[report.runs.arm == "mix0.5"].set_index("run")["macro_auroc"]
    by_generator = {}
    for r in runset.runs:
        if r.arm == "mix0.5":
            by_generator.setdefault(r.generator, []).append(per_run[str(r.path)])
    expected = np.mean([np.mean(v) for v in by_generator.values()])
    assert _row(report, "mix0.5", "macro").auroc_mean == pytest.approx(expected)
    assert expected != pytest.approx(per_run.mean())
    assert any("different numbers of seeds" in n for n in report.notes)


def test_one_generator_per_seed_keeps_pairing_by_seed(tmp_path):
    _, truth = _test_set()
    runs = []
    for s in range(3):
        runs.append(fake_run(tmp_path, "real", s, _noisy(truth, 1.0, s)))
        runs.append(fake_run(tmp_path, "mix0.5", s, _noisy(truth, 0.6, 10 + s),
                             config={"synthetic_digest": f"digest{s}"}))  # fmt: skip
    report = summarize_arms(collect_runs(runs), n_boot=100)
    row = _row(report, "mix0.5", "macro")
    assert bool(row.paired_by_seed) and row.n_generators == 3
    assert any("one seed each" in n for n in report.notes)


def test_one_generator_says_its_interval_conditions_on_it(tmp_path):
    runs = _generator_runs(tmp_path, generators=1, seeds=3)
    report = summarize_arms(collect_runs(runs), n_boot=50)
    assert _row(report, "mix0.5", "macro").interval_units == "seeds"
    assert any("one generator" in n and "not generator-to-generator" in n for n in report.notes)


def test_the_positives_matched_control_is_a_secondary_comparison(tmp_path):
    _, truth = _test_set()
    runs = []
    for s in range(3):
        runs.append(fake_run(tmp_path, "real", s, _noisy(truth, 1.0, s)))
        runs.append(fake_run(tmp_path, "mix0.5", s, _noisy(truth, 0.4, 10 + s)))
        runs.append(fake_run(tmp_path, "real-steps-mix0.5", s, _noisy(truth, 0.7, 20 + s),
                             config={"matched_to": "mix0.5"}))  # fmt: skip
        runs.append(fake_run(tmp_path, "real-oversample-mix0.5", s, _noisy(truth, 0.8, 30 + s),
                             config={"matched_to": "mix0.5", "oversample": True}))  # fmt: skip
    report = summarize_arms(collect_runs(runs), n_boot=200)
    assert report.matched == {"mix0.5": "real-steps-mix0.5"}
    assert report.oversampled == {"mix0.5": "real-oversample-mix0.5"}
    mix, control = _row(report, "mix0.5", "macro"), _row(report, "real-oversample-mix0.5", "macro")
    assert mix.oversample_arm == "real-oversample-mix0.5"
    assert mix.delta_vs_oversample == pytest.approx(mix.auroc_mean - control.auroc_mean)
    assert mix.delta_vs_oversample_lo <= mix.delta_vs_oversample <= mix.delta_vs_oversample_hi
    assert mix.delta_vs_oversample_role == "secondary" and math.isfinite(mix.delta_vs_oversample_p)
    assert math.isfinite(mix.delta_vs_oversample_holm_lo)
    assert mix.delta_vs_matched_role == "primary"  # the default rule is unchanged
    found = [c for c in comparisons_table(report.table) if c["kind"] == OVERSAMPLE]
    assert {c["vs"] for c in found} == {"real-oversample-mix0.5"} and len(found) == 3
    # baseline deltas of 3 arms and 2 control deltas, 3 columns each, less the primary
    assert report.n_secondary == 5 * 3 - 1
    headers, rows = display_rows(report)
    assert headers[9] == "Δ vs positives-matched [95% CI]"
    by_arm = {(r[0], r[1]): r for r in rows}
    assert by_arm[("mix0.5", "macro")][9].endswith("vs real-oversample-mix0.5")
    assert by_arm[("real-oversample-mix0.5", "macro")][9] == (
        "(positives-matched control of mix0.5)"
    )
    assert any("positives-matched control" in n for n in report.notes)
    paths = write_report(report, tmp_path / "out")
    doc = json.loads(paths["report.json"].read_text())
    assert doc["oversampled"] == {"mix0.5": "real-oversample-mix0.5"}
    assert any(c["kind"] == OVERSAMPLE for c in doc["comparisons"])
    assert "Δ vs positives-matched" in paths["report.md"].read_text()
    from classifier.report_render import load_report

    again = load_report(tmp_path / "out")
    assert again.oversampled == report.oversampled
    assert display_rows(again) == display_rows(report)


def test_report_gives_worth_and_share_of_the_full_data_gain_with_intervals(tmp_path):
    _, truth = _test_set()
    runs = []
    sized = {"real_size": 80, "n_real_train": 80}
    for s in range(3):
        runs.append(fake_run(tmp_path, "real", s, _noisy(truth, 0.5, s),
                             config={"n_real_train": 320}))  # fmt: skip
        runs.append(fake_run(tmp_path, "real-n80", s, _noisy(truth, 1.5, 10 + s), config=sized))
        runs.append(fake_run(tmp_path, "mix0.5-n80", s, _noisy(truth, 0.9, 20 + s),
                             config={**sized, "synthetic_digest": "d"}))  # fmt: skip
        runs.append(fake_run(tmp_path, "real-steps-mix0.5-n80", s, _noisy(truth, 1.2, 30 + s),
                             config={**sized, "matched_to": "mix0.5-n80"}))  # fmt: skip
    report = summarize_arms(collect_runs(runs), n_boot=200)
    assert set(report.draws) == set(report.arms)
    assert report.draws["real"].shape == (200, len(report.labels) + 1)
    paths = write_report(report, tmp_path / "out")
    doc = json.loads(paths["report.json"].read_text())
    (worth,) = doc["data_efficiency"]["synthetic_worth"]
    assert worth["real_equivalent_n_resamples"] > 0 and worth["control_equivalent_n_resamples"] > 0
    for key in ("real_equivalent_lo", "real_equivalent_hi", "control_equivalent_lo"):
        assert worth[key] is not None
    (share,) = doc["data_efficiency"]["full_gain_share"]
    assert share["arm"] == "mix0.5-n80" and share["real_arm"] == "real-n80"
    m, r, f = (_row(report, a, "macro").auroc_mean for a in ("mix0.5-n80", "real-n80", "real"))
    assert share["share"] == pytest.approx((m - r) / (f - r))
    assert share["share_lo"] < share["share"] < share["share_hi"]
    assert "of the macro AUROC gain from real-n80" in paths["report.md"].read_text()
