"""Compare classifier arms: AUROC per arm and label over seeds, and deltas against real-only.

`cxraug report RUN...` and the last stage of `cxraug study` call, in order,
:func:`collect_runs` (read and check the run directories), :func:`summarize_arms` (the
statistics) and :func:`write_report` (report.md, report.csv, report.json, report.html).

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
  seeds (`classifier.evaluate.seed_interval`). A bootstrap draws test *patients* with
  replacement (all their images; a patient's images are correlated) and the *same*
  patients score every run, so a delta is paired over patients. Its variance plus the
  between-seed variance beyond test-set noise, divided by the number of seeds, gives a t
  interval with Welch-Satterthwaite degrees of freedom, never narrower than the t interval
  of the per-seed values alone. Resampling 3 runs out of 3 instead
  would shrink the seed spread by a third and ignore how little 3 seeds say about it;
  with fewer than 5 seeds per arm the report says so. Arms with the same seeds are paired
  by seed (a seed fixes initialisation and data order). With one seed per arm the CI is
  the patient-bootstrap percentile interval alone, exactly
  `classifier.evaluate.paired_bootstrap_delta`, and the report says it leaves out
  training randomness. Coverage is checked by simulation (`benchmarks/coverage.py`).
* **Macro** is the mean over one fixed label set (labels with both classes on the test
  set) in every resample; a resample lacking a class for any of them is left out, and each
  row says how many resamples were valid (`n_valid` of `n_boot`).
* **Step-matched control**: a real-only arm trained for as many optimizer steps as a mixed
  arm (config `"matched_to": "<arm>"`, named `real-steps-<arm>`); the mixed arm's rows
  also show the delta against it (`delta_vs_matched`), which longer training alone
  cannot explain.
* **Relative change**: 100 x delta / baseline mean AUROC (the CI is for the absolute delta).

Every delta shown has its CI: a delta whose resamples give no CI is reported as NaN.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from classifier import run as run_folder
from classifier.efficiency import (
    efficiency_figure,
    efficiency_table,
    size_tag,
    synthetic_worth,
    worth_text,
)
from classifier.evaluate import (
    CI_LEVEL,
    SeedInterval,
    SeedTerm,
    fixed_macro,
    patient_resample_weights,
    point_auroc,
    resampled_auroc,
    seed_interval,
)
from classifier.tables import fmt, html_table, md_table
from manifests import provenance
from manifests.errors import UserError
from manifests.files import atomic_path, check_output_folder, write_json
from manifests.io import read_manifest

REPORT_FILES = ("report.md", "report.csv", "report.json", "report.html")
MACRO = "macro"
BASELINE_ARM = "real"
CONTROL_PREFIX = "real-steps-"  # a real-only arm trained as many steps as arm <suffix>
MIN_SEEDS = 5  # fewer seeds per arm than this: the report warns
REPORT_VERSION = 2
_FPR_GRID = np.linspace(0.0, 1.0, 101)


# ------------------------------------------------------------------------------ runs


@dataclass
class Run:
    """One finished classifier run, its predictions aligned to the shared test images."""

    path: Path
    arm: str
    seed: int
    labels: tuple[str, ...]
    config: dict
    metrics: dict
    prob: np.ndarray  # (n_test, L), rows in the order of RunSet.images, labels RunSet.labels


@dataclass
class RunSet:
    """Runs that share one label set and one test set."""

    runs: list[Run]
    labels: tuple[str, ...]
    images: list[str]  # test image paths, the row order of `truth` and every run's `prob`
    patients: np.ndarray  # (n_test,) patient of each image
    truth: np.ndarray  # (n_test, L) raw test labels: 1, 0, -1, NaN


def _read_run(path: Path) -> tuple[dict, dict, pd.DataFrame, list[str]]:
    config = run_folder.read_config(path)
    metrics = run_folder.read_metrics(path)
    frame, labels = run_folder.read_predictions(path)
    return config, metrics, frame, labels


def collect_runs(paths: Sequence[Path]) -> RunSet:
    """Read finished runs and check they are comparable.

    Args:
        paths: run directories, or folders holding run directories.

    Returns:
        The runs with predictions aligned on the shared test images.

    Raises:
        UserError: a folder that is not a run, an unfinished run, runs of another label
            set or another test set (naming the run), or the same arm and seed twice.
    """
    dirs = run_folder.find_runs(paths)
    if not dirs:
        raise UserError("report: no run directories given")
    runs: list[Run] = []
    first: Path | None = None
    labels: tuple[str, ...] = ()
    images: list[str] = []
    patients = np.zeros(0)
    truth = np.zeros((0, 0))
    seen: dict[tuple[str, int], Path] = {}
    for path in dirs:
        config, metrics, frame, pred_labels = _read_run(path)
        run_labels = tuple(config["labels"])
        if set(pred_labels) != set(run_labels):
            raise UserError(
                f"{path}: {run_folder.PREDICTIONS_FILE} has labels {pred_labels}, config.json {list(run_labels)}"
            )
        if first is None:
            first, labels = path, run_labels
            frame = frame.drop_duplicates("image_path")
            images = frame["image_path"].astype(str).tolist()
            patients = frame["patient_id"].astype(str).to_numpy()
            truth = frame[[f"true.{x}" for x in labels]].to_numpy(np.float64)
        elif set(run_labels) != set(labels):
            raise UserError(
                f"{path}: label set {sorted(run_labels)} differs from {sorted(labels)} of "
                f"{first}; a report compares runs of one label set"
            )
        frame = frame.drop_duplicates("image_path").set_index("image_path")
        if set(frame.index.astype(str)) != set(images):
            other_patients = set(frame["patient_id"].astype(str))
            raise UserError(
                f"{path}: evaluated on a different test set ({len(frame)} images of "
                f"{len(other_patients)} patients) than {first} ({len(images)} images of "
                f"{len(set(patients))} patients); a report compares runs on the same "
                "real test images"
            )
        frame = frame.loc[images]
        run_truth = frame[[f"true.{x}" for x in labels]].to_numpy(np.float64)
        if not np.array_equal(run_truth, truth, equal_nan=True):
            raise UserError(
                f"{path}: its test labels differ from those of {first} on the same images; "
                "were they evaluated on different manifests?"
            )
        arm = str(config.get("arm") or metrics.get("arm") or "unknown")
        seed = int(config["seed"])
        if (arm, seed) in seen:
            raise UserError(
                f"{path}: arm {arm!r} seed {seed} is also {seen[(arm, seed)]}; give each run once"
            )
        seen[(arm, seed)] = path
        runs.append(
            Run(
                path=path,
                arm=arm,
                seed=seed,
                labels=labels,
                config=config,
                metrics=metrics,
                prob=frame[[f"prob.{x}" for x in labels]].to_numpy(np.float64),
            )
        )
    return RunSet(runs=runs, labels=labels, images=images, patients=patients, truth=truth)


# ------------------------------------------------------------------------------ statistics


def _ratio(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.inf


def arm_order(arm: str) -> tuple:
    """Sort key: arms on the whole train split first, then each real size (ascending); within
    a size: real, its step-matched controls, mixes, synthetic, larger synthetic sets
    (``synthetic-x<k>``, k ascending), pretrain-finetune, then the rest; ties by name."""
    tag = size_tag(arm)
    if not tag:
        return (0, 0.0, *_arm_key(arm))
    return (1, float(tag[2:]), *_arm_key(arm[: -len(tag)]))


def _arm_key(arm: str) -> tuple:
    if arm == BASELINE_ARM:
        return (0, 0.0, arm)
    if arm.startswith(CONTROL_PREFIX):  # real-steps-mix0.5: next to real, by its ratio
        matched = arm[len(CONTROL_PREFIX) :]
        return (1, _ratio(matched[3:]) if matched.startswith("mix") else math.inf, arm)
    if arm.startswith("mix"):
        return (2, _ratio(arm[3:]), arm)
    if arm == "synthetic":
        return (3, 1.0, arm)
    if arm.startswith("synthetic-x"):
        return (3, _ratio(arm[len("synthetic-x") :]), arm)
    if arm.startswith("pretrain-finetune"):
        return (4, 0.0, arm)
    return (5, 0.0, arm)


def _with_macro(per_label: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Append the macro column: the mean over the same `keep` labels in every resample."""
    return np.concatenate([per_label, fixed_macro(per_label, keep)[..., None]], axis=-1)


