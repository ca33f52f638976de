"""The patient re-identification audit of a synthetic set (`evaluate-generator --privacy`).

Every synthetic image prompted by a real report names the patient behind it
(`prompt_patient_id`). The audit asks whether a patient-verification model
(`augmentor.reid`, trained on real train pairs) links the image to that patient: its score
against the prompting patient's real train images (the highest over them), and against
every train image (its nearest train patient). A score above the threshold, set on real
val patients at a chosen false-match rate, is a match.

Beside the synthetic rows stand real references, scored the same way:

* baseline: real val images against train patients (never theirs, so every match is a false
  match): against a few random train patients each, the counterpart of "against the
  prompting patient", where the share above the threshold should be near the false-match
  rate; and against their nearest train patient, the counterpart of the nearest search
  (more comparisons, so more false matches).
* positive controls: real images against the other studies of their own patient (val: the
  model's true-match rate on patients it never saw; train: on patients it trained on).

Shares carry 95% Wilson intervals clustered by prompt (synthetic) or patient (real). The
table (`privacy_table`) has a row per comparison and, for synthetic rows, per prompted
label and prompt policy; `audit_privacy` writes it and the per-image scores into the
evaluation folder through `augmentor.eval_folder` and returns the summary that
`generator_eval.json` holds under `privacy`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from augmentor.eval_config import GeneratorEvalConfig
from augmentor.eval_folder import PRIVACY_IMAGES, PRIVACY_TABLE, write_privacy
from augmentor.features import embed_images, embed_subset
from augmentor.metrics import clustered_rate_interval
from augmentor.reid import (
    ReidSettings,
    heldout_pairs,
    load_or_fit_reid,
    nearest_patient,
    patient_scores,
    verification_threshold,
)
from manifests.errors import UserError
from manifests.io import Manifest
from manifests.provenance import PROMPT_PATIENT_COLUMN

# Comparisons, in table order, and what each is for.
SYN_PROMPT = "synthetic vs prompting patient"
SYN_NEAREST = "synthetic vs nearest train patient"
VAL_OTHER = "real val vs other train patients"
VAL_NEAREST = "real val vs nearest train patient"
TRAIN_OWN = "real train vs own patient, other studies"
VAL_OWN = "real val vs own patient, other studies"
ROLES = {
    SYN_PROMPT: "synthetic",
    VAL_OTHER: "baseline",
    SYN_NEAREST: "synthetic",
    VAL_NEAREST: "baseline",
    TRAIN_OWN: "control",
    VAL_OWN: "control",
}
RAW_POLICY = "raw"  # sets made before prompt policies carry their reports as written
METHOD = (
    "cosine of a patient-verification embedding trained contrastively on real train "
    "same-patient (different study) pairs; an image's score against a patient is the "
    "highest over that patient's train images; a match is a score above the threshold set "
    "on real val (image, other patient) pairs at the false-match rate"
)


@dataclass
class PrivacyAudit:
    """The audit's table, its per-image scores and the summary for `generator_eval.json`."""

    table: pd.DataFrame
    images: pd.DataFrame
    summary: dict


# ---------------------------------------------------------------- tables


def rate_row(
    comparison: str,
    group: str,
    scores: np.ndarray,
    clusters: Sequence,
    threshold: float,
) -> dict:
    """One table row: how many scores lie above `threshold`, with a clustered interval."""
    scores = np.asarray(scores, dtype=np.float64)
    keep = np.isfinite(scores)
    scores, clusters = scores[keep], np.asarray(clusters, dtype=object)[keep]
    above = scores > threshold
    low, high = clustered_rate_interval(above, clusters)
    return {
        "comparison": comparison,
        "role": ROLES[comparison],
        "group": group,
        "n": int(len(scores)),
        "clusters": int(len(set(map(str, clusters)))),
        "n_above": int(above.sum()),
        "share_above": float(above.mean()) if len(scores) else float("nan"),
        "share_low": low,
        "share_high": high,
        "mean_score": float(scores.mean()) if len(scores) else float("nan"),
        "max_score": float(scores.max()) if len(scores) else float("nan"),
    }


