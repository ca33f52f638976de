"""The report's tables and texts as cells: one row list per table for Markdown, HTML and the
terminal alike (`classifier.tables` draws them), and the method, primary-endpoint,
information-budget and subgroup texts. Pure functions of a `classifier.report.Report`; the files and
figures are written by `classifier.report_render`.
"""

from __future__ import annotations

import math

import pandas as pd

from classifier.config import BASELINE_ARM
from classifier.endpoints import DEFAULT_RULE, PRIMARY, comparisons_table
from classifier.fairness import BOTH, MEASURE_NAMES, THRESHOLD_RULE
from classifier.report import (
    MACRO,
    Report,
)
from classifier.tables import fmt
from manifests.demographics import age_group_names

BUDGET_TEXT = (
    "A synthetic image carries information about the real images and reports its generator "
    "was fine-tuned on and prompted with. Per arm: the real labelled images its classifier "
    "trained on (with those of a run it started from), the val images that chose its "
    "scored epoch, the real images with reports that fine-tuned its generator (its "
    "training patients' images in the real manifest), the generator's base, the reports "
    "that prompted its synthetic images, and every real image its pipeline saw. The "
    "Comparisons table's information column says what two compared arms' pipelines saw "
    "that the other's did not."
)


def missing(value) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def _signed(value: float, digits: int = 3) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.{digits}f}"


def _delta_cell(delta: float, lo: float, hi: float) -> str:
    if not math.isfinite(delta):
        return "n/a"
    return f"{_signed(delta)} [{_signed(lo)}, {_signed(hi)}]"


def _controlled(matched: dict[str, str]) -> dict[str, str]:
    """{control: the arms it controls, comma-joined}: a subgroup-balanced arm shares its
    twin's control, so one control may serve two arms."""
    out: dict[str, list[str]] = {}
    for arm, control in matched.items():
        out.setdefault(control, []).append(arm)
    return {c: ", ".join(arms) for c, arms in out.items()}


def display_rows(
    report: Report, macro_only: bool = False, compact: bool = False
) -> tuple[list[str], list[list[str]]]:
    """Headers and text rows of the summary table (terminal, Markdown and HTML share it).

    Columns: arm, label, runs, AUROC mean ± sd, min–max, its CI, Δ vs the baseline with its
    CI, rel. %, Δ vs the arm's step-matched control with its CI (only when the report has
    one), Δ vs its positives-matched control (only when the report has one), and the valid
    resamples of the row's CIs. `compact` keeps arm, label, AUROC mean ± sd and the deltas
    (for narrow terminals); the files always have every column.
    """
    pct = int(round(report.ci_level * 100))
    base = report.baseline or BASELINE_ARM
    controls = _controlled(report.matched)
    positives = _controlled(report.oversampled)
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
    if report.oversampled:
        headers.append(f"Δ vs positives-matched [{pct}% CI]")
    if report.twins:
        headers.append(f"Δ vs prevalence-matched twin [{pct}% CI]")
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
            rel = f"{row.relative_pct:+.1f}%" if math.isfinite(row.relative_pct) else "n/a"
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
        if report.oversampled:
            if row.arm in report.oversampled:
                cells.append(
                    _delta_cell(
                        row.delta_vs_oversample,
                        row.delta_vs_oversample_lo,
                        row.delta_vs_oversample_hi,
                    )
                    + f" vs {report.oversampled[row.arm]}"
                )
            elif row.arm in positives:
                cells.append(f"(positives-matched control of {positives[row.arm]})")
            else:
                cells.append("")
        if report.twins:
            cells.append(
                _delta_cell(row.delta_vs_twin, row.delta_vs_twin_lo, row.delta_vs_twin_hi)
                + f" vs {report.twins[row.arm]}"
                if row.arm in report.twins
                else ""
            )
        out.append([*cells, valid])
    if compact:
        wanted = [0, 1, 3, 6, 7] + list(range(8, len(headers) - 1))
        return [headers[i] for i in wanted], [[r[i] for i in wanted] for r in out]
    return headers, out