def matched_controls(runs: Sequence[Run]) -> dict[str, str]:
    """{arm: its step-matched real-only control arm} from the runs' configs.

    A control run has ``"matched_to": "<arm>"`` in its config.json (and is named
    ``real-steps-<arm>``); a ``real-steps-<arm>`` run without it matches `<arm>` by name.
    """
    out: dict[str, str] = {}
    for run in runs:
        target = run.config.get("matched_to")
        if not target and run.arm.startswith(CONTROL_PREFIX):
            target = run.arm[len(CONTROL_PREFIX) :]
        if target:
            out.setdefault(str(target), run.arm)
    return out


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
]
_FLOAT_COLUMNS = [c for c in TABLE_COLUMNS if c.startswith(("auroc_", "delta", "relative_"))]


def _mean_roc(truth: np.ndarray, probs: list[np.ndarray], j: int) -> np.ndarray | None:
    """Vertical average of the runs' ROC curves for label j (TPR on a fixed FPR grid)."""
    usable = np.isin(truth[:, j], (0.0, 1.0))
    t = truth[usable, j]
    if not 0 < t.sum() < len(t):
        return None
    tprs = []
    for prob in probs:
        fpr, tpr, _ = roc_curve(t, prob[usable, j])
        tprs.append(np.interp(_FPR_GRID, fpr, tpr))
    mean = np.mean(tprs, axis=0)
    mean[0] = 0.0
    return mean


