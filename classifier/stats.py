"""Statistics of AUROC: the patient bootstrap, percentile CIs, paired deltas and the
interval over training seeds. Torch-free; `classifier.evaluate` (a run's metrics.json),
`classifier.report` (arms and deltas), `augmentor.probe` and `benchmarks/coverage.py` use it.

Confidence intervals resample *patients*, not images: the images of one patient (several
studies, frontal views) are correlated, so resampling images would treat them as
independent evidence and give intervals that are too narrow. A bootstrap resample draws
patients with replacement and takes all their images; a patient drawn twice counts twice.

The bootstrap is vectorised: a resample is a vector of per-image weights (how often the
image's patient was drawn), and AUROC with integer weights is the weighted Mann-Whitney
statistic, computed for all resamples at once from one sort of the scores.

A macro AUROC is the mean over one fixed label set (the labels with both classes on the
whole test set) in every resample; a resample lacking a class for one of them is left out
and counted (`n_valid`). Across training seeds, :func:`seed_interval` adds the between-seed
variance to the patient bootstrap's with a t quantile fit for few seeds (the report's CIs);
when an arm's runs come from several generators, its units are generators instead
(:func:`unit_means`: two levels, generator and seed, in one between-unit variance);
:func:`seed_p_value` is the p-value each such interval inverts, and :func:`holm` adjusts a
family of them (the report's secondary comparisons, `classifier.endpoints`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit
from scipy.stats import t as student_t
from sklearn.metrics import roc_auc_score

from classifier.config import N_BOOT

MACRO = "macro"  # the mean over the labels, reported as one more label

CI_LEVEL = 0.95


# ------------------------------------------------------------------------------ bootstrap


def patient_resample_weights(
    groups: Sequence, n_boot: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap over groups (patients) as per-image weights.

    Returns:
        `(weights, codes)`: `weights` is int32 ``(n_boot, n_groups)``, how often each patient
        is drawn in each resample (patients drawn with replacement, as many as there are);
        `codes` maps each image to its patient's column. An image's weight in resample `b`
        is ``weights[b, codes[i]]``.
    """
    codes, uniques = pd.factorize(pd.Series(list(groups)), sort=True)
    n_groups = len(uniques)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot)
    return weights.astype(np.int32), codes.astype(np.int64)