def method_text(report: Report) -> str:
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
        f"classes and at least {report.min_positive_patients} positive patients in the test "
        f"set ({', '.join(report.macro_labels) or 'none'}), the same labels in every "
        "resample; resamples lacking a class are left out (valid resamples)."
    )
    if report.matched:
        text += (
            " Δ vs step-matched: the arm minus its real-only control trained for the same "
            "number of optimizer steps."
        )
    if report.oversampled:
        text += (
            " Δ vs positives-matched: the arm minus its second control, real-only, trained for "
            "the same number of optimizer steps with its real positives drawn more often, to "
            "the arm's label balance (a secondary comparison)."
        )
    if report.twins:
        text += (
            " Δ vs prevalence-matched twin: a subgroup-balanced arm minus the arm trained the "
            "same way on its generator's prevalence-matched synthetic set (same seeds and "
            "steps: what balancing did; a secondary comparison)."
        )
    text += " " + units_text(report)
    alpha = 1.0 - report.ci_level
    text += (
        " Primary and secondary: one comparison is the primary endpoint (declared before "
        "the run, or by the default rule: "
        f"{DEFAULT_RULE}); its {pct}% CI is not adjusted. Every other Δ shown (against the "
        "baseline and against the step-matched control, each label and the macro) is "
        "secondary, one family adjusted by Holm's step-down: each Δ's two-sided p-value of "
        "Δ = 0 is the one its CI inverts (one seed per arm: twice the smaller share of the "
        "same bootstrap resamples on either side of 0; more seeds: the t statistic of the "
        "CI, with its guard); sorted ascending, the i-th of m is tested at "
        f"{alpha:g}/(m − i + 1) until the first that is not rejected, and its Holm-adjusted "
        f"CI is drawn at level 1 − {alpha:g}/(m − i + 1) (from that first non-rejection on, "
        "at the level of that step), so it excludes 0 exactly when Holm rejects. These "
        "intervals control the family-wise error of those decisions; they are not "
        "simultaneous intervals. Holm p: the adjusted p-value."
    )
    return text


def units_text(report: Report) -> str:
    """In words, per arm, what its interval covers: its seeds, or its generators (each
    the mean over its seeds), and how many."""
    parts = []
    for arm in report.arms:
        info = report.per_arm.get(arm) or {}
        n_runs = len(info.get("seeds") or [])
        if not n_runs:
            continue
        generators = int(info.get("generators") or 0)
        if info.get("interval_units") == "generators":
            counts = info.get("seeds_per_generator") or []
            seeds = (
                f"{counts[0]} seed{'s' * (counts[0] != 1)} each"
                if counts and len(set(counts)) == 1
                else f"{', '.join(map(str, counts))} seeds"
            )
            parts.append(f"{arm}: {generators} generators × {seeds} (units: generators)")
        elif generators == 1:
            parts.append(f"{arm}: {n_runs} seed{'s' * (n_runs != 1)} of one generator")
        else:
            parts.append(f"{arm}: {n_runs} seed{'s' * (n_runs != 1)}")
    if not parts:
        return ""
    return (
        "What each arm's CI covers (an arm whose runs come from several generators has "
        "generators as its units, so its CI holds generator-to-generator variation; one "
        "generator's CI conditions on it): " + "; ".join(parts) + "."
    )


def _p_cell(p, n_boot: int) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    if p == 0:
        return f"<{1.0 / n_boot:.2g}"
    return f"{p:.1e}" if p < 0.001 else f"{p:.3f}"


def _p_phrase(p: float, n_boot: int) -> str:
    cell = _p_cell(p, n_boot)
    return f"p {cell[0]} {cell[1:]}" if cell.startswith("<") else f"p = {cell}"


