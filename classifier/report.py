"""Compare classifier arms: AUROC per arm and label over seeds, and deltas against real-only.

:func:`classifier.runset.collect_runs` reads and checks the run directories (a `RunSet`),
:func:`classifier.report_notes.check_provenance` refuses synthetic data never checked against the test patients, and
:func:`summarize_arms` computes the statistics (a :class:`Report`). Showing and writing them (terminal table, report.md,
report.csv, report.json, report.html, figures) and `make_report`, which `cxraug report` and
`cxraug study` call, are `classifier.report_render`'s.

The statistics, and why:

* **Per run**, AUROC per label (and macro: the mean over the labels defined on the test set)
  is computed from the run's `predictions.parquet` on the real test split; only 0/1 truth
  counts (-1 and NaN are left out for that label), as in `classifier.evaluate`.
* **Per arm** (the `arm` in each run's config.json; one run per training seed): the mean
  AUROC over seeds, its standard deviation (ddof 1) and min-max, and a 95% CI of the mean.
* **Delta** of an arm against the baseline arm (real only): mean AUROC of the arm minus mean
  AUROC of the baseline, i.e. the mean over seeds of single-model AUROCs, the quantity a
  user reproduces by training one model. We do not average probabilities across seeds
  first: that would measure an ensemble, which no arm trains.
* **Its CI**, and the arm's, cover the two sources of chance: test patients and training
  seeds (`classifier.stats.seed_interval`). A bootstrap draws test *patients* with
  replacement (all their images; a patient's images are correlated) and the *same*
  patients score every run, so a delta is paired over patients. Its variance plus the
  between-seed variance beyond test-set noise, divided by the number of seeds, gives a t
  interval with Welch-Satterthwaite degrees of freedom, never narrower than the t interval
  of the per-seed values alone. Resampling 3 runs out of 3 instead
  would shrink the seed spread by a third and ignore how little 3 seeds say about it;
  with fewer than 5 seeds per arm the report says so. Arms with the same seeds are paired
  by seed (a seed fixes initialisation and data order). With one seed per arm the CI is
  the patient-bootstrap percentile interval alone, exactly
  `classifier.stats.paired_bootstrap_delta`, and the report says it leaves out
  training randomness. Coverage is checked by simulation (`benchmarks/coverage.py`).
* **Generators**: runs of one arm may come from several generators (config
  `synthetic_digest`). The arm's interval then has generators as its units, each the mean
  over that generator's seeds (`classifier.stats.unit_means`): the between-unit variance
  holds generator and seed variance, and the arm's mean is the mean of the generator means.
  Its deltas against arms without generators are two terms on the same patient resamples;
  with one seed per generator the units are the runs, paired by seed as above. The report
  says per arm how many generators and seeds its interval covers.
* **Macro** is the mean over one fixed label set in every resample: the labels with both
  classes and at least `min_positive_patients` (default 10) positive patients on the test
  set; with fewer, a handful of patients decides a label's AUROC and dominates the macro's
  interval, so the label keeps its own row and the notes say it was left out. A resample
  lacking a class for any macro label is left out, and each row says how many resamples
  were valid (`n_valid` of `n_boot`).
* **Step-matched control**: a real-only arm trained for as many optimizer steps as a mixed
  arm (config `"matched_to": "<arm>"`, named `real-steps-<arm>`); the mixed arm's rows
  also show the delta against it (`delta_vs_matched`), which longer training alone
  cannot explain. Its realised optimizer steps must equal the arm's (a report refuses it
  otherwise, `classifier.steps`); each run's steps and scored epoch are in the runs table.
  A second control, `real-oversample-<arm>` (config `"oversample": true`), also draws real
  positives to the arm's label balance; its delta (`delta_vs_oversample`, the
  positives-matched control) is a secondary comparison like the others.
* **Joint resamples** (`Report.draws`): per arm, its mean AUROC on each patient resample
  with its units drawn again with replacement; `classifier.efficiency` maps them through
  the worth-in-real-images crossing and the share of the full-data gain.
* **Relative change**: 100 x delta / baseline mean AUROC (the CI is for the absolute delta);
  undefined (NaN, shown as n/a) where the baseline's mean AUROC is 0.
* **Subgroups**: AUROC per label x subgroup (sex, age group, their intersections) and the
  underdiagnosis gap, on this report's patient resamples and paired as its deltas are, are
  `classifier.fairness`'s (it builds on this module's arm data).
* **Primary and secondary**: one delta is the primary endpoint (declared, or the default
  rule's); every other is secondary, with its p-value and a Holm-adjusted interval beside
  the unadjusted one (`classifier.endpoints`).

Every delta shown has its CI: a delta whose resamples give no CI is reported as NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from classifier.arms import Arm
from classifier.budget import RunBudget, arm_budgets, arm_information, information_difference
from classifier.config import BASELINE_ARM, MIN_POSITIVE_PATIENTS, N_BOOT
from classifier.endpoints import (
    BASELINE,
    MATCHED,
    OVERSAMPLE,
    PREFIX,
    TWIN,
    Comparison,
    Primary,
    endpoint_columns,
    label_endpoints,
    resolve_primary,
)
from classifier.report_notes import (
    macro_notes,
    positive_patients,
    stat_notes,
    unit_notes,
)
from classifier.runset import Run, RunSet, matched_controls
from classifier.stats import (
    CI_LEVEL,
    MACRO,
    SeedInterval,
    SeedTerm,
    fixed_macro,
    patient_resample_weights,
    point_auroc,
    resampled_auroc,
    seed_interval,
    seed_p_value,
    unit_means,
)
from classifier.steps import STEP_FIELDS, check_matched_steps, run_steps
from manifests.errors import UserError

FPR_GRID = np.linspace(0.0, 1.0, 101)


# ------------------------------------------------------------------------------ statistics


def run_arms(runs: Sequence[Run]) -> dict[str, Arm]:
    """{arm name: its Arm}, read from the runs' recorded configs (`Arm.from_config`)."""
    arms: dict[str, Arm] = {}
    for run in sorted(runs, key=lambda r: r.seed):
        arms.setdefault(run.arm, Arm.from_config(run.config, run.arm))
    return arms


