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
* **Its CI** is a two-stage bootstrap. Each resample draws test *patients* with replacement
  (all their images; a patient's images are correlated, see `classifier.evaluate`) and the
  *same* patients score every run: the comparison is paired over patients, so the
  patient-to-patient variation every arm shares cancels. Each resample also draws the runs
  (seeds) of each arm with replacement, so training randomness widens the interval too.
  When both arms have the same seeds, the seeds are drawn once for both (paired by seed,
  since a seed fixes the initialisation and data order); otherwise independently. With one
  seed per arm the CI covers test-patient sampling only, which the report says.
  With one run per arm this is exactly `classifier.evaluate.paired_bootstrap_delta`.
* **Relative change**: 100 x delta / baseline mean AUROC (the CI is for the absolute delta).

Every delta shown has its CI: a delta whose resamples give no CI is reported as NaN.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from classifier import run as run_folder
from classifier.evaluate import (
    CI_LEVEL,
    patient_resample_weights,
    percentile_ci,
    point_auroc,
    resampled_auroc,
)
from classifier.tables import fmt, html_table, md_table
from manifests.errors import UserError
from manifests.files import check_output_folder
from manifests.io import atomic_path, read_manifest, write_json

REPORT_FILES = ("report.md", "report.csv", "report.json", "report.html")
MACRO = "macro"
BASELINE_ARM = "real"
REPORT_VERSION = 1
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


def arm_order(arm: str) -> tuple:
    """Sort key: real, mixed ratios ascending, synthetic, pretrain-finetune, then the rest."""
    if arm == "real":
        return (0, 0.0, arm)
    if arm.startswith("mix"):
        try:
            return (1, float(arm[3:]), arm)
        except ValueError:
            pass
    if arm == "synthetic":
        return (2, 0.0, arm)
    if arm.startswith("pretrain-finetune"):
        return (3, 0.0, arm)
    return (4, 0.0, arm)


def _with_macro(per_label: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Append the macro column: mean over the `keep` labels, ignoring NaN resamples."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN resample stays NaN
        macro = (
            np.nanmean(per_label[..., keep], axis=-1)
            if keep.any()
            else np.full(per_label.shape[:-1], np.nan)
        )
    return np.concatenate([per_label, macro[..., None]], axis=-1)


def _draw_runs(n_runs: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_runs) run indices drawn with replacement (all zeros for one run)."""
    if n_runs == 1:
        return np.zeros((n_boot, 1), dtype=np.int64)
    return rng.integers(0, n_runs, size=(n_boot, n_runs))


def _mean_over_draws(resamples: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """resamples (runs, n_boot, K), draws (n_boot, d) -> (n_boot, K) mean of the drawn runs."""
    picked = resamples[draws, np.arange(draws.shape[0])[:, None]]  # (n_boot, d, K)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(picked, axis=1)


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
        tprs.append(np.interp(_FPR_GRID, fpr, tpr))
    mean = np.mean(tprs, axis=0)
    mean[0] = 0.0
    return mean


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
        n_boot: bootstrap resamples.
        seed: bootstrap seed (patients and runs drawn).
        level: CI coverage.

    Returns:
        The report (see the module docstring for the statistics).
    """
    if n_boot < 10:
        raise UserError(f"--n-boot: {n_boot} is too few resamples; valid: 10 or more")
    labels, truth = runset.labels, runset.truth
    names = [*labels, MACRO]
    point = {id(r): point_auroc(truth, r.prob)[0] for r in runset.runs}
    keep = np.array([(truth[:, j] == 1).sum() > 0 for j in range(len(labels))]) & np.array(
        [(truth[:, j] == 0).sum() > 0 for j in range(len(labels))]
    )
    weights, codes = patient_resample_weights(runset.patients, n_boot, seed)
    resampled = {
        id(r): _with_macro(resampled_auroc(truth, r.prob, weights, codes), keep)
        for r in runset.runs
    }
    point = {k: _with_macro(v[None, :], keep)[0] for k, v in point.items()}

    arms: dict[str, list[Run]] = {}
    for run in sorted(runset.runs, key=lambda r: (arm_order(r.arm), r.seed)):
        arms.setdefault(run.arm, []).append(run)
    notes: list[str] = []
    base_runs = arms.get(baseline)
    if base_runs is None:
        notes.append(
            f"no {baseline!r} arm among the runs: deltas need the real-only baseline, so "
            "none are shown"
        )
    rng = np.random.default_rng([seed, 1])  # run draws; patient draws use `seed` itself
    n_pos = [int((truth[:, j] == 1).sum()) for j in range(len(labels))]
    n_neg = [int((truth[:, j] == 0).sum()) for j in range(len(labels))]
    reasons = {
        label: f"test set has one class only ({n_pos[j]} positive, {n_neg[j]} negative)"
        for j, label in enumerate(labels)
        if not keep[j]
    }
    if not keep.any():
        reasons[MACRO] = "no label has both classes in the test set"
    notes += [f"{label}: AUROC undefined, {reason}" for label, reason in reasons.items()]

    def stack(runs: list[Run]) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.stack([point[id(r)] for r in runs]),  # (runs, K)
            np.stack([resampled[id(r)] for r in runs]),  # (runs, n_boot, K)
        )

    rows = []
    single_seed = False
    for arm, runs in arms.items():
        values, res = stack(runs)
        seeds = [r.seed for r in runs]
        single_seed |= len(runs) == 1
        own_draws = _draw_runs(len(runs), n_boot, rng)
        arm_mean = _mean_over_draws(res, own_draws)
        delta = delta_lo = delta_hi = None
        paired = None
        if base_runs is not None and arm != baseline:
            base_values, base_res = stack(base_runs)
            paired = sorted(seeds) == sorted(r.seed for r in base_runs)
            base_draws = own_draws if paired else _draw_runs(len(base_runs), n_boot, rng)
            delta_samples = arm_mean - _mean_over_draws(base_res, base_draws)
            delta = (values.mean(axis=0), base_values.mean(axis=0), delta_samples)
        for k, name in enumerate(names):
            v = values[:, k]
            finite = np.isfinite(v).all()
            lo, hi = percentile_ci(arm_mean[:, k], level) if finite else (math.nan, math.nan)
            row = {
                "arm": arm,
                "label": name,
                "n_runs": len(runs),
                "seeds": " ".join(map(str, seeds)),
                "auroc_mean": float(v.mean()) if finite else math.nan,
                "auroc_lo": lo,
                "auroc_hi": hi,
                "auroc_std": float(v.std(ddof=1)) if finite and len(v) > 1 else math.nan,
                "auroc_min": float(v.min()) if finite else math.nan,
                "auroc_max": float(v.max()) if finite else math.nan,
                "baseline": baseline if base_runs is not None else None,
                "delta": math.nan,
                "delta_lo": math.nan,
                "delta_hi": math.nan,
                "relative_pct": math.nan,
                "paired_by_seed": paired,
                "n_positive": n_pos[k] if k < len(labels) else None,
                "n_negative": n_neg[k] if k < len(labels) else None,
                "note": reasons.get(name, ""),
            }
            if delta is not None and finite:
                mean_a, mean_b, samples = delta
                d = float(mean_a[k] - mean_b[k])
                delta_lo, delta_hi = percentile_ci(samples[:, k], level)
                if math.isfinite(d) and math.isfinite(delta_lo) and math.isfinite(delta_hi):
                    # A delta is only ever shown with its CI.
                    row.update(
                        delta=d,
                        delta_lo=delta_lo,
                        delta_hi=delta_hi,
                        relative_pct=100.0 * d / float(mean_b[k]),
                    )
                elif math.isfinite(d):
                    row["note"] = (row["note"] + "; " if row["note"] else "") + (
                        "no bootstrap CI for the delta (resamples lack a class); delta omitted"
                    )
            elif arm == baseline:
                row["note"] = row["note"] or "baseline"
            rows.append(row)
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)

    if single_seed:
        notes.append(
            "an arm has one seed: its spread over seeds is undefined and its CIs cover "
            "test-patient sampling only, not training randomness"
        )
    for arm, runs in arms.items():
        if base_runs is not None and arm != baseline:
            seeds, base = sorted(r.seed for r in runs), sorted(r.seed for r in base_runs)
            if seeds != base:
                notes.append(
                    f"arm {arm!r} (seeds {seeds}) and {baseline!r} (seeds {base}) do not share "
                    "their seeds: its delta is a difference of means, runs drawn independently"
                )
    backbones = sorted({str(r.config.get("backbone")) for r in runset.runs})
    if len(backbones) > 1:
        notes.append(f"runs use different backbones ({', '.join(backbones)})")
    notes.extend(_data_notes(runset))

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
        baseline=baseline if base_runs is not None else None,
        runs=_runs_frame(runset, point, keep),
        n_test_images=len(runset.images),
        n_test_patients=len(set(runset.patients)),
        n_boot=n_boot,
        ci_level=level,
        bootstrap_seed=seed,
        notes=notes,
        roc=roc,
        synthetic=synthetic,
    )


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