def primary_text(report: Report) -> str:
    """The header's statement of the primary endpoint and of the secondary family."""
    pct = int(round(report.ci_level * 100))
    p = report.primary
    if p is None:
        text = (
            "Primary endpoint: none (none declared, and no mixed arm has a step-matched "
            "control among these runs)."
        )
    else:
        how = (
            "declared before the run"
            if p["declared"]
            else f"by the default rule, fixed before the run: {DEFAULT_RULE}"
        )
        what = "macro AUROC" if p["label"] == MACRO else f"{p['label']} AUROC"
        delta = _delta_cell(_float(p["delta"]), _float(p["lo"]), _float(p["hi"]))
        text = (
            f"Primary endpoint ({how}): {p['arm']} vs {p['vs']}, {what}: Δ {delta} "
            f"({pct}% CI, not adjusted; {_p_phrase(_float(p['p']), report.n_boot)})."
        )
        if p.get("information"):
            text += f" Information: {p['information']}."
    if report.n_secondary:
        text += (
            f" Every other comparison is secondary ({report.n_secondary} deltas): each is "
            "shown beside its Holm-adjusted interval (Comparisons)."
        )
    return text


def _float(value) -> float:
    return math.nan if value is None else float(value)


def comparison_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """The comparisons table: each Δ, primary first, with its CI, the Holm-adjusted CI
    (secondary ones), p-values and what the two arms' information differs in."""
    pct = int(round(report.ci_level * 100))
    headers = ["role", "comparison", "label", f"Δ [{pct}% CI]", "Holm-adjusted CI (level)"]
    headers += ["p", "Holm p", "information"]
    rows = []
    for c in comparisons_table(report.table):
        if c["role"] == PRIMARY:
            holm = "(primary: not adjusted)"
        elif c["holm_level"] is not None and math.isfinite(_float(c["holm_level"])):
            holm = (
                f"[{_signed(_float(c['holm_lo']))}, {_signed(_float(c['holm_hi']))}] "
                f"({100 * float(c['holm_level']):.2f}%)"
            )
        else:
            holm = "n/a"
        rows.append(
            [
                c["role"],
                f"{c['arm']} vs {c['vs']}",
                c["label"],
                _delta_cell(_float(c["delta"]), _float(c["lo"]), _float(c["hi"])),
                holm,
                _p_cell(_float(c["p"]), report.n_boot),
                _p_cell(_float(c["p_holm"]), report.n_boot) if c["role"] != PRIMARY else "",
                c["information"] or "",
            ]
        )
    return headers, rows


