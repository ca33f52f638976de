"""Fairness across patient subgroups: per arm, AUROC per label x subgroup and the
underdiagnosis gap, with the report's intervals and pairing (the report's Subgroups section).

:func:`summarize_fairness` reads what it needs beside a report's runs (the test images'
`sex` and `age` from `predictions.parquet`, each run's `val_predictions.parquet`) and
computes a :class:`Fairness`: one table per arm x label x subgroup, one of gaps. The
definitions (docs/statistics.md, Subgroups):

* **Subgroups** (`manifests.demographics`): sex F and M, the age groups of settable edges
  (default 40, 65), and each sex x age group intersection. An image of unknown sex (age)
  is in no sex (age) subgroup. Every subgroup with a test image is listed.
* **Too small**: a label x subgroup cell with fewer than `min_positive_patients` (default
  10, the report's macro rule) positive test patients, or as few negative ones, shows no
  number, only "too small": a handful of patients would decide it.
* **AUROC** in a subgroup is AUROC on its test images (sklearn's on the subset). Its
  intervals use the report's own patient resamples (all test patients drawn with
  replacement, the subgroup's images weighted by their patient's draws), so a subgroup's
  size varies between resamples as it would between test sets, and every arm is scored on
  the same resamples.
* **Threshold**: per run and label, the one that maximises Youden's J (TPR - FPR) on the
  run's real val predictions (the scored weights'); an image is called positive when its
  probability is at least the threshold. It is never chosen on test. A run without
  `val_predictions.parquet` (trained before runs wrote it) has no threshold: its arm has
  no FNR or gap, and the section says so.
* **FNR** of a subgroup: the share of its positive test images called negative at the run's
  threshold. **Gap**: FNR(subgroup) - FNR(reference), per label, for sex and for age group,
  the reference being the subgroup of that kind with the most test patients; a positive
  gap means the subgroup's findings are missed more often (underdiagnosed). With
  'No Finding' among the labels, also the form of Seyyed-Kalantari et al.: No Finding's
  false-positive rate (images with a finding called 'No Finding', i.e. underdiagnosed)
  per subgroup, and its gap. Intersections get AUROC and FNR, no gap.
* **Intervals**: an arm's subgroup AUROC as the report's AUROC
  (`classifier.report.arm_interval`: test patients and seeds, or generators); a gap as a
  difference (`classifier.stats.seed_interval` with ``delta=True``); a gap's delta against
  the real-only arm and against the step-matched control by
  `classifier.report.delta_interval`, paired over test patients and by seed exactly as the
  report's AUROC deltas; a subgroup-balanced arm's (``mix<m>-balanced``) also against its
  prevalence-matched twin (same generator, seeds and steps: what balancing did to the
  gap). None is adjusted for multiplicity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from classifier import run as run_folder
from classifier.arms import Arm
from classifier.config import MIN_POSITIVE_PATIENTS
from classifier.report import Report, _ArmData, arm_interval, delta_interval
from classifier.runset import Run, RunSet
from classifier.stats import (
    CI_LEVEL,
    SeedInterval,
    patient_resample_weights,
    point_auroc,
    resampled_auroc,
    seed_interval,
)
from manifests.demographics import (
    DEFAULT_AGE_EDGES,
    SEXES,
    age_group_names,
    age_groups,
    cell_name,
    known_sex,
)

SEX, AGE, BOTH = "sex", "age_group", "sex & age_group"  # the kinds of subgroup
GAP_KINDS = (SEX, AGE)  # kinds with a reference and gaps (intersections have none)
NO_FINDING = "No Finding"
FNR, NO_FINDING_FPR = "fnr", "no_finding_fpr"  # the gap's measures
MEASURE_NAMES = {FNR: "FNR", NO_FINDING_FPR: "No Finding FPR"}
THRESHOLD_RULE = (
    "per run and label, the threshold that maximises Youden's J (TPR - FPR) on the run's "
    "real val predictions; an image is called positive when its probability is at least "
    "the threshold"
)

SUBGROUP_COLUMNS = [
    "arm",
    "label",
    "kind",  # sex, age_group or "sex & age_group"
    "subgroup",  # e.g. "sex=F", "age_group=65+", "sex=F & age_group=65+"
    "n_images",  # test images in the subgroup with a 0/1 truth for the label
    "n_patients",  # test patients with an image in the subgroup
    "n_positive_patients",
    "n_negative_patients",
    "too_small",  # fewer than min_positive_patients positive or negative patients
    "auroc_mean",
    "auroc_lo",
    "auroc_hi",
    "n_valid",  # resamples (of n_boot) in which the AUROC was defined
    "fnr",  # mean over the arm's units of the run's FNR at its val threshold
    "runs_with_threshold",
    "n_runs",
    "note",
]
GAP_COLUMNS = [
    "arm",
    "label",
    "measure",  # fnr, or no_finding_fpr (the label is No Finding)
    "kind",
    "subgroup",
    "reference",
    "too_small",
    "gap",  # measure(subgroup) - measure(reference), mean over the arm's units
    "gap_lo",
    "gap_hi",
    "n_valid",
    "baseline",
    "delta_vs_baseline",  # gap(arm) - gap(baseline)
    "delta_vs_baseline_lo",
    "delta_vs_baseline_hi",
    "excludes_0_vs_baseline",
    "matched_arm",
    "delta_vs_matched",  # gap(arm) - gap(step-matched control)
    "delta_vs_matched_lo",
    "delta_vs_matched_hi",
    "excludes_0_vs_matched",
    "twin_arm",  # a subgroup-balanced arm's prevalence-matched twin
    "delta_vs_twin",  # gap(balanced arm) - gap(twin): what balancing did to the gap
    "delta_vs_twin_lo",
    "delta_vs_twin_hi",
    "excludes_0_vs_twin",
    "note",
]


# ------------------------------------------------------------------------------ subgroups


@dataclass(frozen=True)
class Subgroup:
    """Test images of one subgroup: its kind, its name and a mask over the test rows."""

    kind: str
    name: str
    mask: np.ndarray = field(compare=False, repr=False)


def subgroups(
    sex: Sequence, age: Sequence, edges: Sequence[float] = DEFAULT_AGE_EDGES
) -> list[Subgroup]:
    """Sex, age-group and sex x age-group subgroups of the test images (those with an
    image), in that order: F before M, youngest first."""
    sexes = known_sex(sex)
    ages = age_groups(age, edges)
    names = age_group_names(edges)
    out = [Subgroup(SEX, cell_name({"sex": s}), np.asarray(sexes == s, bool)) for s in SEXES]
    out += [Subgroup(AGE, cell_name({"age_group": g}), np.asarray(ages == g, bool)) for g in names]
    out += [
        Subgroup(
            BOTH,
            cell_name({"sex": s, "age_group": g}),
            np.asarray((sexes == s) & (ages == g), bool),
        )
        for s in SEXES
        for g in names
    ]
    return [g for g in out if g.mask.any()]


def references(groups: Sequence[Subgroup], patients: np.ndarray) -> dict[str, str]:
    """Per kind with gaps (sex, age group), the subgroup with the most test patients (the
    first of equals): the one every other subgroup's gap is taken against."""
    out = {}
    for kind in GAP_KINDS:
        members = [g for g in groups if g.kind == kind]
        if members:
            out[kind] = max(members, key=lambda g: len(set(patients[g.mask]))).name
    return out


