"""Demographic fidelity of a synthetic set (`evaluate-generator --demographics`).

A synthetic row's `sex` and `age` are the demographics its prompt stated (the prompting
patient's, or its balanced cell's). The demographic oracles (`augmentor.demographic_oracle`,
trained on real train images) say whom each image looks like; per prompted subgroup
(`manifests.demographics`: each sex, each age group, each sex x age group) the table gives

* the sex match: the share of images whose predicted sex (female probability 0.5 or above:
  'F') is the prompt's, with a 95% Wilson interval clustered by prompting patient (images
  of one patient's reports are correlated; `augmentor.metrics.clustered_rate_interval`);
* the age error: the mean absolute difference between predicted and prompted age in years,
  with a 95% percentile interval from a bootstrap of prompting patients, and its mean
  signed difference (bias: positive when the images look older than prompted);

beside the same figures of the same oracles on real test images against their patients'
own sex and age (clustered by patient): the baseline, what the oracles get right on real
images of people they never saw. A generator that draws its prompt's demographics comes
near the baseline; a sex match near 0.5 or an age error near the spread of ages says it
ignores them. A row whose prompt states no sex (or no age) counts only toward the other
figure, and the figures say how many rows they rest on.

`audit_demographics` trains the oracles in the evaluation folder (or loads the ones
`--demographic-oracle` names, refused when they trained on a val or test patient of the
real manifest), writes `demographics.csv` through `augmentor.eval_folder` and returns the
summary `generator_eval.json` holds under `demographics`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from augmentor.demographic_oracle import (
    DemographicOracle,
    DemographicSettings,
    load_demographic_oracle,
    load_or_train_oracle,
    oracle_seen,
    predict_demographics,
    read_oracle_config,
    training_rows,
)
from augmentor.eval_config import GeneratorEvalConfig
from augmentor.eval_folder import (
    DEMOGRAPHIC_ORACLE_DIR,
    DEMOGRAPHICS_TABLE,
    write_demographics,
)
from augmentor.metrics import cluster_bootstrap_weights, clustered_rate_interval, weighted_rates
from manifests import provenance
from manifests.demographics import SEXES, age_group_names, cell_name, with_subgroups
from manifests.errors import UserError
from manifests.io import Manifest

METHOD = (
    "a timm network trained on real train images predicts sex (female probability; 'F' at "
    "0.5 or above) and age; per prompted subgroup, the share of synthetic images whose "
    "predicted sex is the prompt's and the mean absolute error of the predicted age against "
    "the prompt's, beside the same on real test images against their own sex and age"
)
INTERVALS = (
    "95% intervals: sex match by Wilson's interval at the design-effect-adjusted size, age "
    "error by a percentile bootstrap; clustered by prompting patient (synthetic) or patient "
    "(real)"
)
ORACLE_FLAG = "--demographic-oracle"


@dataclass
class DemographicAudit:
    """The fidelity table and the summary for `generator_eval.json`."""

    table: pd.DataFrame
    summary: dict


# ---------------------------------------------------------------- the table


def subgroups(rows: pd.DataFrame, edges: Sequence[float]) -> list[tuple[str, np.ndarray]]:
    """(name, row mask) for 'all', each sex, each age group and each sex x age group, by
    the rows' `sex` and `age`; subgroups with no row are left out (but 'all')."""
    sub = with_subgroups(rows, edges)
    sex, group = sub["sex"].to_numpy(dtype=object), sub["age_group"].to_numpy(dtype=object)
    out = [("all", np.ones(len(rows), dtype=bool))]
    out += [(cell_name({"sex": s}), sex == s) for s in SEXES]
    out += [(cell_name({"age_group": g}), group == g) for g in age_group_names(edges)]
    out += [
        (cell_name({"sex": s, "age_group": g}), (sex == s) & (group == g))
        for s in SEXES
        for g in age_group_names(edges)
    ]
    return [(name, mask) for name, mask in out if name == "all" or mask.any()]


def _quantile(values: np.ndarray, q: float) -> float:
    finite = values[np.isfinite(values)]
    return float(np.percentile(finite, q)) if len(finite) else float("nan")