def _count(value) -> str:
    """A count cell: 'n/a' for one not recorded (None or NaN)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return str(int(value))


def _span(values) -> str:
    """Per-seed values as one cell: the value, 'lo–hi' where seeds differ, 'n/a' unknown."""
    known = [v for v in values if not missing(v)]
    if not known or len(known) < len(values):
        return "n/a"
    if all(isinstance(v, int | float) for v in known):
        lo, hi = int(min(known)), int(max(known))
        return str(lo) if lo == hi else f"{lo}–{hi}"
    distinct = list(dict.fromkeys(str(v) for v in known))
    return " / ".join(distinct)


def _with_patients(images, patients) -> str:
    text, who = _span(images), _span(patients)
    return text if who == "n/a" else f"{text} ({who})"


def _prompt_cell(info: dict) -> str:
    if _span(info["prompt_reports"]) == "n/a":
        return "n/a"
    splits = {}
    for seed_splits in info["prompt_splits"]:
        for split, n in (seed_splits or {}).items():
            splits.setdefault(split, []).append(n)
    where = ", ".join(f"{split} {_span(n)}" for split, n in splits.items())
    text = (
        f"{_span(info['prompt_reports'])} reports of {_span(info['prompt_patients'])} patients"
        + (f" ({where})" if where else "")
    )
    if any(info["template_prompts"]):
        text += f"; {_span(info['template_prompts'])} of its images from template prompts"
    return text


def budget_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """'What each arm saw': per arm, the real labelled images its classifier trained on,
    the val images that chose its scored epoch, its synthetic images, the real images and
    reports its generator was fine-tuned on, the generator's base, the prompt pool, and
    every real image its pipeline saw (`classifier.budget`; 'lo–hi' where seeds differ)."""
    headers = [
        "arm",
        "classifier: real train images (patients)",
        "val images (patients), choosing the scored epoch",
        "synthetic train images",
        "generator: real images + reports (patients)",
        "generator base",
        "prompt pool",
        "real images seen in all (patients)",
    ]
    rows = []
    for arm in report.arms:
        info = (report.per_arm.get(arm) or {}).get("information")
        if not info:
            continue
        used = any(info["generator_used"])
        rows.append(
            [
                arm,
                _with_patients(
                    info["classifier_real_train_images"], info["classifier_real_train_patients"]
                ),
                _with_patients(info["classifier_val_images"], info["classifier_val_patients"]),
                _span(info["classifier_synthetic_train_images"]),
                _with_patients(info["generator_real_images"], info["generator_patients"])
                if used
                else "none",
                _span(info["generator_base"]) if used else "",
                _prompt_cell(info) if used else "",
                _with_patients(info["real_images_seen"], info["real_patients_seen"]),
            ]
        )
    return headers, rows


def runs_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """The runs table: each run's data, its realised optimizer steps and the epoch scored
    (the best validation epoch, of the epochs it ran)."""
    headers = ["run", "arm", "seed", "backbone", "real train", "synthetic train"]
    headers += ["optimizer steps", "scored epoch", "macro AUROC"]
    rows = []
    for r in report.runs.to_dict(orient="records"):
        scored = _count(r.get("scored_epoch"))
        if scored != "n/a" and _count(r.get("epochs_run")) != "n/a":
            scored += f" of {_count(r.get('epochs_run'))}"
        rows.append(
            [
                str(r["run"]),
                str(r["arm"]),
                str(r["seed"]),
                str(r.get("backbone")),
                str(r.get("n_real_train")),
                str(r.get("n_synthetic_train")),
                _count(r.get("optimizer_steps")),
                scored,
                fmt(r.get("macro_auroc")),
            ]
        )
    return headers, rows


# ------------------------------------------------------------------------------ subgroups


def fairness_text(report: Report) -> str:
    """How the Subgroups section's numbers are made (or why there are none)."""
    f = report.fairness
    if f is None:
        return "No subgroup analysis in this report."
    if f.unavailable:
        return f"No subgroup analysis: {f.unavailable}."
    pct = int(round(f.ci_level * 100))
    edges = ", ".join(f"{e:g}" for e in f.age_edges)
    return (
        "Subgroups: sex (F, M), age groups (edges "
        f"{edges} years: {', '.join(age_group_names(f.age_edges))}) and their intersections; "
        "an image of unknown sex or age is in no subgroup of that kind. AUROC per label and "
        "subgroup on the subgroup's test images, its "
        f"{pct}% CI over test patients and seeds as the arm's AUROC (the same patient "
        "resamples as the report's deltas). A cell with fewer than "
        f"{f.min_positive_patients} positive or negative test patients is too small and shows "
        f"no number. Threshold: {THRESHOLD_RULE}. FNR: the share of the subgroup's positive "
        "test images called negative, mean over the arm's runs. Gap: FNR(subgroup) − "
        "FNR(reference), the reference the subgroup of its kind with the most test patients; "
        "positive means the subgroup's findings are missed more often (underdiagnosis). With "
        "No Finding among the labels, also No Finding's FPR (images with a finding called "
        "No Finding) and its gap. Δ gap: the arm's gap minus that of its real-only baseline "
        "or its step-matched control, paired over test patients and by seed as the AUROC "
        "deltas are. Intervals are not adjusted for multiplicity."
    )


def _ci_cell(value: float, lo: float, hi: float) -> str:
    if missing(value):
        return "n/a"
    return f"{fmt(value)} [{fmt(lo)}, {fmt(hi)}]"