def privacy_table(
    images: pd.DataFrame, references: dict[str, tuple[np.ndarray, np.ndarray]], threshold: float
) -> pd.DataFrame:
    """The re-identification table.

    Args:
        images: per synthetic image (`synthetic_scores`): `prompt_patient_score`,
            `nearest_patient_score`, `cluster`, `target_label`, `prompt_policy`.
        references: comparison -> (scores, patient of each score) for the real rows.
        threshold: the verification threshold.
    """
    rows = []
    for comparison, column, reference in (
        (SYN_PROMPT, "prompt_patient_score", VAL_OTHER),
        (SYN_NEAREST, "nearest_patient_score", VAL_NEAREST),
    ):
        rows.append(rate_row(comparison, "all", images[column], images["cluster"], threshold))
        for by in ("target_label", "prompt_policy"):
            for value, part in images.groupby(by, sort=True, dropna=True):
                if part[column].notna().any():
                    rows.append(
                        rate_row(comparison, f"{by}={value}", part[column], part["cluster"],
                                 threshold)
                    )  # fmt: skip
        scores, patients = references[reference]
        rows.append(rate_row(reference, "all", scores, patients, threshold))
    for control in (TRAIN_OWN, VAL_OWN):
        scores, patients = references[control]
        rows.append(rate_row(control, "all", scores, patients, threshold))
    return pd.DataFrame(rows)


def synthetic_scores(
    rows: pd.DataFrame,
    emb: np.ndarray,
    train_emb: np.ndarray,
    train_patients: np.ndarray,
) -> pd.DataFrame:
    """Per synthetic image: its prompting patient (report prompts only) and its score
    against that patient's train images, its nearest train patient and that score."""
    n = len(rows)
    source = rows["prompt_source"] if "prompt_source" in rows else pd.Series(["report"] * n)
    prompted = (
        rows[PROMPT_PATIENT_COLUMN] if PROMPT_PATIENT_COLUMN in rows else pd.Series([None] * n)
    )
    targets = [
        str(p) if s == "report" and isinstance(p, str) and p else None
        for s, p in zip(source.to_numpy(), prompted.to_numpy(), strict=True)
    ]
    if "prompt_group" in rows:
        cluster = rows["prompt_group"].astype(str).to_numpy()
    elif "prompt" in rows:
        cluster = rows["prompt"].astype(str).to_numpy()
    else:
        cluster = np.arange(n).astype(str)
    nearest, whose = nearest_patient(emb, train_emb, train_patients)
    policy = rows["prompt_policy"] if "prompt_policy" in rows else pd.Series([RAW_POLICY] * n)
    return pd.DataFrame(
        {
            "target_label": rows.get("target_label", pd.Series([None] * n)).to_numpy(),
            "prompt_policy": policy.fillna(RAW_POLICY).astype(str).to_numpy(),
            "prompt_source": source.to_numpy(),
            "prompt_patient_id": targets,
            "cluster": cluster,
            "prompt_patient_score": patient_scores(emb, targets, train_emb, train_patients),
            "nearest_patient_id": whose,
            "nearest_patient_score": nearest,
        }
    )


