r"""Prompt plans for label-balanced synthesis: which report prompts which synthetic image.

RoentGen prompts its generator with real radiology reports of positive cases from the
training split, so a synthetic image carries the labels of the report that made it (a
pneumothorax report that also mentions an effusion yields Pleural Effusion = 1 too). The
plan is computed up front by a pure function, is deterministic in its seed, and is small
(one row of text per image), so generation can stream, shard and resume by plan row.
RoentGen measures diversity with several images per prompt (4, and MS-SSIM over their 6
pairs): `images_per_prompt` K gives each drawn prompt K consecutive rows, each with its own
seed, and records the draw in `prompt_group`.
A prompt policy (`augmentor.prompt_policy`; default `clean`) turns each train report into
its prompt before any draw: a report left empty by it is never drawn, and each plan row
counts what the policy removed from its prompt, per rule (`removed_<rule>` columns).

Demographics. Each plan row records the demographics of its prompt (`prompt_sex`,
`prompt_age`): the sex ('F'/'M', else null) and age of the train row whose report prompts
it, and synthesis writes them as the synthetic row's `sex` and `age`.

* Demographic prompts (`demographic_prompts`, off by default): a row's prompt is the
  template ``demographic_phrase(sex, age) + " " + report``, e.g. "72-year-old woman.
  Small right pleural effusion.", where `report` is the policy-cleaned report and a
  header it already has (``^\s*\d+-year-old (woman|man|patient)\.\s*``, any case) is
  replaced, never repeated; with both sex and age unknown the phrase is empty and the
  prompt is the report without its header. Off by default because real bases (Stable
  Diffusion, the released RoentGen weights) were not trained on reports that open with
  such a header; turn it on when the generator was fine-tuned on reports that carry them
  (the phantom's do, in a share of reports), so that it has learned what the header means.
* Subgroup balance (`balance_by` = ``('sex', 'age_group')`` or one of them; age groups
  from `age_edges`, `manifests.demographics`): the cells are every combination of the
  columns' values (`SEXES`; the age groups, youngest first), the first column named
  varying slowest. Each label's count N (the negatives' too) is split N // C per cell,
  the remainder going to the first cells, so counts are exact per label and per label x
  cell (`cell`). A cell's prompts are the reports of its own patients (sex and age group
  of the train row; a row with unknown sex or age is in no cell), its negatives the 'No
  Finding' reports of its patients. A cell that gets images but has no such report is a
  UserError unless demographic prompts are on: then it draws from every report of the
  label (or the negatives) and states the cell's demographics in the prompt: the cell's
  sex, and the source row's age when it lies in the cell's age group, else a whole year
  drawn uniformly in the group (capped to [18, 90] where the group reaches into it)
  (`demographics_source` = 'cell'). A label, or negatives, without any report use the
  template prompt with the cell's demographics stated the same way (negatives: "No acute
  cardiopulmonary process.", labelled No Finding 1, every other label 0).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from itertools import product

import numpy as np
import pandas as pd

from augmentor.label_spec import split_label_counts
from augmentor.prompt_policy import DEFAULT_POLICY, RULES, apply_policy_many, check_policy
from manifests.demographics import (
    DEFAULT_AGE_EDGES,
    SEXES,
    age_group_bounds,
    age_group_names,
    cell_name,
    check_balance_columns,
    demographic_phrase,
    parse_age_edges,
    with_subgroups,
)
from manifests.errors import UserError
from manifests.io import Manifest
from manifests.schema import resolve_label

NEGATIVE_TARGET = "No Finding"
NEGATIVE_TEMPLATE = "No acute cardiopulmonary process."
REMOVED_COLUMNS = tuple(f"removed_{rule}" for rule in RULES)
# A header a report may already open with; the demographic template replaces it.
DEMOGRAPHIC_HEADER = re.compile(r"^\s*\d+-year-old (woman|man|patient)\.\s*", re.IGNORECASE)
# Ages a cell states when its source row's age is not in the cell's group (adults only).
STATED_AGES = (18, 90)
PLAN_COLUMNS = (
    "row",
    "target_label",
    "cell",
    "prompt",
    "prompt_source",
    "prompt_study_id",
    "prompt_patient_id",
    "prompt_sex",
    "prompt_age",
    "demographics_source",
    "seed",
    "prompt_group",
    *REMOVED_COLUMNS,
)


def parse_label_counts(spec: str, labels: Sequence[str], flag: str = "--labels") -> dict[str, int]:
    """Parse `pneumothorax:5000,pleural_effusion:5000` into {canonical label: count}.

    Label spellings resolve case-insensitively against `labels` (`pleural_effusion` ==
    `Pleural Effusion`); a label named twice, a malformed item or a count <= 0 is a UserError.
    """
    counts: dict[str, int] = {}
    for name, count in split_label_counts(spec, flag=flag):
        label = resolve_label(name, labels, flag)
        if label in counts:
            raise UserError(f"{flag}: label {label!r} is given more than once")
        counts[label] = count
    return counts


def template_prompt(label: str) -> str:
    """The fallback prompt for a label without positive reports, e.g. 'Pneumothorax.'."""
    return f"{label[:1].upper()}{label[1:].lower()}."


def row_seed(seed: int, row: int) -> int:
    """The generation seed of plan row `row`: independent of the plan's size and batching."""
    return int(
        np.random.SeedSequence(entropy=int(seed), spawn_key=(int(row),)).generate_state(1)[0]
    )