def fidelity_figures(
    true_sex: np.ndarray,
    true_age: np.ndarray,
    pred_sex: np.ndarray,
    pred_age: np.ndarray,
    clusters: np.ndarray,
    n_boot: int,
    seed: int,
) -> dict:
    """Sex match and age error of one group of images (see the module docstring).

    Rows whose true sex is not 'F'/'M' (age NaN) are left out of the sex (age) figures.
    """
    true_sex = np.asarray(true_sex, dtype=object)
    true_age = np.asarray(true_age, dtype=np.float64)
    clusters = np.asarray(clusters, dtype=object)
    has_sex = np.isin(true_sex, SEXES)
    has_age = np.isfinite(true_age)
    match = (np.asarray(pred_sex, dtype=object) == true_sex)[has_sex].astype(np.float64)
    low, high = clustered_rate_interval(match, clusters[has_sex])
    diff = (np.asarray(pred_age, dtype=np.float64) - true_age)[has_age]
    error = np.abs(diff)
    if len(error):
        weights = cluster_bootstrap_weights(clusters[has_age], n_boot, seed)
        boot = weighted_rates(weights, error)
        mae_low, mae_high = _quantile(boot, 2.5), _quantile(boot, 97.5)
    else:
        mae_low = mae_high = float("nan")
    return {
        "n": int(len(true_sex)),
        "clusters": int(len(set(map(str, clusters)))),
        "n_sex": int(has_sex.sum()),
        "sex_match": float(match.mean()) if len(match) else float("nan"),
        "sex_match_low": low,
        "sex_match_high": high,
        "n_age": int(has_age.sum()),
        "age_mae": float(error.mean()) if len(error) else float("nan"),
        "age_mae_low": mae_low,
        "age_mae_high": mae_high,
        "age_bias": float(diff.mean()) if len(diff) else float("nan"),
    }


def synthetic_clusters(rows: pd.DataFrame) -> np.ndarray:
    """What a synthetic row's images share: its prompting patient where recorded, else its
    drawn prompt (`prompt_group`, else the prompt text), else the row itself."""
    n = len(rows)
    fallback = (
        rows["prompt_group"].astype(str)
        if "prompt_group" in rows
        else rows["prompt"].astype(str)
        if "prompt" in rows
        else pd.Series(np.arange(n).astype(str), index=rows.index)
    )
    fallback = "prompt:" + fallback
    patient = rows.get(provenance.PROMPT_PATIENT_COLUMN)
    if patient is None:
        return fallback.to_numpy(dtype=object)
    named = patient.notna() & (patient.astype(str) != "")
    return np.where(named, "patient:" + patient.astype(str), fallback).astype(object)


def demographic_table(
    synthetic: pd.DataFrame,
    syn_pred: pd.DataFrame,
    real: pd.DataFrame,
    real_pred: pd.DataFrame,
    edges: Sequence[float],
    n_boot: int,
    seed: int,
) -> pd.DataFrame:
    """The fidelity table: a row per subgroup, synthetic figures then real ones (`real_`).

    Args:
        synthetic: synthetic rows (`sex`, `age` as their prompts stated; clusters from
            `synthetic_clusters`).
        syn_pred: `predict_demographics` of those rows (same order).
        real: real test rows (`sex`, `age`, `patient_id`).
        real_pred: `predict_demographics` of those rows.
        edges: age-group edges.
        n_boot: bootstrap resamples of the age-error intervals.
        seed: the bootstraps' seed.
    """
    syn = with_subgroups(synthetic.reset_index(drop=True), edges)
    ref = with_subgroups(real.reset_index(drop=True), edges)
    syn_clusters = synthetic_clusters(synthetic.reset_index(drop=True))
    real_clusters = ref["patient_id"].astype(str).to_numpy(dtype=object)
    syn_groups = dict(subgroups(syn, edges))
    real_groups = dict(subgroups(ref, edges))
    names = [n for n, _ in subgroups(pd.concat([syn, ref], ignore_index=True), edges)]
    rows = []
    for name in names:
        row: dict = {"subgroup": name}
        for prefix, frame, pred, clusters, groups in (
            ("", syn, syn_pred, syn_clusters, syn_groups),
            ("real_", ref, real_pred, real_clusters, real_groups),
        ):
            mask = groups.get(name, np.zeros(len(frame), dtype=bool))
            figures = fidelity_figures(
                frame["sex"].to_numpy(dtype=object)[mask],
                pd.to_numeric(frame["age"], errors="coerce").to_numpy(np.float64)[mask],
                pred["pred_sex"].to_numpy(dtype=object)[mask],
                pred["pred_age"].to_numpy(dtype=np.float64)[mask],
                clusters[mask],
                n_boot,
                seed,
            )
            row |= {f"{prefix}{k}": v for k, v in figures.items()}
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the audit


def check_demographics(cfg: GeneratorEvalConfig, real: Manifest) -> None:
    """Refuse bad demographic flags before any image is embedded: `--demographic-oracle`
    without `--demographics`, a folder that is no oracle or whose oracle trained on a val
    or test patient of `real`, or (to train one) a train split without sex or age."""
    if not cfg.demographics:
        if cfg.demographic_oracle is not None:
            raise UserError(f"{ORACLE_FLAG}: only used with --demographics")
        return
    if cfg.demographic_oracle is None:
        training_rows(real, f"--real {cfg.real}")
        return
    folder = Path(cfg.demographic_oracle)
    read_oracle_config(folder, ORACLE_FLAG)
    provenance.check_seen(
        provenance.held_out_patients(real),
        oracle_seen(folder, ORACLE_FLAG),
        where=f"{ORACLE_FLAG} {folder}",
        source=f"--real {cfg.real}",
        hint="use oracles trained on the train split of the same split manifest (or leave "
        f"{ORACLE_FLAG} out to train them here)",
    )