def reference_scores(
    real_emb: np.ndarray,
    patients: np.ndarray,
    studies: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    per_image: int,
    seed: int,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The real rows' scores (comparison -> (scores, patient of each score)): the baseline
    (val images against `per_image` random train patients each, and against their nearest
    train patient) and the positive controls (images against their own patient's other
    studies, train and val)."""
    train_patients = patients[train]
    pool = np.unique(train_patients)
    k = min(per_image, len(pool))
    rng = np.random.default_rng([seed, 29])
    picks = np.concatenate([rng.choice(pool, k, replace=False) for _ in val]) if len(val) else []
    queries = np.repeat(val, k)
    other = patient_scores(real_emb[queries], picks, real_emb[train], train_patients)
    nearest, _ = nearest_patient(real_emb[val], real_emb[train], train_patients)
    own = {
        name: patient_scores(
            real_emb[idx], patients[idx], real_emb[idx], patients[idx], studies[idx], studies[idx]
        )
        for name, idx in ((TRAIN_OWN, train), (VAL_OWN, val))
    }
    return {
        VAL_OTHER: (other, patients[queries]),
        VAL_NEAREST: (nearest, patients[val]),
        TRAIN_OWN: (own[TRAIN_OWN], patients[train]),
        VAL_OWN: (own[VAL_OWN], patients[val]),
    }


# ---------------------------------------------------------------- the audit


def _records(frame: pd.DataFrame) -> list[dict]:
    """JSON-safe records (NaN as null)."""
    return json.loads(frame.to_json(orient="records"))


def _row(table: pd.DataFrame, comparison: str) -> dict:
    return _records(table[(table["comparison"] == comparison) & (table["group"] == "all")])[0]


def _check_settings(cfg: GeneratorEvalConfig) -> None:
    if not 0 < cfg.false_match_rate < 1:
        raise UserError(f"--false-match-rate: {cfg.false_match_rate}; valid: between 0 and 1")
    for name, value in (
        ("reid_steps", cfg.reid_steps),
        ("reid_image_size", cfg.reid_image_size),
        ("reid_baseline_patients", cfg.reid_baseline_patients),
    ):
        if value < 1:
            raise UserError(f"{name}: {value}; must be at least 1")


def audit_privacy(
    synthetic: Manifest,
    real: Manifest,
    syn_hashes: Sequence[str],
    real_hashes: Sequence[str],
    cache_dir: Path,
    cfg: GeneratorEvalConfig,
    say: Callable[[str], None] = lambda _: None,
) -> PrivacyAudit:
    """Train (or reuse) the verification model, set its threshold on real val pairs, score
    the synthetic and real rows, and write `privacy.csv` and `privacy_images.csv` into
    `cfg.out`."""
    _check_settings(cfg)
    rows = real.rows
    split = rows["split"].to_numpy()
    train, val = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    patients = rows["patient_id"].astype(str).to_numpy()
    studies = rows["study_id"].astype(str).to_numpy()
    if len(set(patients[val])) < 2:
        raise UserError(
            f"--real {cfg.real}: {len(set(patients[val]))} val patient(s); --privacy sets "
            "its threshold on val images of at least 2 patients"
        )
    paths = real.image_paths()
    settings = ReidSettings(image_size=cfg.reid_image_size, steps=cfg.reid_steps, seed=cfg.seed)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    embedder, record = load_or_fit_reid(
        [paths[i] for i in train], [real_hashes[i] for i in train], patients[train],
        studies[train], settings, Path(cache_dir), device, say,
    )  # fmt: skip
    say("re-identification scores")
    syn_emb = embed_images(
        synthetic.image_paths(), syn_hashes, [embedder], cache_dir, cfg.batch_size
    )[0]["reid"]
    used = np.isin(split, ("train", "val"))  # test images play no part
    real_emb = embed_subset(real, real_hashes, used, embedder, cache_dir, cfg.batch_size)["reid"]
    same, different = heldout_pairs(real_emb[val], patients[val], studies[val])
    threshold = verification_threshold(different, cfg.false_match_rate)
    images = synthetic_scores(synthetic.rows, syn_emb, real_emb[train], patients[train])
    references = reference_scores(
        real_emb, patients, studies, train, val, cfg.reid_baseline_patients, cfg.seed
    )
    table = privacy_table(images, references, threshold)
    images.insert(0, "image_path", [p.as_posix() for p in synthetic.image_paths()])
    images["prompt_patient_match"] = images["prompt_patient_score"] > threshold
    images["nearest_patient_match"] = images["nearest_patient_score"] > threshold
    write_privacy(Path(cfg.out), table, images)
    summary = privacy_summary(
        images, table, threshold, same, different, record, len(set(patients[val])), cfg
    )
    return PrivacyAudit(table=table, images=images, summary=summary)


def privacy_summary(
    images: pd.DataFrame,
    table: pd.DataFrame,
    threshold: float,
    same: np.ndarray,
    different: np.ndarray,
    record: dict,
    val_patients: int,
    cfg: GeneratorEvalConfig,
) -> dict:
    """The `privacy` entry of `generator_eval.json`."""
    scored = images["prompt_patient_score"].notna()
    report = images["prompt_source"] == "report"
    named = images["prompt_patient_id"].notna()
    not_audited = {
        "template prompt": int((~report).sum()),
        "no prompting patient recorded": int((report & ~named).sum()),
        "prompting patient has no real train image here": int((named & ~scored).sum()),
    }
    notes = []
    if not scored.any():
        notes.append(
            "no synthetic image names a prompting patient with real train images: only the "
            "nearest-patient search was run"
        )
    if len(different) < 1 / cfg.false_match_rate:
        notes.append(
            f"{len(different)} val different-patient pairs cannot resolve a false-match rate "
            f"of {cfg.false_match_rate:g}: the threshold is their highest score"
        )
    return {
        "method": METHOD,
        "threshold": threshold,
        "false_match_rate": cfg.false_match_rate,
        "threshold_pairs": {
            "val_patients": int(val_patients),
            "same_patient": int(len(same)),
            "different_patient": int(len(different)),
        },
        "val_false_match_rate": float((different > threshold).mean()),
        "val_true_match_rate": float((same > threshold).mean()) if len(same) else None,
        "model": record,
        "n_synthetic": int(len(images)),
        "n_audited": int(scored.sum()),
        "not_audited": not_audited,
        "prompt_policies": sorted(images["prompt_policy"].unique().tolist()),
        "synthetic": _row(table, SYN_PROMPT),
        "baseline": _row(table, VAL_OTHER),
        "synthetic_nearest": _row(table, SYN_NEAREST),
        "baseline_nearest": _row(table, VAL_NEAREST),
        "rows": _records(table),
        "table": PRIVACY_TABLE,
        "images": PRIVACY_IMAGES,
        "notes": notes,
    }


__all__ = [
    "PrivacyAudit",
    "audit_privacy",
    "privacy_summary",
    "privacy_table",
    "rate_row",
    "reference_scores",
    "synthetic_scores",
]