def subgroup_rows(report: Report, intersections: bool = True) -> tuple[list[str], list[list[str]]]:
    """The subgroup table: per arm, label and subgroup its patients, AUROC with CI, FNR at
    the val threshold, valid resamples; "too small" cells show no number. Without
    `intersections`, the sex and age-group subgroups only (the terminal's summary)."""
    f = report.fairness
    pct = int(round(report.ci_level * 100))
    headers = ["arm", "label", "subgroup", "positive / negative patients"]
    headers += [f"AUROC [{pct}% CI]", "FNR (val threshold)", "valid resamples"]
    if f is None or f.unavailable:
        return headers, []
    rows = []
    for r in f.subgroups.itertuples(index=False):
        if not intersections and r.kind == BOTH:
            continue
        patients = f"{int(r.n_positive_patients)} / {int(r.n_negative_patients)}"
        if r.too_small:
            rows.append([r.arm, r.label, r.subgroup, patients, "too small", "too small", ""])
            continue
        valid = "" if missing(r.n_valid) else f"{int(r.n_valid)}/{report.n_boot}"
        auroc = _ci_cell(r.auroc_mean, r.auroc_lo, r.auroc_hi)
        rows.append([r.arm, r.label, r.subgroup, patients, auroc, fmt(r.fnr), valid])
    return headers, rows


def _yes_no(value) -> str:
    return "" if value is None or missing(value) else ("yes" if bool(value) else "no")


def gap_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """The gap table: per arm, label, measure and subgroup, its gap against the reference
    with CI, and the gap's Δ against the real-only baseline and the step-matched control
    with CIs and whether each CI excludes 0."""
    f = report.fairness
    pct = int(round(report.ci_level * 100))
    base = report.baseline or BASELINE_ARM
    headers = ["arm", "label", "measure", "subgroup − reference", f"gap [{pct}% CI]"]
    headers += [f"Δ gap vs {base} [{pct}% CI]", "excludes 0"]
    if report.matched:
        headers += [f"Δ gap vs step-matched [{pct}% CI]", "excludes 0"]
    twins = f is not None and not f.unavailable and f.gaps["twin_arm"].notna().any()
    if twins:
        headers += [f"Δ gap vs prevalence-matched twin [{pct}% CI]", "excludes 0"]
    if f is None or f.unavailable:
        return headers, []
    rows = []
    for r in f.gaps.itertuples(index=False):
        measure = MEASURE_NAMES.get(r.measure, r.measure)
        who = f"{r.subgroup} − {r.reference}"
        if r.too_small:
            cells = [r.arm, r.label, measure, who, "too small", "too small", ""]
            if report.matched:
                cells += ["too small" if r.arm in report.matched else "", ""]
            if twins:
                cells += ["too small" if not missing(r.twin_arm) else "", ""]
            rows.append(cells)
            continue
        gap = _delta_cell(_float(r.gap), _float(r.gap_lo), _float(r.gap_hi))
        if missing(r.baseline):
            vs_base = "(baseline)" if r.arm == base else ""
        else:
            vs_base = _delta_cell(
                _float(r.delta_vs_baseline),
                _float(r.delta_vs_baseline_lo),
                _float(r.delta_vs_baseline_hi),
            )
        cells = [r.arm, r.label, measure, who, gap, vs_base, _yes_no(r.excludes_0_vs_baseline)]
        if report.matched:
            vs_matched = ""
            if r.arm in report.matched:
                vs_matched = _delta_cell(
                    _float(r.delta_vs_matched),
                    _float(r.delta_vs_matched_lo),
                    _float(r.delta_vs_matched_hi),
                )
            cells += [vs_matched, _yes_no(r.excludes_0_vs_matched)]
        if twins:
            vs_twin = ""
            if not missing(r.twin_arm):
                vs_twin = _delta_cell(
                    _float(r.delta_vs_twin), _float(r.delta_vs_twin_lo), _float(r.delta_vs_twin_hi)
                )
            cells += [vs_twin, _yes_no(r.excludes_0_vs_twin)]
        rows.append(cells)
    return headers, rows


