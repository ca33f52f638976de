"""Do the report's 95% intervals cover the truth 95% of the time? Simulated studies.

The simulation (benchmarks/coverage.py, which prints the README's coverage table) draws
studies whose expected AUROC over seeds is known analytically (binormal scores, patient-
and image-level correlation, seed noise), and summarises each with the report's own
interval functions. Also unit checks of `seed_interval` and of the fixed-label macro.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import t as student_t

from benchmarks.coverage import SCENARIOS, Design, coverage, report_intervals, simulate_study
from classifier.evaluate import compute_metrics
from classifier.stats import (
    SeedTerm,
    patient_resample_weights,
    percentile_ci,
    resampled_auroc,
    seed_interval,
)

N_STUDIES = 400


def _assert_calibrated(hits: dict[str, np.ndarray], n: int) -> None:
    # Nominal 95%: within 93-97% of the studies (a 95% method fails this about 7% of the
    # time by chance at n = 400; the seeds are fixed, so the test is deterministic).
    shown = {key: (value / n).round(3).tolist() for key, value in hits.items()}
    for key in ("real", "mix0.5", "delta"):
        for k, what in ((0, "label A"), (-1, "macro")):
            assert 0.93 <= hits[key][k] / n <= 0.97, (key, what, shown)


def test_intervals_cover_label_macro_and_paired_delta_in_400_studies():
    """3 seeds per arm with seed noise, 3 correlated images per patient, 100 patients."""
    hits = coverage(SCENARIOS["3 seeds"], N_STUDIES, n_boot=100, seed=0, fast=True)
    _assert_calibrated(hits, N_STUDIES)


@pytest.mark.slow
def test_report_intervals_cover_through_summarize_arms():
    """The same through `summarize_arms` itself, n_boot 200, 1000 studies (minutes; at 1000
    the chance of a calibrated method leaving 93-97% is small)."""
    hits = coverage(SCENARIOS["3 seeds"], 1000, n_boot=200, seed=1, fast=False)
    _assert_calibrated(hits, 1000)


def test_fast_path_gives_the_report_intervals():
    """The calibration's fast path is `summarize_arms`'s numbers, not a copy of them."""
    rng = np.random.default_rng(3)
    for design in (Design(), Design(n_seeds=1), Design(n_seeds=2, seed_sd=0.4)):
        runset = simulate_study(design, rng)
        fast = report_intervals(runset, n_boot=50, seed=11, fast=True)
        full = report_intervals(runset, n_boot=50, seed=11, fast=False)
        for key in fast:
            np.testing.assert_allclose(fast[key], full[key], rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------ seed_interval


def test_one_seed_is_the_patient_bootstrap_percentile_interval():
    rng = np.random.default_rng(0)
    resampled = rng.normal(0.8, 0.03, size=(1, 400, 2))
    resampled[0, :7, 1] = np.nan  # 7 resamples lacked a class for column 1
    out = seed_interval([SeedTerm(np.array([[0.8, 0.7]]), resampled)])
    for k in range(2):
        assert (out.lo[k], out.hi[k]) == percentile_ci(resampled[0, :, k], 0.95)
    assert out.n_valid.tolist() == [400, 393] and np.isnan(out.multiplier).all()


def test_seed_dominated_delta_is_a_t_interval_with_n_minus_1_df():
    """Seeds differ a lot, test noise is tiny and shared: mean ± t(2) · sd / sqrt(3)."""
    rng = np.random.default_rng(1)
    per_seed = np.array([[0.02], [0.05], [0.11]])  # per-seed deltas (paired by seed)
    shared = rng.normal(0, 1e-4, size=(1, 300, 1))  # the same patient noise in every run
    out = seed_interval([SeedTerm(per_seed, per_seed[:, None, :] + shared)], delta=True)
    half = student_t.ppf(0.975, 2) * per_seed.std(ddof=1) / math.sqrt(3)
    assert out.estimate[0] == pytest.approx(0.06)
    assert out.multiplier[0] == pytest.approx(student_t.ppf(0.975, 2), rel=1e-3)
    assert (out.lo[0], out.hi[0]) == pytest.approx((0.06 - half, 0.06 + half), rel=1e-3)
    # Resampling 3 of 3 runs with replacement, as before, gives an interval ~2.7x narrower.
    draws = rng.integers(0, 3, size=(4000, 3))
    lo, hi = percentile_ci(per_seed[draws, 0].mean(axis=1), 0.95)
    assert (hi - lo) < 0.45 * (out.hi[0] - out.lo[0])


def test_seed_spread_explained_by_test_noise_adds_no_seed_variance():
    """Runs that differ only by their own test-set noise (same population AUROC): the seed
    variance is about 0, so the interval is about the patient bootstrap's; adding the raw
    spread over seeds to it would count that noise twice."""
    rng = np.random.default_rng(2)
    values = 0.75 + rng.normal(0, 0.02, size=(20, 1))  # each run's test-set error, sd 0.02
    resampled = values[:, None, :] + rng.normal(0, 0.02, size=(20, 2000, 1))
    out = seed_interval([SeedTerm(values, resampled)])
    assert out.seed_var[0] < 0.2 * values.var(ddof=1) / 20
    assert out.seed_var[0] < 0.2 * out.patient_var[0]


# ------------------------------------------------------------------------------ macro


def test_macro_is_one_label_set_in_every_resample_and_counts_valid_resamples():
    """A rare label (2 positive patients of 40) is missing from some resamples: those are
    left out of the macro CI, not averaged over the other label alone."""
    rng = np.random.default_rng(4)
    patients = np.repeat(np.arange(40), 2)
    truth = np.stack([rng.integers(0, 2, 40).repeat(2), np.isin(np.arange(40), [3, 17])
                      .repeat(2)], axis=1).astype(float)  # fmt: skip
    probs = truth + rng.normal(0, 0.8, truth.shape)
    metrics = compute_metrics(truth, probs, ["common", "rare"], patients, n_boot=500, seed=0)
    weights, codes = patient_resample_weights(patients, 500, seed=0)
    resampled = resampled_auroc(truth, probs, weights, codes)
    rare_ok = np.isfinite(resampled[:, 1])
    assert 0 < (~rare_ok).sum() < 100  # about (38/40)^40 = 13% lack both positives
    assert metrics["ci_n_valid"] == {"common": 500, "rare": int(rare_ok.sum())}
    assert metrics["macro_ci_n_valid"] == int(rare_ok.sum())
    expected = percentile_ci(resampled[rare_ok].mean(axis=1), 0.95)
    assert metrics["macro_ci"] == pytest.approx(list(expected))


def test_probe_change_ci_is_paired_over_held_out_patients():
    from augmentor.probe import _paired_delta_ci

    rng = np.random.default_rng(5)
    patients = np.repeat(np.arange(60), 2).astype(str)
    y = np.repeat(rng.integers(0, 2, 60), 2)
    base = y + rng.normal(0, 1.5, len(y))
    lo, hi, n_valid = _paired_delta_ci(y, {"base": base, "finetuned": base}, patients, 200, 0)
    assert (lo, hi, n_valid) == (0.0, 0.0, 200)  # same scores: no change in any resample
    better = y + rng.normal(0, 0.3, len(y))
    lo, hi, _ = _paired_delta_ci(y, {"base": base, "finetuned": better}, patients, 200, 0)
    assert 0 < lo < hi
    assert math.isnan(_paired_delta_ci(y, {"base": base}, patients, 200, 0)[0])  # undefined
