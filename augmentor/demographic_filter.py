"""The demographic filter: keep synthetic images that look like the patient their prompt names.

A stage after synthesis (`cxraug synthesize --filter-demographics DIR`, and any caller of
`synthesize_with_filters`), after the oracle filter when both are asked for. The
demographic oracles in DIR (`augmentor.demographic_oracle`, trained on real train images)
predict every synthetic image's sex and age; RoentGen-v2's rule keeps an image when its
predicted sex is the prompt's and its predicted age lies within `age_tolerance` years
(default 16) of the prompt's. A row's prompt demographics are its `sex` and `age`: a row
whose prompt states neither is kept and counted as unchecked; a row that states one is
judged on that one.

Every row's predictions and verdict go to `demographic_scores.parquet` beside the manifest,
which is then replaced by the kept rows (both through `augmentor.synthetic_set`, the
folder's owner). The reject counts per target label x sex x age group cell go into the
manifest's metadata (`augmentor.synthetic_set.read_demographic_filter`), which the dataset card shows
(`augmentor.card`).

The oracles choose which images train a classifier, so what they saw counts as the set's:
they are refused (before any image is generated) when they trained on a val or test patient
of the manifest whose reports prompt the set, and their patients go into the set's
provenance record (`demographic_filter`), which every consumer checks against its own real
manifest (`manifests.provenance`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from augmentor.config import DemographicFilterConfig, OracleFilterConfig, SynthesisConfig
from augmentor.demographic_oracle import (
    load_demographic_oracle,
    oracle_seen,
    predict_demographics,
    read_oracle_config,
)
from augmentor.features import image_hashes
from augmentor.oracle_filter import OracleFilterSummary, named_prompts, synthesize_and_filter
from augmentor.synthesize import SynthesisResult
from augmentor.synthetic_set import (
    DEMOGRAPHIC_FILTER_KEY,
    feature_cache_dir,
    write_demographic_scores,
    write_filtered_manifest,
)
from manifests import provenance
from manifests.demographics import age_group_names, cell_name, with_subgroups
from manifests.errors import UserError
from manifests.io import read_manifest

FLAG = "--filter-demographics"
PROVENANCE_FILTER = "demographic_filter"  # its key in the provenance record
KEPT, REJECTED, UNCHECKED = "kept", "rejected", "unchecked"
UNKNOWN = "unknown"  # a cell's sex or age group when the prompt states none
PREDICTION_COLUMNS = ("pred_female_prob", "pred_sex", "pred_age")
COUNT_COLUMNS = (
    "target_label",
    "sex",
    "age_group",
    "cell",
    "n",
    "n_checked",
    "n_kept",
    "n_rejected",
    "n_rejected_sex",
    "n_rejected_age",
    "n_unchecked",
    "reject_rate",
)


# ---------------------------------------------------------------- the rule


def judge(rows: pd.DataFrame, predictions: pd.DataFrame, age_tolerance: float) -> pd.DataFrame:
    """Each row's verdict under the rule (see the module docstring).

    Args:
        rows: synthetic rows (`sex`, `age`: what their prompts stated).
        predictions: `predict_demographics` of those rows (same order).
        age_tolerance: years.

    Returns:
        the predictions with `sex_ok` and `age_ok` (True/False, None where the prompt states
        no sex / age) and `demographic_verdict` ('kept', 'rejected' or 'unchecked').
    """
    stated = with_subgroups(rows.reset_index(drop=True))
    sex = stated["sex"].to_numpy(dtype=object)
    age = pd.to_numeric(stated["age"], errors="coerce").to_numpy(np.float64)
    pred_sex = predictions["pred_sex"].to_numpy(dtype=object)
    pred_age = predictions["pred_age"].to_numpy(np.float64)
    has_sex, has_age = pd.notna(sex), np.isfinite(age)
    sex_ok = np.where(has_sex, pred_sex == sex, None)
    age_ok = np.where(has_age, np.abs(pred_age - age) <= age_tolerance, None)
    failed = (has_sex & (pred_sex != sex)) | (has_age & ~(np.abs(pred_age - age) <= age_tolerance))
    verdict = np.where(~has_sex & ~has_age, UNCHECKED, np.where(failed, REJECTED, KEPT))
    out = predictions.reset_index(drop=True).copy()
    out["sex_ok"] = sex_ok.astype(object)
    out["age_ok"] = age_ok.astype(object)
    out["demographic_verdict"] = verdict.astype(object)
    return out


def _failed(ok: pd.Series) -> np.ndarray:
    """Where a test was made and failed (False; None is no test)."""
    return ok.astype("boolean").eq(False).fillna(False).to_numpy(dtype=bool)


def reject_counts(rows: pd.DataFrame, judged: pd.DataFrame, edges) -> pd.DataFrame:
    """Per target label x prompted sex x age group (`unknown` where the prompt states
    none): rows, checked, kept, rejected (and for failing the sex or the age test),
    unchecked, and the reject rate over checked rows (NaN where none was)."""
    stated = with_subgroups(rows.reset_index(drop=True), edges)
    target = (
        stated["target_label"].fillna(UNKNOWN).astype(str)
        if "target_label" in stated
        else pd.Series(UNKNOWN, index=stated.index)
    )
    frame = pd.DataFrame(
        {
            "target_label": target.to_numpy(),
            "sex": stated["sex"].fillna(UNKNOWN).astype(str).to_numpy(),
            "age_group": stated["age_group"].fillna(UNKNOWN).astype(str).to_numpy(),
            "checked": (judged["demographic_verdict"] != UNCHECKED).to_numpy(),
            "kept": (judged["demographic_verdict"] == KEPT).to_numpy(),
            "rejected": (judged["demographic_verdict"] == REJECTED).to_numpy(),
            "rejected_sex": _failed(judged["sex_ok"]),
            "rejected_age": _failed(judged["age_ok"]),
            "unchecked": (judged["demographic_verdict"] == UNCHECKED).to_numpy(),
        }
    )
    keys = ["target_label", "sex", "age_group"]
    counts = (
        frame.groupby(keys, sort=False)
        .agg(
            n=("checked", "size"),
            n_checked=("checked", "sum"),
            n_kept=("kept", "sum"),
            n_rejected=("rejected", "sum"),
            n_rejected_sex=("rejected_sex", "sum"),
            n_rejected_age=("rejected_age", "sum"),
            n_unchecked=("unchecked", "sum"),
        )
        .reset_index()
    )
    order = {name: i for i, name in enumerate([*age_group_names(edges), UNKNOWN])}
    counts = counts.sort_values(
        keys, key=lambda col: col.map(order) if col.name == "age_group" else col
    ).reset_index(drop=True)
    counts["cell"] = [
        cell_name({"target_label": t, "sex": s, "age_group": g})
        for t, s, g in counts[keys].itertuples(index=False)
    ]
    counts["reject_rate"] = counts["n_rejected"] / counts["n_checked"].where(
        counts["n_checked"] > 0
    )
    return counts[list(COUNT_COLUMNS)]


# ---------------------------------------------------------------- config and checks


def demographic_filter_config(
    oracle: Path | None, age_tolerance: float | None
) -> DemographicFilterConfig | None:
    """The config for `--filter-demographics DIR --age-tolerance Y` (None without DIR),
    checked up front: call it before a long synthesis starts."""
    if oracle is None:
        if age_tolerance is not None:
            raise UserError(
                f"--age-tolerance: only used with {FLAG} DIR (a demographic oracle folder)"
            )
        return None
    cfg = DemographicFilterConfig(oracle=Path(oracle))
    if age_tolerance is not None:
        cfg.age_tolerance = age_tolerance
    check_demographic_filter(cfg)
    return cfg


def check_demographic_filter(cfg: DemographicFilterConfig) -> None:
    """UserError unless `cfg.oracle` is an oracle folder and the tolerance is 0 or more."""
    if not (math.isfinite(cfg.age_tolerance) and cfg.age_tolerance >= 0):
        raise UserError(f"--age-tolerance: {cfg.age_tolerance}; valid: 0 or more years")
    read_oracle_config(cfg.oracle, FLAG)


def demographic_filter_seen(folder: Path, prompts_from: Path | None) -> provenance.SeenPatients:
    """What the oracles in `folder` saw; one UserError naming `--filter-demographics` when
    they trained on a val or test patient of `prompts_from` (the set's prompt manifest).
    Without `prompts_from`, read only (consumers check the record)."""
    seen = oracle_seen(Path(folder), FLAG)
    if prompts_from is not None:
        provenance.check_seen(
            provenance.held_out_patients(read_manifest(Path(prompts_from))),
            seen,
            where=f"{FLAG} {folder}",
            source=str(prompts_from),
            hint=f"use oracles trained on the train split of {prompts_from} only",
        )
    return seen


# ---------------------------------------------------------------- the stage


@dataclass
class DemographicFilterSummary:
    """What `apply_demographic_filter` did: counts per cell and the files it wrote."""

    manifest: Path
    scores: Path
    age_tolerance: float
    counts: pd.DataFrame  # COUNT_COLUMNS
    n_kept: int
    n_rejected: int
    n_unchecked: int


def filter_record(cfg: DemographicFilterConfig, counts: pd.DataFrame) -> dict:
    """The filter's record in the manifest metadata: the rule and the counts per cell."""
    cells = json.loads(counts.to_json(orient="records"))
    return {
        "oracle": str(cfg.oracle),
        "rule": "keep when the predicted sex is the prompt's and |predicted age - prompt "
        "age| <= age_tolerance; a prompt without sex or age is not checked on it",
        "age_tolerance": float(cfg.age_tolerance),
        "age_edges": [float(e) for e in cfg.age_edges],
        "n": int(counts["n"].sum()),
        "n_checked": int(counts["n_checked"].sum()),
        "n_rejected": int(counts["n_rejected"].sum()),
        "n_unchecked": int(counts["n_unchecked"].sum()),
        "cells": cells,
    }


def apply_demographic_filter(
    manifest_path: Path, cfg: DemographicFilterConfig, prompts_from: Path | None = None
) -> DemographicFilterSummary:
    """Filter a synthetic manifest in place with the demographic oracles `cfg.oracle`.

    The oracles are checked against `prompts_from` (default: the prompt manifest the set's
    folder names) and what they saw is recorded in the set's provenance. Every row is
    judged and written with its predictions to `demographic_scores.parquet`; then the
    manifest is atomically replaced by the kept and unchecked rows, its metadata holding
    the counts per cell. The images of rejected rows stay on disk. Predictions come from
    the feature cache on a rerun (which judges the rows the last run kept).
    """
    check_demographic_filter(cfg)
    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path)
    if "target_label" not in manifest.rows.columns:
        raise UserError(f"{FLAG}: {manifest_path} has no target_label column (not synthetic)")
    prompts_from = prompts_from or named_prompts(manifest_path, manifest)
    seen = demographic_filter_seen(cfg.oracle, prompts_from)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    oracle = load_demographic_oracle(cfg.oracle, device, FLAG)
    cache_dir = cfg.cache_dir or feature_cache_dir(manifest_path)
    predictions = predict_demographics(
        oracle, manifest.image_paths(), image_hashes(manifest), cache_dir, cfg.batch_size, device
    )
    judged = judge(manifest.rows, predictions, cfg.age_tolerance)
    scores = pd.concat(
        [manifest.rows[["image_path", "target_label", "sex", "age"]].reset_index(drop=True),
         judged], axis=1,
    )  # fmt: skip
    scores_path = write_demographic_scores(manifest_path, scores)
    keep = (judged["demographic_verdict"] != REJECTED).to_numpy()
    if not keep.any():
        raise UserError(
            f"{FLAG} {cfg.oracle}: the oracles reject every image (age tolerance "
            f"{cfg.age_tolerance:g} years); nothing left (predictions in {scores_path})"
        )
    counts = reject_counts(manifest.rows, judged, cfg.age_edges)
    kept = manifest.with_rows(manifest.rows.reset_index(drop=True)[keep])
    kept.metadata[DEMOGRAPHIC_FILTER_KEY] = json.dumps(filter_record(cfg, counts), sort_keys=True)
    kept = provenance.with_filter(kept, str(cfg.oracle), seen, key=PROVENANCE_FILTER)
    write_filtered_manifest(manifest_path, kept)
    verdict = judged["demographic_verdict"]
    return DemographicFilterSummary(
        manifest=manifest_path,
        scores=scores_path,
        age_tolerance=cfg.age_tolerance,
        counts=counts,
        n_kept=int((verdict == KEPT).sum()),
        n_rejected=int((verdict == REJECTED).sum()),
        n_unchecked=int((verdict == UNCHECKED).sum()),
    )