@dataclass
class _ArmData:
    """One arm's runs as arrays: point AUROC ``(n, K)`` and resampled ``(n, n_boot, K)``."""

    seeds: list[int]
    values: np.ndarray
    resampled: np.ndarray


def arm_interval(arm: _ArmData, level: float = CI_LEVEL) -> SeedInterval:
    """CI of the arm's mean AUROC over seeds (test patients and seeds), per column."""
    return seed_interval([SeedTerm(arm.values, arm.resampled)], level)


def delta_interval(
    arm: _ArmData, base: _ArmData, level: float = CI_LEVEL
) -> tuple[SeedInterval, bool]:
    """CI of mean AUROC(arm) - mean AUROC(base), and whether it is paired by seed.

    Always paired over test patients (the same resamples score both arms). When both
    arms have the same seeds it is also paired by seed (one term of per-seed differences:
    a seed fixes initialisation and data order); otherwise the arms are independent terms.
    """
    if sorted(arm.seeds) == sorted(base.seeds):
        order = [base.seeds.index(s) for s in arm.seeds]
        term = SeedTerm(arm.values - base.values[order], arm.resampled - base.resampled[order])
        return seed_interval([term], level, delta=True), True
    terms = [SeedTerm(arm.values, arm.resampled), SeedTerm(base.values, base.resampled, -1.0)]
    return seed_interval(terms, level, delta=True), False


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
        rel: 100.0 * float(d) / float(base_mean[k]),
    }


def baseline_for(arm: str, baseline: str, arms) -> str | None:
    """The arm `arm` is compared with: the real-only arm of the same real size."""
    same_size = f"{baseline}{size_tag(arm)}"
    if same_size in arms:
        return same_size
    return baseline if baseline in arms else None