def balance_summary(report: Report) -> str:
    """Did balancing the synthetic set over subgroups narrow the gap? Per subgroup-balanced
    arm, label and subgroup with an interval: its gap's delta against its prevalence-matched
    twin, read against the twin's own gap (narrowed: the interval lies wholly on the side
    that moves the gap toward 0; widened: wholly on the other; else not shown either way)."""
    f = report.fairness
    if f is None or f.unavailable or not f.gaps["twin_arm"].notna().any():
        return ""
    pct = int(round(report.ci_level * 100))
    gaps = f.gaps.set_index(["arm", "label", "measure", "subgroup"])
    verdicts: dict[str, list[str]] = {"narrowed": [], "widened": [], "neither": []}
    for r in f.gaps.itertuples(index=False):
        if missing(r.twin_arm) or missing(_float(r.delta_vs_twin)):
            continue
        key = (r.twin_arm, r.label, r.measure, r.subgroup)
        twin_gap = _float(gaps.loc[key, "gap"]) if key in gaps.index else math.nan
        lo, hi = _float(r.delta_vs_twin_lo), _float(r.delta_vs_twin_hi)
        toward_zero = -1.0 if twin_gap > 0 else 1.0 if twin_gap < 0 else 0.0
        if toward_zero and (lo > 0 or hi < 0) and (lo * toward_zero > 0):
            verdict = "narrowed"
        elif toward_zero and (lo > 0 or hi < 0):
            verdict = "widened"
        else:
            verdict = "neither"
        d = _delta_cell(_float(r.delta_vs_twin), lo, hi)
        measure = MEASURE_NAMES.get(r.measure, r.measure)
        verdicts[verdict].append(
            f"{r.arm}, {r.label} {measure}, {r.subgroup} − {r.reference}: twin's gap "
            f"{fmt(twin_gap) if not missing(twin_gap) else 'n/a'}, Δ {d}"
        )
    total = sum(len(v) for v in verdicts.values())
    if not total:
        return "Balancing: no gap of a balanced arm has an interval (cells too small)."
    parts = [
        f"Did balancing the synthetic set over subgroups narrow the gap ({pct}% CI, not "
        f"adjusted)? Of {total} gaps, narrowed: {len(verdicts['narrowed'])}, widened: "
        f"{len(verdicts['widened'])}, neither shown: {len(verdicts['neither'])}."
    ]
    for verdict in ("narrowed", "widened"):
        if verdicts[verdict]:
            parts.append(f"{verdict.capitalize()}: " + "; ".join(verdicts[verdict]) + ".")
    return " ".join(parts)


def gap_summary(report: Report) -> str:
    """Which gap deltas' CIs exclude 0 and how many include it (every one, whatever it
    says)."""
    f = report.fairness
    if f is None or f.unavailable:
        return ""
    pct = int(round(report.ci_level * 100))
    excluding, including = [], 0
    for r in f.gaps.itertuples(index=False):
        for prefix, other in (
            ("vs_baseline", r.baseline),
            ("vs_matched", r.matched_arm),
            ("vs_twin", r.twin_arm),
        ):
            flag = getattr(r, f"excludes_0_{prefix}")
            if flag is None or missing(flag):
                continue
            if not bool(flag):
                including += 1
                continue
            d = _delta_cell(
                _float(getattr(r, f"delta_{prefix}")),
                _float(getattr(r, f"delta_{prefix}_lo")),
                _float(getattr(r, f"delta_{prefix}_hi")),
            )
            measure = MEASURE_NAMES.get(r.measure, r.measure)
            excluding.append(
                f"{r.arm} vs {other}, {r.label} {measure}, {r.subgroup} − {r.reference}: {d}"
            )
    total = len(excluding) + including
    if not total:
        return (
            "No gap delta has an interval (no baseline or step-matched control among the "
            "arms, cells too small, or no val thresholds)."
        )
    text = (
        f"Gap deltas ({pct}% CI, not adjusted): {len(excluding)} of {total} exclude 0"
        + (": " + "; ".join(excluding) if excluding else "")
        + f"; {including} include 0."
    )
    return text