def weighted_auroc(y_true: np.ndarray, y_score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of one label under many weightings of the same rows, at once.

    Args:
        y_true: 0/1 ``(n,)``.
        y_score: scores ``(n,)``.
        weights: non-negative ``(B, n)``; row `b` is one weighting (e.g. a bootstrap resample).

    Returns:
        ``(B,)`` AUROC per weighting (ties count one half); NaN where a weighting has no
        positive or no negative weight. With all weights 1 this equals sklearn's
        `roc_auc_score`.
    """
    y_true = np.asarray(y_true).astype(bool)
    y_score = np.asarray(y_score, dtype=np.float64)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(y_score, kind="mergesort")
    s, y, w = y_score[order], y_true[order], weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # tie groups of equal scores
    pos = np.add.reduceat(w * y, starts, axis=1)
    neg = np.add.reduceat(w * ~y, starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    wins = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    total = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, wins / np.where(total > 0, total, 1.0), np.nan)


def as_2d(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    return y[:, None] if y.ndim == 1 else y


def resampled_auroc(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    weights: np.ndarray,
    codes: np.ndarray,
    chunk: int = 20_000_000,
) -> np.ndarray:
    """``(n_boot, L)`` AUROC per resample and label; rows whose truth is not 0/1 are skipped."""
    y_true, y_prob = as_2d(y_true), as_2d(y_prob)
    n_boot, n_labels = weights.shape[0], y_true.shape[1]
    out = np.full((n_boot, n_labels), np.nan)
    for j in range(n_labels):
        usable = np.isin(y_true[:, j], (0.0, 1.0))
        if not usable.any():
            continue
        codes_j = codes[usable]
        # Chunk the resamples so the (chunk, n) weight matrix stays small for big test sets.
        step = max(1, chunk // max(1, int(usable.sum())))
        for b0 in range(0, n_boot, step):
            w = weights[b0 : b0 + step][:, codes_j]
            out[b0 : b0 + step, j] = weighted_auroc(y_true[usable, j], y_prob[usable, j], w)
    return out


def point_auroc(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
    """Per-label AUROC with sklearn, NaN plus a reason where it is undefined."""
    y_true, y_prob = as_2d(y_true), as_2d(y_prob)
    values, reasons = [], []
    for j in range(y_true.shape[1]):
        usable = np.isin(y_true[:, j], (0.0, 1.0))
        t = y_true[usable, j]
        n_pos, n_neg = int((t == 1).sum()), int((t == 0).sum())
        if n_pos == 0 or n_neg == 0:
            values.append(math.nan)
            reasons.append(
                f"test set has one class only ({n_pos} positive, {n_neg} negative images "
                "with a 0/1 label); AUROC is undefined"
            )
        else:
            values.append(float(roc_auc_score(t, y_prob[usable, j])))
            reasons.append(None)
    return np.asarray(values), reasons


def percentile_ci(samples: np.ndarray, level: float) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return math.nan, math.nan
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(samples, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def fixed_macro(per_label: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Mean over the labels in `keep`; NaN wherever any of them is NaN.

    The macro is one quantity, the mean over one fixed label set (the labels defined on the
    full test set). A bootstrap resample that lacks a class for one of them has no value for
    that quantity, so it is NaN (an invalid resample, left out of the CI and counted), not
    the mean over the labels that happen to be defined in it: that would mix different
    label sets, and different quantities, in one interval.
    """
    sub = np.asarray(per_label, dtype=np.float64)[..., keep]
    if sub.shape[-1] == 0:
        return np.full(sub.shape[:-1], np.nan)
    return sub.mean(axis=-1)  # NaN propagates: an invalid resample stays invalid


def n_valid(samples: np.ndarray) -> int:
    """How many bootstrap resamples gave a value (the rest lacked a class)."""
    return int(np.isfinite(samples).sum())


def bootstrap_auroc(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    groups: Sequence,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = CI_LEVEL,
    chunk: int = 20_000_000,
) -> tuple[float, float, float]:
    """AUROC and its patient-bootstrap percentile CI.

    Args:
        y_true: ``(n,)`` truth for one label, or ``(n, L)`` for macro AUROC (mean over the
            labels whose AUROC is defined on the full data, the same labels in every
            resample: a resample lacking a class for one of them is left out, see
            :func:`fixed_macro`); values other than 0/1 (-1, NaN) leave that image out for
            that label.
        y_prob: scores, the shape of `y_true`.
        groups: ``(n,)`` patient of each image; patients are resampled with replacement.
        n_boot: resamples.
        seed: the resampling seed (same seed, same patients drawn).
        level: CI coverage.
        chunk: bound on resamples x images held at once (memory).

    Returns:
        `(auroc, lo, hi)`; all NaN when AUROC is undefined (one class).
    """
    point, _ = point_auroc(y_true, y_prob)
    keep = np.isfinite(point)
    if not keep.any():
        return math.nan, math.nan, math.nan
    weights, codes = patient_resample_weights(groups, n_boot, seed)
    samples = fixed_macro(resampled_auroc(y_true, y_prob, weights, codes, chunk), keep)
    lo, hi = percentile_ci(samples, level)
    return float(point[keep].mean()), lo, hi


def paired_bootstrap_delta(
    y_true: np.ndarray,
    prob_a: np.ndarray,
    prob_b: np.ndarray,
    groups: Sequence,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = CI_LEVEL,
    chunk: int = 20_000_000,
) -> tuple[float, float, float]:
    """AUROC(b) - AUROC(a) on the same images, with a paired patient-bootstrap CI.

    Both arms are scored on the *same* resampled patients in every resample, so the
    patient-to-patient variation that both arms share cancels in the difference.
    `a` is the baseline (e.g. real only), `b` the arm: a positive delta means `b` is better.
    Shapes and the macro rule are those of :func:`bootstrap_auroc`; rows must be aligned
    (same image in the same row of `y_true`, `prob_a`, `prob_b`, `groups`).

    Returns:
        `(delta, lo, hi)`; NaN when AUROC is undefined.
    """
    point_a, _ = point_auroc(y_true, prob_a)
    point_b, _ = point_auroc(y_true, prob_b)
    keep = np.isfinite(point_a) & np.isfinite(point_b)
    if not keep.any():
        return math.nan, math.nan, math.nan
    weights, codes = patient_resample_weights(groups, n_boot, seed)
    res_a = resampled_auroc(y_true, prob_a, weights, codes, chunk)
    res_b = resampled_auroc(y_true, prob_b, weights, codes, chunk)
    samples = fixed_macro(res_b, keep) - fixed_macro(res_a, keep)
    lo, hi = percentile_ci(samples, level)
    return float(point_b[keep].mean() - point_a[keep].mean()), lo, hi


# ------------------------------------------------------------------------------ seeds


def unit_means(
    values: np.ndarray, resampled: np.ndarray, units: Sequence
) -> tuple[np.ndarray, np.ndarray, list]:
    """Runs averaged within their units (e.g. generators), values and resamples alike.

    A study that fits G generators and trains S classifier seeds on each has a nested
    design: run (g, s) scores ``mu + a_g + b_gs + test noise``, a_g the generator's effect
    (variance sigma_G^2), b_gs the seed's within it (sigma_S^2). The mean over a generator's
    S seeds has variance ``sigma_G^2 + sigma_S^2 / S`` between generators, so the sample
    variance of the G unit means, over G, estimates the variance of the grand mean with
    both sources in it (``(sigma_G^2 + sigma_S^2 / S) / G``), with G - 1 degrees of freedom:
    :func:`seed_interval` over the units is the two-level interval. Treating the G x S runs
    as independent seeds instead would divide sigma_G^2 by G x S and claim S times the
    generators there are.

    Unbalanced (generators with different numbers of seeds): each generator still counts
    once (the estimate is the mean of the unit means, not of the runs), and the unit means'
    sample variance over G still estimates that mean's variance without bias
    (``(sigma_G^2 + sigma_S^2 mean_g(1/S_g)) / G``); only the t's G - 1 degrees of freedom
    are then approximate, as the units' variances differ.

    Args:
        values: ``(n_runs, K)`` point AUROC per run.
        resampled: ``(n_runs, n_boot, K)`` on the shared patient resamples.
        units: ``(n_runs,)`` the unit of each run.

    Returns:
        `(values, resampled, keys)`: ``(G, K)``, ``(G, n_boot, K)`` and the G units in the
        order they first appear.
    """
    keys = list(dict.fromkeys(units))
    values, resampled = np.asarray(values, np.float64), np.asarray(resampled, np.float64)
    members = [[i for i, u in enumerate(units) if u == key] for key in keys]
    unit_values = np.stack([values[m].mean(axis=0) for m in members])
    unit_resampled = np.stack([resampled[m].mean(axis=0) for m in members])
    return unit_values, unit_resampled, keys


@dataclass
class SeedTerm:
    """One arm's runs in an interval: `coef` x (mean over its seeds, or units).

    A unit is one run (a seed), or, for an arm whose runs come from several generators, the
    mean over one generator's seeds (:func:`unit_means`): the "seeds" below are then
    generators, and their spread holds generator and seed variance together.

    Attributes:
        values: ``(n_seeds, K)`` point AUROC of each run or unit (K labels, macro, ...).
        resampled: ``(n_seeds, n_boot, K)`` their AUROC on the patient resamples; every
            term of one interval uses the same resampled patients (paired over patients).
        coef: +1 for the arm, -1 for the arm it is compared with.
    """

    values: np.ndarray
    resampled: np.ndarray
    coef: float = 1.0


@dataclass
class SeedInterval:
    """`estimate` and its CI per column (arrays ``(K,)``), and how it was made.

    `n_valid` counts the resamples that gave a value for the column (the others lacked a
    class). `seed_var` is the seeds' share of the estimate's variance (between-seed
    variance beyond test-set noise, over the number of seeds), `patient_var` the patient
    bootstrap's; `multiplier` is the CI's half-width over the square root of their sum (1.96
    for a normal interval, 4.30 for a t with 2 df; NaN for one seed per term, a percentile
    interval; for an AUROC the half-width is then taken on the logit scale).
    """

    estimate: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    n_valid: np.ndarray
    multiplier: np.ndarray
    seed_var: np.ndarray
    patient_var: np.ndarray


def _seed_spread(values: np.ndarray, resampled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(S^2, tau^2)` per column: the variance over seeds and its test-set-noise part.

    The sample variance of the runs' AUROCs over seeds (S^2) has two parts: how much the
    seeds' models really differ (sigma^2) and the part of each run's test-set sampling error
    that it does not share with the other runs (tau^2, which the patient bootstrap also
    holds). tau^2 is the mean over resamples of the variance over seeds of the runs'
    bootstrap deviations; it is known well (from every resample), S^2 poorly (n - 1 df).
    """
    s2 = values.var(axis=0, ddof=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column stays NaN
        dev = resampled - np.nanmean(resampled, axis=1, keepdims=True)
        tau2 = np.nan_to_num(np.nanmean(dev.var(axis=0, ddof=1), axis=0))
    return s2, tau2


SEED_METHODS = ("guarded", "welch")


def _welch_df(variance: np.ndarray, pieces: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Welch-Satterthwaite degrees of freedom of `variance`, the `pieces` ``(a S^2, n)``
    estimated from n seeds (n - 1 df each), the rest taken as known; at least 1."""
    spread = sum((p * p / (n - 1) for p, n in pieces), np.zeros_like(variance))
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(spread > 0, variance * variance / np.where(spread > 0, spread, 1.0), np.inf)
    return np.maximum(df, 1.0)


def _t_half_width(
    variance: np.ndarray, pieces: list[tuple[np.ndarray, int]], level: float
) -> np.ndarray:
    """``t_q * sqrt(variance)``, the t's df by Welch-Satterthwaite (:func:`_welch_df`)."""
    return student_t.ppf(0.5 + level / 2.0, _welch_df(variance, pieces)) * np.sqrt(variance)


def _t_p_value(
    estimate: np.ndarray, variance: np.ndarray, pieces: list[tuple[np.ndarray, int]]
) -> np.ndarray:
    """Two-sided p-value of estimate = 0 for the t interval of :func:`_t_half_width`: the
    interval at level 1 - p just reaches 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = np.abs(estimate) / np.sqrt(variance)
    p = 2.0 * student_t.sf(stat, _welch_df(variance, pieces))
    return np.where(np.isnan(stat) & (estimate == 0), 1.0, p)  # 0 / 0: no evidence


@dataclass
class _Variance:
    """What an interval over seeds is built from, per column (see :func:`seed_interval`)."""

    estimate: np.ndarray
    resampled: np.ndarray  # (n_boot, K) the estimate on each patient resample
    n_valid: np.ndarray
    patient_var: np.ndarray
    seed_var: np.ndarray
    pieces: list[tuple[np.ndarray, np.ndarray, int]]  # (a S^2, a tau^2, n), terms of 2+ seeds

    @property
    def one_seed(self) -> bool:
        """Every term has one seed: the interval is the patient bootstrap's alone."""
        return not self.pieces

    @property
    def total(self) -> np.ndarray:
        return self.patient_var + self.seed_var

    @property
    def raw(self) -> list[tuple[np.ndarray, int]]:
        """``(a S^2, n)`` per term with 2+ seeds: the per-seed values' own variance."""
        return [(s2, n) for s2, _, n in self.pieces]


def _variance(terms: Sequence[SeedTerm]) -> _Variance:
    """The estimate, its patient-bootstrap variance and its seeds' variance, per column."""
    terms = list(terms)
    coef = [float(t.coef) for t in terms]
    estimate = sum(
        c * np.asarray(t.values, np.float64).mean(axis=0) for c, t in zip(coef, terms, strict=True)
    )
    resampled = sum(
        c * np.asarray(t.resampled, np.float64).mean(axis=0)
        for c, t in zip(coef, terms, strict=True)
    )  # (n_boot, K), NaN where any run of any term lacks a class
    estimate, resampled = np.atleast_1d(estimate), np.atleast_2d(resampled)
    valid = np.isfinite(resampled)
    count = valid.sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        patient_var = np.where(count > 1, np.nanvar(resampled, axis=0, ddof=1), np.nan)
    pieces = []  # (a S^2, a tau^2, n) per term with 2+ seeds, a = coef^2 / n
    if not all(len(t.values) == 1 for t in terms):
        for c, t in zip(coef, terms, strict=True):
            n = len(t.values)
            if n > 1:
                runs = np.where(valid, np.asarray(t.resampled, np.float64), np.nan)
                s2, tau2 = _seed_spread(np.asarray(t.values, np.float64), runs)
                pieces.append((c * c * s2 / n, c * c * tau2 / n, n))
    # The bootstrap variance already holds each term's unshared test noise tau^2 / n; the
    # seeds add what their spread shows beyond it.
    seed_var = sum(
        (np.maximum(0.0, s2 - tau2) for s2, tau2, _ in pieces), np.zeros(estimate.shape[0])
    )
    return _Variance(estimate, resampled, count, patient_var, seed_var, pieces)


def seed_interval(
    terms: Sequence[SeedTerm],
    level: float = CI_LEVEL,
    delta: bool = False,
    method: str = "guarded",
) -> SeedInterval:
    """CI of ``sum_g coef_g * mean over seeds of arm g`` over test patients *and* seeds.

    The quantity is the expected AUROC of one trained model (or a difference of two), over
    the population of test patients and of training seeds. Its variance is

    * the patient bootstrap's: the variance over patient resamples of the estimate, all
      terms on the same resampled patients (so a paired delta cancels what arms share);
    * plus the seeds': ``sum coef_g^2 sigma_g^2 / n_g``, sigma_g^2 the variance between arm
      g's seeds beyond test-set noise (:func:`_seed_spread`).

    The interval is ``estimate +- t_q * sqrt(variance)``; t_q is the t quantile with
    Welch-Satterthwaite degrees of freedom (each S_g^2 the seed variance comes from has
    n_g - 1 df, the bootstrap part is taken as known), and the interval is never narrower
    than the classic t interval of the per-seed values alone (``t(n - 1) S / sqrt(n)``,
    the guard against a variance that came out small by chance; `method="welch"` leaves it
    out, for the simulation that shows why). So with 3 seeds and seed noise dominating it
    is a t with 2 df (4.30, not 1.96); with a large test set and seeds that differ little it
    is the normal interval of the patient bootstrap. Drawing 3 of 3 runs with replacement
    instead, as a two-stage bootstrap does, shrinks the seed variance by a third and
    ignores how little 3 seeds tell about it. Coverage: `benchmarks/coverage.py`.

    With one seed in every term there is no seed variance to estimate: the interval is the
    patient-bootstrap percentile interval alone (exactly :func:`bootstrap_auroc` and
    :func:`paired_bootstrap_delta` for one run per arm); it does not cover training
    randomness, which the caller must say. A term with one seed among terms with more adds
    no seed variance (unknown).

    Resamples where any term is NaN for a column (a class missing) are left out for that
    column and counted in `n_valid`. Pair terms by seed by passing one term of per-seed
    differences (values and resamples of arm minus baseline, matched by seed).
    :func:`seed_p_value` is the p-value this interval inverts.

    Args:
        terms: the arms' runs and coefficients.
        level: CI coverage.
        delta: the quantity is a difference of AUROCs (interval on the AUROC scale, within
            [-1, 1]); otherwise it is an AUROC (interval symmetric on the logit scale by the
            delta method, since AUROC's sampling distribution is skewed, within [0, 1]).
        method: `guarded` (the report's) or `welch` (without the guard).
    """
    if method not in SEED_METHODS:
        raise ValueError(f"method: {method!r}; valid: {', '.join(SEED_METHODS)}")
    v = _variance(terms)
    estimate, n_cols = v.estimate, v.estimate.shape[0]
    multiplier = np.full(n_cols, np.nan)
    if v.one_seed:
        lo, hi = np.full(n_cols, np.nan), np.full(n_cols, np.nan)
        for k in range(n_cols):
            lo[k], hi[k] = percentile_ci(v.resampled[:, k], level)
        return SeedInterval(estimate, lo, hi, v.n_valid, multiplier, v.seed_var, v.patient_var)
    total = v.total
    ok = np.isfinite(estimate) & np.isfinite(total)
    half = np.full(n_cols, np.nan)
    if ok.any():
        # Welch: total variance, df from the S^2 it was estimated with.
        raw = [(s2[ok], n) for s2, n in v.raw]
        half[ok] = _t_half_width(total[ok], raw, level)
        if method == "guarded":
            # Never narrower than the classic t interval of the per-seed values alone,
            # t(n - 1) S / sqrt(n): when S^2 is small by chance the Welch df come out large
            # and its interval too short (91-93% coverage with 3 seeds in the simulation).
            seed_only = _t_half_width(sum((p for p, _ in raw), np.zeros(ok.sum())), raw, level)
            half[ok] = np.maximum(half[ok], seed_only)
    with np.errstate(divide="ignore", invalid="ignore"):
        multiplier = half / np.sqrt(total)
    ok &= np.isfinite(half)
    if delta:  # a difference of AUROCs: symmetric, within [-1, 1]
        lo = np.where(ok, np.maximum(-1.0, estimate - half), np.nan)
        hi = np.where(ok, np.minimum(1.0, estimate + half), np.nan)
    else:
        # An AUROC: symmetric on the logit scale (delta method), as its sampling
        # distribution is skewed away from 1; at exactly 0 or 1, clipped to [0, 1].
        lo = np.where(ok, np.maximum(0.0, estimate - half), np.nan)
        hi = np.where(ok, np.minimum(1.0, estimate + half), np.nan)
        inner = ok & (estimate > 0.0) & (estimate < 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            centre = np.log(estimate / (1.0 - estimate))
            spread_logit = half / (estimate * (1.0 - estimate))
            lo = np.where(inner, expit(centre - spread_logit), lo)
            hi = np.where(inner, expit(centre + spread_logit), hi)
    return SeedInterval(estimate, lo, hi, v.n_valid, multiplier, v.seed_var, v.patient_var)


def bootstrap_p_value(samples: np.ndarray) -> float:
    """Two-sided bootstrap p-value of 'the quantity is 0' from its resampled values: twice
    the smaller share of (valid) resamples on either side of 0, at most 1; the percentile
    interval at level 1 - p ends at 0. NaN without a valid resample."""
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return math.nan
    return float(min(1.0, 2.0 * min(np.mean(samples <= 0.0), np.mean(samples >= 0.0))))


def seed_p_value(terms: Sequence[SeedTerm], method: str = "guarded") -> np.ndarray:
    """Per column, the two-sided p-value of 'the quantity is 0' that
    :func:`seed_interval` (``delta=True``) inverts: its interval at level 1 - p just
    reaches 0, so it excludes 0 at level 1 - a exactly when p < a.

    With one seed per term it is the patient bootstrap's (:func:`bootstrap_p_value`, from
    the same resamples as the interval). Otherwise it is the t test of the interval: the
    estimate over the square root of its variance (patient bootstrap + seeds), Welch df;
    with the guard (`guarded`), the larger of that and the t test of the per-seed values
    alone, since the interval is the wider of the two.
    """
    if method not in SEED_METHODS:
        raise ValueError(f"method: {method!r}; valid: {', '.join(SEED_METHODS)}")
    v = _variance(terms)
    if v.one_seed:
        return np.array([bootstrap_p_value(v.resampled[:, k]) for k in range(len(v.estimate))])
    p = np.full(len(v.estimate), np.nan)
    ok = np.isfinite(v.estimate) & np.isfinite(v.total)
    if ok.any():
        raw = [(s2[ok], n) for s2, n in v.raw]
        p[ok] = _t_p_value(v.estimate[ok], v.total[ok], raw)
        if method == "guarded":
            seed_only = sum((s2 for s2, _ in raw), np.zeros(ok.sum()))
            p[ok] = np.maximum(p[ok], _t_p_value(v.estimate[ok], seed_only, raw))
    return p


# ------------------------------------------------------------------------------ multiplicity


def holm(p_values: Sequence[float], alpha: float = 1.0 - CI_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down over a family of comparisons: each one's interval level and its
    Holm-adjusted p-value.

    The p-values sorted ascending, p_(1) <= ... <= p_(m), Holm tests p_(i) at
    alpha / (m - i + 1) and stops at the first it does not reject; every later one is not
    rejected either. Comparison i (in that order) gets the interval at level
    1 - alpha / (m - i + 1) up to that first non-rejection, and from there on the level of
    the step that stopped, 1 - alpha / (m - s + 1): so an interval excludes 0 exactly when
    Holm rejects (given intervals that invert their p-values, :func:`seed_p_value`). These
    intervals are compatible with Holm's decisions; they are not simultaneous intervals.
    The adjusted p-value is max over j <= i of min(1, (m - j + 1) p_(j)).

    Args:
        p_values: one per comparison; NaN (no p-value) is not in the family.
        alpha: the family-wise error rate (0.05 for 95% intervals).

    Returns:
        `(levels, adjusted)`, arrays like `p_values` (NaN outside the family).
    """
    p = np.asarray(p_values, dtype=np.float64)
    levels, adjusted = np.full(p.shape, np.nan), np.full(p.shape, np.nan)
    family = np.flatnonzero(np.isfinite(p))
    m = len(family)
    if m == 0:
        return levels, adjusted
    order = family[np.argsort(p[family], kind="stable")]
    ranked = p[order]
    alphas = alpha / (m - np.arange(m))  # alpha / (m - i + 1) for the i-th smallest, 1-based
    rejected = ranked <= alphas
    stop = m if rejected.all() else int(np.argmin(rejected))  # first not rejected
    used = alphas.copy()
    used[stop:] = alphas[stop] if stop < m else alphas[stop:]
    levels[order] = 1.0 - used
    adjusted[order] = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * ranked))
    return levels, adjusted