def summarize_arms(
    runset: RunSet,
    baseline: str = BASELINE_ARM,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> Report:
    """AUROC per arm and label over seeds, and deltas against `baseline` with paired CIs.

    Args:
        runset: from :func:`collect_runs`.
        baseline: the arm deltas are taken against (real only).
        n_boot: bootstrap resamples (of test patients).
        seed: bootstrap seed.
        level: CI coverage.

    Returns:
        The report (see the module docstring for the statistics). Arms with a step-matched
        control (:func:`matched_controls`) also get the delta against it.
    """
    if n_boot < 10:
        raise UserError(f"--n-boot: {n_boot} is too few resamples; valid: 10 or more")
    labels, truth = runset.labels, runset.truth
    names = [*labels, MACRO]
    n_pos = [int((truth[:, j] == 1).sum()) for j in range(len(labels))]
    n_neg = [int((truth[:, j] == 0).sum()) for j in range(len(labels))]
    keep = np.array([p > 0 and n > 0 for p, n in zip(n_pos, n_neg, strict=True)], dtype=bool)
    weights, codes = patient_resample_weights(runset.patients, n_boot, seed)
    point = {
        id(r): _with_macro(point_auroc(truth, r.prob)[0][None, :], keep)[0] for r in runset.runs
    }
    resampled = {
        id(r): _with_macro(resampled_auroc(truth, r.prob, weights, codes), keep)
        for r in runset.runs
    }
    arms: dict[str, list[Run]] = {}
    for run in sorted(runset.runs, key=lambda r: (arm_order(r.arm), r.seed)):
        arms.setdefault(run.arm, []).append(run)
    data = {
        arm: _ArmData(
            seeds=[r.seed for r in runs],
            values=np.stack([point[id(r)] for r in runs]),
            resampled=np.stack([resampled[id(r)] for r in runs]),
        )
        for arm, runs in arms.items()
    }
    has_base = baseline in arms
    matched = {a: c for a, c in matched_controls(runset.runs).items() if a in arms and c in arms}
    reasons = {
        label: f"test set has one class only ({n_pos[j]} positive, {n_neg[j]} negative)"
        for j, label in enumerate(labels)
        if not keep[j]
    }
    if not keep.any():
        reasons[MACRO] = "no label has both classes in the test set"

    rows = []
    for arm, runs in arms.items():
        own = data[arm]
        mean_ci = arm_interval(own, level)
        base = baseline_for(arm, baseline, arms)
        vs_base = delta_interval(own, data[base], level) if base and arm != base else None
        vs_matched = delta_interval(own, data[matched[arm]], level) if arm in matched else None
        for k, name in enumerate(names):
            v = own.values[:, k]
            finite = bool(np.isfinite(v).all())
            row = {
                "arm": arm,
                "label": name,
                "n_runs": len(runs),
                "seeds": " ".join(map(str, own.seeds)),
                "auroc_mean": float(v.mean()) if finite else math.nan,
                "auroc_lo": float(mean_ci.lo[k]) if finite else math.nan,
                "auroc_hi": float(mean_ci.hi[k]) if finite else math.nan,
                "auroc_std": float(v.std(ddof=1)) if finite and len(v) > 1 else math.nan,
                "auroc_min": float(v.min()) if finite else math.nan,
                "auroc_max": float(v.max()) if finite else math.nan,
                "baseline": base,
                "paired_by_seed": vs_base[1] if vs_base else None,
                "n_positive": n_pos[k] if k < len(labels) else None,
                "n_negative": n_neg[k] if k < len(labels) else None,
                "note": reasons.get(name, ""),
                "n_valid": int(mean_ci.n_valid[k]) if finite else 0,
                "matched_arm": matched.get(arm),
            }
            if not finite:
                rows.append(row)
                continue
            if vs_base:
                fields = _delta_fields(
                    vs_base[0], data[base].values.mean(axis=0), k, "delta", "relative_pct"
                )
                row.update(fields)
                if not fields:
                    row["note"] = (row["note"] + "; " if row["note"] else "") + (
                        "no bootstrap CI for the delta (resamples lack a class); delta omitted"
                    )
            elif arm == base:
                row["note"] = row["note"] or "baseline"
            if vs_matched:
                row.update(
                    _delta_fields(
                        vs_matched[0],
                        data[matched[arm]].values.mean(axis=0),
                        k,
                        "delta_vs_matched",
                        "relative_vs_matched_pct",
                    )
                )
            rows.append(row)
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    notes = _stat_notes(arms, baseline, has_base, matched, runset, table, n_boot, reasons)
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
        runs=_runs_frame(runset, point, keep),
        n_test_images=len(runset.images),
        n_test_patients=len(set(runset.patients)),
        n_boot=n_boot,
        ci_level=level,
        bootstrap_seed=seed,
        notes=notes,
        roc=roc,
        synthetic=synthetic,
        matched=matched,
    )


def _stat_notes(
    arms: dict[str, list[Run]],
    baseline: str,
    has_base: bool,
    matched: dict[str, str],
    runset: RunSet,
    table: pd.DataFrame,
    n_boot: int,
    reasons: dict[str, str],
) -> list[str]:
    """What a reader must know to read the intervals: seeds, pairing, resamples, controls."""
    notes = []
    if not has_base:
        notes.append(
            f"no {baseline!r} arm among the runs: deltas need the real-only baseline, so "
            "none are shown"
        )
    notes += [f"{label}: AUROC undefined, {reason}" for label, reason in reasons.items()]
    one = [arm for arm, runs in arms.items() if len(runs) == 1]
    if one:
        notes.append(
            f"{_names(one)} one seed: its spread over seeds is undefined and its intervals "
            "are the test-patient bootstrap alone; they do not cover training randomness"
        )
    few = {arm: len(runs) for arm, runs in arms.items() if 1 < len(runs) < MIN_SEEDS}
    if few:
        counts = ", ".join(f"{arm} {n}" for arm, n in few.items())
        notes.append(
            f"fewer than {MIN_SEEDS} seeds per arm ({counts}): the seed spread is poorly "
            "known, so the intervals use a t quantile with few degrees of freedom (wide); "
            f"train {MIN_SEEDS} or more seeds per arm for intervals you can act on"
        )
    if has_base:
        base = sorted(r.seed for r in arms[baseline])
        for arm, runs in arms.items():
            seeds = sorted(r.seed for r in runs)
            if arm != baseline and seeds != base:
                notes.append(
                    f"arm {arm!r} (seeds {seeds}) and {baseline!r} (seeds {base}) do not "
                    "share their seeds: its delta treats the two arms' seeds as independent"
                )
    short = table[(table.n_valid < n_boot) & table.auroc_mean.notna()]
    for label, group in short.groupby("label", sort=False):
        valid = int(group.n_valid.min())
        what = "some label" if label == MACRO else "the label"
        notes.append(
            f"{label}: {n_boot - valid} of {n_boot} bootstrap resamples lacked a class for "
            f"{what} and were left out of its intervals ({valid} valid)"
        )
    for arm, control in matched.items():
        notes.append(
            f"arm {arm!r} is also compared with {control!r}, real-only data trained for the "
            "same number of optimizer steps (Δ vs step-matched): a gain over real that "
            "the step-matched arm also shows comes from longer training, not from the "
            "synthetic images"
        )
    for target, control in matched_controls(runset.runs).items():
        if target not in arms:
            notes.append(f"control arm {control!r} matches arm {target!r}, which is not here")
    backbones = sorted({str(r.config.get("backbone")) for r in runset.runs})
    if len(backbones) > 1:
        notes.append(f"runs use different backbones ({', '.join(backbones)})")
    notes.extend(_data_notes(runset))
    return notes