_COMPACT = (0, 1, 3, 6, 7)  # arm, label, AUROC mean ± sd, delta [CI], rel. %


def display_rows(
    report: Report, macro_only: bool = False, compact: bool = False
) -> tuple[list[str], list[list[str]]]:
    """Headers and text rows of the summary table (terminal, Markdown and HTML share it).

    `compact` keeps arm, label, AUROC mean ± sd, the delta with its CI and the relative
    change (for narrow terminals); the files always have every column.
    """
    pct = int(round(report.ci_level * 100))
    base = report.baseline or BASELINE_ARM
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
    out = []
    for row in report.table.itertuples(index=False):
        if macro_only and row.label != MACRO:
            continue
        if not math.isfinite(row.auroc_mean):  # undefined label (see the notes)
            out.append([row.arm, row.label, str(row.n_runs), "n/a", "", "", "n/a", ""])
            continue
        sd = "" if not math.isfinite(row.auroc_std) else f" ± {row.auroc_std:.3f}"
        if row.arm == report.baseline:
            delta, rel = "(baseline)", ""
        elif math.isfinite(row.delta):
            delta = f"{_signed(row.delta)} [{_signed(row.delta_lo)}, {_signed(row.delta_hi)}]"
            rel = f"{row.relative_pct:+.1f}%"
        else:
            delta, rel = "n/a", ""
        out.append(
            [
                row.arm,
                row.label,
                str(row.n_runs),
                fmt(row.auroc_mean) + sd,
                f"{fmt(row.auroc_min)}–{fmt(row.auroc_max)}",
                f"[{fmt(row.auroc_lo)}, {fmt(row.auroc_hi)}]",
                delta,
                rel,
            ]
        )
    if compact:
        return [headers[i] for i in _COMPACT], [[r[i] for i in _COMPACT] for r in out]
    return headers, out