def _with_macro(per_label: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Append the macro column: the mean over the same `keep` labels in every resample."""
    return np.concatenate([per_label, fixed_macro(per_label, keep)[..., None]], axis=-1)


@dataclass
class Report:
    """What `summarize_arms` found; `table` has one row per arm and label (and macro)."""

    table: pd.DataFrame
    labels: tuple[str, ...]
    arms: list[str]
    baseline: str | None
    runs: pd.DataFrame  # one row per run: path, arm, seed, backbone, train counts, macro
    n_test_images: int
    n_test_patients: int
    n_boot: int
    ci_level: float
    bootstrap_seed: int
    notes: list[str] = field(default_factory=list)
    roc: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # arm -> label -> TPR
    synthetic: str | None = None  # a synthetic manifest recorded in the runs' configs
    matched: dict[str, str] = field(default_factory=dict)  # arm -> its step-matched control
    min_positive_patients: int = MIN_POSITIVE_PATIENTS
    macro_labels: tuple[str, ...] = ()  # the labels the macro averages
    # arm -> its seeds and, per seed, its realised steps ("steps") and what it saw
    per_arm: dict[str, dict] = field(default_factory=dict)
    # the primary endpoint: the comparison, how it was chosen, its delta, CI and p-value
    primary: dict | None = None
    n_secondary: int = 0  # deltas in the Holm family (every delta shown but the primary)
    # arm -> its facts (from the runs' configs; a report read back parses its arm names)
    arm_info: dict[str, Arm] = field(default_factory=dict)
    # arm -> its positives-matched control (real-oversample-<arm>), if among the runs
    oversampled: dict[str, str] = field(default_factory=dict)
    # arm -> (n_boot, K) its mean AUROC per joint resample of patients and units (seeds or
    # generators), columns (*labels, macro): `classifier.efficiency`'s intervals. Not in
    # report.json; a report read back has none.
    draws: dict[str, np.ndarray] = field(default_factory=dict)
    # the Subgroups section, a `classifier.fairness.Fairness` (set by `make_report`, which
    # computes it from the runs and this report; None without it)
    fairness: object | None = None
    # a subgroup-balanced arm (mix<m>-balanced) -> its prevalence-matched twin, if among
    # the runs
    twins: dict[str, str] = field(default_factory=dict)


TABLE_COLUMNS = [
    "arm",
    "label",
    "n_runs",
    "seeds",
    "auroc_mean",
    "auroc_lo",
    "auroc_hi",
    "auroc_std",
    "auroc_min",
    "auroc_max",
    "baseline",
    "delta",
    "delta_lo",
    "delta_hi",
    "relative_pct",
    "paired_by_seed",
    "n_positive",
    "n_negative",
    "note",
    # Added in report version 2 (columns are only ever appended):
    "n_valid",  # bootstrap resamples (of n_boot) in which the row's quantity was defined
    "matched_arm",  # the arm's step-matched real-only control, if among the runs
    "delta_vs_matched",
    "delta_vs_matched_lo",
    "delta_vs_matched_hi",
    "relative_vs_matched_pct",
    # Added in report version 3:
    "n_positive_patients",  # test patients with a positive image for the label
    "in_macro",  # whether the label is one of the macro's (min_positive_patients)
    # each delta: primary or secondary, its p-value, and (secondary) its Holm adjustment
    *endpoint_columns(),
    # what the arm's pipeline saw that the other arm's did not, and the reverse (words)
    "information_vs_baseline",
    "information_vs_matched",
    # Added in report version 4:
    "n_generators",  # generators behind the arm's runs (0: no synthetic images)
    "interval_units",  # what the arm's CI treats as independent: "seeds" or "generators"
    "oversample_arm",  # the arm's positives-matched control, if among the runs
    "delta_vs_oversample",
    "delta_vs_oversample_lo",
    "delta_vs_oversample_hi",
    "relative_vs_oversample_pct",
    *endpoint_columns((OVERSAMPLE,)),
    "information_vs_oversample",
    # Added in report version 5: a subgroup-balanced arm against its prevalence-matched twin
    "twin_arm",
    "delta_vs_twin",
    "delta_vs_twin_lo",
    "delta_vs_twin_hi",
    "relative_vs_twin_pct",
    *endpoint_columns((TWIN,)),
    "information_vs_twin",
]


def _mean_roc(truth: np.ndarray, probs: list[np.ndarray], j: int) -> np.ndarray | None:
    """Vertical average of the runs' ROC curves for label j (TPR on a fixed FPR grid)."""
    usable = np.isin(truth[:, j], (0.0, 1.0))
    t = truth[usable, j]
    if not 0 < t.sum() < len(t):
        return None
    tprs = []
    for prob in probs:
        fpr, tpr, _ = roc_curve(t, prob[usable, j])
        tprs.append(np.interp(FPR_GRID, fpr, tpr))
    mean = np.mean(tprs, axis=0)
    mean[0] = 0.0
    return mean


@dataclass
class _ArmData:
    """One arm's runs as arrays: point AUROC ``(n, K)`` and resampled ``(n, n_boot, K)``,
    and each run's generator (None: no synthetic images; default: none recorded)."""

    seeds: list[int]
    values: np.ndarray
    resampled: np.ndarray
    generators: list[str | None] | None = None

    @property
    def n_generators(self) -> int:
        """Distinct generators among the runs (0 for an arm without synthetic images)."""
        return len({g for g in self.generators or [] if g is not None})

    @property
    def by_generator(self) -> bool:
        """The interval's units are generators: the runs come from more than one."""
        return self.n_generators > 1

    @property
    def one_run_per_unit(self) -> bool:
        """Each unit is a single run: seeds (or generators of one seed each)."""
        if not self.by_generator:
            return True
        return len(set(self.generators)) == len(self.generators)

    def units(self) -> tuple[np.ndarray, np.ndarray]:
        """`(values, resampled)` per unit (:func:`classifier.stats.unit_means`)."""
        if not self.by_generator:
            return self.values, self.resampled
        values, resampled, _ = unit_means(self.values, self.resampled, self.generators)
        return values, resampled

    def term(self, coef: float = 1.0) -> SeedTerm:
        values, resampled = self.units()
        return SeedTerm(values, resampled, coef)

    @property
    def mean(self) -> np.ndarray:
        """The arm's estimate per column: the mean over its units."""
        return self.units()[0].mean(axis=0)

    def draws(self, rng: np.random.Generator) -> np.ndarray:
        """``(n_boot, K)`` the arm's mean AUROC on each patient resample with its units
        drawn again with replacement (one draw per resample): the joint bootstrap of
        patients and seeds (or generators) that `classifier.efficiency` maps through
        non-linear functions. With one unit it is the patient bootstrap alone."""
        _, resampled = self.units()
        n_units, n_boot = resampled.shape[0], resampled.shape[1]
        if n_units == 1:
            return resampled[0].copy()
        drawn = rng.integers(0, n_units, size=(n_boot, n_units))
        return resampled[drawn, np.arange(n_boot)[:, None], :].mean(axis=1)


def arm_interval(arm: _ArmData, level: float = CI_LEVEL) -> SeedInterval:
    """CI of the arm's mean AUROC over its units (test patients and seeds, or generators
    with their seeds), per column."""
    return seed_interval([arm.term()], level)


def delta_terms(arm: _ArmData, base: _ArmData) -> tuple[list[SeedTerm], bool]:
    """The terms of mean AUROC(arm) - mean AUROC(base), and whether they pair by seed.

    Always paired over test patients (the same resamples score both arms). When both
    arms' units are single runs and the arms have the same seeds (each once), it is also
    paired by seed (one term of per-seed differences: a seed fixes initialisation and data
    order); so is an arm with one generator per seed against its real-only control. An arm
    whose units are generators with several seeds each is its own term, as is an arm
    without the same seeds: independent terms, each with its own units.
    """
    same_seeds = sorted(arm.seeds) == sorted(base.seeds) and len(set(arm.seeds)) == len(arm.seeds)
    if same_seeds and arm.one_run_per_unit and base.one_run_per_unit:
        order = [base.seeds.index(s) for s in arm.seeds]
        term = SeedTerm(arm.values - base.values[order], arm.resampled - base.resampled[order])
        return [term], True
    return [arm.term(), base.term(-1.0)], False


def delta_interval(
    arm: _ArmData, base: _ArmData, level: float = CI_LEVEL
) -> tuple[SeedInterval, bool]:
    """CI of mean AUROC(arm) - mean AUROC(base) (:func:`delta_terms`), and whether it is
    paired by seed."""
    terms, paired = delta_terms(arm, base)
    return seed_interval(terms, level, delta=True), paired


def _compare(arm: str, other: str, kind: str, data: dict, level: float) -> Comparison:
    terms, paired = delta_terms(data[arm], data[other])
    interval = seed_interval(terms, level, delta=True)
    return Comparison(arm, other, kind, terms, interval, seed_p_value(terms), paired)


def _delta_fields(
    interval: SeedInterval, base_mean: np.ndarray, k: int, prefix: str, rel: str
) -> dict:
    """Table fields of a delta; empty where it or its CI is undefined (never one alone)."""
    d, lo, hi = interval.estimate[k], interval.lo[k], interval.hi[k]
    if not (math.isfinite(d) and math.isfinite(lo) and math.isfinite(hi)):
        return {}
    return {
        prefix: float(d),
        f"{prefix}_lo": float(lo),
        f"{prefix}_hi": float(hi),
        rel: relative_pct(float(d), float(base_mean[k])),
    }


def relative_pct(delta: float, base: float) -> float:
    """100 x delta / base; NaN where the base AUROC is 0 (a degenerate test split can give
    it), so no relative change is claimed."""
    return 100.0 * delta / base if base > 0 else math.nan


def check_baseline(baseline: str, arms, info: dict[str, Arm]) -> None:
    """Refuse a baseline that names no arm (nor, with a real-size tag, any arm's control);
    the default real-only arm may be absent (the report then says so and shows no deltas)."""
    if baseline == BASELINE_ARM or any(baseline_for(info[a], baseline, arms) for a in arms):
        return
    raise UserError(f"--baseline {baseline}: no run has that arm; valid: {', '.join(arms)}")


def baseline_for(arm: Arm, baseline: str, arms) -> str | None:
    """The arm `arm` is compared with: the `baseline` arm of the same real size."""
    same_size = Arm.parse(baseline).at_size(arm.real_size).name
    if same_size in arms:
        return same_size
    return baseline if baseline in arms else None


def summarize_arms(
    runset: RunSet,
    baseline: str = BASELINE_ARM,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = CI_LEVEL,
    min_positive_patients: int = MIN_POSITIVE_PATIENTS,
    primary: str | None = None,
) -> Report:
    """AUROC per arm and label over seeds, and deltas against `baseline` with paired CIs.

    Args:
        runset: from :func:`collect_runs`.
        baseline: the arm deltas are taken against (real only).
        n_boot: bootstrap resamples (of test patients).
        seed: bootstrap seed.
        level: CI coverage.
        min_positive_patients: a label enters the macro only with at least this many
            positive test patients.
        primary: the primary comparison, 'ARM vs OTHER, LABEL' (default: the default rule
            of `classifier.endpoints`); every other delta is secondary, Holm-adjusted.

    Returns:
        The report (see the module docstring for the statistics). Arms with a step-matched
        control (:func:`matched_controls`) also get the delta against it.
    """
    if n_boot < 10:
        raise UserError(f"--n-boot: {n_boot} is too few resamples; valid: 10 or more")
    if min_positive_patients < 1:
        raise UserError(
            f"--min-positive-patients: {min_positive_patients} is too few; valid: 1 or more"
        )
    step_notes = check_matched_steps(runset.runs)  # before any work: a bad control refuses
    labels, truth = runset.labels, runset.truth
    names = [*labels, MACRO]
    n_pos = [int((truth[:, j] == 1).sum()) for j in range(len(labels))]
    n_neg = [int((truth[:, j] == 0).sum()) for j in range(len(labels))]
    pos_patients = positive_patients(truth, runset.patients)
    defined = np.array([p > 0 and n > 0 for p, n in zip(n_pos, n_neg, strict=True)], dtype=bool)
    keep = defined & (np.asarray(pos_patients) >= min_positive_patients)
    left_out = {
        label: f"left out of the macro: {pos_patients[j]} positive test patients (fewer "
        f"than {min_positive_patients})"
        for j, label in enumerate(labels)
        if defined[j] and not keep[j]
    }
    weights, codes = patient_resample_weights(runset.patients, n_boot, seed)
    point = {
        id(r): _with_macro(point_auroc(truth, r.prob)[0][None, :], keep)[0] for r in runset.runs
    }
    resampled = {
        id(r): _with_macro(resampled_auroc(truth, r.prob, weights, codes), keep)
        for r in runset.runs
    }
    info = run_arms(runset.runs)
    arms: dict[str, list[Run]] = {}
    for run in sorted(runset.runs, key=lambda r: (info[r.arm].sort_key(), r.seed)):
        arms.setdefault(run.arm, []).append(run)
    data = {
        arm: _ArmData(
            seeds=[r.seed for r in runs],
            values=np.stack([point[id(r)] for r in runs]),
            resampled=np.stack([resampled[id(r)] for r in runs]),
            generators=[r.generator for r in runs],
        )
        for arm, runs in arms.items()
    }
    check_baseline(baseline, arms, info)
    has_base = baseline in arms
    matched = {a: c for a, c in matched_controls(runset.runs).items() if a in arms and c in arms}
    oversampled = {
        a: c
        for a, c in matched_controls(runset.runs, oversample=True).items()
        if a in arms and c in arms
    }
    twins = {
        a: info[a].twin().name for a in arms if info[a].balanced and info[a].twin().name in arms
    }
    draw_rng = np.random.default_rng([seed, 1])  # the units drawn in each patient resample
    draws = {arm: data[arm].draws(draw_rng) for arm in arms}
    reasons = {
        label: f"test set has one class only ({n_pos[j]} positive, {n_neg[j]} negative)"
        for j, label in enumerate(labels)
        if not defined[j]
    }
    if not keep.any():
        reasons[MACRO] = (
            f"no label has both classes and {min_positive_patients} or more positive "
            "patients in the test set"
        )

    comparisons: dict[tuple[str, str], Comparison] = {}
    for arm in arms:
        base = baseline_for(info[arm], baseline, arms)
        if base and arm != base:
            comparisons[(arm, BASELINE)] = _compare(arm, base, BASELINE, data, level)
        if arm in matched:
            comparisons[(arm, MATCHED)] = _compare(arm, matched[arm], MATCHED, data, level)
        if arm in oversampled:
            comparisons[(arm, OVERSAMPLE)] = _compare(
                arm, oversampled[arm], OVERSAMPLE, data, level
            )
        if arm in twins:
            comparisons[(arm, TWIN)] = _compare(arm, twins[arm], TWIN, data, level)
    primary_cell = resolve_primary(primary, {a: info[a] for a in arms}, comparisons, names)
    budgets = arm_budgets(arms)
    information = {
        key: _information(c.arm, c.other, arms, budgets) for key, c in comparisons.items()
    }

    rows = []
    for arm, runs in arms.items():
        own = data[arm]
        mean_ci = arm_interval(own, level)
        base = baseline_for(info[arm], baseline, arms)
        vs_base = comparisons.get((arm, BASELINE))
        own_mean = own.mean
        for k, name in enumerate(names):
            v = own.values[:, k]
            finite = bool(np.isfinite(v).all())
            row = {
                "arm": arm,
                "label": name,
                "n_runs": len(runs),
                "seeds": " ".join(map(str, own.seeds)),
                # the mean over units (equal to the mean over runs unless generators have
                # different numbers of seeds: each generator then counts once)
                "auroc_mean": float(own_mean[k]) if finite else math.nan,
                "auroc_lo": float(mean_ci.lo[k]) if finite else math.nan,
                "auroc_hi": float(mean_ci.hi[k]) if finite else math.nan,
                "auroc_std": float(v.std(ddof=1)) if finite and len(v) > 1 else math.nan,
                "auroc_min": float(v.min()) if finite else math.nan,
                "auroc_max": float(v.max()) if finite else math.nan,
                "baseline": base,
                "paired_by_seed": vs_base.paired if vs_base else None,
                "n_positive": n_pos[k] if k < len(labels) else None,
                "n_negative": n_neg[k] if k < len(labels) else None,
                "note": reasons.get(name, left_out.get(name, "")),
                "n_valid": int(mean_ci.n_valid[k]) if finite else 0,
                "matched_arm": matched.get(arm),
                "n_positive_patients": pos_patients[k] if k < len(labels) else None,
                "in_macro": bool(keep[k]) if k < len(labels) else None,
                "information_vs_baseline": information.get((arm, BASELINE)),
                "information_vs_matched": information.get((arm, MATCHED)),
                "n_generators": own.n_generators,
                "interval_units": "generators" if own.by_generator else "seeds",
                "oversample_arm": oversampled.get(arm),
                "information_vs_oversample": information.get((arm, OVERSAMPLE)),
                "twin_arm": twins.get(arm),
                "information_vs_twin": information.get((arm, TWIN)),
            }
            if not finite:
                rows.append(row)
                continue
            if vs_base:
                fields = _delta_fields(
                    vs_base.interval, data[base].mean, k, "delta", "relative_pct"
                )
                row.update(fields)
                if not fields:
                    row["note"] = (row["note"] + "; " if row["note"] else "") + (
                        "no bootstrap CI for the delta (resamples lack a class); delta omitted"
                    )
            elif arm == base:
                row["note"] = row["note"] or "baseline"
            for kind in (MATCHED, OVERSAMPLE, TWIN):  # the arm against each of its controls
                c = comparisons.get((arm, kind))
                if c:
                    prefix = PREFIX[kind]
                    relative = prefix.replace("delta", "relative") + "_pct"
                    row.update(_delta_fields(c.interval, data[c.other].mean, k, prefix, relative))
            rows.append(row)
    n_secondary = label_endpoints(rows, comparisons, primary_cell, names, 1.0 - level)
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    notes = stat_notes(arms, baseline, has_base, matched, runset, table, n_boot, reasons)
    notes += unit_notes({arm: d.generators for arm, d in data.items()}, oversampled)
    notes += macro_notes(labels, keep, left_out, min_positive_patients) + step_notes
    roc = {
        arm: {
            label: curve
            for j, label in enumerate(labels)
            if (curve := _mean_roc(truth, [r.prob for r in runs], j)) is not None
        }
        for arm, runs in arms.items()
    }
    synthetic = next(
        (str(r.config["synthetic"]) for r in runset.runs if r.config.get("synthetic")), None
    )
    return Report(
        table=table,
        labels=labels,
        arms=list(arms),
        baseline=baseline if has_base else None,
        runs=_runs_frame(runset, info, point, keep),
        n_test_images=len(runset.images),
        n_test_patients=len(set(runset.patients)),
        n_boot=n_boot,
        ci_level=level,
        bootstrap_seed=seed,
        notes=notes,
        roc=roc,
        synthetic=synthetic,
        matched=matched,
        min_positive_patients=min_positive_patients,
        macro_labels=tuple(label for j, label in enumerate(labels) if keep[j]),
        per_arm=_per_arm(arms, budgets, data),
        primary=_primary_record(primary_cell, table),
        n_secondary=n_secondary,
        arm_info={arm: info[arm] for arm in arms},
        oversampled=oversampled,
        draws=draws,
        twins=twins,
    )


def _primary_record(primary: Primary | None, table: pd.DataFrame) -> dict | None:
    """The primary endpoint as report.json keeps it (delta NaN where undefined)."""
    if primary is None:
        return None
    prefix = PREFIX[primary.kind]
    row = table[(table.arm == primary.arm) & (table.label == primary.label)].iloc[0]
    return {
        "comparison": primary.text,
        "arm": primary.arm,
        "vs": primary.other,
        "label": primary.label,
        "kind": primary.kind,
        "declared": primary.declared,
        "delta": float(row[prefix]),
        "lo": float(row[f"{prefix}_lo"]),
        "hi": float(row[f"{prefix}_hi"]),
        "p": float(row[f"{prefix}_p"]),
        "information": row[f"information_vs_{primary.kind}"],
    }


def _per_arm(
    arms: dict[str, list[Run]], budgets: dict[str, list[RunBudget]], data: dict[str, _ArmData]
) -> dict[str, dict]:
    """Per arm, one value per run (in `seeds` order): its generator, its realised training
    (`classifier.steps`) and what it saw (`classifier.budget`); and what its interval
    covers: `generators` (distinct generators behind its runs), `interval_units` ("seeds",
    or "generators" when there are several) and `seeds_per_generator`."""
    out = {}
    for arm, runs in arms.items():
        steps = [run_steps(r.metrics) for r in runs]
        own = data[arm]
        counts = [own.generators.count(g) for g in dict.fromkeys(own.generators) if g]
        out[arm] = {
            "seeds": [r.seed for r in runs],
            "generator_digests": [r.generator for r in runs],
            "generators": own.n_generators,
            "seeds_per_generator": counts,
            "interval_units": "generators" if own.by_generator else "seeds",
            "steps": {name: [s[name] for s in steps] for name in STEP_FIELDS},
            "information": arm_information(budgets[arm]),
        }
    return out


def _information(
    arm: str, other: str, arms: dict[str, list[Run]], budgets: dict[str, list[RunBudget]]
) -> str:
    """`classifier.budget.information_difference` of two arms, their runs paired by seed
    (an arm without the seed: its first run)."""
    theirs = {r.seed: b for r, b in zip(arms[other], budgets[other], strict=True)}
    first = budgets[other][0]
    paired = [theirs.get(r.seed, first) for r in arms[arm]]
    return information_difference(arm, budgets[arm], other, paired)


def _runs_frame(
    runset: RunSet, info: dict[str, Arm], point: dict, keep: np.ndarray
) -> pd.DataFrame:
    rows = []
    for run in sorted(runset.runs, key=lambda r: (info[r.arm].sort_key(), r.seed)):
        c = run.config
        rows.append(
            {
                "run": str(run.path),
                "arm": run.arm,
                "seed": run.seed,
                "backbone": c.get("backbone"),
                "mix": c.get("mix"),
                "n_real_train": c.get("n_real_train"),
                "n_synthetic_train": c.get("n_synthetic_train"),
                "init_from": c.get("init_from"),
                "macro_auroc": float(point[id(run)][-1]) if keep.any() else math.nan,
                **run_steps(run.metrics),
            }
        )
    return pd.DataFrame(rows)


__all__ = [
    "Report",
    "baseline_for",
    "run_arms",
    "summarize_arms",
]
