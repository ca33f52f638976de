"""Prompt plans for label-balanced synthesis: which report prompts which synthetic image.

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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from augmentor.label_spec import split_label_counts
from augmentor.prompt_policy import DEFAULT_POLICY, RULES, apply_policy_many, check_policy
from manifests.errors import UserError
from manifests.io import Manifest
from manifests.schema import resolve_label

NEGATIVE_TARGET = "No Finding"
NEGATIVE_TEMPLATE = "No acute cardiopulmonary process."
REMOVED_COLUMNS = tuple(f"removed_{rule}" for rule in RULES)
PLAN_COLUMNS = (
    "row",
    "target_label",
    "prompt",
    "prompt_source",
    "prompt_study_id",
    "prompt_patient_id",
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


def balanced_prompts(
    manifest: Manifest,
    targets: Mapping[str, int],
    negatives: int = 0,
    seed: int = 0,
    where: str = "--prompts-from",
    images_per_prompt: int = 1,
    prompt_policy: str = DEFAULT_POLICY,
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
    empty is never drawn.

    Returns:
        A DataFrame with `row` (0..N-1), `target_label`, `prompt`, `prompt_source`
        ('report'/'template'), `prompt_study_id`, `prompt_patient_id`, `seed` (per row, see
        `row_seed`), `prompt_group` (the drawn prompt, numbered across the plan: rows that
        share it are one prompt's K images), `removed_<rule>` (what the prompt policy
        removed from the row's report, per rule; 0 for templates) and one float32 column
        per label of `manifest`.
    """
    labels = tuple(manifest.labels)
    prompt_policy = check_policy(prompt_policy)
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
    values = reports[list(labels)].to_numpy(dtype=np.float32)

    parts: list[pd.DataFrame] = []
    groups: list[np.ndarray] = []
    jobs = [
        (label, n, reports[label].to_numpy(dtype=np.float64) == 1.0) for label, n in goals.items()
    ]
    if negatives:
        jobs.append((NEGATIVE_TARGET, negatives, _negative_mask(reports, labels)))
    for k, (target, n, mask) in enumerate(jobs):
        pool = np.flatnonzero(mask)
        draws = prompt_draws(n, images_per_prompt)
        groups.append(draws + (groups[-1][-1] + 1 if groups else 0))
        if len(pool):
            # One stream per job (seed, k): adding a label never reshuffles another's prompts.
            rng = np.random.default_rng([int(seed), k])
            picks = pool[_cycle(len(pool), int(draws[-1]) + 1, rng)][draws]
            part = pd.DataFrame(values[picks], columns=list(labels))
            part.insert(0, "target_label", target)
            part.insert(1, "prompt", reports["report"].to_numpy()[picks].astype(str))
            part.insert(2, "prompt_source", "report")
            part.insert(3, "prompt_study_id", reports["study_id"].to_numpy()[picks].astype(str))
            part.insert(4, "prompt_patient_id", reports["patient_id"].to_numpy()[picks].astype(str))
            for column, counts in zip(REMOVED_COLUMNS, removed[picks].T, strict=True):
                part[column] = counts
        else:
            is_negative = target == NEGATIVE_TARGET and k == len(goals)
            fill = 0.0 if is_negative else np.nan
            part = pd.DataFrame(np.full((n, len(labels)), fill, np.float32), columns=list(labels))
            if target in labels:
                part[target] = np.float32(1.0)
            part.insert(0, "target_label", target)
            part.insert(1, "prompt", NEGATIVE_TEMPLATE if is_negative else template_prompt(target))
            part.insert(2, "prompt_source", "template")
            part.insert(3, "prompt_study_id", None)
            part.insert(4, "prompt_patient_id", None)
            for column in REMOVED_COLUMNS:
                part[column] = np.int64(0)
        parts.append(part)

    plan = pd.concat(parts, ignore_index=True)
    plan.insert(0, "row", np.arange(len(plan), dtype=np.int64))
    plan.insert(6, "seed", np.array([row_seed(seed, r) for r in range(len(plan))], dtype=np.int64))
    plan.insert(7, "prompt_group", np.concatenate(groups))
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