def _report_rows(manifest: Manifest, where: str, policy: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Train rows that have report text, `report` made a prompt under `policy`, and what it
    removed from each (rows x `RULES`); a UserError when none is left."""
    rows = manifest.rows
    train = rows[rows["split"] == "train"]
    if train.empty:
        raise UserError(f"{where}: no rows in split 'train' to take prompts from")
    text = train["report"].astype("string").str.strip()
    with_text = train[text.notna().to_numpy() & (text.str.len().fillna(0) > 0).to_numpy()]
    if with_text.empty:
        raise UserError(f"{where}: no train row has report text to use as a prompt")
    prompts, counts = apply_policy_many(with_text["report"].astype(str), policy)
    removed = np.array([[c[rule] for rule in RULES] for c in counts], dtype=np.int64)
    kept = np.array([bool(p.strip()) for p in prompts])
    if not kept.any():
        raise UserError(
            f"{where}: every train report is empty under --prompt-policy {policy}; "
            "--prompt-policy raw keeps them as written"
        )
    return with_text.assign(report=prompts)[kept], removed[kept]


def _negative_mask(rows: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    """'No Finding' == 1 where the label set has it, else rows with no positive or uncertain label."""
    if NEGATIVE_TARGET in labels:
        return rows[NEGATIVE_TARGET].to_numpy(dtype=np.float64) == 1.0
    values = rows[list(labels)].to_numpy(dtype=np.float64)
    return ~np.any((values == 1.0) | (values == -1.0), axis=1)


def _cycle(pool_size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` indices into a pool: each pass is a fresh permutation, so every item is used once
    before any repeats."""
    passes = -(-n // pool_size)
    return np.concatenate([rng.permutation(pool_size) for _ in range(passes)])[:n]


def prompt_draws(n: int, images_per_prompt: int) -> np.ndarray:
    """For `n` rows, the index of the drawn prompt each row uses: K consecutive rows per
    prompt (the last prompt gets fewer when K does not divide `n`), e.g. n=5, K=2 ->
    [0, 0, 1, 1, 2]."""
    return np.arange(n, dtype=np.int64) // int(images_per_prompt)


def demographic_prompt(sex: str | None, age: float | None, report: str) -> str:
    """The demographic prompt template: ``demographic_phrase(sex, age) + " " + report``,
    replacing a header `report` already opens with (`DEMOGRAPHIC_HEADER`); with sex and age
    both unknown, `report` without its header."""
    body = DEMOGRAPHIC_HEADER.sub("", report, count=1)
    phrase = demographic_phrase(sex, age)
    return f"{phrase} {body}".strip() if phrase else body


def balance_cells(
    balance_by: Sequence[str], age_edges: Sequence[float] = DEFAULT_AGE_EDGES
) -> list[dict[str, str]]:
    """The subgroup cells to balance over, in their fixed order: every combination of the
    `balance_by` columns' values (`SEXES`; the age groups of `age_edges`, youngest first),
    the first column varying slowest. No column: one cell, everyone (``[{}]``)."""
    values = {"sex": SEXES, "age_group": tuple(age_group_names(age_edges))}
    columns = tuple(balance_by)
    return [
        dict(zip(columns, combo, strict=True)) for combo in product(*(values[c] for c in columns))
    ]


def cell_quota(n: int, cells: int) -> list[int]:
    """`n` rows over `cells` cells: n // cells each, the remainder to the first cells."""
    base, extra = divmod(int(n), int(cells))
    return [base + (1 if i < extra else 0) for i in range(int(cells))]


def stated_age(bounds: tuple[float, float], rng: np.random.Generator) -> float:
    """A whole year drawn uniformly in an age group [low, high), within `STATED_AGES`
    (inclusive) where the group reaches into it."""
    low, high = bounds
    top = math.ceil(high) - 1 if math.isfinite(high) else math.inf
    first, last = max(math.ceil(low), STATED_AGES[0]), min(top, STATED_AGES[1])
    if first > last:  # a group outside the adult range: its own first ten years
        first, last = math.ceil(low), min(top, math.ceil(low) + 9)
    if first > last:  # a group narrower than a whole year
        return float(low)
    return float(rng.integers(first, int(last) + 1))


def _in_cell(subgroups: pd.DataFrame, cell: Mapping[str, str]) -> np.ndarray:
    """Rows whose subgroup values are the cell's (an unknown value is in no cell)."""
    inside = np.ones(len(subgroups), dtype=bool)
    for column, value in cell.items():
        inside &= subgroups[column].to_numpy(dtype=object) == value
    return inside


def _report_part(
    reports: pd.DataFrame,
    subgroups: pd.DataFrame,
    removed: np.ndarray,
    labels: Sequence[str],
    picks: np.ndarray,
) -> pd.DataFrame:
    """Plan rows prompted by the reports at `picks`, with their labels and demographics."""
    part = pd.DataFrame(reports[list(labels)].to_numpy(dtype=np.float32)[picks], columns=labels)
    part["prompt"] = reports["report"].to_numpy()[picks].astype(str)
    part["prompt_source"] = "report"
    part["prompt_study_id"] = reports["study_id"].to_numpy()[picks].astype(str)
    part["prompt_patient_id"] = reports["patient_id"].to_numpy()[picks].astype(str)
    part["prompt_sex"] = subgroups["sex"].to_numpy(dtype=object)[picks]
    ages = pd.to_numeric(reports["age"], errors="coerce").to_numpy(dtype=np.float64)
    part["prompt_age"] = ages[picks]
    part["demographics_source"] = "patient"
    for column, counts in zip(REMOVED_COLUMNS, removed[picks].T, strict=True):
        part[column] = counts
    return part


def _template_part(target: str, n: int, labels: Sequence[str], negative: bool) -> pd.DataFrame:
    """`n` plan rows prompted by the target's template: no patient, no demographics."""
    fill = 0.0 if negative else np.nan
    part = pd.DataFrame(np.full((n, len(labels)), fill, np.float32), columns=list(labels))
    if target in labels:
        part[target] = np.float32(1.0)
    part["prompt"] = NEGATIVE_TEMPLATE if negative else template_prompt(target)
    part["prompt_source"] = "template"
    part["prompt_study_id"] = None
    part["prompt_patient_id"] = None
    part["prompt_sex"] = None
    part["prompt_age"] = np.nan
    part["demographics_source"] = None
    for column in REMOVED_COLUMNS:
        part[column] = np.int64(0)
    return part


def _state_cell(
    part: pd.DataFrame,
    cell: Mapping[str, str],
    source_groups: np.ndarray,
    draws: np.ndarray,
    bounds: Mapping[str, tuple[float, float]],
    rng: np.random.Generator,
) -> None:
    """Give rows prompted from outside `cell` the cell's demographics: its sex; the source
    row's age when it lies in the cell's age group, else one drawn in the group (one per
    drawn prompt, so a prompt's K images share it)."""
    if "sex" in cell:
        part["prompt_sex"] = cell["sex"]
    if "age_group" in cell:
        group = cell["age_group"]
        drawn = np.array([stated_age(bounds[group], rng) for _ in range(int(draws[-1]) + 1)])
        inside = source_groups == group
        part["prompt_age"] = np.where(inside, part["prompt_age"].to_numpy(), drawn[draws])
    part["demographics_source"] = "cell"


def _empty_cell_error(target: str, negative: bool, cell: str, n: int) -> UserError:
    what = "negative ('No Finding')" if negative else f"positive {target!r}"
    return UserError(
        f"--balance-by: no {what} train report of a patient in cell {cell!r} ({n} image(s) "
        "asked); add --demographic-prompts to prompt them from the label's other reports "
        "stating the cell's demographics, or balance over fewer cells"
    )


def balanced_prompts(
    manifest: Manifest,
    targets: Mapping[str, int],
    negatives: int = 0,
    seed: int = 0,
    where: str = "--prompts-from",
    images_per_prompt: int = 1,
    prompt_policy: str = DEFAULT_POLICY,
    demographic_prompts: bool = False,
    balance_by: Sequence[str] = (),
    age_edges: Sequence[float] = DEFAULT_AGE_EDGES,
) -> pd.DataFrame:
    """The full synthesis plan: one row per image to generate, in generation order.

    For each target label, `targets[label]` rows prompted by reports of train rows with
    label == 1, cycling through them in a seeded order so every report is used before any
    repeats; each row carries that report's labels. Each drawn report prompts
    `images_per_prompt` consecutive rows (K): the counts stay exact, only ceil(count / K)
    reports are drawn per label (K = 1 draws exactly as before). A label without any positive report
    falls back to `template_prompt(label)` with the target 1 and every other label NaN
    (`prompt_source` says 'template'). `negatives` rows come from 'No Finding' reports (or
    rows with no positive/uncertain label in a set without 'No Finding'); their template
    fallback is labelled No Finding 1, every other label 0. Reports become prompts under
    `prompt_policy` (`augmentor.prompt_policy`) before anything is drawn; one it leaves
    empty is never drawn. `demographic_prompts` and `balance_by` (over the age groups of
    `age_edges`) work as the module docstring says; without them the plan is as before.

    Returns:
        A DataFrame with `row` (0..N-1), `target_label`, `cell` (the label x subgroup
        cell's subgroup part, `manifests.demographics.cell_name`; null without balance),
        `prompt`, `prompt_source` ('report'/'template'), `prompt_study_id`,
        `prompt_patient_id`, `prompt_sex`, `prompt_age` (the demographics the row's image
        was prompted with: its prompt patient's, or its cell's), `demographics_source`
        ('patient', 'cell' or null for a template without a cell), `seed` (per row, see
        `row_seed`), `prompt_group` (the drawn prompt, numbered across the plan: rows that
        share it are one prompt's K images), `removed_<rule>` (what the prompt policy
        removed from the row's report, per rule; 0 for templates) and one float32 column
        per label of `manifest`.
    """
    labels = tuple(manifest.labels)
    prompt_policy = check_policy(prompt_policy)
    balance_by = check_balance_columns(balance_by) if balance_by else ()
    age_edges = parse_age_edges(age_edges)
    if negatives < 0:
        raise UserError(f"--negatives: {negatives} is negative; give 0 or more")
    if images_per_prompt < 1:
        raise UserError(f"--images-per-prompt: {images_per_prompt}; it must be 1 or more")
    goals = {resolve_label(name, labels): int(n) for name, n in targets.items()}
    for label, n in goals.items():
        if n <= 0:
            raise UserError(f"--labels: count for {label!r} is {n}; it must be a positive integer")
    if not goals and negatives == 0:
        raise UserError("--labels: nothing to generate (no label counts and no --negatives)")
    reports, removed = _report_rows(manifest, where, prompt_policy)
    subgroups = with_subgroups(reports, age_edges)
    source_groups = subgroups["age_group"].to_numpy(dtype=object)
    cells = balance_cells(balance_by, age_edges)
    bounds = age_group_bounds(age_edges)

    parts: list[pd.DataFrame] = []
    groups: list[np.ndarray] = []
    next_group = 0
    jobs = [
        (label, n, reports[label].to_numpy(dtype=np.float64) == 1.0) for label, n in goals.items()
    ]
    if negatives:
        jobs.append((NEGATIVE_TARGET, negatives, _negative_mask(reports, labels)))
    for k, (target, n, mask) in enumerate(jobs):
        negative = target == NEGATIVE_TARGET and k == len(goals)
        for c, (cell, count) in enumerate(zip(cells, cell_quota(n, len(cells)), strict=True)):
            if count == 0:
                continue
            name = cell_name(cell) if cell else None
            in_cell = mask & _in_cell(subgroups, cell)
            stated = bool(cell) and not in_cell.any()
            if stated and not demographic_prompts:
                raise _empty_cell_error(target, negative, str(name), count)
            draws = prompt_draws(count, images_per_prompt)
            groups.append(draws + next_group)
            next_group += int(draws[-1]) + 1
            pool = np.flatnonzero(mask if stated else in_cell)
            if len(pool):
                # One stream per job (seed, k) and cell: adding a label or a cell never
                # reshuffles another's prompts.
                rng = np.random.default_rng([int(seed), k, c] if cell else [int(seed), k])
                picks = pool[_cycle(len(pool), int(draws[-1]) + 1, rng)][draws]
                part = _report_part(reports, subgroups, removed, labels, picks)
                picked_groups = source_groups[picks]
            else:
                part = _template_part(target, count, labels, negative)
                picked_groups = np.full(count, None, dtype=object)
            if stated:
                ages = np.random.default_rng([int(seed), k, c, 1])
                _state_cell(part, cell, picked_groups, draws, bounds, ages)
            part.insert(0, "target_label", target)
            part.insert(1, "cell", name)
            parts.append(part)

    plan = pd.concat(parts, ignore_index=True)
    plan.insert(0, "row", np.arange(len(plan), dtype=np.int64))
    plan["seed"] = np.array([row_seed(seed, r) for r in range(len(plan))], dtype=np.int64)
    plan["prompt_group"] = np.concatenate(groups)
    plan["prompt_age"] = plan["prompt_age"].astype(np.float64)
    if demographic_prompts:
        plan["prompt"] = [
            demographic_prompt(sex, age, prompt)
            for sex, age, prompt in zip(
                plan["prompt_sex"], plan["prompt_age"], plan["prompt"], strict=True
            )
        ]
    for label in labels:
        plan[label] = plan[label].astype(np.float32)
    return plan[[*PLAN_COLUMNS, *labels]]


def removed_by_policy(plan: pd.DataFrame) -> tuple[dict[str, int], int]:
    """What the prompt policy removed over the plan's drawn report prompts, per rule, and
    how many report prompts were drawn (a prompt that makes K images counts once)."""
    drawn = plan[plan["prompt_source"] == "report"].drop_duplicates("prompt_group")
    totals = {rule: int(drawn[f"removed_{rule}"].sum()) for rule in RULES}
    return totals, len(drawn)


def template_notes(plan: pd.DataFrame) -> list[str]:
    """One line per target label whose prompts fell back to a template."""
    used = plan[plan["prompt_source"] == "template"].groupby("target_label", sort=False)
    return [
        f"no positive train report for {label!r}; {len(group)} image(s) use the template "
        f"prompt {group['prompt'].iloc[0]!r}"
        for label, group in used
    ]


def cell_counts(plan: pd.DataFrame) -> pd.DataFrame:
    """Images per target label x cell of a balanced plan (`target_label`, `cell`, `images`),
    and how many of them state the cell's demographics instead of their prompt patient's
    (`stated`); no rows without balance. A cell a label's count left empty is not listed."""
    balanced = plan[plan["cell"].notna()]
    stated = balanced["demographics_source"].eq("cell").astype(np.int64)
    grouped = balanced.assign(stated=stated).groupby(["target_label", "cell"], sort=False)
    return grouped.agg(images=("row", "size"), stated=("stated", "sum")).reset_index()


def cell_notes(plan: pd.DataFrame) -> list[str]:
    """One line per target label with cells that state their demographics (no train
    report of a patient in the cell)."""
    stated = plan[plan["demographics_source"].eq("cell").to_numpy()]
    notes = []
    for label, rows in stated.groupby("target_label", sort=False):
        source = (
            "the template"
            if rows["prompt_source"].eq("template").all()
            else "other patients' reports"
        )
        cells = ", ".join(rows["cell"].drop_duplicates())
        notes.append(
            f"no train report for {label!r} in cell(s) {cells}: their {len(rows)} image(s) "
            f"state the cell's demographics in prompts from {source}"
        )
    return notes


def demographics_record(
    plan: pd.DataFrame,
    demographic_prompts: bool,
    balance_by: Sequence[str],
    age_edges: Sequence[float] = DEFAULT_AGE_EDGES,
) -> dict:
    """What a synthetic set records of its demographics (provenance key `demographics`):
    whether prompts state them, the balance's columns, age edges and cells, and the
    images per label x cell (`cell_counts`)."""
    balance_by = tuple(balance_by)
    return {
        "demographic_prompts": bool(demographic_prompts),
        "balance_by": list(balance_by),
        "age_edges": [float(e) for e in age_edges] if "age_group" in balance_by else None,
        "cells": [cell_name(c) for c in balance_cells(balance_by, age_edges)] if balance_by else [],
        "counts": cell_counts(plan).to_dict(orient="records"),
    }