def demographic_oracle(
    cfg: GeneratorEvalConfig,
    real: Manifest,
    real_hashes: Sequence[str],
    device: str,
    say: Callable[[str], None],
) -> DemographicOracle:
    """The oracles `--demographic-oracle` names, else those trained on the real train
    images into `OUT/demographic_oracle` (reused there when the settings and images match)."""
    if cfg.demographic_oracle is not None:
        return load_demographic_oracle(Path(cfg.demographic_oracle), device, ORACLE_FLAG)
    settings = DemographicSettings(
        image_size=cfg.demographic_image_size, steps=cfg.demographic_steps, seed=cfg.seed
    )
    folder = Path(cfg.out) / DEMOGRAPHIC_ORACLE_DIR
    return load_or_train_oracle(
        real, folder, settings, real_hashes, device, f"--real {cfg.real}", say
    )


def audit_demographics(
    synthetic: Manifest,
    real: Manifest,
    syn_hashes: Sequence[str],
    real_hashes: Sequence[str],
    cache_dir: Path,
    cfg: GeneratorEvalConfig,
    say: Callable[[str], None] = lambda _: None,
) -> DemographicAudit:
    """Train (or load) the oracles, predict every synthetic and real test image, and write
    `demographics.csv` into `cfg.out`."""
    check_demographics(cfg, real)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    oracle = demographic_oracle(cfg, real, real_hashes, device, say)
    say("demographic predictions")
    syn_pred = predict_demographics(
        oracle, synthetic.image_paths(), list(syn_hashes), cache_dir, cfg.batch_size, device
    )
    test = np.flatnonzero(real.rows["split"].to_numpy() == "test")
    paths = real.image_paths()
    real_pred = predict_demographics(
        oracle, [paths[i] for i in test], [real_hashes[i] for i in test], cache_dir,
        cfg.batch_size, device,
    )  # fmt: skip
    real_test = real.rows.iloc[test]
    table = demographic_table(
        synthetic.rows, syn_pred, real_test, real_pred, cfg.age_edges, cfg.n_boot, cfg.seed
    )
    write_demographics(Path(cfg.out), table)
    return DemographicAudit(
        table, demographic_summary(synthetic.rows, real_test, table, oracle, cfg)
    )


def _records(frame: pd.DataFrame) -> list[dict]:
    """JSON-safe records (NaN as null)."""
    return json.loads(frame.to_json(orient="records"))


def demographic_summary(
    synthetic: pd.DataFrame,
    real_test: pd.DataFrame,
    table: pd.DataFrame,
    oracle: DemographicOracle,
    cfg: GeneratorEvalConfig,
) -> dict:
    """The `demographics` entry of `generator_eval.json`."""
    syn = with_subgroups(synthetic, cfg.age_edges)
    ref = with_subgroups(real_test, cfg.age_edges)
    stated_sex = syn["sex"].notna()
    stated_age = pd.to_numeric(syn["age"], errors="coerce").notna()
    notes = []
    if not (stated_sex | stated_age).any():
        notes.append(
            "no synthetic row states a sex or an age (sets made without demographic prompts "
            "or subgroup balance): only the real baseline is shown"
        )
    if not len(ref):
        notes.append("the real manifest has no test images: no baseline")
    elif not (ref["sex"].notna() | pd.to_numeric(ref["age"], errors="coerce").notna()).any():
        notes.append("no real test image has a known sex or age: no baseline")
    record = {
        k: oracle.config.get(k)
        for k in ("settings", "key", "n_train_images", "n_train_patients", "n_sex", "n_age",
                  "final_sex_bce", "final_age_mae")
    }  # fmt: skip
    record["folder"] = str(oracle.folder) if oracle.folder else None
    return {
        "method": METHOD,
        "interval_method": INTERVALS,
        "sex_threshold": 0.5,
        "age_edges": list(cfg.age_edges),
        "age_groups": age_group_names(cfg.age_edges),
        "oracle": record,
        "n_synthetic": int(len(syn)),
        "n_sex_stated": int(stated_sex.sum()),
        "n_age_stated": int(stated_age.sum()),
        "n_unstated": int((~stated_sex & ~stated_age).sum()),
        "n_real_test": int(len(ref)),
        "all": _records(table[table["subgroup"] == "all"])[0],
        "rows": _records(table),
        "table": DEMOGRAPHICS_TABLE,
        "notes": notes,
    }


__all__ = [
    "DemographicAudit",
    "audit_demographics",
    "check_demographics",
    "demographic_oracle",
    "demographic_summary",
    "demographic_table",
    "fidelity_figures",
    "subgroups",
    "synthetic_clusters",
]