def _names(arms: list[str]) -> str:
    quoted = ", ".join(repr(a) for a in arms)
    return f"arm {quoted} has" if len(arms) == 1 else f"arms {quoted} have"


def _runs_frame(runset: RunSet, point: dict, keep: np.ndarray) -> pd.DataFrame:
    rows = []
    for run in sorted(runset.runs, key=lambda r: (arm_order(r.arm), r.seed)):
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
            }
        )
    return pd.DataFrame(rows)


def check_provenance(runset: RunSet, allow_foreign: bool = False) -> list[str]:
    """Refuse runs trained on synthetic images whose patients were never checked against the
    test set (made before provenance records) unless `allow_foreign`; notes for the header."""
    notes = []
    for run in runset.runs:
        status = run.config.get("synthetic_provenance")
        if not run.config.get("n_synthetic_train") or status == provenance.CHECKED:
            continue
        if status is None and not allow_foreign:
            raise UserError(
                f"{run.path}: trained on synthetic images whose prompt and generator patients "
                "were never checked against the test patients (a run from before provenance "
                "records); retrain it, or pass --allow-foreign-synthetic to report it anyway"
            )
        notes.append(
            f"arm {run.arm} (seed {run.seed}): its synthetic images' patients could not be "
            "checked against the test patients (accepted with --allow-foreign-synthetic)"
        )
    return list(dict.fromkeys(notes))


def _data_notes(runset: RunSet) -> list[str]:
    """Say so when the test set is the phantom dataset (read from the real manifest)."""
    real = next((r.config.get("real") for r in runset.runs if r.config.get("real")), None)
    if not real or not Path(real).is_file():
        return []
    try:
        rows = read_manifest(Path(real), validate=False).rows
    except UserError:
        return []
    if "dataset" in rows and (rows["dataset"] == "phantom").all():
        return [
            "the test set is the embedded phantom dataset: a demonstration of the method, "
            "not clinical evidence"
        ]
    return []


# ------------------------------------------------------------------------------ display


def _signed(value: float, digits: int = 3) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.{digits}f}"


def _delta_cell(delta: float, lo: float, hi: float) -> str:
    if not math.isfinite(delta):
        return "n/a"
    return f"{_signed(delta)} [{_signed(lo)}, {_signed(hi)}]"


def display_rows(
    report: Report, macro_only: bool = False, compact: bool = False
) -> tuple[list[str], list[list[str]]]:
    """Headers and text rows of the summary table (terminal, Markdown and HTML share it).

    Columns: arm, label, runs, AUROC mean ± sd, min–max, its CI, Δ vs the baseline with its
    CI, rel. %, Δ vs the arm's step-matched control with its CI (only when the report has
    one), and the valid resamples of the row's CIs. `compact` keeps arm, label, AUROC
    mean ± sd and the deltas (for narrow terminals); the files always have every column.
    """
    pct = int(round(report.ci_level * 100))
    base = report.baseline or BASELINE_ARM
    controls = {c: a for a, c in report.matched.items()}
    headers = [
        "arm",
        "label",
        "runs",
        "AUROC mean ± sd",
        "min–max",
        f"{pct}% CI",
        f"Δ vs {base} [{pct}% CI]",
        "rel. %",
    ]
    if report.matched:
        headers.append(f"Δ vs step-matched [{pct}% CI]")
    headers.append("valid resamples")
    out = []
    for row in report.table.itertuples(index=False):
        if macro_only and row.label != MACRO:
            continue
        valid = "" if pd.isna(row.n_valid) else f"{int(row.n_valid)}/{report.n_boot}"
        if not math.isfinite(row.auroc_mean):  # undefined label (see the notes)
            cells = [row.arm, row.label, str(row.n_runs), "n/a", "", "", "n/a", ""]
            out.append(cells + [""] * (len(headers) - len(cells)))
            continue
        sd = "" if not math.isfinite(row.auroc_std) else f" ± {row.auroc_std:.3f}"
        if row.arm == report.baseline or row.arm == row.baseline:
            delta, rel = "(baseline)", ""
        elif math.isfinite(row.delta):
            delta = _delta_cell(row.delta, row.delta_lo, row.delta_hi)
            rel = f"{row.relative_pct:+.1f}%"
        else:
            delta, rel = "n/a", ""
        cells = [
            row.arm,
            row.label,
            str(row.n_runs),
            fmt(row.auroc_mean) + sd,
            f"{fmt(row.auroc_min)}–{fmt(row.auroc_max)}",
            f"[{fmt(row.auroc_lo)}, {fmt(row.auroc_hi)}]",
            delta,
            rel,
        ]
        if report.matched:
            if row.arm in report.matched:
                cells.append(
                    _delta_cell(
                        row.delta_vs_matched, row.delta_vs_matched_lo, row.delta_vs_matched_hi
                    )
                    + f" vs {report.matched[row.arm]}"
                )
            else:
                cells.append(f"(control of {controls[row.arm]})" if row.arm in controls else "")
        out.append([*cells, valid])
    if compact:
        wanted = [0, 1, 3, 6, 7] + ([8] if report.matched else [])
        return [headers[i] for i in wanted], [[r[i] for i in wanted] for r in out]
    return headers, out