def _method_text(report: Report) -> str:
    pct = int(round(report.ci_level * 100))
    return (
        f"AUROC on the real test split ({report.n_test_images} images, "
        f"{report.n_test_patients} patients), per run; per arm the mean over seeds, its sd "
        f"and min–max, and a {pct}% CI of the mean. Δ is the arm's mean AUROC minus the "
        f"{report.baseline or BASELINE_ARM!r} arm's; its {pct}% CI is a paired bootstrap "
        f"({report.n_boot} resamples, seed {report.bootstrap_seed}) that draws test patients "
        "with replacement (the same patients for every arm) and the runs of each arm with "
        "replacement (the same seeds for both arms where they share them). rel. % = "
        "100 × Δ / baseline mean AUROC. Macro: the mean over labels with both classes in "
        "the test set."
    )


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


def sample_grid(synthetic: Path, labels: Sequence[str], per_label: int = 6) -> str | None:
    """Base64 PNG: a row of synthetic images per target label (None if there are none)."""
    from matplotlib.figure import Figure

    from manifests.images import load_image

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
    fig = Figure(figsize=(1.4 * per_label + 1.6, 1.5 * len(groups)))
    for i, (label, group) in enumerate(groups):
        for k in range(per_label):
            ax = fig.add_subplot(len(groups), per_label, i * per_label + k + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if k < len(group):
                ax.imshow(load_image(Path(group["_path"].iloc[k])), cmap="gray", vmin=0, vmax=255)
            if k == 0:
                ax.set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
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
        "rows": table.to_dict(orient="records"),
        "runs": runs.to_dict(orient="records"),
        "synthetic": report.synthetic,
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
    for column in TABLE_COLUMNS:
        if column.startswith(("auroc_", "delta")) or column == "relative_pct":
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
) -> tuple[Report, dict[str, Path]]:
    """collect_runs -> summarize_arms -> write_report, for the CLI and the study."""
    check_output_folder(out, "--out")  # before any work
    report = summarize_arms(collect_runs(run_dirs), baseline=baseline, n_boot=n_boot, seed=seed)
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
