"""The report's notes: what a reader must know about the runs behind the numbers (few seeds, labels left out of the macro, unchecked synthetic provenance, data made elsewhere), one sentence each, for the report header."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from classifier.runset import Run, RunSet, matched_controls
from classifier.stats import MACRO
from manifests import provenance
from manifests.errors import UserError
from manifests.io import read_manifest

MIN_SEEDS = 5  # fewer seeds per arm than this: the report warns


def stat_notes(
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
            f"{arm_list(one)} one seed: its spread over seeds is undefined and its intervals "
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
    for oversample in (False, True):
        for target, control in matched_controls(runset.runs, oversample).items():
            if target not in arms:
                notes.append(f"control arm {control!r} matches arm {target!r}, which is not here")
    backbones = sorted({str(r.config.get("backbone")) for r in runset.runs})
    if len(backbones) > 1:
        notes.append(f"runs use different backbones ({', '.join(backbones)})")
    notes.extend(data_notes(runset))
    return notes


def unit_notes(generators: dict[str, list[str | None]], oversampled: dict[str, str]) -> list[str]:
    """What each arm's interval treats as independent, from its runs' generators (in run
    order, None without synthetic images), and what its positives-matched control rules out.
    """
    notes = []
    for arm, gens in generators.items():
        distinct = list(dict.fromkeys(g for g in gens if g is not None))
        if len(distinct) > 1:
            counts = [gens.count(g) for g in distinct]
            if max(counts) == 1:
                notes.append(
                    f"arm {arm!r}: its {len(distinct)} runs come from {len(distinct)} "
                    "generators, one seed each: its intervals' units are the runs, so they "
                    "cover generator-to-generator variation with the seeds'"
                )
                continue
            spread = ", ".join(map(str, counts))
            text = (
                f"arm {arm!r}: its intervals' units are its {len(distinct)} generators "
                f"({spread} seeds each; a unit is the mean over one generator's seeds), so "
                "they cover generator-to-generator variation as well as seeds; its deltas "
                "are not paired by seed"
            )
            if len(set(counts)) > 1:
                text += (
                    "; the generators have different numbers of seeds: each counts once in "
                    "the arm's mean, and the t's degrees of freedom are approximate"
                )
            notes.append(text)
        elif len(distinct) == 1 and len(gens) > 1:
            notes.append(
                f"arm {arm!r}: all its runs use one generator: its intervals cover test "
                "patients and seeds but not generator-to-generator variation (fit several "
                "generators for a claim about synthetic images in general)"
            )
    for arm, control in oversampled.items():
        notes.append(
            f"arm {arm!r} is also compared with {control!r}, its positives-matched control "
            "(real-only, as many optimizer steps, real positives drawn to the arm's label "
            "balance; Δ vs positives-matched): a gain it also shows comes from longer "
            "training or more positive draws, not from the synthetic images"
        )
    return notes


def positive_patients(truth: np.ndarray, patients: np.ndarray) -> list[int]:
    """Per label, the test patients with at least one positive (1) image."""
    return [len(set(patients[truth[:, j] == 1])) for j in range(truth.shape[1])]


def macro_notes(
    labels: Sequence[str], keep: np.ndarray, left_out: dict[str, str], minimum: int
) -> list[str]:
    """Which labels the macro averages, and which it leaves out for too few positive
    test patients (a handful of patients would decide their AUROC and its interval)."""
    if not left_out:
        return []
    kept = [label for j, label in enumerate(labels) if keep[j]]
    out = "; ".join(f"{label} ({reason.split(': ', 1)[1]})" for label, reason in left_out.items())
    return [
        f"macro: the mean over {', '.join(kept) or 'no label'}; left out: {out}. A label "
        f"enters the macro only with {minimum} or more positive test patients"
    ]


def arm_list(arms: list[str]) -> str:
    quoted = ", ".join(repr(a) for a in arms)
    return f"arm {quoted} has" if len(arms) == 1 else f"arms {quoted} have"


def check_provenance(runset: RunSet, allow_foreign: bool = False) -> list[str]:
    """Refuse runs trained on synthetic images whose patients were never checked against the
    test set (made before provenance records) unless `allow_foreign`; notes for the header."""
    notes = []
    for run in runset.runs:
        if run.config.get("init_from_provenance") == provenance.FOREIGN:
            notes.append(
                f"arm {run.arm} (seed {run.seed}): its --init-from run's training patients "
                "could not be checked against the test patients (accepted with "
                "--allow-foreign-synthetic)"
            )
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


def data_notes(runset: RunSet) -> list[str]:
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