def cell_patients(truth: np.ndarray, patients: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    """Test patients of the subgroup with a positive (1) image for the label, and with a
    negative (0) one (`truth` one label's raw values)."""
    return (
        len(set(patients[mask & (truth == 1)])),
        len(set(patients[mask & (truth == 0)])),
    )


def too_small(n_positive: int, n_negative: int, minimum: int) -> bool:
    """A cell is too small to show a number with fewer than `minimum` positive or negative
    patients."""
    return n_positive < minimum or n_negative < minimum


# ------------------------------------------------------------------------------ statistics


def youden_threshold(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """The threshold that maximises Youden's J = TPR - FPR (the highest of equals), where
    'positive' means probability >= threshold; only 0/1 truth counts. NaN with one class."""
    y_true = np.asarray(y_true, dtype=np.float64)
    usable = np.isin(y_true, (0.0, 1.0))
    t = y_true[usable]
    if not 0 < t.sum() < len(t):
        return math.nan
    fpr, tpr, thresholds = roc_curve(
        t, np.asarray(y_prob, dtype=np.float64)[usable], drop_intermediate=False
    )
    return float(thresholds[int(np.argmax(tpr - fpr))])


def val_thresholds(frame: pd.DataFrame | None, labels: Sequence[str]) -> np.ndarray | None:
    """Per label, the Youden threshold on a run's val predictions table (None: no table;
    NaN for a label it lacks or with one class on val)."""
    if frame is None:
        return None
    out = np.full(len(labels), np.nan)
    for j, label in enumerate(labels):
        if f"true.{label}" in frame and f"prob.{label}" in frame:
            out[j] = youden_threshold(frame[f"true.{label}"], frame[f"prob.{label}"])
    return out


def weighted_share(flag: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per weighting (row of ``(B, n)`` `weights`), the share of weight on the rows where
    `flag` holds; NaN for a weighting without weight."""
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    total = weights.sum(axis=1)
    hits = weights @ np.asarray(flag, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, hits / np.where(total > 0, total, 1.0), np.nan)


def error_rate(
    truth: np.ndarray,
    prob: np.ndarray,
    threshold: float,
    mask: np.ndarray,
    weights: np.ndarray,
    codes: np.ndarray,
    among: int = 1,
) -> tuple[float, np.ndarray]:
    """A subgroup's FNR (``among=1``: positives called negative) or FPR (``among=0``:
    negatives called positive) at `threshold`, and on each patient resample.

    Args:
        truth, prob: ``(n,)`` one label's raw truth and probabilities over the test images.
        threshold: positive means ``prob >= threshold`` (NaN: no rate).
        mask: ``(n,)`` the subgroup's images.
        weights, codes: the patient resamples (`classifier.stats.patient_resample_weights`).

    Returns:
        `(rate, resampled)`, ``resampled`` ``(n_boot,)``; NaN where undefined.
    """
    rows = mask & (truth == among)
    if not math.isfinite(threshold) or not rows.any():
        return math.nan, np.full(weights.shape[0], np.nan)
    called = prob[rows] >= threshold
    wrong = ~called if among == 1 else called
    return float(wrong.mean()), weighted_share(wrong, weights[:, codes[rows]])


def subgroup_auroc(
    truth: np.ndarray, prob: np.ndarray, mask: np.ndarray, weights: np.ndarray, codes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per label, AUROC on the subgroup's images ``(L,)`` and on each patient resample
    ``(n_boot, L)``: the images outside it are left out as -1/NaN truth is."""
    masked = np.where(mask[:, None], truth, np.nan)
    return point_auroc(masked, prob)[0], resampled_auroc(masked, prob, weights, codes)


# ------------------------------------------------------------------------------ the section


@dataclass
class Fairness:
    """The Subgroups section: `subgroups` (SUBGROUP_COLUMNS) and `gaps` (GAP_COLUMNS), and
    how they were made. `unavailable` says why there is no analysis (no demographics)."""

    subgroups: pd.DataFrame
    gaps: pd.DataFrame
    age_edges: tuple[float, ...] = DEFAULT_AGE_EDGES
    min_positive_patients: int = MIN_POSITIVE_PATIENTS
    ci_level: float = CI_LEVEL
    references: dict[str, str] = field(default_factory=dict)
    runs_without_threshold: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unavailable: str | None = None

    def to_json(self) -> dict:
        """report.json's `fairness` (NaN as null)."""
        return {
            "available": self.unavailable is None,
            "unavailable": self.unavailable,
            "age_edges": list(self.age_edges),
            "age_groups": age_group_names(self.age_edges),
            "min_positive_patients": self.min_positive_patients,
            "ci_level": self.ci_level,
            "threshold_rule": THRESHOLD_RULE,
            "references": self.references,
            "runs_without_threshold": self.runs_without_threshold,
            "notes": self.notes,
            "subgroups": _records(self.subgroups),
            "gaps": _records(self.gaps),
        }

    @classmethod
    def from_json(cls, doc: dict) -> Fairness:
        return cls(
            subgroups=_frame(doc.get("subgroups") or [], SUBGROUP_COLUMNS),
            gaps=_frame(doc.get("gaps") or [], GAP_COLUMNS),
            age_edges=tuple(doc.get("age_edges") or DEFAULT_AGE_EDGES),
            min_positive_patients=int(doc.get("min_positive_patients", MIN_POSITIVE_PATIENTS)),
            ci_level=float(doc.get("ci_level", CI_LEVEL)),
            references=dict(doc.get("references") or {}),
            runs_without_threshold=list(doc.get("runs_without_threshold") or []),
            notes=list(doc.get("notes") or []),
            unavailable=doc.get("unavailable"),
        )


def _records(frame: pd.DataFrame) -> list[dict]:
    return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")


def _frame(records: list[dict], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(records, columns=columns)
    numeric = [c for c in columns if c.startswith(("auroc_", "gap", "delta_", "fnr"))]
    for column in numeric:
        frame[column] = frame[column].astype(float)  # JSON null -> NaN
    return frame


def _unavailable(reason: str, edges, minimum: int, level: float) -> Fairness:
    return Fairness(
        subgroups=pd.DataFrame(columns=SUBGROUP_COLUMNS),
        gaps=pd.DataFrame(columns=GAP_COLUMNS),
        age_edges=tuple(edges),
        min_positive_patients=minimum,
        ci_level=level,
        unavailable=reason,
    )


def read_demographics(runset: RunSet) -> tuple[np.ndarray, np.ndarray] | None:
    """`(sex, age)` of the test images in the runset's row order, from the first run whose
    predictions carry them (None: no run's do, they predate demographics)."""
    for run in runset.runs:
        frame, _ = run_folder.read_predictions(run.path)
        if "sex" not in frame and "age" not in frame:
            continue
        frame = frame.drop_duplicates("image_path").set_index("image_path").loc[runset.images]
        none = np.full(len(frame), None, dtype=object)
        sex = known_sex(np.asarray(frame.get("sex", none), dtype=object))
        age = pd.to_numeric(pd.Series(np.asarray(frame.get("age", none))), errors="coerce")
        return sex, age.to_numpy(dtype=np.float64)
    return None


@dataclass
class _Columns:
    """The quantities one table holds for every run, in one column order: AUROC cells
    `(label index, subgroup)`, rate cells `(measure, label index, subgroup)` and gap
    cells `(measure, label index, subgroup, reference)`."""

    auroc: list[tuple[int, Subgroup]]
    rate: list[tuple[str, int, Subgroup]]
    gap: list[tuple[str, int, Subgroup, Subgroup]]


def _columns(cells: dict, groups: list[Subgroup], refs: dict[str, str], labels) -> _Columns:
    """The cells that are not too small; a gap needs its subgroup's and reference's."""
    by_name = {g.name: g for g in groups}
    auroc = [(j, g) for j in range(len(labels)) for g in groups if not cells[(j, g.name)][2]]
    measures = [(FNR, j) for j in range(len(labels))]
    if NO_FINDING in labels:
        measures.append((NO_FINDING_FPR, list(labels).index(NO_FINDING)))
    rate = [(m, j, g) for m, j in measures for g in groups if not cells[(j, g.name)][2]]
    gap = [
        (m, j, g, by_name[refs[g.kind]])
        for m, j in measures
        for g in groups
        if g.kind in refs
        and g.name != refs[g.kind]
        and not cells[(j, g.name)][2]
        and not cells[(j, refs[g.kind])][2]
    ]
    return _Columns(auroc, rate, gap)


def _run_values(
    run: Run,
    truth: np.ndarray,
    columns: _Columns,
    thresholds: np.ndarray | None,
    weights: np.ndarray,
    codes: np.ndarray,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One run's `(values (K,), resampled (n_boot, K))` per table: auroc, rate, gap."""
    n_boot = weights.shape[0]
    aurocs = {}
    for g in dict.fromkeys(g for _, g in columns.auroc):
        aurocs[g.name] = subgroup_auroc(truth, run.prob, g.mask, weights, codes)
    rates = {}
    wanted = {(m, j, g.name): g for m, j, g in columns.rate}
    wanted.update({(m, j, r.name): r for m, j, _, r in columns.gap})
    for (m, j, name), g in wanted.items():
        threshold = math.nan if thresholds is None else thresholds[j]
        among = 1 if m == FNR else 0
        rates[(m, j, name)] = error_rate(
            truth[:, j], run.prob[:, j], threshold, g.mask, weights, codes, among
        )

    def stack(pairs: list[tuple[float, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        if not pairs:
            return np.zeros(0), np.zeros((n_boot, 0))
        return np.array([p for p, _ in pairs]), np.stack([r for _, r in pairs], axis=1)

    auroc = [(aurocs[g.name][0][j], aurocs[g.name][1][:, j]) for j, g in columns.auroc]
    rate = [rates[(m, j, g.name)] for m, j, g in columns.rate]
    gap = []
    for m, j, g, r in columns.gap:
        (value, res), (ref_value, ref_res) = rates[(m, j, g.name)], rates[(m, j, r.name)]
        gap.append((value - ref_value, res - ref_res))
    return {"auroc": stack(auroc), "rate": stack(rate), "gap": stack(gap)}


def _arm_data(runs: list[Run], per_run: dict[int, dict], table: str) -> _ArmData:
    return _ArmData(
        seeds=[r.seed for r in runs],
        values=np.stack([per_run[id(r)][table][0] for r in runs]),
        resampled=np.stack([per_run[id(r)][table][1] for r in runs]),
        generators=[r.generator for r in runs],
    )


def _excludes_zero(lo: float, hi: float) -> bool | None:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return bool(lo > 0 or hi < 0)


def _delta_fields(interval: SeedInterval | None, k: int, prefix: str) -> dict:
    if interval is None:
        return {}
    d, lo, hi = (float(interval.estimate[k]), float(interval.lo[k]), float(interval.hi[k]))
    if not (math.isfinite(d) and math.isfinite(lo) and math.isfinite(hi)):
        return {}
    return {
        f"delta_{prefix}": d,
        f"delta_{prefix}_lo": lo,
        f"delta_{prefix}_hi": hi,
        f"excludes_0_{prefix}": _excludes_zero(lo, hi),
    }


def summarize_fairness(
    runset: RunSet,
    report: Report,
    age_edges: Sequence[float] = DEFAULT_AGE_EDGES,
) -> Fairness:
    """The Subgroups section of `report`, made from the runs it compared (`runset`).

    Uses the report's bootstrap (its `n_boot`, `bootstrap_seed`: the same patient
    resamples as its AUROC deltas), its level, its `min_positive_patients` as the minimum
    cell, its baseline per arm and its step-matched controls. See the module docstring.
    """
    level, minimum = report.ci_level, report.min_positive_patients
    demographics = read_demographics(runset)
    if demographics is None:
        return _unavailable(
            "the runs' predictions carry no sex or age (evaluated before predictions "
            "recorded demographics); re-evaluate them to see subgroups",
            age_edges,
            minimum,
            level,
        )
    sex, age = demographics
    groups = subgroups(sex, age, age_edges)
    if not groups:
        return _unavailable("no test image has a known sex or age", age_edges, minimum, level)
    labels, truth, patients = list(runset.labels), runset.truth, runset.patients
    refs = references(groups, patients)
    cells = {}  # (label index, subgroup) -> (positive patients, negative patients, too small)
    for j in range(len(labels)):
        for g in groups:
            n_pos, n_neg = cell_patients(truth[:, j], patients, g.mask)
            cells[(j, g.name)] = (n_pos, n_neg, too_small(n_pos, n_neg, minimum))
    columns = _columns(cells, groups, refs, labels)

    weights, codes = patient_resample_weights(patients, report.n_boot, report.bootstrap_seed)
    thresholds = {
        id(r): val_thresholds(run_folder.read_val_predictions(r.path), labels) for r in runset.runs
    }
    per_run = {
        id(r): _run_values(r, truth, columns, thresholds[id(r)], weights, codes)
        for r in runset.runs
    }
    arms: dict[str, list[Run]] = {}
    for run in sorted(runset.runs, key=lambda r: r.seed):
        arms.setdefault(run.arm, []).append(run)
    data = {
        arm: {t: _arm_data(arms[arm], per_run, t) for t in ("auroc", "rate", "gap")}
        for arm in report.arms
    }
    base = (
        report.table.drop_duplicates("arm").set_index("arm")["baseline"].to_dict()
        if len(report.table)
        else {}
    )
    subgroup_rows = _subgroup_rows(report.arms, arms, data, columns, cells, groups, labels,
                                   thresholds, level, minimum, patients, truth)  # fmt: skip
    gap_rows = _gap_rows(report, data, columns, cells, groups, refs, labels, base, level, minimum)
    missing = [str(r.path) for r in runset.runs if thresholds[id(r)] is None]
    return Fairness(
        subgroups=pd.DataFrame(subgroup_rows, columns=SUBGROUP_COLUMNS),
        gaps=pd.DataFrame(gap_rows, columns=GAP_COLUMNS),
        age_edges=tuple(float(e) for e in age_edges),
        min_positive_patients=minimum,
        ci_level=level,
        references=refs,
        runs_without_threshold=missing,
        notes=_notes(sex, age, missing, refs, labels),
    )


def _subgroup_rows(
    order, arms, data, columns, cells, groups, labels, thresholds, level, minimum, patients, truth
) -> list[dict]:
    auroc_at = {(j, g.name): k for k, (j, g) in enumerate(columns.auroc)}
    fnr_at = {(j, g.name): k for k, (m, j, g) in enumerate(columns.rate) if m == FNR}
    rows = []
    for arm in order:
        runs = arms[arm]
        auroc = data[arm]["auroc"]
        interval = arm_interval(auroc, level) if columns.auroc else None
        fnr = data[arm]["rate"].mean if columns.rate else np.zeros(0)
        with_threshold = sum(thresholds[id(r)] is not None for r in runs)
        for j, label in enumerate(labels):
            for g in groups:
                n_pos, n_neg, small = cells[(j, g.name)]
                row = {
                    "arm": arm,
                    "label": label,
                    "kind": g.kind,
                    "subgroup": g.name,
                    "n_images": int(np.isin(truth[g.mask, j], (0.0, 1.0)).sum()),
                    "n_patients": len(set(patients[g.mask])),
                    "n_positive_patients": n_pos,
                    "n_negative_patients": n_neg,
                    "too_small": small,
                    "runs_with_threshold": with_threshold,
                    "n_runs": len(runs),
                    "note": "",
                }
                if small:
                    row["note"] = (
                        f"too small: {n_pos} positive, {n_neg} negative test patients (fewer "
                        f"than {minimum})"
                    )
                    rows.append(row)
                    continue
                k = auroc_at[(j, g.name)]
                row.update(
                    auroc_mean=float(interval.estimate[k]),
                    auroc_lo=float(interval.lo[k]),
                    auroc_hi=float(interval.hi[k]),
                    n_valid=int(interval.n_valid[k]),
                    fnr=float(fnr[fnr_at[(j, g.name)]]),
                )
                if with_threshold < len(runs):
                    row["note"] = (
                        f"no val threshold for {len(runs) - with_threshold} of {len(runs)} "
                        "runs (no val predictions): FNR n/a"
                    )
                rows.append(row)
    return rows


def _gap_rows(report, data, columns, cells, groups, refs, labels, base, level, minimum):
    at = {(m, j, g.name): k for k, (m, j, g, _) in enumerate(columns.gap)}
    measures = [(FNR, j, label) for j, label in enumerate(labels)]
    if NO_FINDING in labels:
        measures.append((NO_FINDING_FPR, labels.index(NO_FINDING), NO_FINDING))
    rows = []
    for arm in report.arms:
        gaps = data[arm]["gap"]
        own = seed_interval([gaps.term()], level, delta=True) if columns.gap else None
        other = base.get(arm)
        vs_base = (
            delta_interval(gaps, data[other]["gap"], level)[0]
            if columns.gap and other and other != arm and other in data
            else None
        )
        control = report.matched.get(arm)
        vs_matched = (
            delta_interval(gaps, data[control]["gap"], level)[0]
            if columns.gap and control in data
            else None
        )
        parsed = Arm.parse(arm)
        twin = parsed.twin().name if parsed.balanced else None
        vs_twin = (
            delta_interval(gaps, data[twin]["gap"], level)[0]
            if columns.gap and twin in data
            else None
        )
        for m, j, label in measures:
            for g in groups:
                if g.kind not in refs or g.name == refs[g.kind]:
                    continue
                ref = refs[g.kind]
                row = {
                    "arm": arm,
                    "label": label,
                    "measure": m,
                    "kind": g.kind,
                    "subgroup": g.name,
                    "reference": ref,
                    "too_small": (m, j, g.name) not in at,
                    "baseline": other if other != arm else None,
                    "matched_arm": control,
                    "twin_arm": twin if twin in data else None,
                    "note": "",
                }
                if row["too_small"]:
                    small = [n for n in (g.name, ref) if cells[(j, n)][2]]
                    row["note"] = (
                        f"too small: {' and '.join(small)} fewer than {minimum} positive or "
                        "negative test patients"
                    )
                    rows.append(row)
                    continue
                k = at[(m, j, g.name)]
                d, lo, hi = float(own.estimate[k]), float(own.lo[k]), float(own.hi[k])
                if math.isfinite(d):
                    row.update(gap=d, gap_lo=lo, gap_hi=hi, n_valid=int(own.n_valid[k]))
                else:
                    row["note"] = "no val threshold for some runs (no val predictions)"
                row.update(_delta_fields(vs_base, k, "vs_baseline"))
                row.update(_delta_fields(vs_matched, k, "vs_matched"))
                row.update(_delta_fields(vs_twin, k, "vs_twin"))
                rows.append(row)
    return rows


def _notes(sex, age, missing: list[str], refs: dict[str, str], labels) -> list[str]:
    notes = []
    if refs:
        notes.append(
            "gaps are taken against the largest subgroup of each kind (most test patients): "
            + ", ".join(refs.values())
        )
    unknown_sex, unknown_age = int(sum(s is None for s in sex)), int(np.isnan(age).sum())
    if unknown_sex or unknown_age:
        notes.append(
            f"{unknown_sex} test images of unknown sex and {unknown_age} of unknown age are in "
            "no subgroup of that kind"
        )
    if missing:
        notes.append(
            f"thresholds are unavailable for {len(missing)} run(s) without val predictions "
            f"(trained before runs saved them): {', '.join(missing)}; their arms show no FNR "
            "or gap"
        )
    if NO_FINDING not in labels:
        notes.append(
            "'No Finding' is not among the labels: no No Finding FPR (underdiagnosis in the "
            "form of Seyyed-Kalantari et al.)"
        )
    notes.append(
        "the subgroup intervals are not adjusted for multiplicity (many labels x subgroups "
        "x arms): some will exclude 0 by chance"
    )
    return notes


__all__ = [
    "FNR",
    "GAP_COLUMNS",
    "NO_FINDING_FPR",
    "SUBGROUP_COLUMNS",
    "THRESHOLD_RULE",
    "Fairness",
    "Subgroup",
    "cell_patients",
    "error_rate",
    "references",
    "subgroup_auroc",
    "subgroups",
    "summarize_fairness",
    "read_demographics",
    "too_small",
    "val_thresholds",
    "weighted_share",
    "youden_threshold",
]