def synthesize_with_filters(
    synthesis: SynthesisConfig,
    oracle: OracleFilterConfig | None = None,
    demographic: DemographicFilterConfig | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[SynthesisResult, OracleFilterSummary | None, DemographicFilterSummary | None]:
    """`synthesize`, the oracle filter (`oracle_filter.synthesize_and_filter`), then (on the
    main process, when `demographic` is given) the demographic filter.

    The demographic oracles, and what they saw against `--prompts-from`, are checked
    before any image is generated; reject counts use the synthesis's age groups where it
    has them (`--age-groups`).
    """
    if demographic is not None:
        check_demographic_filter(demographic)
        demographic_filter_seen(demographic.oracle, Path(synthesis.prompts_from))
        demographic = replace(demographic, age_edges=tuple(synthesis.age_edges))
    result, kept = synthesize_and_filter(synthesis, oracle, on_batch)
    if demographic is None or not result.is_main_process:
        return result, kept, None
    summary = apply_demographic_filter(result.manifest, demographic, Path(synthesis.prompts_from))
    return result, kept, summary


__all__ = [
    "COUNT_COLUMNS",
    "FLAG",
    "KEPT",
    "REJECTED",
    "UNCHECKED",
    "DemographicFilterSummary",
    "apply_demographic_filter",
    "check_demographic_filter",
    "demographic_filter_config",
    "demographic_filter_seen",
    "filter_record",
    "judge",
    "reject_counts",
    "synthesize_with_filters",
]