def _method_text(report: Report) -> str:
    pct = int(round(report.ci_level * 100))
    base = report.baseline or BASELINE_ARM
    text = (
        f"AUROC on the real test split ({report.n_test_images} images, "
        f"{report.n_test_patients} patients), per run; per arm the mean over seeds, its sd "
        f"and min–max, and a {pct}% CI of the mean. Δ is the arm's mean AUROC minus the "
        f"{base!r} arm's. Each CI covers test-patient sampling and training seeds: a "
        f"patient bootstrap ({report.n_boot} resamples, seed {report.bootstrap_seed}; the "
        "same resampled patients score every arm, so deltas are paired) gives the patient "
        "variance, the runs' spread over seeds beyond test-set noise the seed variance, and "
        "the interval is a t interval (Welch-Satterthwaite degrees of freedom, never "
        "narrower than the t interval of the per-seed values alone; an arm's AUROC on the "
        "logit scale); deltas of arms with the same seeds are paired by seed. "
        "With one seed per arm the CI is the patient-bootstrap percentile interval alone. "
        f"rel. % = 100 × Δ / {base!r} mean AUROC. Macro: the mean over the labels with both "
        "classes in the test set, the same labels in every resample; resamples lacking a "
        "class are left out (valid resamples)."
    )
    if report.matched:
        text += (
            " Δ vs step-matched: the arm minus its real-only control trained for the same "
            "number of optimizer steps."
        )
    return text


# ------------------------------------------------------------------------------ figures


def _png(fig) -> str:
    """Base64 PNG of a matplotlib Figure (Agg canvas; no pyplot, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def roc_figure(report: Report, label: str) -> str | None:
    """Base64 PNG: the label's mean ROC curve per arm (None if the label is undefined)."""
    from matplotlib.figure import Figure

    curves = [(arm, report.roc[arm][label]) for arm in report.arms if label in report.roc[arm]]
    if not curves:
        return None
    means = report.table.set_index(["arm", "label"])["auroc_mean"]
    fig = Figure(figsize=(4.2, 4.0))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=1, ls="--")
    for arm, tpr in curves:
        n = int(report.table[(report.table.arm == arm)].n_runs.iloc[0])
        ax.plot(
            _FPR_GRID,
            tpr,
            lw=1.8 if arm == report.baseline else 1.3,
            label=f"{arm} ({fmt(means[(arm, label)])}, {n} seed{'s' * (n > 1)})",
        )
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize=7)
    return _png(fig)


def grid_figure(rows, figsize: tuple[float, float], columns: int):
    """A matplotlib Figure with one row of grayscale images per `(label, paths)` in `rows`
    (`columns` cells a row; a None path, or a short row, leaves a cell empty)."""
    from matplotlib.figure import Figure

    from manifests.images import load_image

    fig = Figure(figsize=figsize)
    for i, (label, paths) in enumerate(rows):
        for k in range(columns):
            ax = fig.add_subplot(len(rows), columns, i * columns + k + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if k < len(paths) and paths[k] is not None:
                ax.imshow(load_image(Path(paths[k])), cmap="gray", vmin=0, vmax=255)
            if k == 0:
                ax.set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    return fig


def sample_grid(synthetic: Path, labels: Sequence[str], per_label: int = 6) -> str | None:
    """Base64 PNG: a row of synthetic images per target label (None if there are none)."""


    manifest = read_manifest(Path(synthetic))
    rows = manifest.rows.assign(_path=[str(p) for p in manifest.image_paths()])
    if "target_label" not in rows:
        return None
    groups = [
        (label, rows[rows["target_label"] == label].head(per_label))
        for label in [*labels, *sorted(set(rows["target_label"].dropna()) - set(labels))]
    ]
    groups = [(label, g) for label, g in groups if len(g)]
    if not groups:
        return None
    rows = [(label, [Path(p) for p in group["_path"]]) for label, group in groups]
    fig = grid_figure(rows, (1.4 * per_label + 1.6, 1.5 * len(groups)), per_label)
    return _png(fig)


# ------------------------------------------------------------------------------ files

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.8em 0;font-size:.88em}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}
tr:nth-child(even) td{background:#fafafa}
.notes li{color:#7a4b00}.method{color:#444;font-size:.92em}
.figs{display:flex;flex-wrap:wrap;gap:.6em}.figs img{max-width:340px;border:1px solid #eee}
img.grid{max-width:100%;border:1px solid #eee}
"""


def _report_json(report: Report) -> dict:
    table = report.table.astype(object).where(report.table.notna(), None)
    runs = report.runs.astype(object).where(report.runs.notna(), None)
    return {
        "report_version": REPORT_VERSION,
        "labels": list(report.labels),
        "arms": report.arms,
        "baseline": report.baseline,
        "n_test_images": report.n_test_images,
        "n_test_patients": report.n_test_patients,
        "n_boot": report.n_boot,
        "ci_level": report.ci_level,
        "bootstrap_seed": report.bootstrap_seed,
        "method": _method_text(report),
        "notes": report.notes,
        "matched": report.matched,
        "min_seeds": MIN_SEEDS,
        "rows": table.to_dict(orient="records"),
        "runs": runs.to_dict(orient="records"),
        "synthetic": report.synthetic,
        "data_efficiency": {
            "rows": efficiency_table(report).to_dict(orient="records"),
            # inf (never reached within the measured sizes) is written as null
            "synthetic_worth": [
                {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                 for k, v in w.items()}
                for w in synthetic_worth(efficiency_table(report))
            ],
        },
    }


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_report(
    report: Report,
    out: Path,
    synthetic: Path | None = None,
    sections: Sequence[dict[str, str]] = (),
    overwrite: bool = False,
    title: str = "cxraug augmentation study",
) -> dict[str, Path]:
    """Write report.md, report.csv, report.json and a self-contained report.html.

    Args:
        report: from :func:`summarize_arms`.
        out: output folder.
        synthetic: a synthetic manifest for the sample grid (default: the one the runs used).
        sections: extra fragments `{'md': ..., 'html': ...}` appended (e.g. the generator
            evaluation of `augmentor.evaluate.generator_section`).
        overwrite: replace an existing report in `out`.
        title: the page title.

    Returns:
        {file name: path} of the files written.
    """
    out = Path(out)
    if (out / "report.json").exists() and not overwrite:
        raise UserError(f"--out: {out} already holds a report; pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    if synthetic is not None and not Path(synthetic).is_file():
        raise UserError(f"--synthetic: {synthetic} not found")
    if synthetic is None and report.synthetic:
        # The manifest the runs trained on; it may have moved since.
        if Path(report.synthetic).is_file():
            synthetic = Path(report.synthetic)
        else:
            report.notes.append(f"synthetic manifest {report.synthetic} not found: no sample grid")
    grid = sample_grid(Path(synthetic), report.labels) if synthetic else None

    headers, rows = display_rows(report)
    run_headers = ["run", "arm", "seed", "backbone", "real train", "synthetic train", "macro AUROC"]
    run_rows = [
        [
            r.run,
            r.arm,
            str(r.seed),
            str(r.backbone),
            str(r.n_real_train),
            str(r.n_synthetic_train),
            fmt(r.macro_auroc),
        ]
        for r in report.runs.itertuples(index=False)
    ]
    macro_headers, macro_rows = display_rows(report, macro_only=True)

    # Markdown
    md = [f"# {title}\n\n", _method_text(report) + "\n\n"]
    md += [f"- note: {n}\n" for n in report.notes]
    md += ["\n## Macro AUROC\n\n", md_table(macro_headers, macro_rows)]
    md += ["\n## Per label\n\n", md_table(headers, rows)]
    efficiency = efficiency_table(report)
    worth = synthetic_worth(efficiency)
    if len(efficiency):
        md += ["\n## Data efficiency: AUROC against real train size\n\n"]
        md += [f"{worth_text(w)}\n\n" for w in worth]
        eff_rows = [
            [r.family, r.label, f"{r.n_real:.0f}", fmt(r.auroc_mean),
             f"[{fmt(r.auroc_lo)}, {fmt(r.auroc_hi)}]"]
            for r in efficiency.itertuples(index=False)
        ]  # fmt: skip
        md.append(md_table(["arm", "label", "real train", "AUROC", "95% CI"], eff_rows))
    md += ["\n## Runs\n\n", md_table(run_headers, run_rows)]
    if synthetic:
        md.append(f"\nSynthetic samples: {synthetic} (grid in report.html).\n")
    md += ["\n" + s["md"] for s in sections if s.get("md")]

    # HTML
    figures = [(label, roc_figure(report, label)) for label in report.labels]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='method'>{html.escape(_method_text(report))}</p>",
    ]
    if report.notes:
        parts.append(
            "<ul class='notes'>"
            + "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
            + "</ul>"
        )
    parts += [
        "<h2>Macro AUROC</h2>",
        html_table(macro_headers, macro_rows, "summary"),
        "<h2>Per label</h2>",
        html_table(headers, rows, "labels"),
        "<h2>ROC curves (mean over seeds, per arm)</h2><div class='figs'>",
    ]
    for label, png in figures:
        if png:
            parts.append(f"<img alt='ROC {html.escape(label)}' src='data:image/png;base64,{png}'/>")
        else:
            parts.append(f"<p>{html.escape(label)}: no ROC curve (one class in the test set)</p>")
    parts.append("</div>")
    if grid:
        parts += [
            "<h2>Synthetic samples per label</h2>",
            f"<p class='method'>{html.escape(str(synthetic))}</p>",
            f"<img class='grid' alt='synthetic samples' src='data:image/png;base64,{grid}'/>",
        ]
    if len(efficiency):
        png = efficiency_figure(efficiency)
        parts.append("<h2>Data efficiency: AUROC against real train size</h2>")
        parts += [f"<p>{html.escape(worth_text(w))}</p>" for w in worth]
        parts.append(f"<img class='grid' alt='data efficiency' src='data:image/png;base64,{png}'/>")
    parts += ["<h2>Runs</h2>", html_table(run_headers, run_rows, "runs")]
    parts += [s["html"] for s in sections if s.get("html")]
    parts.append("</body></html>\n")

    paths = {name: out / name for name in REPORT_FILES}
    with atomic_path(paths["report.csv"], overwrite=True) as tmp:
        report.table.to_csv(tmp, index=False, float_format="%.6g")
    _write_text(paths["report.md"], "".join(md))
    _write_text(paths["report.html"], "".join(parts))
    write_json(paths["report.json"], _report_json(report))  # last: its presence means done
    return paths


def load_report(out: Path) -> Report:
    """A written report read back from `out/report.json` (without the ROC curves)."""
    path = Path(out) / "report.json"
    if not path.is_file():
        raise UserError(f"{out}: no report.json; make the report first (cxraug report)")
    doc = json.loads(path.read_text())
    table = pd.DataFrame(doc["rows"], columns=TABLE_COLUMNS)
    for column in _FLOAT_COLUMNS:
        table[column] = table[column].astype(float)  # JSON null -> NaN
    return Report(
        table=table,
        labels=tuple(doc["labels"]),
        arms=list(doc["arms"]),
        baseline=doc["baseline"],
        runs=pd.DataFrame(doc["runs"]),
        n_test_images=doc["n_test_images"],
        n_test_patients=doc["n_test_patients"],
        n_boot=doc["n_boot"],
        ci_level=doc["ci_level"],
        bootstrap_seed=doc["bootstrap_seed"],
        notes=list(doc["notes"]),
        synthetic=doc.get("synthetic"),
        matched=dict(doc.get("matched") or {}),
    )


def make_report(
    run_dirs: Sequence[Path],
    out: Path,
    synthetic: Path | None = None,
    baseline: str = BASELINE_ARM,
    n_boot: int = 1000,
    seed: int = 0,
    sections: Sequence[dict[str, str]] = (),
    overwrite: bool = False,
    allow_foreign_synthetic: bool = False,
) -> tuple[Report, dict[str, Path]]:
    """collect_runs -> provenance check -> summarize_arms -> write_report (CLI and study)."""
    check_output_folder(out, "--out")  # before any work
    runset = collect_runs(run_dirs)
    foreign = check_provenance(runset, allow_foreign_synthetic)
    report = summarize_arms(runset, baseline=baseline, n_boot=n_boot, seed=seed)
    report.notes[:0] = foreign  # the header says so first
    return report, write_report(report, out, synthetic, sections, overwrite)


__all__ = [
    "Report",
    "Run",
    "RunSet",
    "arm_order",
    "collect_runs",
    "display_rows",
    "load_report",
    "make_report",
    "roc_figure",
    "sample_grid",
    "summarize_arms",
    "write_report",
]
